"""Where the still-scene drift comes from (issue 23, seventeenth session): hold the first frame of each eval clip for
48 frames at `fixed 1.0` and print, averaged over the clips, each frame's PSNR, the share of token indices that
changed since the last frame, and its packet bits. BF16=1 runs the model under bf16 autocast.

usage: python experiments/still_drift.py [WEIGHTS]     (default: the shipped weights; ~1 min at one thread)
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np
import torch

from livetok.engine.checkpoint import load_default, load_weights
from livetok.engine.config import BudgetConfig, SenderConfig
from livetok.engine.metrics import psnr
from livetok.stream.session import SenderSession
from livetok.stream.video_io import read_video

FRAMES = 48
SHOWN = (0, 1, 2, 3, 5, 8, 12, 15, 20, 25, 30, 35, 40, 47)

torch.set_num_threads(1)
model = load_weights(sys.argv[1]) if len(sys.argv) > 1 else load_default()
model.eval()
precision = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if os.environ.get("BF16") else contextlib.nullcontext
sender = SenderConfig(budget=BudgetConfig(policy="fixed", rate=1.0), keyframe_interval=1000)
per_clip = []  # [clips, 3, FRAMES]: PSNR, share of indices changed, bits
for clip in sorted(Path("../shared/data/eval").glob("*.mkv")):
    still = read_video(clip, max_frames=1)[0][0]
    tx = SenderSession(model, sender)
    rows, last = [], None
    for t in range(FRAMES):
        with torch.no_grad(), precision():
            enc = tx.encode(still, timestamp_us=t * 33_333)
        idx = enc.tokens.indices[0].numpy()
        rows.append((psnr(still, enc.recon), 1.0 if last is None else float((idx != last).mean()), 8 * len(enc.data)))
        last = idx
    per_clip.append(np.array(rows).T)
mean = np.mean(per_clip, axis=0)
for t in SHOWN:
    print(f"t={t:2d} psnr {mean[0, t]:.3f} changed {mean[1, t]:.3f} bits {mean[2, t]:.0f}")
