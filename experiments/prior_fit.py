"""Issue 23 item 3, step 2: how many bits per kept token would a conditional prior on the receiver's state
save over the adaptive integer contexts? Fits a small network (float, offline) on the training clips' dumps
(experiments/prior_features.py) and compares its cross-entropy on the test clips with the coder's
adaptive code length on the same tokens. An upper bound on what an integerised version could reach.

usage: python experiments/prior_fit.py TRAIN.pt TEST.pt [--steps N] [--no-hidden] [--no-last]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).parent))
from livetok.engine.fsq_index import index_to_digits
from prior_probe import Model

LEVELS = (8, 8, 8, 5, 5, 5)
GRID = (24, 32)


def digits_of(rec: dict) -> Tensor:
    """[T, D, N] the digits of every position's full-rate token, frame by frame."""
    return torch.stack([torch.stack([torch.as_tensor(x) for x in index_to_digits(i.long().numpy(), LEVELS)])
                        for i in rec["indices"]])


def lasts(rec: dict, digits: Tensor) -> Tensor:
    """[T, D, N] last digit sent at each position before frame t (-1: none since the keyframe)."""
    T, N = rec["mask"].shape
    cur = torch.full((len(LEVELS), N), -1, dtype=torch.int64)
    out = []
    for t in range(T):
        if rec["key"][t]:
            cur = torch.full((len(LEVELS), N), -1, dtype=torch.int64)
        out.append(cur.clone())
        m = rec["mask"][t]
        cur[:, m] = digits[t][:, m]
    return torch.stack(out)


class Prior(nn.Module):
    def __init__(self, cs: int, use_hidden: bool, use_last: bool, width: int = 96) -> None:
        super().__init__()
        self.use_hidden, self.use_last = use_hidden, use_last
        cin = (cs if use_hidden else 0) + (sum(lv + 1 for lv in LEVELS) if use_last else 0) + 1
        self.trunk = nn.Sequential(nn.Conv2d(cin, width, 3, padding=1), nn.GELU(), nn.Conv2d(width, width, 1),
                                   nn.GELU())
        self.heads = nn.ModuleList()
        prev = 0
        for lv in LEVELS:
            self.heads.append(nn.Sequential(nn.Linear(width + prev, width), nn.GELU(), nn.Linear(width, lv)))
            prev += lv

    def forward(self, hidden: Tensor, last: Tensor, digits: Tensor, sel: Tensor) -> Tensor:
        """hidden [B,C,H,W], last [B,D,N], digits [B,D,N]; sel [B,N] bool -> summed CE in nats over selected."""
        B = hidden.shape[0]
        feats = [torch.ones(B, 1, *GRID)]
        if self.use_hidden:
            feats.append(hidden)
        if self.use_last:
            for d, lv in enumerate(LEVELS):
                hot = nn.functional.one_hot(last[:, d] + 1, lv + 1).permute(0, 2, 1)
                feats.append(hot.reshape(B, lv + 1, *GRID).float())
        f = self.trunk(torch.cat(feats, 1)).flatten(2).transpose(1, 2)[sel]  # [M, width]
        dg = digits.transpose(1, 2)[sel]  # [M, D]
        total = torch.zeros(())
        ctx = [f]
        for d, lv in enumerate(LEVELS):
            logits = self.heads[d](torch.cat(ctx, 1))
            total = total + nn.functional.cross_entropy(logits, dg[:, d], reduction="sum")
            ctx.append(nn.functional.one_hot(dg[:, d], lv).float())
        return total


def tensors(data: list[dict]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    H, L, Dg, M = [], [], [], []
    for rec in data:
        digits = digits_of(rec)
        H.append(rec["hidden"].float())
        L.append(lasts(rec, digits))
        Dg.append(digits)
        M.append(rec["mask"])
    return torch.cat(H), torch.cat(L), torch.cat(Dg), torch.cat(M)


def adaptive_bits(data: list[dict]) -> tuple[float, int]:
    m = Model(LEVELS, False, None)
    bits, toks = 0.0, 0
    for rec in data:
        frames = []
        for t in range(rec["mask"].shape[0]):
            mask = rec["mask"][t].numpy()
            dg = index_to_digits(rec["indices"][t].long().numpy()[mask], LEVELS)
            frames.append((rec["key"][t], GRID, mask, [np.asarray(x, np.int64) for x in dg]))
            toks += int(mask.sum())
        bits += m.stream(frames)[0]
    return bits, toks


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("train")
    ap.add_argument("test")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--no-hidden", action="store_true")
    ap.add_argument("--no-last", action="store_true")
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    train, test = torch.load(a.train), torch.load(a.test)
    ab, at = adaptive_bits(test)
    print(f"adaptive contexts (packet v3's coder): {ab / at:.3f} bits/kept token over {at} tokens", flush=True)
    Htr, Ltr, Dtr, Mtr = tensors(train)
    Hte, Lte, Dte, Mte = tensors(test)
    B, C = Htr.shape[0], Htr.shape[1]
    Htr, Hte = Htr.reshape(B, C, *GRID), Hte.reshape(Hte.shape[0], C, *GRID)
    net = Prior(C, not a.no_hidden, not a.no_last)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, a.steps)
    for step in range(a.steps + 1):
        if step % 250 == 0:
            with torch.no_grad():
                tot = sum(float(net(Hte[i:i + 64], Lte[i:i + 64], Dte[i:i + 64], Mte[i:i + 64]))
                          for i in range(0, Hte.shape[0], 64))
            print(f"step {step}: test {tot / math.log(2) / at:.3f} bits/kept token", flush=True)
        if step == a.steps:
            break
        idx = torch.randint(0, B, (32,))
        loss = net(Htr[idx], Ltr[idx], Dtr[idx], Mtr[idx]) / max(int(Mtr[idx].sum()), 1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


if __name__ == "__main__":
    main()
