"""Which routing should livetok ship? Runs the eval protocol for several budget arms at several
rates and prints, per arm and rate, overall tokens/frame, bits/frame and PSNR (and per clip).

Arms: `fixed` (every frame rate*N, positions ranked by gain), and `infotok` with the paper's
signal (full-rate error, error ranking) or livetok's conditional signal (gain, gain ranking),
each normalised by the population mean stored with the weights or the stream's own EMA.

usage: python -m livetok.bench.router_arms [--weights W] [--rates 0.25 0.5 0.75] [--json] CLIPS...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Literal

from livetok.engine.checkpoint import load_default, load_weights
from livetok.engine.config import BudgetConfig, Normaliser, SenderConfig
from livetok.stream.evaluate import evaluate_files


def arms(rate: float) -> dict[str, SenderConfig]:
    def infotok(signal: Literal["error", "gain"], norm: Normaliser) -> SenderConfig:
        return SenderConfig(budget=BudgetConfig(policy="infotok", rate=rate, signal=signal, normaliser=norm),
                            ranking=signal)

    return {
        "fixed": SenderConfig(budget=BudgetConfig(policy="fixed", rate=rate), ranking="gain"),
        "fixed-error-rank": SenderConfig(budget=BudgetConfig(policy="fixed", rate=rate), ranking="error"),
        "infotok-error-population": infotok("error", "population"),
        "infotok-error-ema": infotok("error", "ema"),
        "infotok-gain-population": infotok("gain", "population"),
        "infotok-gain-ema": infotok("gain", "ema"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("clips", nargs="+")
    p.add_argument("--weights", default=None)
    p.add_argument("--rates", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    p.add_argument("--arms", nargs="*", default=None, help="only these arms")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    model = load_weights(a.weights) if a.weights else load_default()
    out: dict[str, dict[str, Any]] = {}
    for rate in a.rates:
        for arm, sender in arms(rate).items():
            if a.arms and arm not in a.arms:
                continue
            res = evaluate_files(model, [Path(c) for c in a.clips], sender)
            out.setdefault(str(rate), {})[arm] = res.to_json()
            o = res.overall
            print(f"rate {rate:.2f} {arm:26s} overall {o.tokens_per_frame:6.1f} tok {o.bits_per_frame:7.0f} bit "
                  f"{o.psnr:.2f} dB  {o.decodes_per_frame:.2f} decodes", file=sys.stderr)
            for name, m in res.clips.items():
                print(f"{'':37s}{name:13s} {m.tokens_per_frame:6.1f} tok {m.bits_per_frame:7.0f} bit "
                      f"{m.psnr:.2f} dB", file=sys.stderr)
    if a.json:
        print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
