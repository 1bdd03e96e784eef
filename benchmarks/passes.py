"""Cost of one encoder + one decoder pass per preset (untrained weights: cost does not depend on
them): GFLOP (export/flops.py) and milliseconds, torch eager, batch 1.

usage: python -m livetok.bench.passes [--size 256x192] [--threads N] [--iters 100] PRESET...
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from livetok.engine.config import PRESETS
from livetok.engine.model import Tokenizer
from livetok.export.flops import frame_costs
from livetok.export.graphs import DecoderStep, EncoderStep, example_inputs


def time_passes(preset: str, width: int, height: int, iters: int, warmup: int = 10) -> dict[str, float]:
    """GFLOP and median ms of one encoder and one decoder pass of `preset` at width x height."""
    torch.manual_seed(0)
    m = Tokenizer(PRESETS[preset]).eval()
    c = frame_costs(m, height, width)
    ex = example_inputs(m, 1, height, width)
    enc, dec = EncoderStep(m).eval(), DecoderStep(m).eval()
    te: list[float] = []
    td: list[float] = []
    with torch.inference_mode():
        for i in range(warmup + iters):
            t0 = time.perf_counter()
            enc(ex["frame"], ex["prev_recon"], ex["prev_hidden"])
            t1 = time.perf_counter()
            dec(ex["indices"], ex["mask"], ex["prev_recon"], ex["prev_hidden"])
            t2 = time.perf_counter()
            if i >= warmup:
                te.append(t1 - t0)
                td.append(t2 - t1)
    return {"params_m": round(sum(p.numel() for p in m.parameters()) / 1e6, 3),
            "gflops_encoder": round(c["encoder"].gflops, 3), "gflops_decoder": round(c["decoder"].gflops, 3),
            "ms_encoder": round(1e3 * statistics.median(te), 2), "ms_decoder": round(1e3 * statistics.median(td), 2),
            "ms_both": round(1e3 * statistics.median(a + b for a, b in zip(te, td, strict=True)), 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("presets", nargs="+", choices=sorted(PRESETS))
    ap.add_argument("--size", default="256x192")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=100)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    w, h = (int(v) for v in a.size.split("x"))
    for p in a.presets:
        print(p, time_passes(p, w, h, a.iters), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
