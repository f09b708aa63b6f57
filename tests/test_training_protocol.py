"""Every test results file states its protocol, read from the run itself: which weights were tested and how
they were chosen, the views, what each metric is, the seeds, the model and the versions."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning
import torch

import hicmae
from hicmae.training import results
from hicmae.training.cli import FinetuneCLI
from training_helpers import cli_config, make_tiny_demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_tiny_demo(tmp_path_factory.mktemp("demo"), num_clips=12, num_classes=3)


def _fit(tmp_path, demo, name: str, data: dict, seed: int = 0, max_epochs: int = 2) -> tuple[FinetuneCLI, dict]:
    run = tmp_path / name
    csv = str(demo / "finetune.csv")
    cfg = cli_config(tmp_path, name, {"warmup_steps": 1, "results_dir": str(run / "results")},
                     {"train_manifest": csv, "test_manifest": csv, "fold": 0, "rand_augment": None,
                      "test_num_segment": 2, "test_num_crop": 1, **data},
                     {"max_epochs": max_epochs, "default_root_dir": str(run)})
    cli = FinetuneCLI(args=["fit", "--config", cfg, "--seed_everything", str(seed)])
    return cli, json.loads((run / "results" / "metrics.json").read_text())


def test_metrics_json_states_the_protocol_of_the_run(demo, tmp_path):
    cli, out = _fit(tmp_path, demo, "ft", {"val_manifest": str(demo / "finetune.csv"), "seed": 5,
                                           "eval_gain_augment": False}, seed=3)
    p = out["protocol"]
    best = cli.trainer.checkpoint_callback
    ckpt = p["checkpoint"]
    # The tested file is the callback's best on val/war, and the validation split is the test split.
    assert ckpt["selection"] == "best" and ckpt["monitor"] == "val/war" and ckpt["mode"] == "max"
    assert ckpt["tested"] == best.best_model_path and ckpt["score"] == pytest.approx(float(best.best_model_score))
    assert ckpt["selected_on"] == "test" and ckpt["statement"].startswith("selected on test")
    assert ckpt["global_step"] == torch.load(best.best_model_path, weights_only=True)["global_step"]
    assert out["model_selection"].startswith("selected on test") and out["model_selection"].endswith(
        best.best_model_path)
    assert p["views"] == {"test_num_segment": 2, "test_num_crop": 1, "per_clip": 2, "observed_per_clip": [2, 2],
                          "merge": results.VIEW_MERGE["classification"]}
    assert set(p["metrics"]) == set(out["metrics"]) == {"war", "uar", "wf1", "mf1"}
    assert "macro recall" in p["metrics"]["uar"] and "accuracy" in p["metrics"]["war"]
    assert p["seed"] == {"seed_everything": 3, "data_seed": 5}
    assert p["eval_gain_augment"] is False
    model = p["model"]
    assert (model["preset"], model["num_classes"], model["modalities"], model["linear_probe"]) == (
        "tiny", 3, ["video", "audio"], False)
    assert model["parameters"] == sum(q.numel() for q in cli.model.model.parameters())
    assert p["data"]["fold"] == 0 and p["trainer"] == {"precision": "32-true", "world_size": 1, "max_epochs": 2}
    assert p["versions"]["hicmae"] == hicmae.__version__ and p["versions"]["torch"] == torch.__version__
    assert p["versions"]["pytorch_lightning"] == pytorch_lightning.__version__

    fields = results.protocol_fields(p)
    assert fields["views"].startswith("2 temporal segments x 1 spatial crops = 2 per clip (seen: 2)")
    assert fields["seed"] == "seed_everything 3, data.seed 5"
    assert fields["eval_gain_augment"].startswith("false")
    assert fields["tested"] == f"best: {Path(best.best_model_path).name} (step {ckpt['global_step']})"
    assert "selected on test" in results.protocol_brief(p)

    # Testing the run's last checkpoint later says so: the selection callback's state comes with the file.
    run = Path(cli.trainer.default_root_dir)
    last = run / "checkpoints" / "last.ckpt"
    FinetuneCLI(args=["test", "--config", str(tmp_path / "ft.yaml"), "--ckpt_path", str(last)])
    tested = json.loads((run / "results" / "metrics.json").read_text())["protocol"]["checkpoint"]
    assert tested["selection"] == "last" and tested["tested"] == str(last) and tested["selected_on"] is None
    assert tested["statement"] == "last epoch's weights (not selected on any split)"


def test_without_validation_the_last_weights_are_tested_and_said_to_be(demo, tmp_path):
    cli, out = _fit(tmp_path, demo, "noval", {}, max_epochs=1)
    ckpt = out["protocol"]["checkpoint"]
    assert ckpt["selection"] == "last" and ckpt["tested"] is None
    assert ckpt["global_step"] == cli.trainer.global_step and ckpt["epoch"] == 0
    assert ckpt["statement"] == "last epoch's weights (no validation split)"
    assert out["model_selection"].endswith("weights: in memory at test time")


def _trainer(ckpt_path, callbacks=(), global_step=0):
    return SimpleNamespace(ckpt_path=ckpt_path, checkpoint_callbacks=list(callbacks), global_step=global_step,
                           current_epoch=0)


def _callback(best, last=""):
    return SimpleNamespace(monitor="val/war", mode="max", best_model_path=str(best), best_model_score=torch.tensor(7.0),
                           last_model_path=str(last))


def test_a_byte_identical_validation_file_is_the_test_split(tmp_path):
    # MSP-IMPROV's val.csv is test.csv under another name: selecting on it is selecting on test.
    test, same, other = tmp_path / "test.csv", tmp_path / "val.csv", tmp_path / "val2.csv"
    test.write_text("video,label\na.mp4,0\n")
    same.write_text("video,label\na.mp4,0\n")
    other.write_text("video,label\nb.mp4,0\n")
    best = tmp_path / "best-3.ckpt"
    for val, split in ((test, "test"), (same, "test"), (other, "validation")):
        record = results.checkpoint_record(_trainer(str(best), [_callback(best)]),
                                           {"val_manifest": str(val), "test_manifest": str(test)},
                                           {"epoch": 3, "global_step": 30})
        assert (record["selection"], record["selected_on"], record["global_step"]) == ("best", split, 30)
        assert record["statement"].startswith(f"selected on {split}")


def test_weights_from_elsewhere_or_untrained_are_named_as_such(tmp_path):
    given = results.checkpoint_record(_trainer(str(tmp_path / "someone.ckpt"), [_callback(tmp_path / "b.ckpt")]), {})
    assert given["selection"] == "given" and "not known" in given["statement"]
    untrained = results.checkpoint_record(_trainer(None), {"val_manifest": "v.csv"})
    assert untrained["selection"] == "initial" and untrained["statement"].startswith("no training in this run")


def test_metric_definitions_name_what_was_measured_and_the_dimensions_once():
    keys = ["ccc", "pcc", "mae", "rmse", "ccc_arousal", "ccc_valence", "pcc_arousal", "pcc_valence"]
    defs = results.metric_definitions("regression", keys)
    assert set(defs) == {"ccc", "pcc", "mae", "rmse", "ccc_<dimension>", "pcc_<dimension>"}
    assert "unbiased" in defs["ccc"] and "Pearson" in defs["pcc"]
    assert set(results.metric_definitions("classification", ["war", "uar"])) == {"war", "uar"}


def test_views_and_seeds_not_set_by_the_run_are_said_to_be_unset():
    # A module tested on plain DataLoaders, without seed_everything: only the views seen are known.
    fields = results.protocol_fields({"views": results.views_record({}, {"num_views": torch.tensor([3.0, 3.0])},
                                                                    "regression"),
                                      "seed": {"seed_everything": None, "data_seed": None}})
    assert fields["views"] == ("views per clip not set by a hicmae data module (seen: 3); "
                               "raw outputs averaged over the clip's views")
    assert fields["seed"] == "seed_everything not set, data.seed not set"


def test_a_missing_protocol_is_said_to_be_missing_not_invented():
    fields = results.protocol_fields(None)
    assert set(fields.values()) == {"not recorded"}
    assert set(fields) == {"checkpoint", "tested", "views", "metrics", "seed", "eval_gain_augment", "model",
                           "training", "versions"}
