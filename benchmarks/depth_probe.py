"""Token depth probe (issue 23, item 2): what a second FSQ stage per position buys, before any wire.

Streams whole clips through `engine.train.run_clip` (the training graph, no gradients) at full rate
with a share of the kept positions given a second token (0 = the one-stage model's tokens, 1 = every
position two), ranked by the router's gain signal, and reports PSNR (0-255 RGB, per frame then
averaged) and the code length under the run's learned digit priors (`train_state.pt` of a
`livetok train` output: the rate term's stand-in of the wire's entropy model, per 256x192 frame).

    python -m livetok.bench.depth_probe runs/depth/ ../shared/data/eval/*.mkv --fractions 0 0.5 1 --json

A one-stage run's folder gives the baseline (its fractions are all 0). Training-side numbers: the
wire (packets, the real range coder) does not carry a second stage yet.

``--continuous`` decodes the latents unrounded (the FSQ's bounded latent over its half-width): the
quality the networks reach with no quantization at all, i.e. how much of the ceiling is the quantizer's.
v10 (2026-12-05): 28.10 dB rounded, 28.28 continuous, at full rate on the eval clips (24 frames each):
the quantizer costs 0.18 dB; the 6-dimensional latent per 8x8 cell and the networks are the ceiling.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from livetok.engine.checkpoint import load_weights
from livetok.engine.frames import to_tensor
from livetok.engine.fsq import FSQ
from livetok.engine.metrics import psnr_from_mse
from livetok.engine.rate_prior import DigitPrior
from livetok.engine.train import BITS_FRAME_PIXELS, run_clip
from livetok.stream.video_io import read_video


def _priors(run: Path, levels: tuple[int, ...]) -> tuple[DigitPrior | None, DigitPrior | None]:
    st_path = run / "train_state.pt"
    if not st_path.is_file():
        return None, None
    st = torch.load(st_path, weights_only=True, map_location="cpu")
    out: list[DigitPrior | None] = []
    for key in ("prior", "prior2"):
        if key in st:
            p = DigitPrior(levels)
            p.load_state_dict(st[key])
            out.append(p)
        else:
            out.append(None)
    return out[0], out[1]


class _Unrounded(FSQ):
    """An FSQ that returns the bounded latent over the half-width without rounding (and no indices)."""

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        half = (self.levels // 2).to(torch.float32).view(1, -1, 1, 1)
        return self.bound(z.float()) / half, torch.zeros(z.shape[0], z.shape[2] * z.shape[3], dtype=torch.long)


def _full_budget(n: int) -> Callable[[Tensor, int], Tensor]:
    """A budget function keeping all n positions of every frame."""
    return lambda error, t: torch.full((1,), n)


def _constant_depth(fraction: float) -> Callable[[int], Tensor]:
    """A depth function giving every frame the same second-level fraction."""
    return lambda t: torch.tensor([fraction])


def probe(run: Path, clips: list[str], fractions: list[float], max_frames: int,
          continuous: bool = False) -> dict[str, object]:
    model = load_weights(run / "model.safetensors" if run.is_dir() else run)
    model.eval()
    if continuous:
        model.fsq = _Unrounded(model.fsq.cfg).to(model.fsq.levels.device)
    prior, prior2 = _priors(run if run.is_dir() else run.parent, model.cfg.fsq.levels)
    depth2 = model.cfg.depth == 2
    out: dict[str, object] = {"model": str(run), "depth": model.cfg.depth, "continuous": continuous, "points": []}
    for frac in fractions if depth2 else [0.0]:
        psnrs, bits = [], []
        for path in clips:
            frames_np, _ = read_video(path, max_frames=max_frames)
            x = to_tensor(np.ascontiguousarray(frames_np)).unsqueeze(0)  # [1, T, 3, H, W]
            n = (x.shape[-2] // 8) * (x.shape[-1] // 8)
            collect: list[tuple[Tensor, Tensor]] = []
            with torch.no_grad():
                _, stats, _ = run_clip(model, x, _full_budget(n), collect=collect, signal="gain",
                                       prior=prior, depth_fn=_constant_depth(frac),
                                       prior2=prior2 if depth2 else None)
            for t, (rec, _) in enumerate(collect):
                mse = float(((rec - x[:, t]) * 127.5).pow(2).mean())
                psnrs.append(psnr_from_mse(mse))
            # stats["bits"] is per 256x192 frame: scale to these frames' size
            bits.append(stats["bits"] * (x.shape[-2] * x.shape[-1]) / BITS_FRAME_PIXELS)
        point = {"fraction": frac, "psnr": float(np.mean(psnrs)), "bits_per_frame": float(np.mean(bits))}
        print(f"{run}: depth-2 share {frac:.2f}: {point['psnr']:.3f} dB, {point['bits_per_frame']:.0f} bits (prior)",
              file=sys.stderr, flush=True)
        out["points"].append(point)  # type: ignore[attr-defined]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m livetok.bench.depth_probe", description=__doc__.splitlines()[0])
    p.add_argument("run", help="a `livetok train` output folder (model.safetensors + train_state.pt) or weights")
    p.add_argument("clips", nargs="+")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    p.add_argument("--max-frames", type=int, default=48)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--continuous", action="store_true", help="decode unrounded latents (no quantization)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    res = probe(Path(a.run), a.clips, a.fractions, a.max_frames, a.continuous)
    if a.json:
        print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
