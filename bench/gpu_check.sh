#!/usr/bin/env bash
# Every GPU measurement of issue 11 in one run, for a lent GPU: under 8 minutes, all results in one folder.
#
#   bash bench/gpu_check.sh [OUT_DIR]          # OUT_DIR defaults to $OUT, else bench_out/
#
# Stages (each under its own time limit, so the whole run stays under 8 minutes; a stage that fails or runs
# out of time is reported in summary.md and the next one runs):
#   1. environment: GPU, driver, torch, which optional packages are missing          (~10 s)
#   2. model bench, base, eager: ours vs the original as it ran, batch 40/80/128/256,
#      FLOPs per clip, MFU, peak memory, which SDPA kernel the decoder's attention runs, patch embedding
#      visible-only vs all, AdamW fused vs foreach vs loop                                        (<= 120 s)
#   3. model bench, base, compiled (torch.compile of forward + loss): ours at batch 40 and 128   (<= 150 s)
#      then every row of 2-3 in one table with the ratios ours / original                    (<= 20 s)
#   4. loader: mp4 vs shards, with GPU decoding (bench/data_loader.py --device cuda)     (<= 45 s)
#   5. short real pretraining run on shards, bf16 + compile, end-to-end clips/s (bench/pretrain_e2e.py) (<= 120 s)
#   6. headline: bench/time_to_pretrain.py from 2-4                                   (<= 20 s)
# Files written (7, flat: the device tool brings back at most 8 files, 2 folders down):
#   summary.md (what to read), gpu_check.log (every stage's full output), model_eager.json,
#   model_compiled.json, model_all.json (both merged), data_loader.json, pretrain_e2e.json
#
# The lent GPU image has torch, Lightning, timm, einops, safetensors but no wandb, decord, av, jsonargparse,
# omegaconf or soundfile (see ENVIRONMENT.md). Stages 1-3 and 6 need none of them (bench/model_step.py
# imports only torch, timm layers, einops and hicmae.models/losses/masking/training.optim). Stages 4-5 do:
# carry wheels in a folder (default .wheels/, or $WHEELS), made on the development machine with e.g.
#   pip download --no-deps --only-binary=:all: -d .wheels decord==0.6.0 av==18.1.0 soundfile==0.14.0 \
#       jsonargparse==4.53.0 omegaconf==2.4.0 docstring-parser typeshed-client
# (ignored in .git/info/exclude and named in the device tool's carry), and this script installs them without the
# network; without them those stages are skipped, not failed.
set -u
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-bench_out}}
mkdir -p "$OUT_DIR"
PY=${PYTHON:-python}
WHEELS=${WHEELS:-.wheels}
# Smaller settings for a smoke test of this script on the CPU, e.g.
#   GPU_CHECK_PRESET=tiny GPU_CHECK_BATCHES="1 2" GPU_CHECK_COMPILED_BATCHES=1 GPU_CHECK_STEPS=1 bash bench/gpu_check.sh /tmp/x
PRESET=${GPU_CHECK_PRESET:-base}
BATCHES=${GPU_CHECK_BATCHES:-40 80 128 256}
COMPILED_BATCHES=${GPU_CHECK_COMPILED_BATCHES:-40 128}
STEPS=${GPU_CHECK_STEPS:-10}
SUMMARY="$OUT_DIR/summary.md"
LOG="$OUT_DIR/gpu_check.log"
START=$(date +%s)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 WANDB_MODE=offline

elapsed() { echo $(( $(date +%s) - START )); }
note() { echo "$*" | tee -a "$SUMMARY"; }
stage() {  # stage NAME LIMIT_S CMD...: run under a time limit, log the output, note the outcome
    local name=$1 limit=$2 log=$LOG; shift 2
    note ""
    note "## $name (started at ${SECONDS}s, limit ${limit}s)"
    note '```'
    echo "\$ $*" >>"$log"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$log" | grep -v -e '^\s*$' -e 'Warning' | tail -n 60 >>"$SUMMARY"
    local rc=${PIPESTATUS[0]}
    note '```'
    case $rc in
        0) note "$name: done in $(elapsed)s total so far" ;;
        124|137) note "$name: STOPPED at its ${limit}s limit (partial output above)" ;;
        *) note "$name: FAILED with exit code $rc" ;;
    esac
    return 0
}

: >"$SUMMARY"
: >"$LOG"
note "# gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ)"

# ---------------------------------------------------------------- 1. environment
note ""
note "## environment"
note '```'
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1
  nproc | sed 's/^/CPU cores: /'
  $PY - <<'EOF'
import importlib, torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
if torch.cuda.is_available():
    print(f"GPU {torch.cuda.get_device_name()}, capability {torch.cuda.get_device_capability()}, "
          f"bf16 {torch.cuda.is_bf16_supported()}")
missing = []
for name in ("pytorch_lightning", "timm", "einops", "safetensors", "wandb", "decord", "av", "jsonargparse",
             "omegaconf", "soundfile", "torchaudio", "torchvision"):
    try:
        importlib.import_module(name)
    except Exception:
        missing.append(name)
print("missing python packages:", ", ".join(missing) or "none")
EOF
} 2>&1 | tee -a "$SUMMARY"
note '```'
HAVE_WHEELS=0
if [ -d "$WHEELS" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    $PY -m pip install --quiet --no-index --find-links "$WHEELS" "$WHEELS"/*.whl >>"$LOG" 2>&1 \
        && HAVE_WHEELS=1 && note "installed the carried wheels from $WHEELS"
else
    note "no wheels carried in $WHEELS: stages 4 and 5 will be skipped if their packages are missing"
fi

# ---------------------------------------------------------------- 2-3. model bench, base
stage "model bench: $PRESET, eager, ours vs original, batch sweep" 120 \
    $PY bench/model_step.py --presets "$PRESET" --kinds pretrain --variants ours original --attention sdpa \
        --modes eager --batch-size $BATCHES --steps "$STEPS" --warmup 3 --flops --sdpa-report --embed-report \
        --optimizer-report \
        --out "$OUT_DIR/model_eager.json"
stage "model bench: $PRESET, compiled, ours" 150 \
    $PY bench/model_step.py --presets "$PRESET" --kinds pretrain --variants ours --attention sdpa \
        --modes compiled --batch-size $COMPILED_BATCHES --steps "$STEPS" --warmup 3 --flops \
        --out "$OUT_DIR/model_compiled.json"
MODEL_JSONS=$(ls "$OUT_DIR"/model_eager.json "$OUT_DIR"/model_compiled.json 2>/dev/null | tr '\n' ' ')
if [ -n "$MODEL_JSONS" ]; then
    stage "model bench: every row, ours / original" 20 \
        $PY bench/model_step.py --merge $MODEL_JSONS --out "$OUT_DIR/model_all.json"
fi

# ---------------------------------------------------------------- 4. loader with GPU decoding
# mp4 vs shards on the same clips, per CPU core; the deferred row is the CPU work left when the GPU decodes,
# and the DeviceAugment row the GPU's rate for decoding, cropping and fbank of whole batches.
if [ $HAVE_WHEELS = 1 ] || $PY -c "import decord, av, soundfile" 2>/dev/null; then
    stage "loader: mp4 vs shards, GPU decoding" 45 \
        $PY bench/data_loader.py --device cuda --clips 8 --samples 48 --batch-size 40 --out "$OUT_DIR/data_loader.json"
else
    note ""; note "## loader: skipped (decord, av or soundfile missing and no wheels carried)"
fi

# ---------------------------------------------------------------- 5. short real pretraining on shards
# A real Trainer on shards written here (JPEG, VoxCeleb2 crop), bf16 and compile, device augmentation on:
# end-to-end clips/s against the same Trainer fed one batch from memory, with the loader workers printed.
if [ $HAVE_WHEELS = 1 ] || $PY -c "import decord, av, soundfile, jsonargparse" 2>/dev/null; then
    stage "pretraining: $PRESET on shards, bf16-mixed, compiled" 120 \
        $PY bench/pretrain_e2e.py --preset "$PRESET" --batch-size 40 --workers $(( $(nproc) - 2 )) --clips 96 \
            --seconds 4 --steps 20 --warmup 8 --precision bf16-mixed --compile --out "$OUT_DIR/pretrain_e2e.json"
else
    note ""; note "## pretraining on shards: skipped (decord, av, soundfile or jsonargparse missing, no wheels)"
fi

# ---------------------------------------------------------------- 6. the headline
if [ -f "$OUT_DIR/model_all.json" ]; then
    if [ -f "$OUT_DIR/data_loader.json" ]; then
        stage "time to pretrain: shards decoded on the CPU" 10 \
            $PY bench/time_to_pretrain.py --model "$OUT_DIR/model_all.json" --preset "$PRESET" \
                --loader "$OUT_DIR/data_loader.json" --loader-row "shards-jpeg"
        stage "time to pretrain: shards decoded on the GPU" 10 \
            $PY bench/time_to_pretrain.py --model "$OUT_DIR/model_all.json" --preset "$PRESET" \
                --loader "$OUT_DIR/data_loader.json" --loader-row "deferred"
    else
        stage "time to pretrain (mp4 loader figure from bench/RESULTS.md)" 10 \
            $PY bench/time_to_pretrain.py --model "$OUT_DIR/model_all.json" --preset "$PRESET" \
                --loader-clips-per-core 8.4
    fi
fi
note ""
note "gpu_check finished in $(elapsed)s"
