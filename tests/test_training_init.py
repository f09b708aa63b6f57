"""Fine-tuning initialised from an original .pth and from a safetensors release reproduces the weights."""

from pathlib import Path

import pytest
import torch

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
