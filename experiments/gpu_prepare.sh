#!/usr/bin/env bash
# Stage what experiments/gpu_session.sh needs on the device (which reaches no network and sees only the
# working tree plus carried paths): the training and eval clips and a constriction wheel for its Python.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED:-$ROOT/../shared/data}
mkdir -p "$ROOT/runs/gpu-data" "$ROOT/runs/gpu-wheels"
rm -rf "$ROOT/runs/gpu-data/train" "$ROOT/runs/gpu-data/eval"
cp -r "$SHARED/train" "$ROOT/runs/gpu-data/train"
cp -r "$SHARED/eval" "$ROOT/runs/gpu-data/eval"
# the device image runs Python 3.12 on x86_64 (KINDS.md)
pip download -q --only-binary=:all: --no-deps --python-version 3.12 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$ROOT/runs/gpu-wheels" 'constriction>=0.5,<0.6'
du -sh "$ROOT/runs/gpu-data" "$ROOT/runs/gpu-wheels"
