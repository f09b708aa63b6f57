"""Fine-tuning initialised from an original .pth and from a safetensors release reproduces the weights."""

import logging
from pathlib import Path

import pytest
import torch
import yaml

from hicmae.errors import CheckpointError
from hicmae.training import FinetuneModule

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "mini_a.pt"


@pytest.fixture(scope="module")
def mini():
    assert FIXTURE.exists(), f"fixture missing: {FIXTURE} (it is part of the repository; see tests/fixtures/README.md)"
    return torch.load(FIXTURE, weights_only=True)


def test_original_finetune_checkpoint_reproduces_the_original_logits(mini, tmp_path):
    path = tmp_path / "checkpoint-best.pth"
    torch.save({"model": mini["finetune"]["state_dict"], "epoch": 3}, path)
    module = FinetuneModule("tiny", mini["config"], num_classes=mini["meta"]["num_classes"], init_checkpoint=str(path))
    module.eval()
    with torch.no_grad():
        logits = module(mini["finetune"]["video"], mini["finetune"]["audio"])
    assert torch.allclose(logits, mini["finetune"]["logits"], atol=1e-5)


def test_original_pretrain_checkpoint_and_release_initialise_the_encoders(mini, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "checkpoint-99.pth"
    torch.save({"model": mini["pretrain"]["state_dict"]}, path)
    module = FinetuneModule("tiny", mini["config"], num_classes=5, init_checkpoint=str(path))
    original = mini["pretrain"]["state_dict"]["encoder_audio.blocks.1.mlp.fc1.weight"]
    assert torch.equal(module.model.state_dict()["audio_encoder.blocks.1.mlp.fc1.weight"], original)

    release = tmp_path / "hicmae-mini.safetensors"
    save_file({k: v.contiguous() for k, v in module.model.state_dict().items()}, str(release))
    again = FinetuneModule("tiny", mini["config"], num_classes=5, init_checkpoint=str(release))
    for k, v in module.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[k], v), k


def test_a_checkpoint_of_another_model_is_refused(mini, tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"model": {"resnet.conv1.weight": torch.zeros(3, 3)}}, path)
    with pytest.raises(CheckpointError, match="no weight of this checkpoint fits"):
        FinetuneModule("tiny", mini["config"], num_classes=5, init_checkpoint=str(path))


def _console_records(caplog):
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_smaller_checkpoint_into_the_base_model_is_refused_in_one_sentence(mini, tmp_path, caplog, capfd):
    path = tmp_path / "checkpoint-99.pth"
    torch.save({"model": mini["pretrain"]["state_dict"]}, path)  # an original checkpoint: width 64, depth 4
    caplog.set_level(logging.DEBUG, logger="hicmae")
    with pytest.raises(CheckpointError) as info:
        FinetuneModule("base", num_classes=5, init_checkpoint=str(path))
    assert str(info.value) == (
        f"{path}: this checkpoint holds a model with video_dim 64, audio_dim 64, encoder_depth 4, but this "
        "HiCMAEClassifier has video_dim 512, audio_dim 512, encoder_depth 10: set model.model_overrides to match "
        "(e.g. model_overrides: {video_dim: 64, audio_dim: 64, encoder_depth: 4, skip_layers: [1, 2, 3]}, and the "
        "numbers of heads it was trained with, which shapes do not record)")
    # The key lists go to the debug log only; nothing long reaches the console.
    assert all(len(r.getMessage()) < 500 for r in _console_records(caplog))
    assert len(capfd.readouterr().err) < 500
    debug = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
    assert "video_encoder.blocks.9.mlp.fc2.weight" in debug  # among the keys the checkpoint lacks

    # What the sentence says to set builds a model the checkpoint initialises.
    overrides = yaml.safe_load(str(info.value).split("(e.g. model_overrides: ")[1].split(", and the numbers")[0])
    overrides.update(video_heads=2, audio_heads=2, fusion_heads=2)  # as trained (mini["config"])
    module = FinetuneModule("base", overrides, num_classes=5, init_checkpoint=str(path))
    original = mini["pretrain"]["state_dict"]["encoder.blocks.3.attn.qkv.weight"]
    assert torch.equal(module.model.state_dict()["video_encoder.blocks.3.attn.qkv.weight"], original)


def test_a_lightning_checkpoint_of_another_size_names_the_preset_it_was_trained_with(mini, tmp_path):
    from hicmae.models import HiCMAEPretrain, ModelConfig

    overrides = {"video_dim": 64, "audio_dim": 64, "encoder_depth": 4, "skip_layers": [1, 2, 3], "video_heads": 2}
    model = HiCMAEPretrain(ModelConfig.preset("tiny", **overrides))
    path = tmp_path / "last.ckpt"  # what pretrain.py writes: the LightningModule's state and hyper-parameters
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"model_preset": "tiny", "model_overrides": overrides}}, path)
    with pytest.raises(CheckpointError) as info:
        FinetuneModule("tiny", num_classes=3, init_checkpoint=str(path))
    assert str(info.value).endswith(
        ": set model.model_preset: tiny and model.model_overrides: {video_dim: 64, audio_dim: 64, encoder_depth: 4, "
        "skip_layers: [1, 2, 3], video_heads: 2} as the run that wrote it did")


def test_a_release_of_another_size_names_the_config_in_its_header(mini, tmp_path):
    from hicmae.checkpoint import save_release
    from hicmae.models import HiCMAEClassifier, ModelConfig

    config = ModelConfig.preset("tiny", **mini["config"])
    source = HiCMAEClassifier(config, 5)
    release = save_release(source, tmp_path / "mini.safetensors")
    with pytest.raises(CheckpointError) as info:
        FinetuneModule("tiny", num_classes=5, init_checkpoint=str(release))
    message = str(info.value)
    assert message.endswith(", from the file's header)") and "video_heads: 2" in message
    overrides = yaml.safe_load(message.split("(model_overrides: ")[1].split(", from the file's header")[0])
    module = FinetuneModule("tiny", overrides, num_classes=5, init_checkpoint=str(release))
    for key, value in source.state_dict().items():
        assert torch.equal(module.model.state_dict()[key], value), key
    heads = ("video_heads", "audio_heads", "fusion_heads")  # not in the shapes, but in the header
    assert [getattr(module.config, h) for h in heads] == [getattr(config, h) for h in heads]


def test_a_fitting_checkpoint_logs_one_short_line(mini, tmp_path, caplog):
    path = tmp_path / "checkpoint-99.pth"
    torch.save({"model": mini["pretrain"]["state_dict"]}, path)
    caplog.set_level(logging.DEBUG, logger="hicmae")
    FinetuneModule("tiny", mini["config"], num_classes=5, init_checkpoint=str(path))
    [line] = [r.getMessage() for r in _console_records(caplog)]
    assert line.startswith(f"initialised HiCMAEClassifier from {path}: ")
    assert "tensors loaded; 6 missing from the checkpoint, left as initialised (video_layer_weights, " \
           "audio_layer_weights, fc_norm.weight, fc_norm.bias, head.weight, head.bias)" in line


@pytest.mark.parametrize("name,reason", [("notes.pth", "not a checkpoint (it looks like text)"),
                                         ("last.ckpt", "not a checkpoint (it looks like text)"),
                                         ("model.safetensors", "not a safetensors file (it looks like text)")])
def test_a_text_file_as_init_checkpoint_is_called_text(mini, tmp_path, name, reason):
    path = tmp_path / name
    path.write_text("model: base\nepochs: 100\n")
    with pytest.raises(CheckpointError) as info:
        FinetuneModule("tiny", mini["config"], num_classes=5, init_checkpoint=str(path))
    assert str(info.value) == f"{path}: {reason}"
