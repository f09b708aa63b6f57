"""The ``hicmae`` command: one argparse subparser and one small function per subcommand.

Other modules add commands by appending to ``COMMANDS`` a ``(name, add_arguments, run)`` triple.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys


# ---------------------------------------------------------------------------------------------- validate
def _validate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", help="CSV manifest (or an original space-separated list)")
    p.add_argument("--root", default=None, help="data root for relative paths (default: the manifest's folder)")
    p.add_argument("--workers", type=int, default=1, help="processes that decode rows in parallel")
    p.add_argument("--json", action="store_true", help="print a JSON list of {row, video, audio, ok, error}")
    p.add_argument("--task", default="pretrain", choices=["pretrain", "classification", "multilabel", "regression"])
    p.add_argument("--classes", default=None, help="comma-separated class names in label-index order")
    p.add_argument("--targets", default=None, help="comma-separated regression target columns")
    p.add_argument("--num-frames", type=int, default=16)
    p.add_argument("--sampling-rate", type=int, default=4, help="frame stride")


def _validate(args: argparse.Namespace) -> int:
    from hicmae.data.validate import validate_manifest
    from hicmae.errors import DataError
    from hicmae.models.config import ModelConfig

    split = lambda s: [x.strip() for x in s.split(",")] if s else None  # noqa: E731
    try:
        results = validate_manifest(args.manifest, args.root, args.task, args.workers,
                                    ModelConfig(num_frames=args.num_frames), sampling_rate=args.sampling_rate,
                                    class_names=split(args.classes), target_columns=split(args.targets))
    except DataError as err:
        if args.json:
            print(json.dumps([{"row": None, "video": None, "audio": None, "ok": False, "error": str(err)}]))
        else:
            print(err)
        return 2
    bad = [r for r in results if not r["ok"]]
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        for r in bad:
            print(r["error"])
        print(f"{len(results)} rows checked: {len(results) - len(bad)} good, {len(bad)} bad")
    return 1 if bad else 0


# ---------------------------------------------------------------------------------------------- make-demo-data
def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir")
    p.add_argument("--num-clips", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-classes", type=int, default=6)
    p.add_argument("--size", type=int, default=160, help="frame side in pixels (even)")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--num-folds", type=int, default=5)
    p.add_argument("--workers", type=int, default=None, help="processes (default: up to 2)")
    p.add_argument("--dynamic-cues-only", action="store_true",
                   help="same face colour and voice for every class: only rhythm, mouth, blinks and sway differ")


def _make_demo(args: argparse.Namespace) -> int:
    from hicmae.data.demo import make_demo_data

    out = make_demo_data(args.out_dir, num_clips=args.num_clips, seed=args.seed, num_classes=args.num_classes,
                         size=args.size, seconds=args.seconds, fps=args.fps, num_folds=args.num_folds,
                         workers=args.workers, static_cues=not args.dynamic_cues_only)
    print(f"wrote {args.num_clips} clips and pretrain.csv, finetune.csv, regression.csv to {out}")
    return 0


COMMANDS = [
    ("validate", "check every row of a manifest as training would open it", _validate_args, _validate),
    ("make-demo-data", "write a small synthetic audio-visual emotion dataset", _demo_args, _make_demo),
]


# ---------------------------------------------------------------------------------------------- kfold
def _kfold_args(p: argparse.ArgumentParser) -> None:
    from hicmae.training.kfold import add_arguments

    add_arguments(p)


def _kfold(args: argparse.Namespace) -> int:
    from hicmae.training.kfold import run

    return run(args)


COMMANDS.append(("kfold", "fine-tune or linear-probe every fold and tabulate mean ± std", _kfold_args, _kfold))


# ---------------------------------------------------------------------------------------------- predict
def _predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a classifier release (.safetensors, see `hicmae export`)")
    p.add_argument("videos", nargs="+", help="video files or folders of face frames")
    p.add_argument("--audio", nargs="+", default=None, help="one wav per video (default: each video's own track)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--segments", type=int, default=2, help="temporal views per clip (the original uses 2)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of one line per video")


def _predict(args: argparse.Namespace) -> int:
    from hicmae.errors import HiCMAEError
    from hicmae.inference import Predictor

    try:
        predictions = Predictor(args.model, args.device, args.segments).predict(args.videos, args.audio,
                                                                                args.batch_size)
    except HiCMAEError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([p.as_dict() for p in predictions], indent=1))
        return 0
    for p in predictions:
        top = p.label if p.label is not None else ""
        scores = " ".join(f"{n}={s:.3f}" for n, s in zip(p.names, p.scores))
        print(f"{p.video}\t{top}\t{scores}")
    return 0


COMMANDS.append(("predict", "predict emotions for videos with a classifier release", _predict_args, _predict))


# ---------------------------------------------------------------------------------------------- export
def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a .ckpt written by pretrain.py or finetune.py")
    p.add_argument("out", help="the release file to write (.safetensors)")
    p.add_argument("--class-names", default=None, help="comma-separated, if the checkpoint does not record them")


def _export(args: argparse.Namespace) -> int:
    from hicmae.errors import HiCMAEError
    from hicmae.training.export import export_checkpoint

    names = [n.strip() for n in args.class_names.split(",")] if args.class_names else None
    try:
        path = export_checkpoint(args.checkpoint, args.out, class_names=names)
    except HiCMAEError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


COMMANDS.append(("export", "write a training checkpoint as a one-file release", _export_args, _export))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hicmae", description="HiCMAE tools")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text, add_arguments, run in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(_run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args._run(args)


if __name__ == "__main__":
    sys.exit(main())
