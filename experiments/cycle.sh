#!/usr/bin/env bash
# usage: experiments/cycle.sh INIT OUTDIR [HELD_MIN=12] [ELBO_MIN=30] [HEAD_STEPS=300]
# One cycle of v14's recipe (issue 23, fifteenth session; MODEL_CARD.md): held stretches at full rate (every stream
# holds a still stretch, every token sent), then v13's recipe at lr 2e-4, then the budget head alone on the trunk it
# will serve with (head steps run inside the second call). One thread, so two cycles can run side by side on two
# cores. The weights to measure are OUTDIR/elbo/model.safetensors: `experiments/postrun.sh OUTDIR/elbo` (name the
# folder so that runs/em-<name> does not collide, e.g. a symlink).
# HELD_WINDOW=64 (env) sets the held phase's gradient window and stream length (default 32: streams 32..64; 64: 64..96).
# TRAIN_ARGS (env) adds flags to both calls, e.g. TRAIN_ARGS="--seed 1" for a second line on other batches.
set -e
INIT=$1; O=$2; H=${3:-12}; E=${4:-30}; S=${5:-300}; W=${HELD_WINDOW:-32}
mkdir -p "$O"
COMMON="--data ../shared/data/train --preset default --batch 8 --crop 96 --mse-weight 30 --rate-weight 0.9
        --router-signal gain --steps 100000 --lr 2e-4 --lr-warmup 20 --threads 1 ${TRAIN_ARGS:-}"
# shellcheck disable=SC2086  # COMMON is a list of flags
livetok train $COMMON --init "$INIT" --head-steps 0 --arm fixed --fixed-rate 1.0 --freeze-prob 1.0 \
    --clip-frames "$W" --stream-frames "$W" $((W + 32)) --max-minutes "$H" -o "$O/held" > "$O/held.log" 2>&1
# shellcheck disable=SC2086
livetok train $COMMON --init "$O/held/model.safetensors" --head-steps "$S" --arm elbo --freeze-prob 0.5 \
    --clip-frames 32 --stream-frames 32 128 --max-minutes "$E" -o "$O/elbo" > "$O/elbo.log" 2>&1
