#!/usr/bin/env bash
# Issue 23 item 4: does the learned budget head generalise? Hold 8 of the 35 training clips out of the
# head's training, make evaluation clips of them (../shared/tools/make_eval_clip.py: first 48 frames,
# 256x192), train a fresh head on the other 27 (the trunk stays v10's), and compare the policies'
# tokens saved at equal PSNR on the held-out clips (`livetok bench rd`, no codecs).
# usage: experiments/router_heldout.sh OUT [HEAD_STEPS]     (about 40 min for 1200 steps on 2 busy cores)
set -euo pipefail
out=${1:?output folder}; steps=${2:-1200}
data=../shared/data/train
held="asl/walk.mkv asl/book.mkv intel-car-detection.mp4 more/mdn-handheld-toy-frog.mp4
      more/udacity-dashcam-highway-lanes.mp4 more/pixabay-bee-on-flower.mp4 more/tears-of-steel-battle.webm
      more/gnome-screencast-display-settings.webm"
mkdir -p "$out/clips"
for f in $held; do python ../shared/tools/make_eval_clip.py "$data/$f" "$out/clips/$(basename "${f%.*}").mkv"; done
# the other clips: every training file whose name is not held out
split=$(python - "$data" $held <<'PY'
import sys, pathlib
root, held = pathlib.Path(sys.argv[1]), {pathlib.Path(h).stem for h in sys.argv[2:]}
print(" ".join(str(p) for p in sorted(root.rglob("*")) if p.is_file() and p.suffix in {".mkv", ".mp4", ".webm"}
               and p.stem not in held))
PY
)
# v10 without its budget head: a fresh head learns from nothing
python - "$out/nohead.safetensors" <<'PY'
import sys
from safetensors import safe_open
from safetensors.torch import save_file
with safe_open("engine/weights/default.safetensors", "pt") as f:
    meta, t = f.metadata(), {k: f.get_tensor(k) for k in f.keys() if not k.startswith("budget_head.")}
save_file(t, sys.argv[1], metadata=meta)
PY
livetok train --preset default --init "$out/nohead.safetensors" --steps 0 --head-steps "$steps" \
  --data $split --crop 96 --clip-frames 16 --batch 8 --threads 1 --calibrate -o "$out/head"
livetok bench rd "$out/clips" --policies learned infotok-gain oracle --codecs --threads 1 --json \
  --weights "$out/head/model.safetensors" > "$out/rd_head.json"
livetok bench rd "$out/clips" --policies learned infotok-gain oracle --codecs --threads 1 --json > "$out/rd_v10.json"
