"""Packet loss (issue 7): 1%, 5% and 20% loss with QoS-0 style delivery between a sender and a real
`PacketReceiver`, on a virtual clock (stream/lossy.py): losses detected, keyframes requested, recovery
time after each loss, frames frozen and the PSNR a viewer sees, per loss rate.

    OMP_NUM_THREADS=1 nice -n 19 python -m benchmarks.loss --seconds 10 --json
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch

from livetok.engine.checkpoint import load_default, load_weights
from livetok.engine.config import BudgetConfig, SenderConfig
from livetok.stream.lossy import LossConfig, simulate_loss
from livetok.stream.sources import open_source


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=None, help="default: the shipped model")
    ap.add_argument("--source", default="synthetic", help="a clip, or synthetic[:PRESET] (default)")
    ap.add_argument("--size", default="128x96")
    ap.add_argument("--seconds", type=float, default=10.0, help="stream length per loss rate (30 fps)")
    ap.add_argument("--loss", type=float, nargs="+", default=[0.0, 0.01, 0.05, 0.20])
    ap.add_argument("--burst", type=float, default=1.0, help="mean burst length in packets (1 = independent)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = load_weights(a.weights) if a.weights else load_default()
    w, h = (int(v) for v in a.size.split("x"))
    frames = list(open_source(a.source, max_frames=round(a.seconds * 30), size=(w, h)).frames)
    sender = SenderConfig(budget=BudgetConfig(policy="infotok", rate=0.5), keyframe_interval=0)
    rows: list[dict[str, Any]] = []
    for loss in a.loss:
        r = simulate_loss(model, frames, LossConfig(loss=loss, burst=a.burst, seed=a.seed), sender)
        rows.append(r)
        print(f"loss {loss:.0%}: {r['packets_dropped']} dropped, {r['frames_frozen']} frozen, recovery p50 "
              f"{r['recovery_s_p50']} s max {r['recovery_s_max']} s, within 1 s {r['recovered_within_1s']:.0%}, "
              f"PSNR {r['psnr_seen']} dB", file=sys.stderr, flush=True)
    res = {"model": model.cfg.name, "source": a.source, "size": a.size, "seconds": a.seconds, "results": rows}
    if a.json:
        print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
