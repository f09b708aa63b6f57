"""`hicmae export`: a training checkpoint becomes a release that rebuilds the same model."""

import pytest
import pytorch_lightning as pl
import torch

from hicmae.checkpoint import load_release, read_release
from hicmae.cli import main
from hicmae.training import FinetuneModule, PretrainModule
from training_helpers import TINY, SyntheticClips, loader, tiny_config


def _fit(module, tmp_path, data, **kw):
    trainer = pl.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, **kw)
    trainer.fit(module, loader(data, shuffle=True))
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.mark.parametrize("linear_probe", [False, True], ids=["finetune", "linear-probe"])
def test_classifier_checkpoint_exports_to_an_equivalent_release(tmp_path, linear_probe):
    pl.seed_everything(0)
    module = FinetuneModule("tiny", TINY, num_classes=3, linear_probe=linear_probe, base_lr=0.5, warmup_steps=0)
    module.class_names = ["calm", "angry", "sad"]
    ckpt = _fit(module, tmp_path, SyntheticClips(8, tiny_config()), max_epochs=2)
    out = tmp_path / "release.safetensors"
    assert main(["export", str(ckpt), str(out)]) == 0
    release = load_release(out)
    _, header = read_release(out, weights=False)
    assert header["metadata"]["class_names"] == ["calm", "angry", "sad"]
    assert header["metadata"]["linear_probe"] is linear_probe
    module.eval()
    batch = next(iter(loader(SyntheticClips(4, tiny_config(), seed=3))))
    with torch.no_grad():
        # A linear probe's BatchNorm is folded into the head: same outputs, plain Linear head.
        torch.testing.assert_close(release(batch["video"], batch["audio"]), module(batch["video"], batch["audio"]),
                                   atol=1e-5, rtol=1e-5)
    assert isinstance(release.head, torch.nn.Linear)


def test_pretraining_checkpoint_exports_and_bad_input_is_refused(tmp_path, capsys):
    pl.seed_everything(0)
    module = PretrainModule("tiny", TINY, warmup_steps=0, probe_num_classes=0)
    ckpt = _fit(module, tmp_path, SyntheticClips(4, tiny_config(), pretrain=True), max_steps=1)
    out = tmp_path / "pre.safetensors"
    assert main(["export", str(ckpt), str(out)]) == 0
    release = load_release(out)
    for key, value in module.model.state_dict().items():
        assert torch.equal(release.state_dict()[key], value), key
    (tmp_path / "junk.ckpt").write_text("junk")
    assert main(["export", str(tmp_path / "junk.ckpt"), str(tmp_path / "x.safetensors")]) == 2
    assert "junk.ckpt" in capsys.readouterr().err


@pytest.mark.parametrize("content,reason", [
    ("checkpoint: last\n", "not a checkpoint (it looks like text)"),
    ("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 9\n",
     "not a checkpoint (it looks like a Git LFS pointer, not the file itself (fetch it with `git lfs pull`))"),
])
def test_export_of_a_file_that_is_not_a_checkpoint_says_what_it_is(tmp_path, capsys, content, reason):
    path = tmp_path / "last.ckpt"
    path.write_text(content)
    assert main(["export", str(path), str(tmp_path / "out.safetensors")]) == 2
    assert capsys.readouterr().err == f"error: {path}: {reason}\n"
    assert not (tmp_path / "out.safetensors").exists()


def test_export_of_a_release_says_it_needs_a_training_checkpoint(tmp_path, capsys):
    from hicmae.checkpoint import save_release
    from hicmae.models import HiCMAEClassifier

    release = save_release(HiCMAEClassifier(tiny_config(), 2), tmp_path / "model.safetensors")
    assert main(["export", str(release), str(tmp_path / "again.safetensors")]) == 2
    assert capsys.readouterr().err == (f"error: {release}: a safetensors file, not a training checkpoint: "
                                       "`hicmae export` takes the .ckpt that pretrain.py or finetune.py wrote, "
                                       "or an original .pth\n")


# ---------------------------------------------------------------------------------------------- release folders
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    return _classifier_run(tmp_path_factory.mktemp("run"))


def _copy_run(trained_run, tmp_path):
    """The module's run, copied so that a test may change it: (module, checkpoint in the copy)."""
    import shutil

    module, ckpt = trained_run
    shutil.copytree(ckpt.parent.parent, tmp_path / "run")
    return module, tmp_path / "run" / "checkpoints" / ckpt.name


def _classifier_run(tmp_path):
    """A fine-tuned checkpoint at <run>/checkpoints/best.ckpt and its test results at <run>/results/best/."""
    from hicmae.training.results import write_results

    pl.seed_everything(0)
    module = FinetuneModule("tiny", TINY, num_classes=3, base_lr=0.5, warmup_steps=0)
    module.class_names = ["calm", "angry", "sad"]
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    trained = _fit(module, tmp_path, SyntheticClips(8, tiny_config()), max_epochs=1)
    ckpt = trained.rename(run / "checkpoints" / "best.ckpt")
    merged = {"scores": torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]]), "targets": torch.tensor([0, 2]),
              "index": torch.tensor([0, 1]), "num_views": torch.tensor([2, 2])}
    protocol = {"checkpoint": {"tested": str(ckpt), "selection": "best", "statement": "selected on validation"},
                "views": {"test_num_segment": 2, "test_num_crop": 1, "per_clip": 2, "merge": "softmax, mean"},
                "data": {"train_manifest": "train.csv", "test_manifest": "test.csv", "fold": 1}}
    write_results(run / "results" / "best", merged, {"uar": 66.67, "war": 50.0}, task="classification",
                  class_names=module.class_names, num_classes=3, protocol=protocol)
    return module, ckpt


def test_export_writes_a_release_folder_with_the_runs_metrics_in_the_card(trained_run, tmp_path, capsys):
    from hicmae.hub import load_classifier

    module, ckpt = _copy_run(trained_run, tmp_path)
    out = tmp_path / "crema-d-tiny"
    assert main(["export", str(ckpt), str(out), "--license", "cc-by-4.0", "--dataset", "CREMA-D"]) == 0
    assert capsys.readouterr().out == f"wrote {out}\n"
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "checksums.sha256", "config.json",
                                                     "model.safetensors"]
    model, meta = load_classifier(out)
    assert meta["class_names"] == ["calm", "angry", "sad"] and meta["license"] == "cc-by-4.0"
    assert meta["metrics"]["values"] == {"uar": 66.67, "war": 50.0} and meta["metrics"]["num_clips"] == 2
    assert meta["training"]["recipe"]["model_preset"] == "tiny" and meta["training"]["epoch"] == 1
    card = (out / "README.md").read_text()
    assert "license: cc-by-4.0" in card and "| uar | 66.67 |" in card and "selected on validation" in card
    assert "`train.csv`" in card and "CREMA-D" in card
    # The folder, the training checkpoint itself and the exported model give the same outputs.
    from_ckpt, ckpt_meta = load_classifier(ckpt)
    assert ckpt_meta["class_names"] == meta["class_names"] and "metrics" not in ckpt_meta
    module.eval()
    batch = next(iter(loader(SyntheticClips(4, tiny_config(), seed=3))))
    with torch.no_grad():
        expected = module(batch["video"], batch["audio"])
        for m in (model, from_ckpt):
            torch.testing.assert_close(m(batch["video"], batch["audio"]), expected, rtol=0, atol=0)


def test_metrics_of_another_checkpoint_are_not_put_in_the_card(trained_run, tmp_path):
    from hicmae.hub import load_classifier

    _, ckpt = _copy_run(trained_run, tmp_path)
    other = ckpt.with_name("last.ckpt")
    other.write_bytes(ckpt.read_bytes())  # last.ckpt has no results of its own
    out = tmp_path / "rel"
    assert main(["export", str(other), str(out)]) == 0
    assert "metrics" not in load_classifier(out)[1]
    assert "No test results were found" in (out / "README.md").read_text()
    explicit = tmp_path / "run" / "results" / "best" / "metrics.json"
    assert main(["export", str(other), str(out), "--metrics", str(explicit)]) == 0  # replaces the earlier release
    assert load_classifier(out)[1]["metrics"]["values"]["uar"] == 66.67


def test_pretraining_checkpoint_exports_to_a_folder(tmp_path):
    from hicmae.hub import load_pretrain

    pl.seed_everything(0)
    module = PretrainModule("tiny", TINY, warmup_steps=0, probe_num_classes=0)
    ckpt = _fit(module, tmp_path, SyntheticClips(4, tiny_config(), pretrain=True), max_steps=1)
    assert main(["export", str(ckpt), str(tmp_path / "pre")]) == 0
    model, meta = load_pretrain(tmp_path / "pre")
    assert meta["task"] == "pretrain" and "feature-extraction" in (tmp_path / "pre" / "README.md").read_text()
    for key, value in module.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_original_pth_exports_to_a_folder_and_a_file(tmp_path, capsys):
    import argparse
    import json

    from hicmae.hub import load_classifier
    from hicmae.models import HiCMAEClassifier
    from test_checkpoint import to_original_names

    torch.manual_seed(0)
    model = HiCMAEClassifier(tiny_config(), 4).eval()
    pth = tmp_path / "checkpoint-best.pth"
    torch.save({"model": to_original_names(model.state_dict()), "epoch": "best",
                "args": argparse.Namespace(input_size=32, num_frames=4, sampling_rate=2)}, pth)
    # Width 32 is no preset's: the error says what to give.
    assert main(["export", str(pth), str(tmp_path / "x")]) == 2
    assert "match no preset" in capsys.readouterr().err
    overrides = {k: list(v) if isinstance(v, tuple) else v for k, v in TINY.items()}
    for out in (tmp_path / "orig", tmp_path / "orig.safetensors"):
        assert main(["export", str(pth), str(out), "--preset", "tiny", "--model-overrides", json.dumps(overrides),
                     "--class-names", "a,b,c,d"]) == 0
        loaded, meta = load_classifier(out)
        assert meta["class_names"] == ["a", "b", "c", "d"] and meta["preprocessing"]["sampling_rate"] == 2
        assert meta["source"] == "checkpoint-best.pth"
        v, a = torch.randn(2, 3, 4, 32, 32), torch.randn(2, 1, 32, 32)
        torch.testing.assert_close(loaded(v, a), model(v, a), rtol=0, atol=0)


def test_export_can_push_the_folder_to_the_hub(trained_run, tmp_path, monkeypatch, capsys):
    import argparse

    from huggingface_hub import HfApi

    _, ckpt = _copy_run(trained_run, tmp_path)
    sent = {}
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: sent.setdefault("create", (repo_id, kw)))

    def upload_folder(self, *, repo_id, folder_path, **kw):
        sent["files"] = sorted(p.name for p in folder_path.iterdir())
        return argparse.Namespace(commit_url=f"https://hub.invalid/{repo_id}/commit/abc")

    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    assert main(["export", str(ckpt), str(tmp_path / "rel"), "--push-to-hub", "me/tiny", "--private"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "pushed to https://hub.invalid/me/tiny/commit/abc"
    assert sent["create"] == ("me/tiny", {"private": True, "exist_ok": True})
    assert sent["files"] == ["README.md", "checksums.sha256", "config.json", "model.safetensors"]
    assert main(["export", str(ckpt), str(tmp_path / "r.safetensors"), "--push-to-hub", "me/tiny"]) == 2
