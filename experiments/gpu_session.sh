#!/usr/bin/env bash
# One GPU window -> a trained model, its eval figures and CUDA-graph timings, in one command (issue 13).
#
#   experiments/gpu_prepare.sh               # here, once: copies the clips and a constriction wheel into runs/
#   run: experiments/gpu_session.sh 9        # on the device, carry ["runs/gpu-data", "runs/gpu-wheels"]
#   REHEARSE=1 experiments/gpu_session.sh    # here, on the CPU: the same steps with a tiny step count
#
# Trains for MINUTES of wall time (default 9) from INIT (default: the shipped weights, in their own preset;
# PRESET may name a larger one, which grows INIT with the new modules starting as the identity) with the
# clips on the device as uint8 tensors, bf16 autocast and large batches; fits the budget head; evaluates
# on the eval clips; times the CUDA-graph runtime. Everything lands in $OUT (the device tool brings it
# back) or runs/gpu-out. The device image has torch, opencv, rich and safetensors but not constriction
# (carried as a wheel) nor av/aiomqtt/aiortc (not needed here): the package is put on the path by
# symlinks, no install.
set -euo pipefail
MINUTES=${1:-9}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/runs/gpu-out}
DATA=${DATA:-$ROOT/runs/gpu-data}
INIT=${INIT:-$ROOT/engine/weights/default.safetensors}
PY=${PY:-python3}
# the preset the weights were trained in, read from their metadata (no livetok import needed)
PRESET=${PRESET:-$($PY -c "import json, sys; from safetensors import safe_open; f = safe_open(sys.argv[1], 'pt'); print(json.loads(f.metadata()['config'])['name'])" "$INIT")}
RATE_WEIGHT=${RATE_WEIGHT:-0.9}  # v11's (λ 0.9 beat 0.45 at mse weight 30)
MSE_WEIGHT=${MSE_WEIGHT:-30}     # MSE-dominant: at weight 1 the loss was L1 in effect (twelfth session)
CLIP_FRAMES=${CLIP_FRAMES:-48}   # long windows are what moved accumulation on the CPU runs
LR=${LR:-5e-4}                   # a fine-tune (CPU runs: 2e-4 to 3e-4 at batch 8; here 16x the batch)
mkdir -p "$OUT"
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/session.log"; }

PKG=$(mktemp -d)/pkg
mkdir -p "$PKG/livetok"
for d in engine stream export cli; do ln -s "$ROOT/$d" "$PKG/livetok/$d"; done
ln -s "$ROOT/benchmarks" "$PKG/livetok/bench"
export PYTHONPATH="$PKG${PYTHONPATH:+:$PYTHONPATH}"
if ls "$ROOT"/runs/gpu-wheels/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps "$ROOT"/runs/gpu-wheels/*.whl 2>&1 | tail -1 || true
fi
LT="$PY -m livetok.cli"

if [[ -n "${REHEARSE:-}" ]]; then
  DEVICE=cpu; BATCH=2; CROP=32; STEPS=3; HEAD=2; FRAMES=4; CLIP_FRAMES=4; EVAL_FRAMES=3; CALIB_FRAMES=2; BACKENDS="torch"
else
  DEVICE=cuda; BATCH=${BATCH:-128}; CROP=${CROP:-128}; STEPS=100000000; HEAD=${HEAD:-300}; FRAMES=60; CALIB_FRAMES=32
  EVAL_FRAMES=48; BACKENDS="torch cuda-graph"
  nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv | tee -a "$OUT/session.log" || true
fi
$PY -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/session.log"

log "train $PRESET for $MINUTES min (batch $BATCH, crop $CROP) from $INIT"
$LT train --data "$DATA/train" --preset "$PRESET" --init "$INIT" --arm elbo --router-signal gain \
  --rate-weight "$RATE_WEIGHT" --mse-weight "$MSE_WEIGHT" --steps "$STEPS" --max-minutes "$MINUTES" --batch "$BATCH" \
  --crop "$CROP" --clip-frames "$CLIP_FRAMES" --stream-frames "$CLIP_FRAMES" $((4 * CLIP_FRAMES)) \
  --head-steps "$HEAD" --lr "$LR" --lr-warmup 100 --device "$DEVICE" \
  --no-resume -o "$OUT/run" 2>&1 | tr '\r' '\n' | grep -v '^\s*$' | tail -5 | tee -a "$OUT/session.log"
cp "$OUT/run/log.jsonl" "$OUT/train_log.jsonl"

log "calibrate and evaluate"
$PY -c "from livetok.engine.calibrate import calibrate_file; calibrate_file('$OUT/run/model.safetensors', ['$DATA/train'], frames=$CALIB_FRAMES)" \
  2>&1 | tail -2 | tee -a "$OUT/session.log"
for spec in "fixed 1.0" "infotok 0.5" "learned 0.5" "learned 0.25"; do
  set -- $spec
  $LT eval "$DATA"/eval/*.mkv --weights "$OUT/run/model.safetensors" --policy "$1" --rate "$2" \
    --max-frames "$EVAL_FRAMES" --json > "$OUT/eval_$1_$2.json" 2>>"$OUT/session.log" || log "eval $1 failed"
  $PY - "$OUT/eval_$1_$2.json" <<'PY' | tee -a "$OUT/session.log"
import json, sys
r = json.load(open(sys.argv[1]))
m = r.get("overall", r)
print(sys.argv[1].rsplit("/", 1)[-1], {k: m[k] for k in ("psnr", "bits_per_frame", "bits_per_frame_v1") if k in m})
PY
done

log "speed: $BACKENDS"
$LT bench speed --weights "$OUT/run/model.safetensors" --backend $BACKENDS --device "$DEVICE" --size 256x192 \
  --frames "$FRAMES" --repeats 3 --json > "$OUT/speed.json" 2>>"$OUT/session.log" || log "bench speed failed"
cp "$OUT/run/model.safetensors" "$OUT/model.safetensors"
log "done: $OUT"
