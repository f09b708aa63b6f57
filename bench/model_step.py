"""Step time, clips/s and peak memory of HiCMAE models, per preset and attention kernel.

Measures a pretraining step (forward, loss, backward, AdamW step) and a classifier forward (eval,
no grad) at the paper's input sizes, on the CPU or on the GPU when present (bf16 autocast there).
Each configuration runs in its own process so peak memory is its own.

    python bench/model_step.py                       # every preset, both kernels, batch 2
    python bench/model_step.py --presets base --batch-size 40 --device cuda --out results.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}), torch {torch.__version__}"
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"


def measure(preset: str, kind: str, attention: str, batch: int, device: str, steps: int, warmup: int,
            compile_model: bool) -> dict:
    from hicmae.losses import pretrain_losses
    from hicmae.masking import pretrain_masks
    from hicmae.models import HiCMAEClassifier, HiCMAEPretrain, ModelConfig

    torch.manual_seed(0)
    config = ModelConfig.preset(preset)
    fused = attention == "sdpa"
    model = (HiCMAEPretrain(config, fused_attn=fused) if kind == "pretrain"
             else HiCMAEClassifier(config, num_classes=6, fused_attn=fused)).to(device)
    video = torch.randn(batch, 3, config.num_frames, config.img_size, config.img_size, device=device)
    audio = torch.randn(batch, 1, *config.audio_size, device=device)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    autocast = torch.autocast(device_type=device, dtype=dtype, enabled=device == "cuda")
    runner = torch.compile(model) if compile_model else model

    if kind == "pretrain":
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95))
        vm, am = (m.to(device) for m in pretrain_masks(config, batch=batch))

        def step():
            with autocast:
                out = runner(video, vm, audio, am)
                loss = pretrain_losses(out, video, audio, vm, am, config)["loss"]
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    else:
        model.eval()

        def step():
            with torch.no_grad(), autocast:
                runner(video, audio)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"preset": preset, "kind": kind, "attention": attention, "batch": batch, "device": device,
            "dtype": str(dtype).removeprefix("torch."), "compiled": compile_model, "step_s": round(median, 4),
            "clips_per_s": round(batch / median, 2), "peak_mib": round(peak, 1),
            "memory": "max allocated (GPU)" if device == "cuda" else "peak RSS (process)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "small", "base"])
    parser.add_argument("--kinds", nargs="+", default=["pretrain", "classifier"], choices=["pretrain", "classifier"])
    parser.add_argument("--attention", nargs="+", default=["sdpa", "math"], choices=["sdpa", "math"])
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--out", help="also write the results as JSON here")
    parser.add_argument("--single", help=argparse.SUPPRESS)  # internal: preset,kind,attention in this process
    args = parser.parse_args()

    if args.single:
        preset, kind, attention = args.single.split(",")
        print(json.dumps(measure(preset, kind, attention, args.batch_size, args.device, args.steps, args.warmup,
                                 args.compile)))
        return

    print(f"# {machine()}, batch {args.batch_size}")
    print("| preset | model | attention | step (s) | clips/s | peak MiB |")
    print("| --- | --- | --- | --- | --- | --- |")
    results = []
    for preset in args.presets:
        for kind in args.kinds:
            for attention in args.attention:
                cmd = [sys.executable, __file__, "--single", f"{preset},{kind},{attention}", "--batch-size",
                       str(args.batch_size), "--device", args.device, "--steps", str(args.steps), "--warmup",
                       str(args.warmup)] + (["--compile"] if args.compile else [])
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode:
                    print(f"| {preset} | {kind} | {attention} | failed: {proc.stderr.strip().splitlines()[-1]} | | |")
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                results.append(r)
                print(f"| {preset} | {kind} | {attention} | {r['step_s']} | {r['clips_per_s']} | {r['peak_mib']} |",
                      flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"machine": machine(), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
