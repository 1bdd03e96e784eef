"""Which normaliser should `infotok` ship with? Runs the eval protocol with `fixed`, `infotok`
(population normaliser) and `infotok` (stream EMA normaliser) at several rates and prints, per
clip and overall, tokens/frame, bits/frame and PSNR.

usage: python -m benchmarks.normaliser [--weights W] [--rates 0.25 0.5 0.75] [--json] CLIPS...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from livetok.engine.checkpoint import load_default, load_weights
from livetok.engine.config import BudgetConfig, SenderConfig
from livetok.stream.evaluate import evaluate_files

ARMS = {
    "fixed": lambda r: BudgetConfig(policy="fixed", rate=r),
    "infotok-population": lambda r: BudgetConfig(policy="infotok", rate=r, normaliser="population"),
    "infotok-ema": lambda r: BudgetConfig(policy="infotok", rate=r, normaliser="ema"),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("clips", nargs="+")
    p.add_argument("--weights", default=None)
    p.add_argument("--rates", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    model = load_weights(a.weights) if a.weights else load_default()
    out: dict[str, dict[str, object]] = {}
    for rate in a.rates:
        for arm, make in ARMS.items():
            res = evaluate_files(model, [Path(c) for c in a.clips], SenderConfig(budget=make(rate)))
            out.setdefault(str(rate), {})[arm] = res
            o = res["overall"]
            print(f"rate {rate:.2f} {arm:20s} overall  {o['tokens_per_frame']:6.1f} tok  "
                  f"{o['bits_per_frame']:7.0f} bit  {o['psnr']:.2f} dB", file=sys.stderr)
            for name, m in res["clips"].items():
                print(f"{'':31s}{name:14s} {m['tokens_per_frame']:6.1f} tok  {m['bits_per_frame']:7.0f} bit  "
                      f"{m['psnr']:.2f} dB", file=sys.stderr)
    if a.json:
        print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
