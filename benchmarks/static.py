"""Static vs busy (issue 13): does a still scene cost little and sharpen frame after frame?

For each clip: the clip itself (busy: its own motion) and its first frame held for the same number
of frames (static: a parked camera), both streamed through one sender and receiver at the same policy
and beta. Reports per clip and overall: bits per non-key frame of each, their ratio, and the static
stream's PSNR at frames 0, 1, 5, 15 and the last (does quality accumulate, like a codec's P-frames?).

usage: python -m livetok.bench.static CLIP... [--weights W] [--frames 48] [--policy learned] [--rate 0.5]
       [--signal gain] [--skip 0.041667] [--threads N] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from livetok.engine.config import BudgetConfig, SenderConfig
from livetok.engine.results import JsonResult
from livetok.stream.evaluate import FrameRecord, clip_name, run_frames
from livetok.stream.video_io import read_video

from .model_args import add_model_args, model_from_args

MARKS = (0, 1, 5, 15)


def _bits(recs: list[FrameRecord]) -> float:
    return float(np.mean([float(r.bits) for r in recs if not r.keyframe] or [np.nan]))


@dataclass(frozen=True, kw_only=True)
class StaticVsBusy(JsonResult):
    """One clip played as it is (busy) and as its first frame held (static): bits, PSNR, tokens; the static
    run's PSNR at frames 0, 1, 5, 15 and at its last."""

    frames: int
    busy_bits: float
    static_bits: float
    busy_psnr: float
    static_psnr_at: dict[str, float]
    static_tokens: float
    busy_tokens: float


def static_vs_busy(model: Any, frames: np.ndarray, sender: SenderConfig) -> StaticVsBusy:
    """One clip's busy and static runs (same sender settings, each from a keyframe)."""
    busy = run_frames(model, list(frames), sender, receiver=False)
    still = run_frames(model, [frames[0]] * len(frames), sender, receiver=False)
    at = {str(m): still[m].psnr for m in MARKS if m < len(still)}
    at["last"] = still[-1].psnr
    return StaticVsBusy(
        frames=len(frames),
        busy_bits=_bits(busy),
        static_bits=_bits(still),
        busy_psnr=float(np.mean([r.psnr for r in busy])),
        static_psnr_at={k: round(v, 3) for k, v in at.items()},
        static_tokens=float(np.mean([float(r.k) for r in still if not r.keyframe] or [np.nan])),
        busy_tokens=float(np.mean([float(r.k) for r in busy if not r.keyframe] or [np.nan])),
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m livetok.bench.static", description=__doc__.split("\n")[0])
    ap.add_argument("clips", nargs="+")
    add_model_args(ap)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--policy", default=BudgetConfig.policy)
    ap.add_argument("--rate", type=float, default=BudgetConfig.rate)
    ap.add_argument("--signal", default=BudgetConfig.signal)
    ap.add_argument("--skip", type=float, default=BudgetConfig.skip_fraction, dest="skip_fraction",
                    help="the skip mode's fraction (0: off; default %(default)s)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    model = model_from_args(a)
    sender = SenderConfig(budget=BudgetConfig(policy=a.policy, rate=a.rate, signal=a.signal,
                                              skip_fraction=a.skip_fraction))
    clips: dict[str, StaticVsBusy] = {}
    for path in a.clips:
        frames, _ = read_video(path, max_frames=a.frames)
        clips[clip_name(path)] = static_vs_busy(model, frames, sender)
    busy = float(np.mean([c.busy_bits for c in clips.values()]))
    static = float(np.mean([c.static_bits for c in clips.values()]))
    keys = list(next(iter(clips.values())).static_psnr_at)
    overall: dict[str, Any] = {
        "busy_bits": busy, "static_bits": static, "static_over_busy_bits": static / busy,
        "static_psnr_at": {k: float(np.mean([c.static_psnr_at.get(k, np.nan) for c in clips.values()]))
                           for k in keys},
    }
    # the document this script prints (--json)
    res = {"policy": a.policy, "rate": a.rate, "signal": a.signal, "skip_fraction": a.skip_fraction,
           "overall": overall, "clips": {k: c.to_json() for k, c in clips.items()}}
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        for name, c in clips.items():
            print(f"{name}: busy {c.busy_bits:.0f} bits, static {c.static_bits:.0f} bits, static PSNR "
                  + " ".join(f"f{k} {v:.2f}" for k, v in c.static_psnr_at.items()))
        print(f"overall: static/busy bits {overall['static_over_busy_bits']:.3f}; static PSNR "
              + " ".join(f"f{k} {v:.2f}" for k, v in overall["static_psnr_at"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
