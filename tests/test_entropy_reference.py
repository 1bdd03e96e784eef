"""An independent packet-v2 payload codec in plain Python integers, written from docs/PACKET.md §6 alone
(no numpy, no constriction), and the checks that livetok's coder (stream/wire/entropy.py) makes and
reads exactly the same bytes. It also reproduces the worked example of docs/PACKET.md §6.7."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest

from livetok.stream.wire import CoderState, PacketError, decode_frame, encode_frame
from livetok.stream.wire.entropy import chunk_bounds, quantised_cdf

# --- the reference, from the document ------------------------------------------------------------------------

LIMIT = 8192  # §6.3: halve while a context's total exceeds this
K_BINS = 8
W32, W64 = 1 << 32, 1 << 64


@dataclass
class RefState:
    levels: tuple[int, ...]
    n: int | None = None
    prev: list[int] | None = None  # previous mask, 0/1
    last: list[list[int]] = field(default_factory=list)  # [digit][position], -1 = none
    mask_counts: list[list[int]] = field(default_factory=list)
    digit_counts: list[list[list[int]]] = field(default_factory=list)

    def reset(self, n: int) -> None:
        self.n, self.prev = n, None
        self.last = [[-1] * n for _ in self.levels]
        self.mask_counts = [[1, 1] for _ in range(3 * 5 * K_BINS)]
        self.digit_counts = [[[1] * lv for _ in range((lv + 1) * (self.levels[d - 1] if d else 1))]
                             for d, lv in enumerate(self.levels)]


def cdf_of(counts: list[int]) -> list[int]:
    """§6.4: counts -> 16-bit frequencies -> the coder's 24-bit cdf."""
    a, total = len(counts), sum(counts)
    cum = [0]
    for c in counts:
        cum.append(cum[-1] + c)
    q = [(c * 65536) // total for c in cum]
    return [(q[s] * ((1 << 24) - a)) // 65536 + s for s in range(a + 1)]


def chunks(m: int) -> list[tuple[int, int]]:
    """§6.4: 16 symbols, then each chunk as long as all before it, at most 4096."""
    out, a, size = [], 0, 16
    while a < m:
        out.append((a, min(a + size, m)))
        a += size
        size = min(a, 4096)
    return out


HALVINGS = [0]
CARRIES = [0]  # additions to `low` that changed bits above its low 64 (words an encoder has begun to emit)


def update(table: list[list[int]], ctxs: list[int], syms: list[int]) -> None:
    for c, s in zip(ctxs, syms, strict=True):
        table[c][s] += 1
    for c in set(ctxs):
        while sum(table[c]) > LIMIT:
            table[c] = [(v + 1) // 2 for v in table[c]]
            HALVINGS[0] += 1


def mask_contexts(st: RefState, h: int, w: int, k: int) -> list[int]:
    n = h * w
    kb = (K_BINS * k) // (n + 1)
    out = []
    for i in range(n):
        if st.prev is None:
            prev = nb = 0
        else:
            y, x = divmod(i, w)
            prev = 1 + st.prev[i]
            nb = sum(st.prev[yy * w + xx] for yy, xx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1))
                     if 0 <= yy < h and 0 <= xx < w)
        out.append((prev * 5 + nb) * K_BINS + kb)
    return out


def digit_contexts(st: RefState, d: int, pos: list[int], digits: list[list[int]]) -> list[int]:
    if d == 0:
        return [st.last[0][p] + 1 for p in pos]
    return [(st.last[d][p] + 1) * st.levels[d - 1] + digits[d - 1][j] for j, p in enumerate(pos)]


def sequences(st: RefState, h: int, w: int, k: int, mask: list[int], digits: list[list[int]] | None,
              code: Callable[[list[int], int | None], int]) -> tuple[list[int], list[list[int]]]:
    """Walk the frame's symbol sequences in stream order (§6.5), calling code(cdf, symbol or None) -> symbol."""
    n = h * w
    if 0 < k < n:
        ctx = mask_contexts(st, h, w, k)
        got = mask if mask else [0] * n
        for a, b in chunks(n):
            tables = [cdf_of(c) for c in st.mask_counts]
            for i in range(a, b):
                got[i] = code(tables[ctx[i]], got[i] if mask else None)
            update(st.mask_counts, ctx[a:b], got[a:b])
        mask = got
    elif not mask:
        mask = [1 if k == n else 0] * n
    pos = [i for i in range(n) if mask[i]]
    out: list[list[int]] = []
    for d in range(len(st.levels)):
        ctx = digit_contexts(st, d, pos, out)
        syms = list(digits[d]) if digits is not None else [0] * len(pos)
        for a, b in chunks(len(pos)):
            tables = [cdf_of(c) for c in st.digit_counts[d]]
            for j in range(a, b):
                syms[j] = code(tables[ctx[j]], syms[j] if digits is not None else None)
            update(st.digit_counts[d], ctx[a:b], syms[a:b])
        out.append(syms)
    for d in range(len(st.levels)):
        for j, p in enumerate(pos):
            st.last[d][p] = out[d][j]
    st.prev, st.n = list(mask), n
    return mask, out


def split_digits(index: int, levels: tuple[int, ...]) -> list[int]:
    out = []
    for lv in levels:
        out.append(index % lv)
        index //= lv
    return out


def ref_encode(st: RefState, h: int, w: int, mask: list[int], indices: list[int], keyframe: bool) -> bytes:
    """§6.6 encoder with an unbounded integer `low` (carries need no special care)."""
    if keyframe:
        st.reset(h * w)
    assert st.n == h * w
    per = [split_digits(i, st.levels) for i in indices]
    digits = [[t[d] for t in per] for d in range(len(st.levels))]
    low, rng, shifts, coded = 0, W64 - 1, 0, 0

    def code(cdf: list[int], sym: int | None) -> int:
        nonlocal low, rng, shifts, coded
        assert sym is not None
        scale = rng >> 24
        top = low >> 64
        low += scale * cdf[sym]
        CARRIES[0] += (low >> 64) != top
        rng = scale * (cdf[sym + 1] - cdf[sym])
        if rng < W32:
            rng, low, shifts = rng << 32, low << 32, shifts + 1
        coded += 1
        return sym

    sequences(st, h, w, len(indices), list(mask), digits, code)
    if not coded:
        return b""
    CARRIES[0] += ((low + W32 - 1) >> 64) != (low >> 64)
    value = (low + W32 - 1) >> 32
    return value.to_bytes(4 * (shifts + 1), "big").rstrip(b"\0")


def ref_decode(st: RefState, h: int, w: int, k: int, data: bytes, keyframe: bool) -> tuple[list[int], list[int]]:
    """§6.6 decoder in 64-bit modular arithmetic."""
    if keyframe:
        st.reset(h * w)
    assert st.n == h * w
    padded = data + b"\0" * (-len(data) % 4)
    words = [int.from_bytes(padded[i:i + 4], "big") for i in range(0, len(padded), 4)]
    it = iter(words)
    point = (next(it, 0) << 32) | next(it, 0)
    lower, rng = 0, W64 - 1

    def code(cdf: list[int], _: int | None) -> int:
        nonlocal point, lower, rng
        scale = rng >> 24
        quantile = ((point - lower) % W64) // scale
        if quantile >= 1 << 24:
            raise ValueError("invalid data")
        sym = next(s for s in range(len(cdf) - 1) if cdf[s + 1] > quantile)
        lower = (lower + scale * cdf[sym]) % W64
        rng = scale * (cdf[sym + 1] - cdf[sym])
        if rng < W32:
            lower, rng = (lower << 32) % W64, rng << 32
            point = ((point << 32) % W64) | next(it, 0)
        return sym

    mask, digits = sequences(st, h, w, k, [], None, code)
    basis, b = [], 1
    for lv in st.levels:
        basis.append(b)
        b *= lv
    indices = [sum(digits[d][j] * basis[d] for d in range(len(st.levels))) for j in range(len(digits[0]))]
    return mask, indices


# --- the checks ----------------------------------------------------------------------------------------------


Frame = tuple[int, int, list[int], list[int], bool]


def random_stream(rng: random.Random, levels: tuple[int, ...], frames: int) -> list[Frame]:
    """(h, w, mask, indices, keyframe) with persistence, so contexts and adaptation matter."""
    size = int(np.prod(levels))
    out = []
    h = w = 0
    cur: list[int] = []
    mask: list[int] = []
    for t in range(frames):
        key = t == 0 or rng.random() < 0.15
        if key and (t == 0 or rng.random() < 0.3):
            h, w = rng.randint(1, 7), rng.randint(1, 9)
            cur = [rng.randrange(size) for _ in range(h * w)]
            mask = [1] * (h * w)
        n = h * w
        cur = [c if rng.random() < 0.7 else rng.randrange(size) for c in cur]
        style = rng.random()
        if style < 0.2:
            mask = [1] * n
        elif style < 0.3:
            mask = [0] * n
        else:
            mask = [m if rng.random() < 0.8 else 1 - m for m in mask]
        out.append((h, w, list(mask), [cur[i] for i in range(n) if mask[i]], key))
    return out


@pytest.mark.parametrize("levels", [(8, 5, 5, 5), (5, 5, 5), (2, 3)])
def test_reference_matches_livetok_bytes(levels: tuple[int, ...]) -> None:
    rng = random.Random(hash(levels) & 0xFFFF)
    ref, st = RefState(levels), CoderState.empty(levels)
    ref_rx, st_rx = RefState(levels), CoderState.empty(levels)
    total = 0
    for h, w, mask, indices, key in random_stream(rng, levels, 40):
        want = ref_encode(ref, h, w, mask, indices, key)
        got, st = encode_frame(st, np.array(mask, bool), np.array(indices, np.uint32), (h, w), key)
        assert got == want
        assert ref_decode(ref_rx, h, w, len(indices), got, key) == (mask, indices)
        m2, i2, st_rx = decode_frame(st_rx, got, (h, w), len(indices), key)
        assert m2.tolist() == [bool(m) for m in mask] and i2.tolist() == indices
        total += len(got)
    assert st == st_rx and total > 0
    # the two implementations hold the same counts
    assert st.mask_counts.tolist() == ref.mask_counts
    assert [c.tolist() for c in st.digit_counts] == ref.digit_counts


def test_reference_matches_on_a_long_frame() -> None:
    """Many chunks (past the 4096-symbol cap) and halving (a context passes 8192 within the stream)."""
    levels = (8, 5, 5, 5)
    rng = random.Random(5)
    h, w = 64, 80
    ref, st = RefState(levels), CoderState.empty(levels)
    cur = [rng.choice((0, 0, 0, rng.randrange(1000))) for _ in range(h * w)]  # a few contexts get most symbols
    halvings = HALVINGS[0]
    for t in range(8):
        cur = [c if rng.random() < 0.9 else rng.randrange(1000) for c in cur]
        mask = [1 if rng.random() < 0.9 else 0 for _ in cur]
        idx = [cur[i] for i in range(h * w) if mask[i]]
        want = ref_encode(ref, h, w, mask, idx, t == 0)
        got, st = encode_frame(st, np.array(mask, bool), np.array(idx, np.uint32), (h, w), t == 0)
        assert got == want
    assert HALVINGS[0] > halvings  # some context passed the limit and was halved
    assert max(sum(c) for d in ref.digit_counts for c in d) <= LIMIT
    assert st.mask_counts.tolist() == ref.mask_counts
    assert [c.tolist() for c in st.digit_counts] == ref.digit_counts


@pytest.mark.parametrize(("point", "carries"), [
    ("00000001", False), ("0000000000000001", False),  # the interval straddles a word boundary throughout
    ("000000010000000000000000d8", True), ("0000000100ffff0000ffff0000ffff00887534", True),
    ("123456780000ffff0000ffff0000ffffb0", True),  # and additions carry into words already begun
])
def test_reference_matches_across_word_boundaries(point: str, carries: bool) -> None:
    """Symbols chosen by decoding a code value on or next to 32-bit word boundaries, so that the coder's
    interval straddles a boundary at renormalisations and additions carry into earlier words: where
    constriction delays words and propagates carries, which the unbounded-integer reference needs no
    care for (the points were found by a seeded search for carries)."""
    levels = (8, 5, 5, 5)
    h, w = 8, 8
    mask, indices = ref_decode(RefState(levels), h, w, h * w, bytes.fromhex(point), True)
    before = CARRIES[0]
    want = ref_encode(RefState(levels), h, w, mask, indices, True)
    assert (CARRIES[0] > before) == carries
    got, _ = encode_frame(CoderState.empty(levels), np.ones(h * w, bool), np.array(indices, np.uint32), (h, w), True)
    assert got == want
    m2, i2, _ = decode_frame(CoderState.empty(levels), got, (h, w), h * w, True)
    assert m2.all() and i2.tolist() == indices


def test_chunks() -> None:
    assert chunks(0) == [] and chunks(5) == [(0, 5)] and chunks(40) == [(0, 16), (16, 32), (32, 40)]
    bounds = chunks(20000)
    assert [b - a for a, b in bounds] == [16, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 4096, 4096, 3616]
    assert bounds == chunk_bounds(20000)


def test_quantised_cdf_is_the_document_formula() -> None:
    for counts in ([1, 1], [1] * 8, [1, 2, 3, 4, 5], [8000, 1, 1, 1, 1], [3, 8189]):
        cdf = quantised_cdf(counts)
        assert cdf == cdf_of(counts)
        assert cdf[0] == 0 and cdf[-1] == 1 << 24 and all(b > a for a, b in itertools.pairwise(cdf))
    assert quantised_cdf([1, 1]) == [0, 1 << 23, 1 << 24]


# --- the worked example of docs/PACKET.md §6.7 ---------------------------------------------------------------

EXAMPLE_LEVELS = (8, 5, 5, 5)
EXAMPLE_FRAMES = [  # (mask, kept indices, keyframe) on a 2x2 grid
    ([1, 0, 0, 1], [123, 999], True),
    ([1, 1, 0, 1], [123, 124, 999], False),
]
EXAMPLE_BYTES = ["97 cc 33 a5", "d7 2d 0a 0d dc 41 68"]  # docs/PACKET.md §6.7


def example_payloads() -> list[bytes]:
    st = CoderState.empty(EXAMPLE_LEVELS)
    out = []
    for mask, idx, key in EXAMPLE_FRAMES:
        data, st = encode_frame(st, np.array(mask, bool), np.array(idx, np.uint32), (2, 2), key)
        out.append(data)
    return out


def test_worked_example() -> None:
    ref = RefState(EXAMPLE_LEVELS)
    got = example_payloads()
    assert [ref_encode(ref, 2, 2, m, i, k) for m, i, k in EXAMPLE_FRAMES] == got
    assert [g.hex(" ") for g in got] == EXAMPLE_BYTES


def test_reference_rejects_what_livetok_rejects() -> None:
    """Garbage that livetok refuses for an impossible quantile is refused by the reference too."""
    levels = (8, 5, 5, 5)
    bad = bytes([0xFF] * 12)
    with pytest.raises(PacketError):
        decode_frame(CoderState.empty(levels), bad, (2, 2), 2, True)
    with pytest.raises(ValueError, match="invalid data"):
        ref_decode(RefState(levels), 2, 2, 2, bad, True)
