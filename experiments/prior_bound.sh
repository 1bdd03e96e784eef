#!/usr/bin/env bash
# Issue 23 item 3: what could a learned prior on the wire save over packet v3's adaptive integer contexts?
# Clips: the 27 training files outside the router's held-out split (experiments/router_heldout.sh) for
# fitting, the 8 held-out clips and ../shared/data/eval for testing; 48 frames each at 256x192, default
# sender (learned 0.5), shipped weights. About 10 minutes on 2 cores.
# usage: experiments/prior_bound.sh HELDOUT_DIR OUT    (HELDOUT_DIR: router_heldout.sh's OUT/clips)
set -euo pipefail
held=${1:?held-out clips folder}; out=${2:?output folder}
data=../shared/data/train
mkdir -p "$out/clips" "$out/ltk"
names=$(for c in "$held"/*.mkv; do basename "${c%.mkv}"; done)
for f in $(find "$data" -type f \( -name '*.mkv' -o -name '*.mp4' -o -name '*.webm' \) | sort); do
  b=$(basename "${f%.*}"); echo "$names" | grep -qx "$b" && continue
  python ../shared/tools/make_eval_clip.py "$f" "$out/clips/$b.mkv" >/dev/null
done
for c in "$out"/clips/*.mkv; do livetok encode "$c" -o "$out/ltk/train_$(basename "${c%.mkv}").ltk" --max-frames 48 --threads 2; done
for c in "$held"/*.mkv ../shared/data/eval/*.mkv; do
  livetok encode "$c" -o "$out/ltk/test_$(basename "${c%.mkv}").ltk" --max-frames 48 --threads 2
done
# integer contexts both ends can compute: the coder's, learned initial counts, checkerboard, neighbours
python experiments/prior_probe.py --train "$out"/ltk/train_*.ltk --test "$out"/ltk/test_*.ltk --strength 16 64 256
# a float network on the receiver's state (decoder hidden state, last digits, 3x3): the upper bound
python experiments/prior_features.py "$out/train.pt" "$out"/clips/*.mkv
python experiments/prior_features.py "$out/test.pt" "$held"/*.mkv ../shared/data/eval/*.mkv
python experiments/prior_fit.py "$out/train.pt" "$out/test.pt" --steps 1500
python experiments/prior_fit.py "$out/train.pt" "$out/test.pt" --steps 1000 --no-hidden
