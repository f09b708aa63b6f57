"""Every shipped YAML config parses through its entry point and describes a valid model."""

from pathlib import Path

import pytest
import yaml

from hicmae.models import ModelConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PRETRAIN = sorted((CONFIGS / "pretrain").glob("*.yaml")) + [CONFIGS / "demo" / "pretrain.yaml"]
FINETUNE = sorted((CONFIGS / "finetune").glob("*.yaml")) + [CONFIGS / "demo" / "finetune.yaml"]


@pytest.mark.parametrize("path", PRETRAIN + FINETUNE, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_parses_and_prints(path, capsys):
    from hicmae.training.cli import FinetuneCLI, PretrainCLI

    cli = PretrainCLI if path in PRETRAIN else FinetuneCLI
    with pytest.raises(SystemExit) as done:
        cli(args=["fit", "--config", str(path), "--print_config"])
    assert done.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    model = printed["model"]
    ModelConfig.preset(model["model_preset"], **(model.get("model_overrides") or {}))  # raises if invalid
    # Sizes are not set by hand: the CLI links them from the model config.
    assert "img_size" not in printed["data"] and "audio_frames" not in printed["data"]
    if path in FINETUNE:
        assert model["task"] in ("classification", "multilabel", "regression")


def test_one_finetuning_config_per_dataset():
    names = {p.stem for p in (CONFIGS / "finetune").glob("*.yaml")}
    assert names == {"avcaffe", "crema_d", "dfew", "iemocap", "mafw", "mer_multi", "msp_improv", "ravdess",
                     "werewolf_xl"}
