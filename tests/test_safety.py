"""Every loader refuses a malicious pickle without running it.

Each file below carries an object whose ``__reduce__`` runs a shell command that creates a marker file.
The control tests show the payload is live (plain unpickling does create the marker); every loader test
asserts the refusal is a one-line CheckpointError naming the file and the marker does not exist.
"""

import os
import pickle

import pytest
import torch

from hicmae.checkpoint import load_original_checkpoint, load_release, save_release
from hicmae.cli import main
from hicmae.errors import CheckpointError
from hicmae.hub import load_classifier, load_model, save_release_folder, write_checksums
from hicmae.models import HiCMAEClassifier, HiCMAEPretrain
from test_hub import fill_cache
from training_helpers import tiny_config


class Payload:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def _weights():
    return {k: v for k, v in HiCMAEClassifier(tiny_config(), 2).state_dict().items()}


def write_original(path, marker, legacy=False):
    """An original-style checkpoint-*.pth whose ``args`` is the payload."""
    torch.save({"model": _weights(), "epoch": 1, "args": Payload(marker)}, path,
               _use_new_zipfile_serialization=not legacy)
    return path


def write_lightning(path, marker):
    """A finetune.py-style .ckpt with the payload among its callbacks' states."""
    state = {f"model.{k}": v for k, v in _weights().items()}
    torch.save({"state_dict": state, "epoch": 0, "global_step": 1, "callbacks": {"evil": Payload(marker)},
                "hyper_parameters": {"model_preset": "tiny", "num_classes": 2, "modalities": ["video", "audio"]}},
               path)
    return path


def write_plain_pickle(path, marker):
    path.write_bytes(pickle.dumps({"model": Payload(marker)}))
    return path


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "the payload ran"


def _refused(call, path):
    with pytest.raises(CheckpointError) as info:
        call()
    text = str(info.value)
    assert "\n" not in text and os.fspath(path) in text
    return text


UNSAFE = "not a checkpoint that can be loaded safely: it pickles posix.system, which is not plain weights"


# ---------------------------------------------------------------------------------------------- controls
@pytest.mark.parametrize("write", [lambda p, m: write_original(p, m), lambda p, m: write_original(p, m, legacy=True),
                                   write_lightning, write_plain_pickle], ids=["zip", "legacy", "ckpt", "pickle"])
def test_control_the_payload_runs_when_unpickled_without_protection(tmp_path, write):
    marker = tmp_path / "pwned"
    path = write(tmp_path / "evil.pth", marker)
    if write is write_plain_pickle:
        pickle.loads(path.read_bytes())
    else:
        torch.load(path, weights_only=False)
    assert marker.exists()


# ---------------------------------------------------------------------------------------------- loaders
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-format"])
def test_original_pth_loaders_refuse_without_running_it(tmp_path, marker, legacy):
    path = write_original(tmp_path / "checkpoint-99.pth", marker, legacy)
    assert _refused(lambda: load_original_checkpoint(path), path) == f"{path}: {UNSAFE}, and unpickling it could " \
                                                                     "run code from the file"
    assert UNSAFE in _refused(lambda: load_classifier(path), path)
    from hicmae.training.init import init_from_checkpoint

    assert UNSAFE in _refused(lambda: init_from_checkpoint(HiCMAEClassifier(tiny_config(), 2), path), path)


def test_plain_pickle_is_refused_by_every_torch_file_loader(tmp_path, marker):
    path = write_plain_pickle(tmp_path / "model.pth", marker)
    for load in (load_original_checkpoint, load_model, HiCMAEClassifier.from_pretrained):
        text = _refused(lambda: load(path), path)
        assert "not a checkpoint" in text


def test_lightning_checkpoint_loaders_refuse_without_running_it(tmp_path, marker):
    from hicmae.training.init import read_lightning_checkpoint

    path = write_lightning(tmp_path / "last.ckpt", marker)
    assert UNSAFE in _refused(lambda: read_lightning_checkpoint(path), path)
    assert UNSAFE in _refused(lambda: load_classifier(path), path)
    assert UNSAFE in _refused(lambda: HiCMAEPretrain.from_pretrained(str(path)), path)


def test_a_pickle_named_like_a_release_file_is_refused(tmp_path, marker):
    path = write_original(tmp_path / "model.safetensors", marker)
    text = _refused(lambda: load_release(path), path)
    assert text == f"{path}: not a safetensors file (it looks like a zip archive, e.g. a PyTorch checkpoint)"
    assert _refused(lambda: load_classifier(path), path) == text
    plain = write_plain_pickle(tmp_path / "other.safetensors", marker)
    assert "not a safetensors file (it looks like a Python pickle)" in _refused(lambda: load_classifier(plain), plain)


def test_a_release_folder_with_pickled_weights_is_refused_even_with_matching_checksums(tmp_path, marker):
    folder = save_release_folder(HiCMAEClassifier(tiny_config(), 2), tmp_path / "rel")
    write_original(folder / "model.safetensors", marker)
    write_checksums(folder)  # the attacker rewrote the checksums too
    text = _refused(lambda: load_classifier(folder), folder / "model.safetensors")
    assert "not a safetensors file" in text
    only_bin = tmp_path / "bin"
    only_bin.mkdir()
    write_original(only_bin / "pytorch_model.bin", marker)
    assert "never unpickles" in _refused(lambda: load_classifier(only_bin), only_bin)


def test_a_hub_repo_with_pickled_weights_is_refused(tmp_path, monkeypatch, marker):
    import huggingface_hub

    folder = save_release_folder(HiCMAEClassifier(tiny_config(), 2), tmp_path / "rel")
    write_original(folder / "model.safetensors", marker)
    write_checksums(folder)
    cache = tmp_path / "cache"
    fill_cache(cache, "mallory/evil", folder)
    bin_only = tmp_path / "binrepo"
    bin_only.mkdir()
    write_original(bin_only / "pytorch_model.bin", marker)
    fill_cache(cache, "mallory/bin-only", bin_only)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="model.safetensors: not a safetensors file"):
        HiCMAEClassifier.from_pretrained("mallory/evil")
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_classifier("mallory/bin-only")


def test_cli_commands_refuse_without_running_it(tmp_path, marker, capsys):
    ckpt = write_lightning(tmp_path / "last.ckpt", marker)
    pth = write_original(tmp_path / "checkpoint-99.pth", marker)
    for argv in (["export", str(ckpt), str(tmp_path / "out")], ["export", str(pth), str(tmp_path / "out.safetensors")],
                 ["extract-features", str(ckpt), str(tmp_path / "m.csv"), str(tmp_path / "f.npy")]):
        (tmp_path / "m.csv").write_text("video,audio\nx.mp4,x.wav\n")
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and UNSAFE in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "f.npy").exists()


def test_safe_files_still_load(tmp_path):
    """The same loaders accept the same content without the payload (the refusals are not blanket)."""
    torch.save({"model": _weights(), "epoch": 1}, tmp_path / "ok.pth")
    assert load_original_checkpoint(tmp_path / "ok.pth")["epoch"] == 1
    path = save_release(HiCMAEClassifier(tiny_config(), 2), tmp_path / "ok.safetensors")
    assert load_classifier(path)[1]["num_classes"] == 2
