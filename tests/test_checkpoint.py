"""Original checkpoints load safely; anything else is refused with a clear error."""

import argparse
import os
import pickle
import stat

import pytest
import torch

from hicmae.checkpoint import convert_original_state_dict, load_original_checkpoint, load_state_dict_into
from hicmae.errors import CheckpointError
from hicmae.models import HiCMAEClassifier, HiCMAEPretrain, ModelConfig

CONFIG = ModelConfig(img_size=32, num_frames=4, video_dim=64, video_heads=2, audio_dim=64, audio_heads=2,
                     audio_size=(32, 32), encoder_depth=3, skip_layers=(0, 1, 2), fusion_heads=2, decoder_dim=32,
                     decoder_heads=2)

_BACK = {v: k for k, v in {
    "encoder_fusion.blocks_audio.": "fusion.audio_blocks.", "encoder_fusion.blocks.": "fusion.video_blocks.",
    "encoder_fusion.norm_audio.": "fusion.audio_norm.", "encoder_fusion.norm.": "fusion.video_norm.",
    "encoder_to_decoder_audio.": "audio_branch.to_decoder.", "encoder_to_decoder.": "video_branch.to_decoder.",
    "encoder_audio.": "audio_encoder.", "encoder.": "video_encoder.", "decoder_audio.": "audio_branch.decoder.",
    "decoder.": "video_branch.decoder.", "mask_token": "video_branch.mask_token",
    "mask_token_audio": "audio_branch.mask_token"}.items()}


def to_original_names(state: dict) -> dict:
    """Write a state_dict with the original's key names (independent of the converter under test)."""
    out = {}
    for key, value in state.items():
        for ours in sorted(_BACK, key=len, reverse=True):
            if key.startswith(ours):
                key = _BACK[ours] + key[len(ours):]
                break
        out[key] = value
    return out


def write_original_checkpoint(path, model):
    torch.save({"model": to_original_names(model.state_dict()), "optimizer": {"state": {}, "param_groups": []},
                "epoch": 99, "scaler": {"scale": 65536.0}, "args": argparse.Namespace(lr=1e-3, model="pretrain")}, path)


def test_original_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = HiCMAEPretrain(CONFIG)
    write_original_checkpoint(tmp_path / "checkpoint-99.pth", model)
    ckpt = load_original_checkpoint(tmp_path / "checkpoint-99.pth")
    assert ckpt["epoch"] == 99 and ckpt["args"]["lr"] == 1e-3
    fresh = HiCMAEPretrain(CONFIG)
    fresh.load_state_dict(convert_original_state_dict(ckpt["model"], "pretrain"), strict=True)
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name


def test_pretraining_checkpoint_into_classifier_reports_missing_and_unexpected_by_name(tmp_path):
    write_original_checkpoint(tmp_path / "c.pth", HiCMAEPretrain(CONFIG))
    state = load_original_checkpoint(tmp_path / "c.pth")["model"]
    classifier = HiCMAEClassifier(CONFIG, num_classes=5)
    report = load_state_dict_into(classifier, state)
    assert sorted(report.missing) == ["audio_layer_weights", "fc_norm.bias", "fc_norm.weight", "head.bias",
                                      "head.weight", "video_layer_weights"]
    assert report.unexpected == [] and report.skipped == []
    assert "missing (6)" in str(report)


def test_head_of_another_size_is_skipped_and_reported():
    source = HiCMAEClassifier(CONFIG, num_classes=7)
    target = HiCMAEClassifier(CONFIG, num_classes=4)
    report = load_state_dict_into(target, source.state_dict())
    assert [s.split()[0] for s in report.skipped] == ["head.weight", "head.bias"]
    assert torch.equal(target.fc_norm.weight, source.fc_norm.weight)
    with pytest.raises(CheckpointError, match="head.weight"):
        load_state_dict_into(target, source.state_dict(), strict=True)


def test_ddp_module_prefix_is_removed():
    source = HiCMAEClassifier(CONFIG, num_classes=3)
    wrapped = {"module." + k: v for k, v in to_original_names(source.state_dict()).items()}
    target = HiCMAEClassifier(CONFIG, num_classes=3)
    report = load_state_dict_into(target, wrapped, strict=True)
    assert not report.missing


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_arbitrary_pickled_objects_are_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="evil.pth"):
        load_original_checkpoint(path)
    assert "this must never run" not in capsys.readouterr().out


@pytest.mark.parametrize("content,reason", [(b"", "not a checkpoint"), (b"hello world", "not a checkpoint"),
                                            (pickle.dumps([1, 2]), "not a checkpoint")])
def test_files_that_are_not_checkpoints_are_refused(tmp_path, content, reason):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=reason):
        load_original_checkpoint(path)


def test_checkpoint_without_weights_and_missing_file(tmp_path):
    torch.save({"epoch": 3}, tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match="no 'model'"):
        load_original_checkpoint(tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match="file not found"):
        load_original_checkpoint(tmp_path / "absent.pth")


@pytest.mark.parametrize("kind", ["pretrain", "classifier", "audio-only"])
def test_release_round_trip_rebuilds_the_same_model(tmp_path, kind):
    from hicmae.checkpoint import load_release, read_release, save_release

    torch.manual_seed(0)
    model = {"pretrain": lambda: HiCMAEPretrain(CONFIG),
             "classifier": lambda: HiCMAEClassifier(CONFIG, 5, head_activation="tanh"),
             "audio-only": lambda: HiCMAEClassifier(CONFIG, 3, modalities=("audio",))}[kind]().eval()
    path = save_release(model, tmp_path / "rel" / "model.safetensors", class_names=["a", "b", "c", "d", "e"])
    loaded = load_release(path)
    assert type(loaded) is type(model) and loaded.config == model.config
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    _, header = read_release(path)
    assert header["metadata"]["class_names"][0] == "a" and header["kind"] in ("pretrain", "classifier")
    if kind != "pretrain":
        audio = torch.randn(2, 1, 32, 32)
        video = torch.randn(2, 3, 4, 32, 32)
        torch.testing.assert_close(loaded(video=video, audio=audio), model(video=video, audio=audio))
    assert not list(tmp_path.joinpath("rel").glob(".*tmp"))  # no temporary file left behind


def test_safetensors_without_header_is_not_a_release(tmp_path):
    from safetensors.torch import save_file

    from hicmae.checkpoint import load_release

    save_file({"x": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="not a hicmae release"):
        load_release(tmp_path / "plain.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_release(tmp_path / "junk.safetensors")


# ---------------------------------------------------------------------------------------------- other architectures
SMALLER = CONFIG.replace(video_dim=32, audio_dim=32, encoder_depth=2, skip_layers=(0, 1, 1), fusion_depth=1)


def test_describe_architecture_reads_the_sizes_from_the_shapes():
    from hicmae.checkpoint import describe_architecture

    assert describe_architecture(HiCMAEPretrain(CONFIG).state_dict()) == dict(
        video_dim=64, audio_dim=64, encoder_depth=3, fusion_depth=2, patch_size=16, tubelet_size=2, mlp_ratio=4.0,
        decoder_dim=32, decoder_depth=4)
    audio_only = HiCMAEClassifier(SMALLER, 3, modalities=("audio",)).state_dict()
    assert describe_architecture(audio_only) == dict(audio_dim=32, encoder_depth=2, patch_size=16, mlp_ratio=4.0)


def test_checkpoint_of_another_width_and_depth_is_refused_in_one_sentence_that_says_what_to_set():
    import yaml

    torch.manual_seed(0)
    source = HiCMAEClassifier(SMALLER, num_classes=4)
    target = HiCMAEClassifier(CONFIG, num_classes=4)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        load_state_dict_into(target, source.state_dict(), source="small.pth")
    message = str(info.value)
    assert message.startswith("small.pth: this checkpoint holds a model with video_dim 32, audio_dim 32, "
                              "encoder_depth 2, fusion_depth 1, but this HiCMAEClassifier has video_dim 64, "
                              "audio_dim 64, encoder_depth 3, fusion_depth 2: set model.model_overrides to match")
    assert "\n" not in message and len(message) < 500  # not the list of every key
    for key, value in target.state_dict().items():  # refused before anything was loaded
        assert torch.equal(value, before[key]), key
    report = info.value.report  # the details stay available to callers
    assert report.architecture["video_dim"] == (32, 64) and len(report.missing) > 50

    # The suggested overrides, applied as a config file would, build a model the checkpoint fits.
    overrides = yaml.safe_load(message.split("(e.g. model_overrides: ")[1].split(", and the numbers of heads")[0])
    fitted = HiCMAEClassifier(CONFIG.replace(**overrides), num_classes=4)
    report = load_state_dict_into(fitted, source.state_dict(), strict=True)
    assert report.loaded == len(source.state_dict())


def test_a_width_of_a_preset_suggests_the_preset():
    source = HiCMAEClassifier(CONFIG.replace(video_dim=256, audio_dim=256, video_heads=4, audio_heads=4,
                                             fusion_heads=4), num_classes=2)
    with pytest.raises(CheckpointError, match=r"video_dim 256, audio_dim 256, but .* video_dim 64, audio_dim 64: "
                                              r"set model.model_preset: tiny to match$"):
        load_state_dict_into(HiCMAEClassifier(CONFIG, num_classes=2), source.state_dict())


def test_a_report_summary_is_one_short_line_and_str_lists_every_key(tmp_path):
    write_original_checkpoint(tmp_path / "c.pth", HiCMAEPretrain(SMALLER))
    state = load_original_checkpoint(tmp_path / "c.pth")["model"]
    source = {k: v for k, v in state.items() if not k.startswith("encoder_audio.blocks.1.")}  # a block short
    report = load_state_dict_into(HiCMAEClassifier(SMALLER, num_classes=5), source)
    n = len(report.missing)
    assert n == 6 + len(state) - len(source)  # the classifier's own head and layer weights, and the lost block
    assert report.summary() == (f"{report.loaded} tensors loaded; {n} missing from the checkpoint, left as "
                                f"initialised (video_layer_weights, audio_layer_weights, audio_encoder.* ({n - 6}), "
                                "fc_norm.* (2), head.* (2))")
    assert all(key in str(report) for key in report.missing)


# ---------------------------------------------------------------------------------------------- not checkpoints
def _torch_zip(path, cut: float = 1.0):
    torch.save({"model": {"w": torch.zeros(1000)}}, path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])


@pytest.mark.parametrize("name,write,reason", [
    ("notes.pth", lambda p: p.write_text("epoch 3, loss 0.41\n"), "not a checkpoint (it looks like text)"),
    ("page.pth", lambda p: p.write_text("<!DOCTYPE html>\n<html><body>Sign in</body></html>\n"),
     "not a checkpoint (it looks like an HTML page"),
    ("lfs.pth", lambda p: p.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 12\n"),
     "not a checkpoint (it looks like a Git LFS pointer, not the file itself (fetch it with `git lfs pull`))"),
    ("empty.pth", lambda p: p.write_bytes(b""), "not a checkpoint (it is empty: 0 bytes)"),
    ("list.pth", lambda p: p.write_bytes(pickle.dumps([1, 2])),
     "not a checkpoint (it looks like a Python pickle, not a file written by torch.save)"),
    ("archive.pth", lambda p: __import__("shutil").make_archive(str(p.with_suffix("")), "zip", p.parent) and
     p.with_suffix(".zip").rename(p), "not a checkpoint (it looks like a zip archive without the data.pkl"),
    ("half.pth", lambda p: _torch_zip(p, 0.5), "a damaged or truncated checkpoint"),
])
def test_files_that_are_not_checkpoints_say_what_they_look_like(tmp_path, name, write, reason):
    path = tmp_path / "in" / name
    path.parent.mkdir()
    write(path)
    with pytest.raises(CheckpointError) as info:
        load_original_checkpoint(path)
    assert str(info.value).startswith(f"{path}: {reason}")
    assert "(101)" not in str(info.value) and "Weights only load failed" not in str(info.value)


def test_unsafe_pickle_is_still_refused_as_unsafe(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "payload": Evil()}, path)
    with pytest.raises(CheckpointError) as info:
        load_original_checkpoint(path)
    assert str(info.value) == (f"{path}: not a checkpoint that can be loaded safely: it pickles print, which is not "
                               "plain weights, and unpickling it could run code from the file")
    assert "this must never run" not in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- release files
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_release_gets_the_permissions_of_an_ordinary_new_file(tmp_path, umask, mode):
    from hicmae.checkpoint import load_release, save_release

    model = HiCMAEClassifier(CONFIG, 2)
    old = os.umask(umask)
    try:
        path = save_release(model, tmp_path / "model.safetensors")
        assert stat.S_IMODE(os.stat(path).st_mode) == mode
        save_release(model, path)  # replacing a release: same rule
        assert stat.S_IMODE(os.stat(path).st_mode) == mode
    finally:
        os.umask(old)
    load_release(path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # written atomically, nothing left over


# ---------------------------------------------------------------------------------------------- original models
def test_an_original_pretraining_pth_is_rebuilt_with_the_heads_given(tmp_path):
    from hicmae.checkpoint import model_from_original

    torch.manual_seed(0)
    model = HiCMAEPretrain(CONFIG)
    write_original_checkpoint(tmp_path / "checkpoint-99.pth", model)
    ckpt = load_original_checkpoint(tmp_path / "checkpoint-99.pth")
    heads = dict(video_heads=2, audio_heads=2, fusion_heads=2, decoder_heads=2, img_size=32, num_frames=4,
                 audio_size=(32, 32), skip_layers=(0, 1, 2))
    with pytest.raises(CheckpointError, match="widths 64/64 match no preset"):
        model_from_original(ckpt, tmp_path / "checkpoint-99.pth")
    rebuilt, info = model_from_original(ckpt, tmp_path / "checkpoint-99.pth", "tiny", heads)
    assert type(rebuilt) is HiCMAEPretrain and rebuilt.config == CONFIG and info == {"source": "checkpoint-99.pth"}
    for (name, a), b in zip(model.state_dict().items(), rebuilt.state_dict().values()):
        assert torch.equal(a, b), name
    no_head = {k: v for k, v in to_original_names(HiCMAEClassifier(CONFIG, 2).state_dict()).items()
               if not k.startswith("head.")}
    with pytest.raises(CheckpointError, match="neither a pretraining model .* nor a classifier"):
        model_from_original({"model": no_head}, tmp_path / "x.pth", "tiny", heads)
