"""Packet loss (issue 7): 1%, 5% and 20% loss with QoS-0 delivery; per loss rate: losses detected,
keyframes requested, recovery time after each loss, frames frozen and the PSNR a viewer sees.

Simulated (default): a sender and a real `PacketReceiver` on a virtual clock (benchmarks/lossy.py), so
the figures do not depend on how busy the machine is. `--real`: a real publisher at MQTT QoS 0
through a lossy relay (benchmarks/lossy_relay.py) into a real mosquitto, a real receiver, wall clock
(benchmarks/loss_real.py).

    OMP_NUM_THREADS=1 nice -n 19 python -m livetok.bench.loss --seconds 10 --json
    OMP_NUM_THREADS=1 nice -n 19 python -m livetok.bench.loss --real --source ../shared/data/eval/asl-yes.mkv --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

import torch

from livetok.engine.config import BudgetConfig, SenderConfig
from livetok.stream.sources import open_source

from .localbroker import LocalBroker
from .loss_real import RealLoss, RealLossConfig, real_loss_run
from .lossy import LossConfig, SimulatedLoss, simulate_loss
from .model_args import add_model_args, model_from_args


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(ap)
    ap.add_argument("--source", default="synthetic", help="a clip, or synthetic[:PRESET] (default)")
    ap.add_argument("--size", default=None, help="WIDTHxHEIGHT (default 128x96 simulated, 256x192 --real)")
    ap.add_argument("--seconds", type=float, default=10.0, help="stream length per loss rate (30 fps)")
    ap.add_argument("--loss", type=float, nargs="+", default=[0.0, 0.01, 0.05, 0.20])
    ap.add_argument("--burst", type=float, default=1.0, help="mean burst length in packets (1 = independent)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--real", action="store_true",
                    help="real endpoints: publisher (QoS 0) -> lossy relay -> mosquitto -> receiver")
    ap.add_argument("--broker", default=None, help="--real: this broker instead of a local mosquitto")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    model = model_from_args(a)
    w, h = (int(v) for v in (a.size or ("256x192" if a.real else "128x96")).split("x"))
    sender = SenderConfig(budget=BudgetConfig(policy="infotok", rate=0.5), keyframe_interval=0)
    rows: list[RealLoss | SimulatedLoss] = []
    with contextlib.ExitStack() as stack:
        if a.real:
            url = a.broker or stack.enter_context(LocalBroker())
        else:
            frames = list(open_source(a.source, max_frames=round(a.seconds * 30), size=(w, h)).frames)
        for loss in a.loss:
            r: RealLoss | SimulatedLoss
            if a.real:
                r = real_loss_run(model, a.source, url, RealLossConfig(loss=loss, burst=a.burst, seconds=a.seconds,
                                                                       size=(w, h), seed=a.seed), sender)
            else:
                r = simulate_loss(model, frames, LossConfig(loss=loss, burst=a.burst, seed=a.seed), sender)
            rows.append(r)
            print(f"loss {loss:.0%}: {r.packets_dropped} dropped, {r.frames_frozen} frozen, recovery p50 "
                  f"{r.recovery_s_p50} s max {r.recovery_s_max} s, within 1 s {r.recovered_within_1s:.0%}, "
                  f"PSNR {r.psnr_seen} dB", file=sys.stderr, flush=True)
    res = {"model": model.cfg.name, "source": a.source, "size": f"{w}x{h}", "seconds": a.seconds,
           "mode": "real" if a.real else "simulated", "results": [r.to_json() for r in rows]}
    if a.json:
        print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
