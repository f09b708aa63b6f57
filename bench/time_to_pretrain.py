"""The headline: how long 100 epochs of VoxCeleb2 pretraining take, from measured inputs.

Inputs (each measured by another bench, or given as a number):

* model clips/s per GPU: the fastest ``ours`` pretraining row of a ``bench/model_step.py --out`` JSON (filter
  with ``--preset``, ``--batch``, ``--mode``), or ``--model-clips-per-s``;
* loader clips/s per CPU core: a row of a ``bench/data_loader.py --out`` JSON (``--loader-row``, a part of its
  name; default the first ``shards-jpeg`` row, else the first row), or ``--loader-clips-per-core``.

Arithmetic (nothing here is measured): clips = epochs x 1,091,581 (VoxCeleb2 dev, REFERENCE.md 11.1);
cores needed per GPU = model rate / loader rate per core; on N GPUs with C cores per node the run goes at
min(N x model rate, C x loader rate) clips/s (linear scaling across GPUs assumed: DDP's all-reduce is not
in the model bench). Figures from a CPU run of the model bench are labelled CPU: a "GPU" is then one
training process on the CPU.

    python bench/time_to_pretrain.py --model model_step.json --loader data_loader.json
    python bench/time_to_pretrain.py --model-clips-per-s 1500 --loader-clips-per-core 40 --cores-per-node 64 128
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

VOXCELEB2_CLIPS = 1_091_581


def pick_model_row(report: dict, preset: str | None, batch: int | None, mode: str | None) -> dict:
    rows = [r for r in report.get("results", []) if r.get("variant", "ours") == "ours"
            and r.get("kind") == "pretrain" and "error" not in r and r.get("clips_per_s")]
    for key, value in (("preset", preset), ("batch", batch), ("mode", mode)):
        if value is not None:
            rows = [r for r in rows if r.get(key) == value]
    if not rows:
        sys.exit(f"no successful 'ours' pretraining row matches preset={preset} batch={batch} mode={mode}")
    return max(rows, key=lambda r: r["clips_per_s"])


def pick_loader_row(report: dict, name: str | None) -> dict:
    rows = [r for r in report.get("rows", []) if r.get("clips_per_s_per_core")]
    if not rows:
        sys.exit("the loader JSON has no rows with clips_per_s_per_core")
    if name is not None:
        match = [r for r in rows if name.lower() in r["name"].lower()]
        if not match:
            sys.exit(f"no loader row contains {name!r}; rows: {[r['name'] for r in rows]}")
        return match[0]
    return next((r for r in rows if r["name"].startswith("shards-jpeg")), rows[0])


def hours(clips: float, rate: float) -> float:
    return clips / rate / 3600 if rate > 0 else math.inf


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="JSON written by bench/model_step.py --out")
    src.add_argument("--model-clips-per-s", type=float, help="model clips/s per GPU, measured elsewhere")
    p.add_argument("--model-device", default="cuda", choices=["cuda", "cpu"],
                   help="with --model-clips-per-s: where it was measured (cpu labels the output CPU)")
    p.add_argument("--preset", default="base")
    p.add_argument("--batch", type=int, help="only model rows at this per-GPU batch")
    p.add_argument("--mode", choices=["eager", "compiled"], help="only model rows of this mode")
    lsrc = p.add_mutually_exclusive_group(required=True)
    lsrc.add_argument("--loader", help="JSON written by bench/data_loader.py --out")
    lsrc.add_argument("--loader-clips-per-core", type=float, help="loader clips/s per CPU core, measured elsewhere")
    p.add_argument("--loader-row", help="which loader row (part of its name); default the first shards-jpeg row")
    p.add_argument("--gpus", nargs="+", type=int, default=[1, 8])
    p.add_argument("--cores-per-node", nargs="+", type=int, default=[64, 128])
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--clips", type=int, default=VOXCELEB2_CLIPS, help="clips per epoch (VoxCeleb2 dev)")
    args = p.parse_args(argv)

    if args.model:
        report = json.loads(Path(args.model).read_text())
        row = pick_model_row(report, args.preset, args.batch, args.mode)
        model_rate, device = float(row["clips_per_s"]), report.get("device", row.get("device", "cuda"))
        model_src = (f"{report.get('machine', '?')}: {row['preset']} {row.get('attention', '')} "
                     f"{row.get('mode', 'eager')}, batch {row['batch']}, {row.get('dtype', '?')} ({args.model})")
    else:
        model_rate, device = args.model_clips_per_s, args.model_device
        model_src = "given on the command line"
    if args.loader:
        lreport = json.loads(Path(args.loader).read_text())
        lrow = pick_loader_row(lreport, args.loader_row)
        loader_rate = float(lrow["clips_per_s_per_core"])
        loader_src = f"{lrow['name']} on {lreport.get('machine', '?')} ({args.loader})"
    else:
        loader_rate, loader_src = args.loader_clips_per_core, "given on the command line"

    label = "CPU" if device != "cuda" else "GPU"
    unit = "CPU training process" if label == "CPU" else "GPU"
    units = "CPU training processes" if label == "CPU" else "GPUs"
    total = args.epochs * args.clips
    cores_per_gpu = model_rate / loader_rate
    print(f"# Time to pretrain ({label} figures): {args.epochs} epochs x {args.clips:,} clips = {total:,} clips")
    print(f"model: {model_rate:,.1f} clips/s per {unit} -- {model_src}")
    print(f"loader: {loader_rate:,.2f} clips/s per CPU core -- {loader_src}")
    print(f"cores needed per {unit}: {cores_per_gpu:,.1f}")
    head = f"| {units} | model-bound clips/s | model-bound hours | cores needed |"
    sep = "| --- | --- | --- | --- |"
    for cores in args.cores_per_node:
        head += f" {cores} cores/node: clips/s, hours, bound by |"
        sep += " --- |"
    print(head + "\n" + sep)
    out = {"label": label, "model_clips_per_s": model_rate, "loader_clips_per_s_per_core": loader_rate,
           "cores_per_gpu": cores_per_gpu, "total_clips": total, "rows": []}
    for n in args.gpus:
        line = (f"| {n} | {n * model_rate:,.0f} | {hours(total, n * model_rate):,.1f} | "
                f"{n * cores_per_gpu:,.0f} |")
        row = {"gpus": n, "model_bound_hours": hours(total, n * model_rate), "cores_needed": n * cores_per_gpu}
        for cores in args.cores_per_node:
            rate = min(n * model_rate, cores * loader_rate)
            bound = "model" if n * model_rate <= cores * loader_rate else "data"
            line += f" {rate:,.0f}, {hours(total, rate):,.1f} h, {bound} |"
            row[f"hours_{cores}_cores"] = hours(total, rate)
        out["rows"].append(row)
        print(line)
    best = out["rows"][-1]
    print(f"headline ({label}): {args.gpus[-1]} {units}, {args.epochs} epochs of VoxCeleb2 in "
          f"{best['model_bound_hours']:.1f} h of model compute; with "
          f"{args.cores_per_node[-1]} cores/node {best[f'hours_{args.cores_per_node[-1]}_cores']:.1f} h")
    return out


if __name__ == "__main__":
    main()
