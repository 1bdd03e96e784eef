"""Packet v2 (entropy-coded) against v1 (fixed-length) on real clips: bits per frame, coder time, and
which contexts of the probability models pay for themselves (issue 12).

Each clip runs through a `SenderSession` under each budget setting; every frame's tokens are packed as
v1 (the session's own bytes) and as v2 (`TokenPacket.pack_v2` with the stream's coder state), and the
v2 bytes are decoded again (`unpack_v2`) and checked against the tokens. Bits are whole packets:
header, payload and CRC. Times are the v2 pack and unpack of one frame (median, p99) on this thread.

The ablation re-codes the same tokens with one context of the models taken away at a time (the
context replaced by a constant; the tables otherwise as shipped) and with frame-level adaptation only
(no chunks): the extra bits per frame are what that context buys.

    OMP_NUM_THREADS=1 python -m livetok.bench.entropy ../shared/data/eval/*.mkv --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from livetok.engine.config import BudgetConfig, SenderConfig
from livetok.engine.results import JsonResult
from livetok.stream.session import SenderSession
from livetok.stream.video_io import read_video
from livetok.stream.wire import CoderState, TokenPacket, token_bits
from livetok.stream.wire import entropy as ent

from .model_args import add_model_args, model_from_args

SETTINGS: dict[str, BudgetConfig] = {
    "fixed-1.0": BudgetConfig(policy="fixed", rate=1.0),
    "infotok-0.5": BudgetConfig(policy="infotok", rate=0.5),
}


@dataclass
class Clip:
    name: str
    packets: list[TokenPacket]
    v1_bytes: list[int]


def run_clip(model: Any, path: Path, budget: BudgetConfig, max_frames: int) -> Clip:
    frames, fps = read_video(path, max_frames=max_frames)
    tx = SenderSession(model, SenderConfig(budget=budget))
    packets, sizes = [], []
    for i, frame in enumerate(frames):
        enc = tx.encode(frame, timestamp_us=round(i * 1e6 / fps))
        packets.append(enc.packet)
        sizes.append(len(enc.packet.pack()))  # the v1 packet of the same tokens (the sender may send v2)
    return Clip(path.stem, packets, sizes)


def code_v2(clip: Clip, levels: tuple[int, ...], check: bool) -> tuple[list[int], list[float], list[float]]:
    """v2 sizes in bytes, and pack / unpack times in ms, of every frame of a clip."""
    tx = rx = CoderState.empty(levels)
    sizes, enc_ms, dec_ms = [], [], []
    for p in clip.packets:
        t0 = time.perf_counter()
        data, tx = p.pack_v2(tx)
        t1 = time.perf_counter()
        if check:
            got, rx = TokenPacket.unpack_v2(data, rx, expect_model_id=p.model_id)
            dec_ms.append((time.perf_counter() - t1) * 1e3)
            if got != p:
                raise AssertionError(f"{clip.name}: frame {p.frame_index} does not round-trip through v2")
        enc_ms.append((t1 - t0) * 1e3)
        sizes.append(len(data))
    return sizes, enc_ms, dec_ms


# --- ablation: one context at a time replaced by a constant -------------------------------------------------

_MASK = ent._mask_contexts
_DIGIT = ent._digit_contexts


def _mask_variant(keep_prev: bool, keep_nb: bool, keep_kb: bool) -> Callable[..., Any]:
    def f(state: CoderState, grid: tuple[int, int], k: int) -> Any:
        full = _MASK(state, grid, k)
        kb, rest = full % ent.K_BINS, full // ent.K_BINS
        prev, nb = rest // 5, rest % 5
        return ((prev * keep_prev) * 5 + nb * keep_nb) * ent.K_BINS + kb * keep_kb
    return f


def _digit_variant(keep_last: bool, keep_prev_digit: bool) -> Callable[..., Any]:
    def f(state: CoderState, d: int, pos: Any, digits: Any) -> Any:
        a = (state.last[d, pos].astype(np.int64) + 1) * keep_last
        if d == 0:
            return a
        return a * state.levels[d - 1] + digits[d - 1] * keep_prev_digit
    return f


ABLATIONS: dict[str, dict[str, Any]] = {
    "shipped": {},
    "mask: no previous-mask bit": {"_mask_contexts": _mask_variant(False, True, True)},
    "mask: no previous-mask neighbours": {"_mask_contexts": _mask_variant(True, False, True)},
    "mask: no kept-fraction bin": {"_mask_contexts": _mask_variant(True, True, False)},
    "mask: no context at all": {"_mask_contexts": _mask_variant(False, False, False)},
    "tokens: no last digit at the position": {"_digit_contexts": _digit_variant(False, True)},
    "tokens: no previous digit of the token": {"_digit_contexts": _digit_variant(True, False)},
    "tokens: no context at all": {"_digit_contexts": _digit_variant(False, False)},
    "adaptation: once per frame (no chunks)": {"FIRST_CHUNK": 1 << 30},
}


@contextlib.contextmanager
def patched(changes: dict[str, Any]) -> Iterator[None]:
    old = {k: getattr(ent, k) for k in changes}
    try:
        for k, v in changes.items():
            setattr(ent, k, v)
        yield
    finally:
        for k, v in old.items():
            setattr(ent, k, v)


def summary(values: list[float]) -> dict[str, float]:
    s = sorted(values)
    return {"p50": round(statistics.median(s), 3), "p99": round(s[min(len(s) - 1, int(0.99 * len(s)))], 3)}


@dataclass(frozen=True)
class PopulationBits(JsonResult):
    """The `bits` signal's population mean, over how many frames, and per clip."""

    population_bits: float
    frames: int
    clips: dict[str, float]


def population_bits(model: Any, clips: list[Path], max_frames: int) -> PopulationBits:
    """The `bits` router signal's population mean (BudgetConfig.population_bits): each non-key frame's
    mean code length per position (tokens under the sender's coder state before the frame, as the
    router sees them), over every frame of `clips` streamed with the default sender."""
    means: list[float] = []
    per_clip: dict[str, float] = {}
    for path in clips:
        frames, _ = read_video(path, max_frames=max_frames)
        tx = SenderSession(model, SenderConfig())
        mine: list[float] = []
        for i, f in enumerate(frames):
            coder = tx.coder
            enc = tx.encode(f, timestamp_us=i)
            if not enc.packet.keyframe and coder.n == enc.packet.n:
                mine.append(float(np.mean(token_bits(coder, enc.tokens.indices[0].cpu().numpy()))))
        per_clip[path.stem] = round(float(np.mean(mine)), 4) if mine else float("nan")
        means += mine
    return PopulationBits(round(float(np.mean(means)), 4), len(means), per_clip)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="+", type=Path)
    ap.add_argument("--frames", type=int, default=48, help="frames per clip")
    ap.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, of {', '.join(SETTINGS)}")
    ap.add_argument("--no-ablation", action="store_true")
    ap.add_argument("--population", action="store_true",
                    help="only measure the bits signal's population mean over the clips (use the training clips)")
    ap.add_argument("--json", action="store_true")
    add_model_args(ap)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = model_from_args(a)
    levels = tuple(model.cfg.fsq.levels)
    if a.population:
        pop = population_bits(model, a.clips, a.frames)
        print(json.dumps(pop.to_json(), indent=2) if a.json else f"population_bits {pop.population_bits} over "
              f"{pop.frames} frames")
        return 0
    report: dict[str, Any] = {"levels": list(levels), "frames_per_clip": a.frames, "settings": {}}
    enc_all: list[float] = []
    dec_all: list[float] = []
    for setting in a.settings.split(","):
        clips = [run_clip(model, path, SETTINGS[setting], a.frames) for path in a.clips]
        rows: dict[str, Any] = {}
        v1_total = v2_total = frames = 0
        for c in clips:
            sizes, enc_ms, dec_ms = code_v2(c, levels, check=True)
            enc_all += enc_ms
            dec_all += dec_ms
            v1, v2 = 8 * sum(c.v1_bytes), 8 * sum(sizes)
            k_mean = sum(p.k for p in c.packets) / len(sizes)
            rows[c.name] = {"frames": len(sizes), "tokens_per_frame": round(k_mean, 1),
                            "v1_bits_per_frame": round(v1 / len(sizes), 1),
                            "v2_bits_per_frame": round(v2 / len(sizes), 1), "ratio": round(v2 / v1, 4)}
            v1_total, v2_total, frames = v1_total + v1, v2_total + v2, frames + len(sizes)
        entry: dict[str, Any] = {
            "clips": rows,
            "overall": {"frames": frames, "v1_bits_per_frame": round(v1_total / frames, 1),
                        "v2_bits_per_frame": round(v2_total / frames, 1), "ratio": round(v2_total / v1_total, 4)},
        }
        if not a.no_ablation:
            abl = {}
            for name, changes in ABLATIONS.items():
                with patched(changes):
                    bits = sum(8 * sum(code_v2(c, levels, check=False)[0]) for c in clips)
                abl[name] = round(bits / frames, 1)
            base = abl["shipped"]
            entry["ablation_bits_per_frame"] = abl
            entry["ablation_extra_bits_per_frame"] = {k: round(v - base, 1) for k, v in abl.items() if k != "shipped"}
        report["settings"][setting] = entry
    report["v2_pack_ms"] = summary(enc_all)
    report["v2_unpack_ms"] = summary(dec_all)
    if a.json:
        print(json.dumps(report, indent=2))
    else:
        for setting, entry in report["settings"].items():
            o = entry["overall"]
            print(f"{setting}: v1 {o['v1_bits_per_frame']:.0f} bits/frame, v2 {o['v2_bits_per_frame']:.0f} "
                  f"({o['ratio']:.3f} x v1)")
            for name, r in entry["clips"].items():
                print(f"  {name:16s} k {r['tokens_per_frame']:6.1f}  v1 {r['v1_bits_per_frame']:7.0f}  "
                      f"v2 {r['v2_bits_per_frame']:7.0f}  {r['ratio']:.3f}")
            for name, extra in entry.get("ablation_extra_bits_per_frame", {}).items():
                print(f"  ablation {name:42s} {extra:+8.1f} bits/frame")
        print(f"v2 pack {report['v2_pack_ms']['p50']} ms, unpack {report['v2_unpack_ms']['p50']} ms per frame (p50)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
