"""Encoder-side latent refinement (issue 23, twentieth session): how much of the gap is the encoder's, not the
decoder's? For each frame, the encoder's latent is refined by K Adam steps on the decoded frame's MSE (rounding
straight-through, the decoder and its state fixed, every position kept), and the best rounded latent seen is sent.
Only the sender changes: packets and the receiver are as before. Prints mean PSNR and packet bits per frame over
the eval clips (first F frames each), for the given policy.

usage: python experiments/refine_probe.py K LR [POLICY RATE FRAMES WEIGHTS]
"""

from __future__ import annotations

import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from livetok.engine.checkpoint import load_default, load_weights
from livetok.engine.config import BudgetConfig, SenderConfig
from livetok.engine.metrics import psnr
from livetok.engine.model import Tokenizer
from livetok.stream.session import SenderSession
from livetok.stream.video_io import read_video

K, LR = int(sys.argv[1]), float(sys.argv[2])
POLICY = sys.argv[3] if len(sys.argv) > 3 else "fixed"
RATE = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
FRAMES = int(sys.argv[5]) if len(sys.argv) > 5 else 24
torch.set_num_threads(1)
model = load_weights(sys.argv[6]) if len(sys.argv) > 6 else load_default()
model.eval()
for p in model.parameters():
    p.requires_grad_(False)


def refined(self: Tokenizer, x: Tensor, prev_recon: Tensor, prev_hidden: Tensor,
            predict: bool) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
    z, features = self.encoder(x, prev_recon, prev_hidden)
    _, indices = self.fsq(z)
    if K:
        with torch.enable_grad():
            u = z.detach().clone().requires_grad_(True)
            opt = torch.optim.Adam([u], lr=LR)
            mask = torch.ones(x.shape[0], z.shape[-2] * z.shape[-1], dtype=torch.bool)
            best = None
            for _ in range(K + 1):
                codes, idx = self.fsq(u)  # rounding straight-through, as in training
                recon, _ = self.decoder(codes, mask, prev_recon, prev_hidden)
                loss = torch.mean((recon - x) ** 2)
                if best is None or loss.item() < best:
                    best, indices = loss.item(), idx
                opt.zero_grad()
                loss.backward()
                opt.step()
    return indices, (self.budget_head(features) if predict else None)


model.run_encoder = types.MethodType(refined, model)  # type: ignore[method-assign]
sender = SenderConfig(budget=BudgetConfig(policy=POLICY, rate=RATE))
rows = []
t0 = time.perf_counter()
for clip in sorted(Path("../shared/data/eval").glob("*.mkv")):
    frames = read_video(clip, max_frames=FRAMES)[0]
    tx = SenderSession(model, sender)
    p, b = [], []
    for t, f in enumerate(frames):
        enc = tx.encode(f, timestamp_us=t * 33_333)
        p.append(psnr(f, enc.recon))
        b.append(8 * len(enc.data))
    rows.append((np.mean(p), np.mean(b)))
    print(f"{clip.stem}: {np.mean(p):.3f} dB {np.mean(b):.0f} bits", flush=True)
m = np.mean(rows, axis=0)
print(f"K={K} lr={LR} {POLICY} {RATE}: {m[0]:.3f} dB {m[1]:.0f} bits/frame ({time.perf_counter() - t0:.0f} s)")
