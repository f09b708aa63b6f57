"""Release folders in the Hub layout, and loading by path or repo id without touching the network."""

import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import yaml

from hicmae.checkpoint import load_release, save_release
from hicmae.errors import CheckpointError
from hicmae.hub import (CHECKSUMS, load_classifier, load_model, load_pretrain, push_to_hub, save_release_folder,
                        write_checksums)
from hicmae.models import HiCMAEClassifier, HiCMAEPretrain, ModelConfig
from training_helpers import tiny_config

NAMES = ["angry", "calm", "happy"]
REV = "0123456789abcdef0123456789abcdef01234567"


def _inputs(config, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 3, config.num_frames, config.img_size, config.img_size, generator=g),
            torch.randn(2, 1, *config.audio_size, generator=g))


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.fixture
def classifier():
    torch.manual_seed(0)
    return HiCMAEClassifier(tiny_config(), 3, head_activation="tanh").eval()


@pytest.fixture
def folder(tmp_path, classifier):
    return save_release_folder(classifier, tmp_path / "tiny-hicmae", task="classification", class_names=NAMES,
                               sampling_rate=2, license="mit", dataset="CREMA-D",
                               metrics={"values": {"uar": 61.5, "war": 63.25}, "num_clips": 12,
                                        "model_selection": "last epoch's weights"})


@pytest.fixture
def no_network(monkeypatch):
    """Every attempt to open a connection is recorded and fails; tests assert none was made."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def fill_cache(cache, repo_id, folder, revision=REV):
    """Lay ``folder``'s files out as huggingface_hub's cache stores a downloaded repo: content-addressed
    blobs, a snapshot per revision made of relative symlinks to them, and refs/main naming the revision."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for path in sorted(folder.iterdir()):
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / digest).write_bytes(data)
        (snapshot / path.name).symlink_to(os.path.join("..", "..", "blobs", digest))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


# ---------------------------------------------------------------------------------------------- the folder
def test_release_folder_has_the_hub_layout_and_rebuilds_the_same_classifier(folder, classifier, no_network):
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", CHECKSUMS, "config.json", "model.safetensors"]
    assert not list(folder.parent.glob(".*tmp"))  # built aside and moved into place
    config = json.loads((folder / "config.json").read_text())
    assert config["kind"] == "classifier" and config["task"] == "classification"
    assert config["class_names"] == NAMES and config["num_classes"] == 3 and config["head_activation"] == "tanh"
    assert config["architecture"] == classifier.config.to_dict()
    assert ModelConfig(**config["architecture"]) == classifier.config
    pre = config["preprocessing"]
    assert (pre["img_size"], pre["num_frames"], pre["sampling_rate"], pre["audio_size"]) == (32, 4, 2, [32, 32])
    assert pre["audio_sample_rate"] == 16000 and pre["fbank_mean"] == pytest.approx(-4.2677393)
    assert config["metrics"]["values"] == {"uar": 61.5, "war": 63.25}
    lines = (folder / CHECKSUMS).read_text().splitlines()
    assert lines == [f"{hashlib.sha256((folder / n).read_bytes()).hexdigest()}  {n}"
                     for n in ("model.safetensors", "config.json")]

    video, audio = _inputs(classifier.config)
    expected = classifier(video, audio)
    for source in (folder, str(folder), folder / "model.safetensors"):  # the weights file alone is a release too
        model, meta = load_classifier(source)
        assert not model.training and meta == config
        _same_weights(model, classifier)
        torch.testing.assert_close(model(video, audio), expected, rtol=0, atol=0)
    loaded = HiCMAEClassifier.from_pretrained(str(folder))
    assert type(loaded) is HiCMAEClassifier
    _same_weights(loaded, classifier)
    assert type(load_release(folder / "model.safetensors")) is HiCMAEClassifier
    assert no_network == []


def test_pretraining_release_folder_round_trip_and_kinds_are_not_mixed_up(tmp_path):
    torch.manual_seed(0)
    model = HiCMAEPretrain(tiny_config()).eval()
    folder = save_release_folder(model, tmp_path / "pre")
    loaded = HiCMAEPretrain.from_pretrained(str(folder))
    _same_weights(loaded, model)
    _, meta = load_pretrain(folder)
    assert meta["kind"] == "pretrain" and meta["task"] == "pretrain" and "class_names" not in meta
    with pytest.raises(CheckpointError, match="a pretraining model has no classifier head: fine-tune it first"):
        HiCMAEClassifier.from_pretrained(str(folder))
    clf = save_release_folder(HiCMAEClassifier(tiny_config(), 2), tmp_path / "clf")
    with pytest.raises(CheckpointError, match="a fine-tuned classifier, not a pretraining model"):
        load_pretrain(clf)
    assert load_classifier(clf)[1]["class_names"] == ["0", "1"]  # unnamed outputs are numbered, not invented


def test_regression_release_names_dimensions_and_has_no_pipeline_tag(tmp_path):
    model = HiCMAEClassifier(tiny_config(), 2, modalities=("audio",))
    folder = save_release_folder(model, tmp_path / "va", task="regression", target_names=["valence", "arousal"])
    _, meta = load_classifier(folder)
    assert meta["task"] == "regression" and meta["target_names"] == ["valence", "arousal"]
    assert meta["modalities"] == ["audio"] and "class_names" not in meta
    front = yaml.safe_load((folder / "README.md").read_text().split("---")[1])
    assert "pipeline_tag" not in front and "dimensional-emotion" in front["tags"]


def test_model_card_front_matter_and_sections(folder):
    card = (folder / "README.md").read_text()
    assert card.startswith("---\n")
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "hicmae" and front["license"] == "mit"
    assert front["pipeline_tag"] == "video-classification" and front["datasets"] == ["CREMA-D"]
    assert {"hicmae", "emotion-recognition", "audio-visual"} <= set(front["tags"])
    for section in ("## Outputs", "## Training data", "## Training recipe", "## Metrics", "## Input",
                    "## How to load", "## Licence", "## Citation"):
        assert section in card, section
    assert "| uar | 61.5 |" in card and "| war | 63.25 |" in card and "`angry`, `calm`, `happy`" in card
    assert 'HiCMAEClassifier.from_pretrained("user/tiny-hicmae")' in card and "CREMA-D" in card


def test_a_changed_file_fails_the_checksum_with_a_clear_error(folder):
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the last tensor
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as info:
        load_classifier(folder)
    assert str(info.value).startswith(f"{weights}: SHA-256 ")
    assert "does not match" in str(info.value) and "damaged or was changed" in str(info.value)


def test_editing_config_needs_new_checksums(folder):
    config = json.loads((folder / "config.json").read_text())
    config["class_names"] = ["anger", "neutral", "joy"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="config.json: SHA-256 .* does not match"):
        load_classifier(folder)
    write_checksums(folder)
    assert load_classifier(folder)[1]["class_names"] == ["anger", "neutral", "joy"]


def test_missing_or_malformed_checksums_are_refused(folder):
    (folder / CHECKSUMS).write_text("not a checksum line\n")
    with pytest.raises(CheckpointError, match="line 1 is not '<sha256>  <file name>'"):
        load_classifier(folder)
    (folder / CHECKSUMS).unlink()
    with pytest.raises(CheckpointError, match="no checksums.sha256: not a complete hicmae release folder"):
        load_classifier(folder)


def test_export_refuses_to_replace_a_folder_that_is_not_a_release(tmp_path, classifier):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="exists and is not a release folder"):
        save_release_folder(classifier, target)
    assert (target / "notes.txt").read_text() == "keep me"
    again = save_release_folder(classifier, tmp_path / "rel")
    save_release_folder(HiCMAEClassifier(tiny_config(), 5), again)  # an earlier release is replaced
    assert load_classifier(again)[1]["num_classes"] == 5


def test_a_folder_without_weights_says_what_it_holds(tmp_path):
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "pytorch_model.bin").write_bytes(b"\x80\x04junk")
    with pytest.raises(CheckpointError, match="no model.safetensors, only pytorch_model.bin: hicmae loads releases "
                                              "from safetensors and never unpickles"):
        load_model(tmp_path / "repo")


# ---------------------------------------------------------------------------------------------- repo ids
def test_repo_id_loads_from_a_prefilled_cache_offline(tmp_path, monkeypatch, folder, classifier, no_network):
    import huggingface_hub

    cache = tmp_path / "hf-cache"
    fill_cache(cache, "someone/tiny-hicmae", folder)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: any request would fail
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))  # read at import otherwise
    monkeypatch.chdir(tmp_path)  # no local "someone/tiny-hicmae" folder to find instead
    model, meta = load_classifier("someone/tiny-hicmae")
    _same_weights(model, classifier)
    assert meta["class_names"] == NAMES
    _same_weights(HiCMAEClassifier.from_pretrained(f"someone/tiny-hicmae@{REV}"), classifier)
    with pytest.raises(CheckpointError) as info:
        load_classifier("someone/absent")
    assert str(info.value) == ("someone/absent: no such file or folder, and as a Hugging Face Hub repo id "
                               "HF_HUB_OFFLINE is set and it is not in the local cache: download it once online")
    assert no_network == []


def test_repo_id_from_cache_in_a_fresh_process_with_the_environment_set(tmp_path, folder, classifier):
    """As a user runs it: the variables set before Python starts; an endpoint that refuses every request."""
    cache = tmp_path / "hf-cache"
    fill_cache(cache, "someone/tiny-hicmae", folder)
    video, audio = _inputs(classifier.config)
    torch.save({"video": video, "audio": audio}, tmp_path / "inputs.pt")
    code = ("import sys, torch; from hicmae.models import HiCMAEClassifier; "
            "m = HiCMAEClassifier.from_pretrained('someone/tiny-hicmae'); x = torch.load(sys.argv[1]); "
            "torch.save(m(x['video'], x['audio']), sys.argv[2])")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_ENDPOINT": "http://127.0.0.1:9",
           "PYTHONPATH": os.getcwd()}
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")],
                   cwd=tmp_path, env=env, check=True, timeout=120)
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), classifier(video, audio), rtol=0, atol=0)


def test_a_tampered_cached_snapshot_is_refused(tmp_path, monkeypatch, folder):
    import huggingface_hub

    cache = tmp_path / "hf-cache"
    snapshot = fill_cache(cache, "someone/tiny-hicmae", folder)
    blob = (snapshot / "model.safetensors").resolve()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="model.safetensors: SHA-256 .* does not match"):
        load_classifier("someone/tiny-hicmae")


def test_models_and_local_releases_work_without_huggingface_hub(folder):
    code = ("import sys; sys.modules['huggingface_hub'] = None\n"
            "from hicmae.models import HiCMAEClassifier\n"
            f"print(HiCMAEClassifier.from_pretrained({str(folder)!r}).num_classes)\n"
            "try:\n    HiCMAEClassifier.from_pretrained('someone/absent')\n"
            "except Exception as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.getcwd()}).stdout.splitlines()
    assert out == ["3", "someone/absent: no such file or folder; loading it as a Hugging Face Hub repo id needs "
                        "huggingface_hub (pip install huggingface_hub)"]


def test_paths_that_do_not_exist_are_not_taken_for_repo_ids(tmp_path, no_network):
    for name in ("missing.safetensors", "runs/x/last.ckpt", "./relative/dir", str(tmp_path / "absent")):
        with pytest.raises(CheckpointError, match="file not found"):
            load_model(name)
    assert no_network == []


# ---------------------------------------------------------------------------------------------- publishing
def test_push_to_hub_uploads_a_verified_release_folder(tmp_path, monkeypatch, folder, classifier):
    from huggingface_hub import HfApi

    calls = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create"] = (repo_id, kwargs)

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        # What would be sent: copy it, as the Hub would store it.
        calls["upload"] = (repo_id, kwargs)
        calls["files"] = {p.name: p.read_bytes() for p in folder_path.iterdir()}
        return argparse.Namespace(commit_url=f"https://example.invalid/{repo_id}/commit/1")

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    url = push_to_hub(folder, "someone/tiny-hicmae", private=True)
    assert url == "https://example.invalid/someone/tiny-hicmae/commit/1"
    assert calls["create"] == ("someone/tiny-hicmae", {"private": True, "exist_ok": True})
    assert sorted(calls["files"]) == ["README.md", CHECKSUMS, "config.json", "model.safetensors"]
    assert set(calls["upload"][1]["allow_patterns"]) == {"README.md", CHECKSUMS, "config.json", "model.safetensors"}
    # A model is written as a release folder first; what was sent loads back as the same model.
    push_to_hub(classifier, "someone/other", class_names=NAMES)
    sent = tmp_path / "sent"
    sent.mkdir()
    for name, data in calls["files"].items():
        (sent / name).write_bytes(data)
    model, meta = load_classifier(sent)
    _same_weights(model, classifier)
    assert meta["class_names"] == NAMES
    # A damaged folder is refused before anything is sent.
    calls.clear()
    (folder / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="does not match"):
        push_to_hub(folder, "someone/tiny-hicmae")
    assert calls == {}


# ---------------------------------------------------------------------------------------------- original .pth
def test_an_original_classifier_pth_is_rebuilt_from_its_shapes_and_args(tmp_path):
    from test_checkpoint import to_original_names

    config = ModelConfig.preset("tiny", img_size=32, num_frames=4, audio_size=(32, 128), encoder_depth=2,
                                skip_layers=(0, 0, 1), fusion_depth=1)
    torch.manual_seed(0)
    model = HiCMAEClassifier(config, 6).eval()
    torch.save({"model": to_original_names(model.state_dict()), "epoch": "best",
                "args": argparse.Namespace(model="avit_dim256_patch16_32_a32", input_size=32, num_frames=4,
                                           sampling_rate=2, nb_classes=6)}, tmp_path / "checkpoint-best.pth")
    loaded, meta = load_classifier(tmp_path / "checkpoint-best.pth")
    assert loaded.config.to_dict() == {**config.to_dict(), "skip_layers": list(loaded.config.skip_layers)}
    assert meta["preprocessing"]["sampling_rate"] == 2 and meta["class_names"] == [str(i) for i in range(6)]
    video, audio = _inputs(config)
    torch.testing.assert_close(loaded(video, audio), model(video, audio), rtol=0, atol=0)


def test_one_file_release_still_loads_through_the_hub_loader(tmp_path, classifier):
    path = save_release(classifier, tmp_path / "clf.safetensors", task="classification", class_names=NAMES,
                        sampling_rate=3)
    model, meta = load_classifier(path)
    _same_weights(model, classifier)
    assert meta["class_names"] == NAMES and meta["preprocessing"]["sampling_rate"] == 3
