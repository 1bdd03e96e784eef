"""Issue 23 item 3: how many bits would a learned integer prior save over packet v2/v3's adaptive contexts?

Reads `.ltk` recordings (`livetok encode CLIP -o X.ltk`), takes each frame's mask and kept tokens, and
measures the ideal code length (-log2 of the integer frequencies, chunked as the coder adapts) of the
token digits under context models that both ends can compute exactly from integers:

  base      the coder's own: (last digit here + 1) x digit d-1 of this token, counts from ones at a keyframe
  init      the same contexts, counts at a keyframe from tables learned on other recordings
  cb        checkerboard: the kept positions of one parity first (contexts as base), then the other with the
            decoded neighbours' digit d in the context (ELIC/DCVC's two-pass spatial context)
  cb+init   both

usage: python experiments/prior_probe.py --train A.ltk B.ltk ... --test C.ltk ...
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from livetok.engine.fsq_index import index_to_digits
from livetok.stream.wire.entropy import (
    Q_BITS,
    _qfreq,  # the coder's own frequencies
    chunk_bounds,
)
from livetok.stream.wire.entropy import _update as update  # and count update
from livetok.stream.wire.ltkfile import LtkReader

Frame = tuple[bool, tuple[int, int], NDArray[np.bool_], list[NDArray[np.int64]]]


def frames_of(path: Path, levels: tuple[int, ...]) -> list[Frame]:
    out: list[Frame] = []
    with LtkReader(path) as r:
        for p in r:
            if p.end_of_stream and p.k == 0:
                continue
            digits = index_to_digits(np.asarray(p.indices, np.int64), levels)
            out.append((p.keyframe, (p.grid_h, p.grid_w), np.asarray(p.mask, bool), digits))
    return out


def qbits(counts: NDArray[np.int64], ctx: NDArray[np.int64], sym: NDArray[np.int64]) -> float:
    """Ideal code length in bits of `sym` in contexts `ctx` under the coder's own 16-bit frequencies."""
    f = _qfreq(counts)[ctx, sym]
    return float(np.sum(Q_BITS - np.log2(np.maximum(f, 1))))


def code(counts: NDArray[np.int64], ctx: NDArray[np.int64], sym: NDArray[np.int64]) -> tuple[float, NDArray[np.int64]]:
    bits = 0.0
    for a, b in chunk_bounds(len(ctx)):
        bits += qbits(counts, ctx[a:b], sym[a:b])
        counts = update(counts, ctx[a:b], sym[a:b])
    return bits, counts


# a context function: (d, last [n] of digit d, this token's earlier digits, neighbour info) -> ids, table rows
CtxFn = Callable[..., NDArray[np.int64]]


def nb_digit(grid: tuple[int, int], full: NDArray[np.int64], known: NDArray[np.bool_]) -> NDArray[np.int64]:
    """Per position: the rounded mean of the known 4-neighbours' digit (-1 where none is known): a cheap
    integer summary of the spatial context."""
    h, w = grid
    v = np.pad(np.where(known, full, 0).reshape(h, w), 1)
    m = np.pad(known.reshape(h, w).astype(np.int64), 1)
    s = v[:-2, 1:-1] + v[2:, 1:-1] + v[1:-1, :-2] + v[1:-1, 2:]
    c = m[:-2, 1:-1] + m[2:, 1:-1] + m[1:-1, :-2] + m[1:-1, 2:]
    out = np.where(c > 0, (2 * s + c) // np.maximum(2 * c, 1), -1)
    return out.ravel()


class Model:
    def __init__(self, levels: tuple[int, ...], checker: bool, init: list[NDArray[np.int64]] | None,
                 nblast: bool = False, cbfill: bool = False) -> None:
        self.levels, self.checker, self.init = levels, checker, init
        self.nblast, self.cbfill = nblast, cbfill

    def shapes(self) -> list[tuple[int, int]]:
        out = []
        for d, lv in enumerate(self.levels):
            rows = (lv + 1) * (self.levels[d - 1] if d else 1)
            if self.nblast:
                rows *= lv + 1
            if self.checker:
                rows *= lv + 2  # group A: neighbour slot 0; group B: 1 + (neighbour digit + 1)
            out.append((rows, lv))
        return out

    def fresh(self) -> list[NDArray[np.int64]]:
        if self.init is not None:
            return [t.copy() for t in self.init]
        return [np.ones(s, np.int64) for s in self.shapes()]

    def frame(self, counts: list[NDArray[np.int64]], last: NDArray[np.int64], grid: tuple[int, int],
              mask: NDArray[np.bool_], digits: list[NDArray[np.int64]],
              seen: list[tuple[NDArray[np.int64], NDArray[np.int64]]] | None = None) -> float:
        """Code one frame's digits in place (counts updated, `last` updated); returns bits. With `seen`,
        collect (ctx, sym) per digit for table learning."""
        n = grid[0] * grid[1]
        pos = np.flatnonzero(mask)
        w = grid[1]
        par = ((pos // w) + (pos % w)) % 2 if self.checker else np.zeros(len(pos), np.int64)
        order = np.argsort(par, kind="stable")
        bits = 0.0
        for d, lv in enumerate(self.levels):
            base = last[d, pos] + 1
            if d:
                base = base * self.levels[d - 1] + digits[d - 1]
            if self.nblast:
                prev = last[d]
                base = base * (lv + 1) + nb_digit(grid, prev, prev >= 0)[pos] + 1
            if self.checker:
                full = np.zeros(n, np.int64)
                known = np.zeros(n, bool)
                if self.cbfill:  # positions not kept this frame: their last digit, where one was sent
                    full[:] = last[d]
                    known[:] = last[d] >= 0
                    known[pos] = False
                full[pos] = digits[d]
                known[pos[par == 0]] = True
                nb = nb_digit(grid, full, known)[pos]
                slot = np.where(par == 0, 0, nb + 2)  # B with no known neighbour: slot 1
                ctx = base * (lv + 2) + slot
            else:
                ctx = base
            ctx, sym = ctx[order], digits[d][order]
            if seen is not None:
                seen[d] = (np.concatenate([seen[d][0], ctx]), np.concatenate([seen[d][1], sym]))
            if self.checker:
                na = int(np.count_nonzero(par == 0))
                b1, counts[d] = code(counts[d], ctx[:na], sym[:na])
                b2, counts[d] = code(counts[d], ctx[na:], sym[na:])
                bits += b1 + b2
            else:
                b, counts[d] = code(counts[d], ctx, sym)
                bits += b
            last[d, pos] = digits[d]
        return bits

    def stream(self, frames: list[Frame], seen: list[tuple[NDArray[np.int64], NDArray[np.int64]]] | None = None
               ) -> tuple[float, int]:
        bits, count = 0.0, 0
        counts: list[NDArray[np.int64]] = []
        last = np.zeros((0, 0), np.int64)
        for key, grid, mask, digits in frames:
            if key:
                counts = self.fresh()
                last = np.full((len(self.levels), grid[0] * grid[1]), -1, np.int64)
            bits += self.frame(counts, last, grid, mask, digits, seen)
            count += 1
        return bits, count


def learn(model: Model, streams: list[list[Frame]], strength: int) -> list[NDArray[np.int64]]:
    """Counts per context over the training streams, scaled so each context totals about `strength`
    (every symbol at least 1): the initial table at a keyframe."""
    seen = [(np.zeros(0, np.int64), np.zeros(0, np.int64)) for _ in model.levels]
    for s in streams:
        model.stream(s, seen)
    out = []
    for (rows, a), (ctx, sym) in zip(model.shapes(), seen, strict=True):
        c = np.bincount(ctx * a + sym, minlength=rows * a).reshape(rows, a).astype(np.float64)
        tot = c.sum(axis=1, keepdims=True)
        scaled = np.floor(c * strength / np.maximum(tot, 1)).astype(np.int64) + 1
        out.append(scaled)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", nargs="+", type=Path, required=True)
    ap.add_argument("--test", nargs="+", type=Path, required=True)
    ap.add_argument("--levels", default="8,8,8,5,5,5")
    ap.add_argument("--strength", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--only", nargs="*", default=[])
    a = ap.parse_args()
    levels = tuple(int(x) for x in a.levels.split(","))
    train = [frames_of(p, levels) for p in a.train]
    test = [frames_of(p, levels) for p in a.test]
    nf = sum(len(s) for s in test)
    variants = {"base": {}, "cb": {"checker": True}, "nblast": {"nblast": True},
                "cbfill": {"checker": True, "cbfill": True},
                "nblast+cbfill": {"nblast": True, "checker": True, "cbfill": True}}
    for name, kw in variants.items():
        if a.only and name not in a.only:
            continue
        b = sum(Model(levels, init=None, **{"checker": False, **kw}).stream(s)[0] for s in test)
        print(f"{name:14s} ones      {b / nf:8.1f} token bits/frame", flush=True)
        for st in a.strength:
            init = learn(Model(levels, init=None, **{"checker": False, **kw}), train, st)
            b = sum(Model(levels, init=init, **{"checker": False, **kw}).stream(s)[0] for s in test)
            print(f"{name:14s} init {st:4d} {b / nf:8.1f} token bits/frame", flush=True)


if __name__ == "__main__":
    main()
