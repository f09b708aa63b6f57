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
                                       "`hicmae export` takes the .ckpt that pretrain.py or finetune.py wrote\n")
