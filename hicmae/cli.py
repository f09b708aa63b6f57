"""The ``hicmae`` command: one argparse subparser and one small function per subcommand.

Other modules add commands by appending to ``COMMANDS`` a ``(name, help, add_arguments, run)`` tuple.
A subcommand's arguments are added only when that subcommand is used (see :class:`_LazyParser`), and
heavy libraries are imported only inside ``run``: ``hicmae --help`` imports neither torch nor Lightning.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys


def _progress_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar with counts and time left on stderr (default: only when stderr "
                        "is a terminal)")


def _report(job) -> int:
    """Run a command's ``job`` (returning a summary with ``lines()``): print the summary, or its error in one
    line on stderr with exit status 2."""
    from hicmae.errors import HiCMAEError

    try:
        summary = job()
    except HiCMAEError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for line in summary.lines():
        print(line)
    return 0


# ---------------------------------------------------------------------------------------------- validate
def _validate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", help="CSV manifest (or an original space-separated list)")
    p.add_argument("--root", default=None, help="data root for relative paths (default: the manifest's folder)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes that check rows in parallel, up to one per CPU core (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print a JSON list of {row, video, audio, ok, error}")
    p.add_argument("--task", default="pretrain", choices=["pretrain", "classification", "multilabel", "regression"],
                   help="how rows are loaded and which labels they need (default: %(default)s)")
    p.add_argument("--classes", default=None, help="comma-separated class names in label-index order "
                                                   "(default: the manifest's labels, sorted; integers as written)")
    p.add_argument("--targets", default=None, help="comma-separated regression target columns (default: every "
                                                   "column but video, audio, start, end and fold)")
    p.add_argument("--num-frames", type=int, default=16, help="frames per clip (default: %(default)s)")
    p.add_argument("--sampling-rate", type=int, default=4, help="frame stride (default: %(default)s)")
    _progress_arg(p)


def _validate(args: argparse.Namespace) -> int:
    from hicmae.data.validate import validate_manifest
    from hicmae.errors import DataError
    from hicmae.models.config import ModelConfig

    split = lambda s: [x.strip() for x in s.split(",")] if s else None  # noqa: E731
    try:
        results = validate_manifest(args.manifest, args.root, args.task, args.workers,
                                    ModelConfig(num_frames=args.num_frames), sampling_rate=args.sampling_rate,
                                    class_names=split(args.classes), target_columns=split(args.targets),
                                    progress=args.progress)
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
    from hicmae.data.demo import DEMO  # the defaults are the data `make demo` trains on

    p.add_argument("out_dir", help="folder to write clips/ and the manifests into")
    p.add_argument("--num-clips", type=int, default=DEMO.num_clips, help="(default: %(default)s)")
    p.add_argument("--seed", type=int, default=DEMO.seed, help="(default: %(default)s)")
    p.add_argument("--num-classes", type=int, default=DEMO.num_classes, help="2 to 6 (default: %(default)s)")
    p.add_argument("--size", type=int, default=DEMO.size, help="frame side in pixels, even (default: %(default)s)")
    p.add_argument("--seconds", type=float, default=DEMO.seconds, help="clip length (default: %(default)s)")
    p.add_argument("--fps", type=int, default=DEMO.fps, help="(default: %(default)s)")
    p.add_argument("--num-folds", type=int, default=DEMO.num_folds, help="(default: %(default)s)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: up to 2)")
    p.add_argument("--static-cues", action=argparse.BooleanOptionalAction, default=DEMO.static_cues,
                   help="also give every class its own face colour and voice, which a single frame or a random "
                        "network already tells apart; without: classes differ only in mouth rhythm, blinks "
                        "and sway, which pretraining has to learn (default: %(default)s)")
    # Before --static-cues existed the static cues were on by default and this flag turned them off.
    p.add_argument("--dynamic-cues-only", dest="static_cues", action="store_false", help=argparse.SUPPRESS)
    _progress_arg(p)


def _make_demo(args: argparse.Namespace) -> int:
    from hicmae.data.demo import make_demo_data

    out = make_demo_data(args.out_dir, num_clips=args.num_clips, seed=args.seed, num_classes=args.num_classes,
                         size=args.size, seconds=args.seconds, fps=args.fps, num_folds=args.num_folds,
                         workers=args.workers, static_cues=args.static_cues, progress=args.progress)
    print(f"wrote {args.num_clips} clips and pretrain.csv, finetune.csv, regression.csv to {out}")
    return 0


COMMANDS = [
    ("validate", "check every row of a manifest as training would open it", _validate_args, _validate),
    ("make-demo-data", "write a small synthetic audio-visual emotion dataset (by default the one `make demo` "
                       "trains on)", _demo_args, _make_demo),
]


# ---------------------------------------------------------------------------------------------- kfold
def _kfold_args(p: argparse.ArgumentParser) -> None:
    from hicmae.training.paper import DATASETS  # plain data: no training stack

    p.add_argument("--config", required=True, help="a fine-tuning YAML, e.g. configs/finetune/crema_d.yaml")
    p.add_argument("--folds", type=int, nargs="+", required=True, help="fold ids, e.g. 1 2 3 4 5")
    p.add_argument("--out", default=None, help="output folder (default: runs/kfold_<config name>)")
    p.add_argument("--dataset", default=None,
                   help="the benchmark, for the reported numbers beside ours: " + ", ".join(DATASETS)
                        + " (default: named by the config file, e.g. crema_d.yaml, or its logger tags)")
    p.add_argument("overrides", nargs=argparse.REMAINDER,
                   help="after --: options for finetune.py, "
                        "e.g. -- --model.init_checkpoint ckpt --model.linear_probe true")


def _kfold(args: argparse.Namespace) -> int:
    from hicmae.training import kfold

    return kfold.run(args)


COMMANDS.append(("kfold", "fine-tune or linear-probe every fold and tabulate mean ± std", _kfold_args, _kfold))


# ---------------------------------------------------------------------------------------------- predict
def _predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a classifier: release file (.safetensors) or folder, hub repo id, or a "
                                 "finetune.py checkpoint (.ckpt)")
    p.add_argument("videos", nargs="+", help="video files (or, with --no-face-crop, folders of face frames)")
    p.add_argument("--audio", nargs="+", default=None,
                   help="one wav per video, '-' for a video's own track (default: each video's own track)")
    p.add_argument("--face-crop", action=argparse.BooleanOptionalAction, default=True,
                   help="find and crop the face first, as the model was trained on face crops; --no-face-crop "
                        "for inputs that are face crops already (default: crop)")
    p.add_argument("--detector", choices=["short", "full"], default=None,
                   help="face detector: short (faces over about a tenth of the frame, fast) or full (smaller, "
                        "more distant faces, about 3x slower) (default: short)")
    p.add_argument("--device", default="cpu", help="(default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=8,
                   help="views (or timeline windows) per forward pass (default: %(default)s)")
    p.add_argument("--workers", type=int, default=0,
                   help="processes that decode and crop files while the model runs (default: %(default)s)")
    p.add_argument("--segments", type=int, default=2,
                   help="temporal views per clip, averaged (default: %(default)s, as the original)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of one line per video")
    p.add_argument("--csv", metavar="OUT", default=None,
                   help="also write a CSV: video, audio, label, face_fraction, one column per output, error")
    p.add_argument("--timeline", action="store_true",
                   help="score every 2.56 s window of each video (for long videos); needs --out")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="--timeline: folder for <video stem>.csv, .png and .html")
    p.add_argument("--hop", type=float, default=1.0,
                   help="--timeline: seconds between window starts (default: %(default)s)")
    _progress_arg(p)


def _predict(args: argparse.Namespace) -> int:
    """Exit status 0 when every file got scores, 1 when any failed (each failure named on stderr),
    2 when nothing could run (model not loadable, bad options)."""
    from hicmae.errors import HiCMAEError
    from hicmae.inference import Predictor, write_predictions_csv

    if args.timeline and not args.out:
        print("error: --timeline needs --out DIR for its files", file=sys.stderr)
        return 2
    if args.timeline and args.csv:
        print("error: --timeline writes one CSV per video into --out; --csv is for whole-file predictions",
              file=sys.stderr)
        return 2
    try:
        crop_options = {"detector": args.detector} if args.detector else None
        if args.audio:
            args.audio = [None if a == "-" else a for a in args.audio]
        predictor = Predictor(args.model, args.device, args.segments, face_crop=args.face_crop,
                              crop_options=crop_options)
        if args.timeline:
            return _predict_timeline(predictor, args)
        results = predictor.predict(args.videos, args.audio, args.batch_size, args.workers, progress=args.progress)
        if args.csv:
            write_predictions_csv(results, args.csv)
    except (HiCMAEError, OSError) as err:  # OSError: the --csv or --out path cannot be written
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=1))
    for r in results:
        if r.ok and not args.json:
            scores = " ".join(f"{n}={s:.3f}" for n, s in zip(r.names, r.scores))
            print(f"{r.video}\t{r.label or ''}\t{scores}")
    return _report_failures([r.error for r in results if not r.ok], len(results))


def _predict_timeline(predictor, args: argparse.Namespace) -> int:
    from hicmae.timeline import run_timelines

    results = run_timelines(predictor, args.videos, args.audio, args.out, hop=args.hop, batch_size=args.batch_size,
                            progress=args.progress)
    if args.json:
        print(json.dumps(results, indent=1))
    for r in results:
        if r["error"] is None and not args.json:
            print(f"{r['video']}\t{r['windows']} windows, {r['no_face']} without a face\t{r['html']}")
    return _report_failures([r["error"] for r in results if r["error"] is not None], len(results))


def _report_failures(errors: list[str], total: int) -> int:
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    if errors:
        print(f"{len(errors)} of {total} videos failed", file=sys.stderr)
    return 1 if errors else 0


COMMANDS.append(("predict", "predict emotions for videos (raw or face crops), or their timeline",
                 _predict_args, _predict))


# ---------------------------------------------------------------------------------------------- export
def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a .ckpt written by pretrain.py or finetune.py, or an original checkpoint-*.pth")
    p.add_argument("out", help="the release folder to write (model.safetensors, config.json, README.md model card, "
                               "checksums.sha256); a name ending in .safetensors writes the one-file release instead")
    p.add_argument("--class-names", default=None, help="comma-separated, if the checkpoint does not record them")
    p.add_argument("--license", default=None,
                   help="licence of the weights for the model card, a Hub identifier such as mit or cc-by-4.0 "
                        "(default: unknown)")
    p.add_argument("--dataset", default=None, help="the training dataset's name, for the model card (e.g. CREMA-D)")
    p.add_argument("--name", default=None, help="the model card's title (default: the folder's name)")
    p.add_argument("--description", default=None, help="a paragraph for the top of the model card")
    p.add_argument("--metrics", default=None,
                   help="a metrics.json to put in the card (default: the run's results/<checkpoint>/metrics.json, "
                        "when it exists)")
    p.add_argument("--preset", default=None, choices=["tiny", "small", "base"],
                   help="original .pth only: the preset, where the widths do not say it")
    p.add_argument("--model-overrides", default=None, metavar="JSON",
                   help='original .pth only: ModelConfig fields the shapes do not show, e.g. \'{"video_heads": 4}\'')
    p.add_argument("--push-to-hub", default=None, metavar="REPO_ID",
                   help="also publish the folder to this Hugging Face Hub repo (user/name; needs `hf auth login`)")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")


def _export(args: argparse.Namespace) -> int:
    from hicmae.errors import HiCMAEError
    from hicmae.training.export import export_checkpoint

    names = [n.strip() for n in args.class_names.split(",")] if args.class_names else None
    card = {k: getattr(args, k) for k in ("license", "dataset", "name", "description") if getattr(args, k)}
    try:
        overrides = json.loads(args.model_overrides) if args.model_overrides else None
    except ValueError as exc:
        print(f"error: --model-overrides is not JSON: {exc}", file=sys.stderr)
        return 2
    if args.push_to_hub and args.out.endswith(".safetensors"):
        print("error: --push-to-hub publishes a release folder: give a folder name, not a .safetensors file",
              file=sys.stderr)
        return 2
    try:
        path = export_checkpoint(args.checkpoint, args.out, class_names=names, preset=args.preset,
                                 overrides=overrides, metrics=args.metrics, **card)
        print(f"wrote {path}")
        if args.push_to_hub:
            from hicmae.hub import push_to_hub

            print(f"pushed to {push_to_hub(path, args.push_to_hub, private=args.private or None)}")
    except HiCMAEError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


COMMANDS.append(("export", "write a training checkpoint or an original .pth as a release folder (Hugging Face "
                           "Hub layout, model card, checksums) or a one-file release", _export_args, _export))


# ---------------------------------------------------------------------------------------------- prepare
def _prepare_args(p: argparse.ArgumentParser) -> None:
    from hicmae.data.prepare import DATASETS, builder

    sub = p.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    for name in DATASETS:
        b = builder(name)
        d = sub.add_parser(name, aliases=[name.replace("_", "-")] if "_" in name else [],
                           help=f"{b.title}: {b.headline}", description=f"{b.title} ({b.source}). {b.expects}")
        d.add_argument("raw_dir", help=f"the {b.title} tree as distributed")
        d.add_argument("out_dir", help="folder for the manifests, dropped.csv and prepare.json")
        for o in b.options:
            d.add_argument(f"--{o.name.replace('_', '-')}", dest=o.name, type=o.type, choices=o.choices,
                           default=None, help=f"{o.help} (default: {o.default})")
        d.set_defaults(_builder=b, _options=[o.name for o in b.options])


def _prepare(args: argparse.Namespace) -> int:
    b = args._builder
    status = _report(lambda: b.run(args.raw_dir, args.out_dir, **{k: getattr(args, k) for k in args._options}))
    if status == 0 and b.config:
        print(f"config: {b.config} (README, 'Datasets', shows the command)")
    return status


COMMANDS.append(("prepare", "turn a benchmark as distributed into manifests with folds", _prepare_args, _prepare))


# ---------------------------------------------------------------------------------------------- shard
def _part(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/n, e.g. 1/4, got {text!r}") from None
    return i, n


def _shard_args(p: argparse.ArgumentParser) -> None:
    from hicmae.data.shards.writer import ShardSettings

    d = ShardSettings()
    p.add_argument("manifest", help="CSV manifest (or an original list) of the clips to pack")
    p.add_argument("out_dir", help="folder for the shards, plan.json, index.json, clips.csv and bad_clips.csv")
    p.add_argument("--root", default=None, help="data root for relative paths (default: the manifest's folder)")
    p.add_argument("--targets", default=None, help="comma-separated regression target columns")
    p.add_argument("--encoding", choices=["jpeg", "png"], default=d.encoding,
                   help="frame images: jpeg (small, decodable on the GPU) or png (lossless) (default: %(default)s)")
    p.add_argument("--quality", type=int, default=d.quality, help="JPEG quality (default: %(default)s)")
    p.add_argument("--size", type=int, default=d.size,
                   help="square frame side after resizing, the model's input size; 0 keeps the decoded size "
                        "(default: %(default)s)")
    p.add_argument("--voxceleb2-crop", action="store_true",
                   help="apply the original's VoxCeleb2 crop (top 160 rows, centred) before resizing")
    p.add_argument("--clips-per-shard", type=int, default=d.clips_per_shard,
                   help="clips per tar file (default: %(default)s; bench/RESULTS.md has sizes per clip)")
    p.add_argument("--shuffle-seed", type=int, default=d.shuffle_seed,
                   help="rows are packed in this seed's random order; -1 keeps the manifest order (default: %(default)s)")
    p.add_argument("--folder-fps", type=float, default=d.folder_fps, help="frame rate of frame folders")
    p.add_argument("--workers", type=int, default=None, help="processes (default: one per CPU core)")
    p.add_argument("--part", type=_part, default=(1, 1),
                   help="i/n: write only every n-th shard starting at the i-th, so n machines share the work "
                        "(default: 1/1)")
    _progress_arg(p)


def _shard(args: argparse.Namespace) -> int:
    from hicmae.data.shards.writer import ShardSettings, shard_manifest

    settings = ShardSettings(encoding=args.encoding, quality=args.quality, size=args.size or None,
                             voxceleb2_crop=args.voxceleb2_crop, clips_per_shard=args.clips_per_shard,
                             shuffle_seed=None if args.shuffle_seed < 0 else args.shuffle_seed,
                             folder_fps=args.folder_fps)
    targets = [t.strip() for t in args.targets.split(",")] if args.targets else None
    return _report(lambda: shard_manifest(args.manifest, args.out_dir, settings, root=args.root,
                                          target_columns=targets, workers=args.workers, part=args.part,
                                          progress=args.progress))


COMMANDS.append(("shard", "pack a manifest's clips into tar shards for fast training", _shard_args, _shard))


# ---------------------------------------------------------------------------------------------- extract-features
def _features_args(p: argparse.ArgumentParser) -> None:
    from hicmae.features import FEATURES

    p.add_argument("model", help="a release file or folder, a hub repo id, a .ckpt or an original .pth; "
                                 "classifier or pretraining model")
    p.add_argument("manifest", help="CSV manifest (or an original list) of the clips")
    p.add_argument("out", help="features.parquet (one row per clip), or features.npy (+ features.csv, the clip ids)")
    p.add_argument("--features", default="fusion",
                   help=f"comma-separated, from: {', '.join(FEATURES)} (default: %(default)s, the hierarchical "
                        "fusion feature the classifier head sees)")
    p.add_argument("--root", default=None, help="data root for relative paths (default: the manifest's folder)")
    p.add_argument("--device", default="cpu", help="(default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=8, help="views per forward pass (default: %(default)s)")
    p.add_argument("--workers", type=int, default=0, help="processes that decode clips (default: %(default)s)")
    p.add_argument("--segments", type=int, default=2,
                   help="temporal views per clip, whose features are averaged (default: %(default)s)")
    _progress_arg(p)


def _features(args: argparse.Namespace) -> int:
    """Exit status 0 when every clip got features, 1 when some failed (named on stderr), 2 when nothing ran."""
    from hicmae.errors import HiCMAEError
    from hicmae.features import extract_features

    names = [n.strip() for n in args.features.split(",") if n.strip()]
    try:
        summary = extract_features(args.model, args.manifest, args.out, features=names, root=args.root,
                                   device=args.device, batch_size=args.batch_size, num_workers=args.workers,
                                   num_segments=args.segments, progress=args.progress)
    except HiCMAEError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    lines = summary.lines()
    print(lines[0])
    for line in lines[1:]:
        print(line, file=sys.stderr)
    return 1 if summary.failed else 0


COMMANDS.append(("extract-features", "write per-clip embeddings of a manifest's clips (Parquet or .npy) for "
                                     "your own models", _features_args, _features))


# ---------------------------------------------------------------------------------------------- preprocess
def _preprocess_args(p: argparse.ArgumentParser) -> None:
    from hicmae.preprocess.faces import DEFAULT_DETECT_EVERY, DEFAULT_MARGIN, DEFAULT_MAX_GAP, DEFAULT_SIZE

    p.add_argument("input", help="a folder of videos (searched at any depth) or a manifest (CSV or an original list)")
    p.add_argument("out_dir", help="folder for videos/ (or frames/), audio/, manifest.csv, failures.csv, summary.json")
    p.add_argument("--root", default=None, help="data root for a manifest's relative paths (default: its folder)")
    p.add_argument("--targets", default=None, help="comma-separated regression target columns of the manifest")
    p.add_argument("--audio-dir", default=None,
                   help="for a folder input: separate audio files (m4a, wav...) in a tree mirroring it, matched by "
                        "name, e.g. VoxCeleb2's dev/aac for dev/mp4 (default: each video's own audio track)")
    p.add_argument("--size", type=int, default=None,
                   help=f"side of the square face crop in pixels (default: {DEFAULT_SIZE}; 224 for VoxCeleb2-style "
                        "pretraining data)")
    p.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                   help="face-box side added on each side of the face (default: %(default)s, forehead to chin as "
                        "OpenFace's aligned faces; about 0.6 frames head and shoulders as VoxCeleb2)")
    p.add_argument("--shift", type=float, default=0.0,
                   help="move the square down by this many face sides (negative: up) (default: %(default)s)")
    p.add_argument("--detector", choices=["short", "full"], default="short",
                   help="BlazeFace model: short range (fast; faces wider than about a tenth of the frame) or full "
                        "range (about 3x slower; small faces) (default: %(default)s)")
    p.add_argument("--min-score", type=float, default=0.7,
                   help="detector score to accept a face (default: %(default)s)")
    p.add_argument("--detect-every", type=int, default=DEFAULT_DETECT_EVERY,
                   help="run the detector on every k-th frame and interpolate between (default: %(default)s)")
    p.add_argument("--max-gap", type=float, default=DEFAULT_MAX_GAP,
                   help="seconds without a face that are bridged by interpolation (default: %(default)s)")
    p.add_argument("--long-gaps", choices=["fail", "keep"], default="fail",
                   help="a clip whose face is lost for longer than --max-gap: fail it (failures.csv says where) or "
                        "keep it, holding the last box over the gap (default: %(default)s)")
    p.add_argument("--output", choices=["mp4", "frames"], default="mp4",
                   help="crops as an H.264 mp4 per clip, or a folder of jpg frames per clip (default: %(default)s)")
    p.add_argument("--crf", type=int, default=18,
                   help="x264 quality of the mp4s, lower is better (default: %(default)s)")
    p.add_argument("--no-crop", dest="crop", action="store_false", default=None,
                   help="keep the videos as they are (already face crops) and only write the wavs")
    p.add_argument("--max-av-diff", type=float, default=None,
                   help="leave out clips whose audio and video durations differ by this many seconds or more "
                        "(default: not checked; 0.1 with --voxceleb2)")
    p.add_argument("--voxceleb2", action="store_true",
                   help="VoxCeleb2 as distributed, as the original prepared it: keep the 224x224 face videos, "
                        "convert the m4a (--audio-dir) or the mp4's own track to 16 kHz wav, leave out clips whose "
                        "audio and video differ by 0.1 s or more; --crop-faces recrops them")
    p.add_argument("--crop-faces", dest="crop", action="store_true", default=None,
                   help="with --voxceleb2: cut new face crops from the videos instead of keeping them")
    p.add_argument("--workers", type=int, default=None, help="processes (default: one per CPU core)")
    p.add_argument("--part", type=_part, default=(1, 1),
                   help="i/n: process only every n-th clip starting at the i-th, so n machines share the work; the "
                        "run that completes the input writes the manifest (default: 1/1)")
    p.add_argument("--retry-failed", action="store_true",
                   help="redo clips an earlier run recorded as failed (finished clips are always skipped)")
    _progress_arg(p)


def _preprocess(args: argparse.Namespace) -> int:
    from hicmae.preprocess.faces import FaceSettings
    from hicmae.preprocess.run import VOXCELEB2, PreprocessSettings, preprocess

    base = VOXCELEB2 if args.voxceleb2 else PreprocessSettings()
    faces = FaceSettings(detector=args.detector, min_score=args.min_score, detect_every=args.detect_every,
                         max_gap=args.max_gap)
    settings = PreprocessSettings(
        size=args.size or base.size, margin=args.margin, shift=args.shift,
        faces=faces, long_gaps=args.long_gaps, output=args.output, crf=args.crf,
        crop=base.crop if args.crop is None else args.crop,
        max_av_diff=args.max_av_diff if args.max_av_diff is not None else base.max_av_diff)
    targets = [t.strip() for t in args.targets.split(",")] if args.targets else None
    return _report(lambda: preprocess(args.input, args.out_dir, settings, root=args.root,
                                      audio_dir=args.audio_dir, target_columns=targets, workers=args.workers,
                                      part=args.part, retry_failed=args.retry_failed, progress=args.progress))


COMMANDS.append(("preprocess", "raw videos to face-crop videos, 16 kHz wavs, a manifest and a failure log",
                 _preprocess_args, _preprocess))


class _LazyParser(argparse.ArgumentParser):
    """A subcommand's parser that adds its arguments the first time it parses or prints help, so that
    building the whole ``hicmae`` parser runs no command's ``add_arguments`` (some import what their
    defaults come from)."""

    def __init__(self, *args, add_arguments=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._add_arguments = add_arguments

    def _complete(self) -> None:
        if self._add_arguments is not None:
            add, self._add_arguments = self._add_arguments, None
            add(self)

    def parse_known_args(self, args=None, namespace=None):
        self._complete()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._complete()
        return super().format_usage()

    def format_help(self) -> str:
        self._complete()
        return super().format_help()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hicmae", description="HiCMAE tools")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_LazyParser)
    for name, help_text, add_arguments, run in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text, add_arguments=add_arguments)
        p.set_defaults(_run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args._run(args)


if __name__ == "__main__":
    sys.exit(main())
