"""Step time, clips/s, peak memory, FLOPs per clip and MFU of HiCMAE models; ours beside the original as it ran.

A pretraining step is forward, loss, backward, gradient norm and AdamW step (train mode); a classifier step
is a forward pass (eval, no grad). Paper input sizes (16 x 160 x 160 video, 256 x 128 fbank; 80 + 26 visible
tokens in pretraining). Variants, built from this package's code in the same process:

* ``ours``: SDPA attention (``--attention math`` for the explicit softmax), only visible patches embedded,
  bf16 autocast on an Ampere or newer GPU (fp16 + GradScaler before), fused AdamW on a GPU, no host sync
  inside the step, optionally ``torch.compile`` of forward + loss (``--modes eager compiled``).
* ``original``: the original's step as it ran (REFERENCE.md 11.1, 14): explicit softmax attention, every patch
  embedded, fp16 autocast + GradScaler, the per-parameter AdamW loop of torch 1.10, eager, the gradient norm
  after unscaling, ``loss.item()`` and ``torch.cuda.synchronize()`` every step.

On the CPU both run in fp32 without a scaler (the original cannot use fp16 there either). Timing: warm-up
steps, then ``--steps`` steps back to back and one sync (the mean step, as a training loop sees it). Peak
memory: ``torch.cuda.max_memory_allocated`` of that config on a GPU (configs run one after another in one
process); on the CPU each config runs in its own process and reports its peak RSS. FLOPs: one forward +
backward counted with ``torch.utils.flop_counter.FlopCounterMode`` (attention counted through the explicit
softmax path, whose matmuls SDPA computes too), per clip; MFU = FLOPs x clips/s over the GPU's dense bf16
peak (fp16 for a V100; no peak known for other devices or the CPU).

    python bench/model_step.py                                   # every preset, both kernels, ours, batch 2
    python bench/model_step.py --presets base --kinds pretrain --variants ours original \\
        --batch-size 40 80 128 256 --modes eager compiled --flops --sdpa-report --out model_step.json

Imports only torch, timm layers, einops and this package's models, losses, masking and optimiser
(no Lightning, wandb, decord, av, jsonargparse, omegaconf or soundfile), so it runs on a bare GPU image.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

# Dense bf16 tensor-core peaks (TFLOP/s, without sparsity) from NVIDIA's data sheets; V100 has no bf16: fp16.
PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0),
               ("V100", 125.0))


def peak_tflops(device: str) -> tuple[float | None, str]:
    if device != "cuda":
        return None, "no peak known (CPU)"
    name = torch.cuda.get_device_name()
    for key, value in PEAK_TFLOPS:
        if key in name:
            return value, f"{name}: {value:g} TFLOP/s dense {'fp16' if key == 'V100' else 'bf16'}"
    return None, f"{name}: no peak known"


def machine(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}), torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def amp_for(variant: str, device: str) -> tuple[torch.dtype, bool]:
    """(autocast dtype, GradScaler) of a variant on a device; fp32 and no scaler on the CPU."""
    if device != "cuda":
        return torch.float32, False
    if variant == "original" or torch.cuda.get_device_capability() < (8, 0):
        return torch.float16, True
    return torch.bfloat16, False


def set_fused_attention(model: torch.nn.Module, fused: bool) -> None:
    for module in model.modules():
        if hasattr(module, "fused"):
            module.fused = fused


class Step:
    """One configuration's model, inputs, optimiser and step function."""

    def __init__(self, preset: str, kind: str, variant: str, attention: str, batch: int, device: str,
                 compile_model: bool):
        from hicmae.losses import pretrain_losses
        from hicmae.masking import pretrain_masks
        from hicmae.models import HiCMAEClassifier, HiCMAEPretrain, ModelConfig
        from hicmae.training.optim import build_optimizer, pretrain_param_groups

        torch.manual_seed(0)
        self.device, self.kind, self.variant = device, kind, variant
        config = ModelConfig.preset(preset)
        fused_attn = self.fused_attn = attention == "sdpa" and variant == "ours"
        if kind == "pretrain":
            self.model = HiCMAEPretrain(config, fused_attn=fused_attn, visible_patch_embed=variant == "ours")
        else:
            self.model = HiCMAEClassifier(config, num_classes=6, fused_attn=fused_attn)
        self.model.to(device)
        self.dtype, use_scaler = amp_for(variant, device)
        self.video = torch.randn(batch, 3, config.num_frames, config.img_size, config.img_size, device=device)
        self.audio = torch.randn(batch, 1, *config.audio_size, device=device)
        self.autocast = (torch.autocast(device_type=device, dtype=self.dtype) if self.dtype != torch.float32
                         else nullcontext())

        if kind == "classifier":
            self.model.eval()
            self.run = torch.compile(self.model) if compile_model else self.model
            return
        self.model.train()
        self.vm, self.am = (m.to(device) for m in pretrain_masks(config, batch=batch))
        groups = pretrain_param_groups(self.model, 0.05)
        if variant == "ours":
            self.optimizer = build_optimizer(groups, 1e-4, (0.9, 0.95))  # fused on a GPU
        else:  # torch 1.10's AdamW: one parameter at a time
            self.optimizer = torch.optim.AdamW([{**g, "lr": 1e-4} for g in groups], lr=1e-4, betas=(0.9, 0.95),
                                               foreach=False)
        self.scaler = torch.amp.GradScaler(device) if use_scaler else None
        self.params = [p for p in self.model.parameters() if p.requires_grad]

        def forward_loss(video, vm, audio, am):
            out = self.model(video, vm, audio, am)
            return pretrain_losses(out, video, audio, vm, am, config)["loss"]

        self.forward_loss = forward_loss
        self.run = torch.compile(forward_loss) if compile_model else forward_loss

    def step(self) -> None:
        if self.kind == "classifier":
            with torch.no_grad(), self.autocast:
                self.run(self.video, self.audio)
            return
        with self.autocast:
            loss = self.run(self.video, self.vm, self.audio, self.am)
        if self.variant == "original":
            self._original_update(loss)
            return
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in self.params])  # logged, on the device
        if self.scaler is not None:  # fused AdamW unscales and skips inf steps itself, on the device
            grad_norm = grad_norm / self.scaler._get_scale_async()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _original_update(self, loss: torch.Tensor) -> None:
        # engine_for_pretraining_av.train_one_epoch + utils.NativeScalerWithGradNormCount, as it ran.
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"loss is {loss_value}")
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        torch.norm(torch.stack([torch.norm(p.grad.detach(), 2.0) for p in self.params if p.grad is not None]), 2.0)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=False)  # torch 1.10's default: gradients stay allocated
        if self.device == "cuda":
            torch.cuda.synchronize()

    def count_flops(self) -> float:
        """FLOPs of one forward (+ backward in pretraining), explicit-softmax attention, eager."""
        from torch.utils.flop_counter import FlopCounterMode

        set_fused_attention(self.model, False)
        counter = FlopCounterMode(display=False)
        try:
            with counter:
                if self.kind == "classifier":
                    with torch.no_grad(), self.autocast:
                        self.model(self.video, self.audio)
                else:
                    with self.autocast:
                        loss = self.forward_loss(self.video, self.vm, self.audio, self.am)
                    loss.backward()
                    self.optimizer.zero_grad(set_to_none=True)
        finally:
            set_fused_attention(self.model, self.fused_attn)
        return float(counter.get_total_flops())


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(preset: str, kind: str, variant: str, attention: str, batch: int, device: str, steps: int,
            warmup: int, mode: str, flops: bool) -> dict:
    row = {"preset": preset, "kind": kind, "variant": variant, "attention": attention, "mode": mode,
           "batch": batch, "device": device}
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    try:
        s = Step(preset, kind, variant, attention, batch, device, compile_model=mode == "compiled")
        start = time.perf_counter()
        for _ in range(warmup):
            s.step()
        sync(device)
        row["warmup_s"] = round(time.perf_counter() - start, 1)
        start = time.perf_counter()
        for _ in range(steps):
            s.step()
        sync(device)
        step_s = (time.perf_counter() - start) / steps
        peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        row.update(dtype=str(s.dtype).removeprefix("torch."), step_s=round(step_s, 4),
                   clips_per_s=round(batch / step_s, 2), peak_mib=round(peak, 1),
                   memory="max allocated (GPU)" if device == "cuda" else "peak RSS (process)")
        if flops:
            gflop = s.count_flops() / batch / 1e9
            row["gflop_per_clip"] = round(gflop, 2)
            row["tflops"] = round(gflop * row["clips_per_s"] / 1e3, 3)
            peak_tf, _ = peak_tflops(device)
            row["mfu"] = round(row["tflops"] / peak_tf, 4) if peak_tf else None
    except torch.OutOfMemoryError:
        row["error"] = "out of memory"
    finally:
        s = None
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
        if mode == "compiled":
            torch._dynamo.reset()
    return row


def sdpa_report(preset: str, batch: int, device: str) -> dict:
    """Which SDPA kernel the decoder's attention runs (800 tokens self, 800 x 80 cross), and each kernel's
    forward + backward time where it is eligible, under the ``ours`` precision."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.profiler import ProfilerActivity, profile

    from hicmae.models import ModelConfig

    config = ModelConfig.preset(preset)
    dtype, _ = amp_for("ours", device)
    heads, dim = config.decoder_heads, config.decoder_dim // config.decoder_heads
    n = config.num_video_tokens
    out = {"dtype": str(dtype).removeprefix("torch."), "batch": batch, "heads": heads, "head_dim": dim, "shapes": {}}
    for name, kv in (("self-attention 800 x 800", n), ("cross-attention 800 x 80", n - config.num_video_masked)):
        q = torch.randn(batch, heads, n, dim, device=device, dtype=dtype, requires_grad=True)
        k, v = (torch.randn(batch, heads, kv, dim, device=device, dtype=dtype, requires_grad=True) for _ in range(2))

        def run():
            torch.nn.functional.scaled_dot_product_attention(q, k, v).sum().backward()

        run()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
        with profile(activities=activities, acc_events=True) as prof:
            run()
            sync(device)
        ops = sorted({e.key for e in prof.key_averages()
                      if "attention" in e.key.lower() and e.key.startswith("aten::")})
        backends = {}
        for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION,
                        SDPBackend.MATH):
            try:
                with sdpa_kernel([backend]):
                    run()
                    sync(device)
                    start = time.perf_counter()
                    for _ in range(5):
                        run()
                    sync(device)
                backends[backend.name] = f"{(time.perf_counter() - start) / 5 * 1e3:.2f} ms fwd+bwd"
            except RuntimeError as err:
                backends[backend.name] = "not eligible: " + str(err).strip().splitlines()[0][:80]
        out["shapes"][name] = {"ops_run_by_default": ops, "backends": backends}
    return out


def _time(fn, device: str, reps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(device)
    return (time.perf_counter() - start) / reps


def embed_report(preset: str, batch: int, device: str, reps: int = 10) -> dict:
    """Patch embedding + positions of the visible tokens, forward + backward: only the visible patches
    (ours) against every patch, then the visible ones (the original), under the ``ours`` precision."""
    from hicmae.masking import pretrain_masks
    from hicmae.models import ModelConfig
    from hicmae.models.encoders import audio_encoder, video_encoder
    from hicmae.models.pretrain import split_by_mask

    config = ModelConfig.preset(preset)
    dtype, _ = amp_for("ours", device)
    autocast = torch.autocast(device_type=device, dtype=dtype) if dtype != torch.float32 else nullcontext()
    vm, am = (m.to(device) for m in pretrain_masks(config, batch=batch))
    inputs = {"video": (video_encoder(config).to(device), split_by_mask(vm, config.num_video_masked)[0],
                        torch.randn(batch, 3, config.num_frames, config.img_size, config.img_size, device=device)),
              "audio": (audio_encoder(config).to(device), split_by_mask(am, config.num_audio_masked)[0],
                        torch.randn(batch, 1, *config.audio_size, device=device))}
    out = {"dtype": str(dtype).removeprefix("torch."), "batch": batch}
    for name, (encoder, keep, x) in inputs.items():
        def run():
            with autocast:
                y = encoder.embed(x, keep)
            y.float().sum().backward()

        for visible in (True, False):
            encoder.visible_patch_embed = visible
            out[f"{name} {'visible only' if visible else 'all, then keep'} (ms)"] = round(
                _time(run, device, reps) * 1e3, 3)
    return out


def optimizer_report(preset: str, device: str, reps: int = 5) -> dict:
    """One AdamW step over the pretraining model's parameters (param groups as in training): fused, foreach
    (torch's default on a GPU) and the per-parameter loop (torch 1.10, the original; the default on the CPU)."""
    from hicmae.models import HiCMAEPretrain, ModelConfig
    from hicmae.training.optim import pretrain_param_groups

    model = HiCMAEPretrain(ModelConfig.preset(preset)).to(device)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    out = {"params": sum(p.numel() for p in model.parameters())}
    for name, kw in (("fused", {"fused": True}), ("foreach", {"foreach": True}), ("loop", {"foreach": False})):
        try:
            opt = torch.optim.AdamW(pretrain_param_groups(model, 0.05), lr=1e-4, betas=(0.9, 0.95), **kw)
            out[f"{name} (ms)"] = round(_time(opt.step, device, reps) * 1e3, 2)
        except RuntimeError as err:
            out[f"{name} (ms)"] = f"unavailable: {str(err).splitlines()[0][:60]}"
        opt = None
    return out


def fmt(row: dict) -> str:
    if "error" in row:
        cells = [row["error"], "", "", "", "", ""]
    else:
        mfu = row.get("mfu")
        cells = [row["step_s"], row["clips_per_s"], row["peak_mib"], row.get("gflop_per_clip", ""),
                 row.get("tflops", ""), "" if mfu is None else f"{100 * mfu:.1f}%"]
    return "| " + " | ".join(str(c) for c in [row["preset"], row["kind"], row["variant"], row["attention"],
                                              row["mode"], row["batch"], *cells]) + " |"


HEADER = ("| preset | model | variant | attention | mode | batch | step (s) | clips/s | peak MiB | GFLOP/clip "
          "| TFLOP/s | MFU |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")


def ratios(results: list[dict]) -> list[str]:
    """ours / original at the same preset, model and batch (every ours mode and attention)."""
    lines = []
    originals = {(r["preset"], r["kind"], r["batch"]): r for r in results
                 if r["variant"] == "original" and "error" not in r}
    for r in results:
        o = originals.get((r["preset"], r["kind"], r["batch"]))
        if r["variant"] != "ours" or o is None or "error" in r:
            continue
        lines.append(f"| {r['preset']} | {r['kind']} | {r['attention']}, {r['mode']} | {r['batch']} | "
                     f"{r['clips_per_s'] / o['clips_per_s']:.2f}x | {r['peak_mib']:.0f} / {o['peak_mib']:.0f} = "
                     f"{r['peak_mib'] / o['peak_mib']:.2f} |")
    if lines:
        lines = ["| preset | model | ours | batch | clips/s ours / original | peak MiB ours / original |",
                 "| --- | --- | --- | --- | --- | --- |"] + lines
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "small", "base"])
    parser.add_argument("--kinds", nargs="+", default=["pretrain", "classifier"], choices=["pretrain", "classifier"])
    parser.add_argument("--variants", nargs="+", default=["ours"], choices=["ours", "original"])
    parser.add_argument("--attention", nargs="+", default=["sdpa", "math"], choices=["sdpa", "math"],
                        help="attention kernels of the ours variant (the original always runs math)")
    parser.add_argument("--modes", nargs="+", default=["eager"], choices=["eager", "compiled"],
                        help="torch.compile of ours (the original always runs eager)")
    parser.add_argument("--compile", action="store_true", help="same as --modes compiled")
    parser.add_argument("--batch-size", nargs="+", type=int, default=[2], help="one or several (a sweep)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--flops", action="store_true", help="count FLOPs per clip and report MFU")
    parser.add_argument("--sdpa-report", action="store_true", help="which SDPA kernel the decoder attention runs")
    parser.add_argument("--embed-report", action="store_true",
                        help="time the patch embedding: visible patches only vs every patch (last preset)")
    parser.add_argument("--optimizer-report", action="store_true",
                        help="time one AdamW step: fused vs foreach vs loop (last preset's pretraining model)")
    parser.add_argument("--isolate", choices=["auto", "yes", "no"], default="auto",
                        help="one process per config (auto: on the CPU, where peak memory is the process's RSS)")
    parser.add_argument("--out", help="also write the results as JSON here")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="instead of measuring: print the rows and ratios of these --out files together "
                             "(and write them as one with --out)")
    parser.add_argument("--single", help=argparse.SUPPRESS)  # internal: one config in this process
    args = parser.parse_args()
    modes = ["compiled"] if args.compile else args.modes

    if args.merge:
        reports = [json.loads(Path(f).read_text()) for f in args.merge]
        merged = {**reports[0], "results": [r for rep in reports for r in rep["results"]],
                  "merged_from": args.merge}
        print(f"# {merged['machine']}; peak: {merged.get('peak_note')}")
        print(HEADER + "\n" + "\n".join(fmt(r) for r in merged["results"]))
        print("\n" + "\n".join(ratios(merged["results"])))
        if args.out:
            Path(args.out).write_text(json.dumps(merged, indent=2))
        return

    if args.single:
        preset, kind, variant, attention, mode, batch = args.single.split(",")
        print(json.dumps(measure(preset, kind, variant, attention, int(batch), args.device, args.steps, args.warmup,
                                 mode, args.flops)))
        return

    configs = []
    for preset in args.presets:
        for kind in args.kinds:
            for batch in args.batch_size:
                for variant in args.variants:
                    if variant == "original":
                        configs.append((preset, kind, variant, "math", "eager", batch))
                        continue
                    for attention in args.attention:
                        for mode in modes:
                            configs.append((preset, kind, variant, attention, mode, batch))
    isolate = args.isolate == "yes" or (args.isolate == "auto" and args.device != "cuda")
    peak_tf, peak_note = peak_tflops(args.device)
    print(f"# {machine(args.device)}; peak: {peak_note}; {args.steps} timed steps after {args.warmup} warm-up")
    print(HEADER)
    results = []
    report = {"machine": machine(args.device), "device": args.device, "peak_tflops": peak_tf,
              "peak_note": peak_note, "steps": args.steps, "warmup": args.warmup, "results": results}

    def save() -> None:  # after every row, so a run stopped by a time limit keeps what it measured
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=2))

    for config in configs:
        if isolate:
            cmd = [sys.executable, __file__, "--single", ",".join(map(str, config)), "--device", args.device,
                   "--steps", str(args.steps), "--warmup", str(args.warmup)] + (["--flops"] if args.flops else [])
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
                row = dict(zip(("preset", "kind", "variant", "attention", "mode", "batch"), config), error=tail)
            else:
                row = json.loads(proc.stdout.strip().splitlines()[-1])
        else:
            row = measure(*config[:4], config[5], args.device, args.steps, args.warmup, config[4], args.flops)
        results.append(row)
        print(fmt(row), flush=True)
        save()
    summary = ratios(results)
    if summary:
        print("\n" + "\n".join(summary))
    if args.sdpa_report:
        report["sdpa"] = sdpa_report(args.presets[-1], args.batch_size[0], args.device)
        print(f"\nSDPA on {args.device}, decoder attention of {args.presets[-1]} "
              f"(batch {args.batch_size[0]}, {report['sdpa']['dtype']}):")
        for name, info in report["sdpa"]["shapes"].items():
            print(f"- {name}: runs {', '.join(info['ops_run_by_default']) or '?'}")
            for backend, status in info["backends"].items():
                print(f"    {backend}: {status}")
    if args.embed_report:
        report["embedding"] = embed_report(args.presets[-1], args.batch_size[0], args.device)
        print(f"\npatch embedding of {args.presets[-1]}, forward + backward: {report['embedding']}")
    if args.optimizer_report:
        report["optimizer"] = optimizer_report(args.presets[-1], args.device)
        print(f"\nAdamW step over the {args.presets[-1]} pretraining model: {report['optimizer']}")
    save()


if __name__ == "__main__":
    main()
