"""Original checkpoints load safely; anything else is refused with a clear error."""

import argparse
import pickle

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
