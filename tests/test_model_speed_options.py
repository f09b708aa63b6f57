"""The training-step speed options keep the original's mathematics (issue 11, "Training step, same mathematics").

- visible-only patch embedding equals embedding every patch and dropping the masked ones (outputs, loss and
  gradients; and the original's fixtures);
- fused AdamW keeps the param groups and the lr rule (lr = base_lr x global batch / 256 at batch 40 to 256);
- no host synchronisation inside the pretraining step, except on log batches;
- the compile option's wiring, and ``precision: auto``.
"""

from __future__ import annotations

import contextlib
import traceback
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from hicmae.checkpoint import convert_original_state_dict
from hicmae.losses import pretrain_losses
from hicmae.masking import pretrain_masks
from hicmae.models import HiCMAEPretrain, ModelConfig
from hicmae.models.pretrain import split_by_mask
from hicmae.training import PretrainModule
from hicmae.training.base import ScheduledModule, Trainer, resolve_precision
from hicmae.training.optim import build_optimizer, pretrain_param_groups
from training_helpers import TINY, SyntheticClips, loader, tiny_config

FIXTURES = Path(__file__).resolve().parent / "fixtures"


# ---------------------------------------------------------------------- visible-only patch embedding
def _count_conv_calls(model: HiCMAEPretrain) -> list[int]:
    calls = [0]
    for encoder in (model.video_encoder, model.audio_encoder):
        encoder.patch_embed.proj.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_visible_patch_embedding_equals_embedding_all_on_the_tiny_preset():
    """Full tiny preset (16 x 160 x 160 video, 256 x 128 fbank, paper masks): encoder outputs, skip layers, the
    full pretraining loss and every parameter's gradient agree with the embed-all path."""
    torch.manual_seed(0)
    config = ModelConfig.preset("tiny")
    ours = HiCMAEPretrain(config, visible_patch_embed=True)
    original = HiCMAEPretrain(config, visible_patch_embed=False)
    original.load_state_dict(ours.state_dict())
    conv_calls = _count_conv_calls(ours)
    video = torch.randn(2, 3, config.num_frames, config.img_size, config.img_size)
    audio = torch.randn(2, 1, *config.audio_size)
    vm, am = pretrain_masks(config, batch=2, generator=torch.Generator().manual_seed(3))
    v_keep, _ = split_by_mask(vm, config.num_video_masked)
    a_keep, _ = split_by_mask(am, config.num_audio_masked)

    with torch.no_grad():
        for name, keep, x in (("video", v_keep, video), ("audio", a_keep, audio)):
            enc_ours, enc_orig = getattr(ours, f"{name}_encoder"), getattr(original, f"{name}_encoder")
            out_ours, skips_ours = enc_ours(x, keep, config.skip_layers)
            out_orig, skips_orig = enc_orig(x, keep, config.skip_layers)
            assert out_ours.shape == (2, keep.shape[1], enc_ours.norm.normalized_shape[0])
            torch.testing.assert_close(out_ours, out_orig, atol=1e-5, rtol=1e-5)
            for a, b in zip(skips_ours, skips_orig):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert conv_calls[0] == 0, "the visible path must not run the convolution over every patch"

    losses = {}
    for name, model in (("ours", ours), ("original", original)):
        terms = pretrain_losses(model(video, vm, audio, am), video, audio, vm, am, config)
        terms["loss"].backward()
        losses[name] = terms
    for key in ("loss", "loss_video", "loss_audio", "loss_contrastive"):
        torch.testing.assert_close(losses["ours"][key], losses["original"][key], atol=1e-6, rtol=1e-5, msg=key)
    for (name, p), q in zip(ours.named_parameters(), original.parameters()):
        assert p.grad is not None and q.grad is not None, name
        torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-4, msg=name)
    # the patch embeddings get gradient from the visible patches only, in both paths
    assert ours.video_encoder.patch_embed.proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("visible", [True, False], ids=["visible", "embed_all"])
def test_both_patch_embedding_paths_equal_the_original_fixture(visible):
    data = torch.load(FIXTURES / "mini_a.pt", weights_only=True)
    config = ModelConfig(**data["config"])
    _, h, w = config.video_grid
    config = config.replace(video_mask_ratio=data["meta"]["video_masked_per_frame"] / (h * w),
                            audio_mask_ratio=data["meta"]["audio_masked"] / config.num_audio_tokens)
    pre = data["pretrain"]
    model = HiCMAEPretrain(config, visible_patch_embed=visible).eval()
    model.load_state_dict(convert_original_state_dict(pre["state_dict"], "pretrain"), strict=True)
    conv_calls = _count_conv_calls(model)
    with torch.no_grad():
        out = model(pre["video"], pre["video_mask"], pre["audio"], pre["audio_mask"])
    assert conv_calls[0] == (0 if visible else 2)
    for ours, theirs in ((out.pred_video, pre["pred_video"]), (out.pred_audio, pre["pred_audio"]),
                         (torch.stack(out.logits_video_to_audio), pre["logits_video_to_audio"])):
        err = ((ours - theirs).abs() / theirs.abs().clamp(min=1.0)).max().item()
        assert err <= 1e-5, err


def test_embed_tokens_picks_any_positions_of_any_layout():
    """Per-row random positions (not tubes) and a non-contiguous input: the index arithmetic is the conv's."""
    torch.manual_seed(0)
    config = tiny_config()
    model = HiCMAEPretrain(config)
    video = torch.randn(3, config.num_frames, 3, config.img_size, config.img_size).transpose(1, 2)  # not contiguous
    audio = torch.randn(3, 1, *config.audio_size)
    assert not video.is_contiguous()
    for encoder, x, n in ((model.video_encoder, video, config.num_video_tokens),
                          (model.audio_encoder, audio, config.num_audio_tokens)):
        keep = torch.stack([torch.randperm(n)[: n // 3] for _ in range(3)])  # unsorted, different per row
        dense = encoder.patch_embed(x)
        picked = encoder.patch_embed.embed_tokens(x, keep)
        torch.testing.assert_close(picked, torch.gather(dense, 1, keep.unsqueeze(-1).expand(-1, -1, dense.shape[-1])),
                                   atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="token grid"):
        model.video_encoder.embed(torch.randn(1, 3, config.num_frames, 64, 64), keep[:1, :2])


def test_visible_patch_embedding_is_a_module_option_and_on_by_default():
    assert PretrainModule("tiny", TINY).model.video_encoder.visible_patch_embed is True
    module = PretrainModule("tiny", TINY, visible_patch_embed=False)
    assert not module.model.video_encoder.visible_patch_embed and not module.model.audio_encoder.visible_patch_embed


# ---------------------------------------------------------------------- fused AdamW, param groups, lr rule
def test_fused_adamw_keeps_param_groups_and_takes_the_same_steps():
    torch.manual_seed(0)
    model = HiCMAEPretrain(tiny_config())
    groups = pretrain_param_groups(model, 0.05)
    fused = build_optimizer(groups, 1e-3, (0.9, 0.95), fused=True)
    plain = build_optimizer(groups, 1e-3, (0.9, 0.95), fused=False)
    assert fused.defaults["fused"] is True and not plain.defaults.get("fused")
    for a, b in zip(fused.param_groups, plain.param_groups):
        assert (a["name"], a["weight_decay"], a["lr_scale"], a["lr"]) == (b["name"], b["weight_decay"], b["lr_scale"],
                                                                          b["lr"])
        assert [id(p) for p in a["params"]] == [id(p) for p in b["params"]]
    assert (fused.param_groups[0]["weight_decay"], fused.param_groups[1]["weight_decay"]) == (0.05, 0.0)

    # Same updates: two copies of the parameters, the same gradients, three steps.
    params = [p for g in groups for p in g["params"]]
    copy = [p.detach().clone().requires_grad_() for p in params]
    for ps, fuse in ((params, True), (copy, False)):
        opt = build_optimizer([{"params": ps[:10], "weight_decay": 0.05, "lr_scale": 1.0},
                               {"params": ps[10:], "weight_decay": 0.0, "lr_scale": 0.5}], 1e-2, (0.9, 0.95),
                              fused=fuse)
        for step in range(3):
            for i, p in enumerate(ps):
                p.grad = torch.sin(torch.arange(p.numel(), dtype=torch.float32) + step + i).view_as(p)
            opt.step()
    for p, q in zip(params, copy):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)


def test_fused_adamw_auto_means_fused_on_cuda_only(monkeypatch):
    import hicmae.training.optim as optim

    on = lambda kind: SimpleNamespace(device=torch.device(kind))  # noqa: E731
    assert optim.all_on_cuda([on("cuda"), on("cuda")]) is True
    assert optim.all_on_cuda([on("cuda"), on("cpu")]) is False and optim.all_on_cuda([]) is False
    model = torch.nn.Linear(2, 2)
    groups = [{"params": list(model.parameters()), "weight_decay": 0.0, "lr_scale": 1.0}]
    assert not build_optimizer(groups, 1e-3, (0.9, 0.95)).defaults.get("fused")  # CPU parameters: not fused
    monkeypatch.setattr(optim, "all_on_cuda", lambda params: True)  # as if on a GPU (fused runs on the CPU too)
    assert build_optimizer(groups, 1e-3, (0.9, 0.95)).defaults["fused"] is True
    assert not build_optimizer(groups, 1e-3, (0.9, 0.95), fused=False).defaults.get("fused")


@pytest.mark.parametrize("fused", [True, False])
def test_logged_grad_norm_is_unscaled_with_a_grad_scaler_and_fused_adamw(fused):
    """Under 16-mixed, Lightning leaves the unscaling to an optimiser that does it in its step (fused AdamW):
    the logged gradient norm is divided by the scale on the device; a plain AdamW sees unscaled gradients."""
    module = PretrainModule("tiny", TINY)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale(torch.ones(()))  # creates the scale tensor, as the first scaled backward does
    module._trainer = SimpleNamespace(precision_plugin=SimpleNamespace(scaler=scaler), global_step=0)
    logged = {}
    module.log = lambda name, value, **kw: logged.__setitem__(name, value)
    params = list(module.model.parameters())
    true_grads = [torch.full_like(p, 0.01 * (i % 7 + 1)) for i, p in enumerate(params)]
    for p, g in zip(params, true_grads):
        p.grad = g * 1024.0 if fused else g.clone()  # a plain optimiser gets them unscaled by Lightning first
    optimizer = build_optimizer(pretrain_param_groups(module.model, 0.05), 1e-3, (0.9, 0.95), fused=fused)
    module.on_before_optimizer_step(optimizer)
    expected = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in true_grads]))
    torch.testing.assert_close(logged["train/grad_norm"], expected, rtol=1e-5, atol=0)
    assert isinstance(logged["train/lr"], torch.Tensor) and logged["train/lr"].device.type == "cpu"


@pytest.mark.parametrize("batch", [40, 80, 128, 256])
def test_per_gpu_batches_beyond_40_scale_the_lr_linearly(tmp_path, batch):
    """lr = base_lr x global batch / 256 (and min_lr alike), read from the per-device loader; fused on request."""
    pl.seed_everything(0)
    module = PretrainModule("tiny", TINY, base_lr=3e-4, min_lr=1e-5, warmup_steps=0, fused_adamw=True)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, loader(SyntheticClips(batch, tiny_config(), pretrain=True), batch_size=batch))
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.peak_lr == pytest.approx(3e-4 * batch / 256)
    assert scheduler.min_lr == pytest.approx(1e-5 * batch / 256)
    optimizer = trainer.optimizers[0]
    assert optimizer.defaults["fused"] is True
    assert [g["name"] for g in optimizer.param_groups] == ["decay", "no_decay"]


# ---------------------------------------------------------------------- no host synchronisation in the step
class HostTensor(torch.Tensor):
    """What ScheduledModule.host_scalar makes in this test: a tensor known to live on the host."""


_DATA_DEPENDENT = {"aten._local_scalar_dense.default", "aten.nonzero.default", "aten.masked_select.default",
                   "aten._unique2.default", "aten.unique_dim.default", "aten.unique_consecutive.default",
                   "aten.repeat_interleave.Tensor"}


class SyncDetector(TorchDispatchMode):
    """Records what would synchronise a GPU with the host, on a CPU run where every tensor is a CPU tensor.

    - reading a value back: ``item``, ``bool``, ``float``, ``int``, ``tolist`` (``aten._local_scalar_dense``),
      and ops whose output size depends on values (``nonzero``, boolean indexing, ``unique``...);
    - copies to the host (``Tensor.cpu``, ``Tensor.numpy``);
    - tensors made from host values on the module's device (``torch.tensor(..., device=...)``, ``new_tensor``),
      a blocking host-to-device copy.
    Tensors made by ``ScheduledModule.host_scalar`` are host tensors, exempt.
    """

    def __init__(self):
        super().__init__()
        self.events: list[tuple[object, str, str]] = []
        self.where: object = "setup"
        self.active = False

    def record(self, what: str) -> None:
        if self.active:
            self.events.append((self.where, what, "".join(traceback.format_stack(limit=12)[:-2])))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if str(func) in _DATA_DEPENDENT and not any(isinstance(a, HostTensor) for a in args):
            self.record(str(func))
        if str(func) == "aten.index.Tensor" and any(i is not None and i.dtype == torch.bool for i in args[1]):
            self.record("boolean indexing")
        return func(*args, **kwargs)

    @contextlib.contextmanager
    def patched(self, monkeypatch):
        detector = self
        real_tensor, real_new_tensor = torch.tensor, torch.Tensor.new_tensor

        def tensor(data, *a, **kw):
            if kw.get("device") is not None and not isinstance(data, torch.Tensor):
                detector.record("torch.tensor(host data, device=...)")
            return real_tensor(data, *a, **kw)

        def new_tensor(self, *a, **kw):
            detector.record("Tensor.new_tensor")
            return real_new_tensor(self, *a, **kw)

        def host_copy(name):
            real = getattr(torch.Tensor, name)

            def wrapped(self, *a, **kw):
                if not isinstance(self, HostTensor):
                    detector.record(f"Tensor.{name}")
                return real(self, *a, **kw)
            return wrapped

        monkeypatch.setattr(torch, "tensor", tensor)
        monkeypatch.setattr(torch.Tensor, "new_tensor", new_tensor)
        for name in ("cpu", "numpy", "tolist"):
            monkeypatch.setattr(torch.Tensor, name, host_copy(name))
        monkeypatch.setattr(ScheduledModule, "host_scalar",
                            staticmethod(lambda v: real_tensor(float(v), dtype=torch.float32).as_subclass(HostTensor)))
        with self:
            yield self


class _Where(pl.Callback):
    def __init__(self, detector: SyncDetector):
        self.detector = detector

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.detector.where = trainer.fit_loop.total_batch_idx
        self.detector.active = True

    def on_train_epoch_end(self, trainer, pl_module):
        self.detector.where = "epoch end"


def test_the_detector_sees_host_syncs(monkeypatch):
    detector = SyncDetector()
    with detector.patched(monkeypatch):
        detector.active = True
        x = torch.ones(3)
        x.sum().item(), bool(x.any()), float(x[0]), x.tolist()
        reads = [what for _, what, _ in detector.events]
        x[x > 0], x.cpu(), torch.tensor(1.0, device="cpu")
        seen = len(detector.events)
        ScheduledModule.host_scalar(2.0).item()  # a host tensor: exempt
        assert len(detector.events) == seen
    assert reads.count("aten._local_scalar_dense.default") == 3 and "Tensor.tolist" in reads
    assert {"boolean indexing", "Tensor.cpu", "torch.tensor(host data, device=...)"} <= {
        what for _, what, _ in detector.events}


@pytest.mark.parametrize("masks_in_batch", [True, False], ids=["masks_from_loader", "masks_drawn_on_device"])
def test_no_host_sync_in_the_pretraining_step_outside_log_batches(tmp_path, monkeypatch, masks_in_batch):
    """A real Trainer (progress bar on, loggers on) for 8 batches, logging every 4: value reads, host copies
    and host-to-device copies happen only on the log batches (3 and 7) and at the end of the epoch. The first
    batch may make the per-device constants once. AdamW is the fused kernel, the default on a GPU (torch's
    other AdamW kernels read their step counters, which they keep on the host even for GPU parameters)."""
    pl.seed_everything(0)
    data = SyntheticClips(16, tiny_config(), pretrain=masks_in_batch)
    module = PretrainModule("tiny", TINY, warmup_steps=2, probe_num_classes=3, fused_adamw=True)
    detector = SyncDetector()
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, log_every_n_steps=4, limit_val_batches=0,
                         logger=pl.loggers.CSVLogger(tmp_path), enable_checkpointing=False, enable_progress_bar=True,
                         enable_model_summary=False, callbacks=[_Where(detector)])
    with detector.patched(monkeypatch):
        trainer.fit(module, loader(data, batch_size=2))
    assert trainer.global_step == 8
    by_batch: dict = {}
    for where, what, stack in detector.events:
        by_batch.setdefault(where, []).append((what, stack))
    unexpected = {k: v for k, v in by_batch.items() if k not in (0, 3, 7, "epoch end")}
    assert not unexpected, "host syncs outside log batches:\n" + "\n".join(
        f"batch {k}: {what}\n{stack}" for k, v in unexpected.items() for what, stack in v[:2])
    # The detector is live: the log batches do read values back (logs written, loss guard checked).
    assert 3 in by_batch and 7 in by_batch
    assert "train/loss_step" in (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").read_text()


# ---------------------------------------------------------------------- torch.compile option
def _module_with_accelerator(accelerator, **kw) -> PretrainModule:
    module = PretrainModule("tiny", TINY, **kw)
    module._trainer = SimpleNamespace(accelerator=accelerator)
    return module


def test_compile_defaults_to_on_for_a_gpu_and_off_for_the_cpu():
    from pytorch_lightning.accelerators import CPUAccelerator, CUDAAccelerator

    assert _module_with_accelerator(CUDAAccelerator()).should_compile() is True
    assert _module_with_accelerator(CPUAccelerator()).should_compile() is False
    assert _module_with_accelerator(CPUAccelerator(), compile=True).should_compile() is True
    assert _module_with_accelerator(CUDAAccelerator(), compile=False).should_compile() is False


def test_compile_option_routes_the_step_through_torch_compile(tmp_path, monkeypatch):
    compiled = []

    def fake_compile(fn, **kw):
        def run(*args):
            compiled.append(kw)
            return fn(*args)
        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    module = PretrainModule("tiny", TINY, warmup_steps=0, compile=True, compile_mode="max-autotune")
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, loader(SyntheticClips(4, tiny_config(), pretrain=True), batch_size=2))
    assert module.compiled and compiled == [{"mode": "max-autotune"}] * 2
    assert set(module.state_dict()) == set(PretrainModule("tiny", TINY).state_dict())  # names unchanged


def test_forward_and_loss_compile_as_one_graph():
    """The compiled function (model + targets + losses) has no graph break (fullgraph raises on one)."""
    torch._dynamo.reset()
    module = PretrainModule("tiny", TINY)
    config = module.config
    video, audio = torch.randn(2, 3, config.num_frames, config.img_size, config.img_size), \
        torch.randn(2, 1, *config.audio_size)
    vm, am = pretrain_masks(config, batch=2, generator=torch.Generator().manual_seed(0))
    fn = torch.compile(module._forward_loss_eager, fullgraph=True, backend="eager")
    terms, _ = fn(video, vm, audio, am)
    ref, _ = module._forward_loss_eager(video, vm, audio, am)
    torch.testing.assert_close(terms["loss"], ref["loss"])


# ---------------------------------------------------------------------- precision "auto"
def test_precision_auto_is_bf16_on_ampere_or_newer_fp16_before_and_fp32_on_cpu(monkeypatch):
    assert resolve_precision("16-mixed") == "16-mixed"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_precision("auto") == "32-true"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for capability, expected in (((9, 0), "bf16-mixed"), ((8, 0), "bf16-mixed"), ((7, 0), "16-mixed")):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, c=capability: c)
        assert resolve_precision("auto") == expected
        assert resolve_precision("auto", "gpu") == expected
        assert resolve_precision("auto", "cpu") == "32-true"


def test_trainer_and_cli_accept_precision_auto(tmp_path):
    trainer = Trainer(precision="auto", accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    assert trainer.precision == "32-true"
    from hicmae.training.cli import PretrainCLI

    cli = PretrainCLI(args=["--config", str(Path(__file__).resolve().parents[1] / "configs/pretrain/tiny.yaml"),
                            "--trainer.precision", "auto", "--trainer.accelerator", "cpu", "--trainer.logger", "false",
                            "--trainer.callbacks", "[]", "--trainer.default_root_dir", str(tmp_path)],
                      run=False, trainer_class=Trainer)
    assert cli.trainer.precision == "32-true"
    assert cli.model.hparams.compile is None and cli.model.hparams.fused_adamw is None


# ---------------------------------------------------------------------- the benches
ROOT = Path(__file__).resolve().parents[1]


def test_model_bench_runs_without_the_packages_the_gpu_image_lacks(tmp_path):
    """bench/model_step.py on a bare image: ours beside the original, FLOPs per clip (the original's count equals
    REFERENCE.md 17's measurement of the original code: 36.4 GFLOP per tiny step of 2 clips)."""
    import json
    import subprocess
    import sys

    out = tmp_path / "model.json"
    code = ("import sys, runpy\n"
            "for m in ('wandb', 'decord', 'av', 'jsonargparse', 'omegaconf', 'soundfile', 'pytorch_lightning'):\n"
            "    sys.modules[m] = None  # import fails\n"
            "sys.argv = ['model_step.py', '--presets', 'tiny', '--kinds', 'pretrain',"
            " '--variants', 'ours', 'original',"
            f" '--attention', 'sdpa', '--batch-size', '1', '--steps', '1', '--warmup', '0', '--flops',"
            f" '--isolate', 'no', '--out', {str(out)!r}]\n"
            "runpy.run_path('bench/model_step.py', run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["variant"]: r for r in json.loads(out.read_text())["results"]}
    assert set(rows) == {"ours", "original"} and not any("error" in r for r in rows.values())
    assert rows["original"]["gflop_per_clip"] == pytest.approx(18.2, rel=0.01)
    # ours embeds 80 of 800 video tubes and 26 of 128 spectrogram patches: about 1.1 GFLOP less per clip
    assert 0.5 < rows["original"]["gflop_per_clip"] - rows["ours"]["gflop_per_clip"] < 1.5
    assert "clips/s ours / original" in proc.stdout


def test_time_to_pretrain_arithmetic(tmp_path):
    import json
    import runpy

    model = {"machine": "test GPU", "device": "cuda", "results": [
        {"preset": "base", "kind": "pretrain", "variant": "ours", "mode": "eager", "batch": 40, "clips_per_s": 500.0},
        {"preset": "base", "kind": "pretrain", "variant": "ours", "mode": "compiled", "batch": 128,
         "clips_per_s": 1500.0},
        {"preset": "base", "kind": "pretrain", "variant": "original", "mode": "eager", "batch": 128,
         "clips_per_s": 9999.0},
        {"preset": "base", "kind": "pretrain", "variant": "ours", "mode": "compiled", "batch": 256,
         "error": "out of memory"}]}
    loader = {"machine": "test CPU", "rows": [{"name": "mp4 (decord, AAC track)", "clips_per_s_per_core": 8.0},
                                              {"name": "shards-jpeg", "clips_per_s_per_core": 50.0}]}
    (tmp_path / "m.json").write_text(json.dumps(model))
    (tmp_path / "l.json").write_text(json.dumps(loader))
    main = runpy.run_path(str(ROOT / "bench" / "time_to_pretrain.py"))["main"]
    out = main(["--model", str(tmp_path / "m.json"), "--loader", str(tmp_path / "l.json"), "--cores-per-node", "64"])
    total = 100 * 1_091_581
    assert out["label"] == "GPU" and out["model_clips_per_s"] == 1500.0 and out["loader_clips_per_s_per_core"] == 50.0
    assert out["cores_per_gpu"] == pytest.approx(30.0)
    one, eight = out["rows"]
    assert one["model_bound_hours"] == pytest.approx(total / 1500 / 3600)
    assert one["hours_64_cores"] == pytest.approx(total / 1500 / 3600)  # 64 x 50 = 3200 clips/s >= 1500
    assert eight["hours_64_cores"] == pytest.approx(total / 3200 / 3600)  # data-bound: 8 x 1500 > 3200
    out = main(["--model", str(tmp_path / "m.json"), "--mode", "eager", "--loader-clips-per-core", "10"])
    assert out["model_clips_per_s"] == 500.0 and out["cores_per_gpu"] == pytest.approx(50.0)
    cpu = main(["--model-clips-per-s", "2", "--model-device", "cpu", "--loader", str(tmp_path / "l.json"),
                "--loader-row", "mp4"])
    assert cpu["label"] == "CPU" and cpu["cores_per_gpu"] == pytest.approx(0.25)
