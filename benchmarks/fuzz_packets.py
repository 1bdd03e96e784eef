"""Fuzz the packet parser with a million (or more) random and mutated packets (issue 7).

Two engines:

- `loop` (default): a seeded mutation loop over valid packets of every mask mode — bit flips, byte
  sets, truncations, insertions, deletions, size-field inflation and random bytes, half of them
  re-sealed with a valid CRC so they reach the checks behind it. Reproducible from `--seed`.
- `atheris`: coverage-guided (libFuzzer through atheris, when `pip install atheris` works), seeded
  with the same valid packets; the input's first byte chooses whether the rest is re-sealed with
  a valid CRC (libFuzzer cannot forge one). The report is printed from the fuzzed function at the
  last packet, since libFuzzer ends the process itself.

Either way the only exception allowed out of `TokenPacket.unpack` is `PacketError`; anything it
accepts must re-pack to the same bytes (version 1) or to a packet that decodes equal (versions 2 and 3).
Prints counts (accepted, refused by reason, crashes), the slowest packet and the peak RSS as one JSON object.

    OMP_NUM_THREADS=1 nice -n 19 python -m livetok.bench.fuzz_packets --packets 1000000 --json
    nice -n 19 python -m livetok.bench.fuzz_packets --engine atheris --packets 1000000
    python -m livetok.bench.fuzz_packets --crafted --json   # crafted costly packets (issue 14)
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import resource
import struct
import sys
import tempfile
import time
import tracemalloc
import zlib
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from livetok.stream.wire import (
    CRC_SIZE,
    HEADER_SIZE,
    MAGIC,
    VERSION,
    CoderState,
    MaskMode,
    PacketError,
    TokenPacket,
    encode_mask_as,
    packed_size,
)
from livetok.stream.wire.packet import (
    HEADER,
    HEADER_V2_FIELDS,
    HEADER_V2_GEOMETRY,
    HEADER_V3_DELTA,
    MARKER_V3,
    VERSION_V2,
    VERSION_V3,
    PacketHeader,
    _parse_header,
    pack_header_v2,
    pack_header_v3,
    packet_version,
)

MODEL = bytes.fromhex("0123456789abcdef")
LEVELS = (8, 5, 5, 5)  # the shipped FSQ levels: v2 packets decode with a coder state of these
# every varint of a v2 header (the geometry only where the packet has it: keyframes, end of stream)
FIELDS_V2 = HEADER_V2_FIELDS + HEADER_V2_GEOMETRY
SIZE_FIELDS = (6, 7, 8, 9, 10, 11, 12, 13, 14)  # width .. token_bytes in HEADER
FIELD_BITS = (16, 16, 16, 16, 8, 8, 32, 32, 32)
INTERESTING = (0, 1, 7, 8, 255, 256, 2047, 2048, 2049, 16384, 16385, 65535, 1 << 22, (1 << 22) + 1, 1 << 24,
               MAX32 := (1 << 32) - 1)


Seed = tuple[bytes, CoderState | None]  # a packet, and the coder state it decodes with (v2/v3 non-keyframes)


def seed_packets(rng: np.random.Generator, count: int = 200) -> list[Seed]:
    """Valid packets: grids 1..48 a side, 1..32 bits, masks from empty to full (every mask mode); version 2
    and 3 keyframes (a fresh coder state decodes them) and non-keyframes with the state their keyframe left."""
    out: list[Seed] = []
    for i in range(count):
        gh, gw = int(rng.integers(1, 49)), int(rng.integers(1, 49))
        bits = int(rng.integers(1, 33))
        n = gh * gw
        style = i % 6
        if style < 4:
            mask = rng.random(n) < (0.0, 0.05, 0.5, 1.0)[style]
        elif style == 4:
            mask = np.zeros(n, bool)
            a = int(rng.integers(0, n))
            mask[a:int(rng.integers(a, n + 1))] = True
        else:
            mask = rng.random(n) < 0.97
        idx = rng.integers(0, 1 << bits, size=int(mask.sum()), dtype=np.uint64)
        keyframe = i % 3 == 0 and bool(mask.any())  # a keyframe carries tokens
        out.append((TokenPacket(MODEL, i, i * 33_333, keyframe, i % 17 == 0, gw * 8, gh * 8, gh, gw, bits, mask,
                                idx).pack(), None))
    out.append((TokenPacket(MODEL, 0, 0, False, True, 0, 0, 0, 0, 8, np.zeros(0, bool),
                            np.zeros(0, np.uint64)).pack(), None))
    # versions 2 and 3 (entropy-coded) of the fixtures' levels: a keyframe, then a non-keyframe (no geometry in
    # its header; in version 3 no model id, frame index or timestamp either) that decodes only with the state
    # the keyframe left
    for i in range(count):
        version = VERSION_V2 if i % 2 == 0 else VERSION_V3
        gh, gw = int(rng.integers(1, 49)), int(rng.integers(1, 49))
        state = CoderState.empty(LEVELS)
        for j, keyframe in enumerate((True, False)):
            mask = rng.random(gh * gw) < (0.0, 0.05, 0.5, 1.0, 0.97)[(i + j) % 5]
            if keyframe and not mask.any():
                mask[int(rng.integers(0, gh * gw))] = True  # a keyframe carries tokens
            idx = rng.integers(0, 1000, size=int(mask.sum()), dtype=np.uint64)
            p = TokenPacket(MODEL, i + j, (i + j) * 33_333, keyframe, not keyframe and i % 17 == 0, gw * 8, gh * 8,
                            gh, gw, 10, mask, idx)
            data, after = p.pack_as(version, state)
            out.append((data, None if keyframe else state))
            state = after
    return out


# --- the packet mutator (the one the wire tests use too) ------------------------------------------------------


def reseal(data: bytes, model_id: bytes = MODEL) -> bytes:
    """``data`` with its last 4 bytes replaced by the CRC of the rest: a changed body reaches the checks behind
    the CRC. Shorter data is returned as it is.

    A version 3 packet's CRC covers its stream's model id first (docs/PACKET.md §7.4): the one in its header
    where its first byte says it has one (a keyframe or end-of-stream packet), else ``model_id`` (the stream's:
    default the fixtures' ``MODEL``), as a reader computes it."""
    if len(data) < CRC_SIZE:
        return data
    body = data[:-CRC_SIZE]
    crc = 0
    if packet_version(data) == VERSION_V3:
        crc = zlib.crc32(body[1:9] if data[0] & 0x03 and len(body) >= 9 else model_id)
    return body + struct.pack("<I", zlib.crc32(body, crc))


def mutate(rng: np.random.Generator, data: bytes, *, packet: bool = True, keep_length: bool = False) -> bytes:
    """One to four random edits of ``data``, drawn from ``rng``: bit flips (twice as likely as the others), byte
    sets, truncations, insertions and deletions of 1..8 bytes and, where ``data`` is a packet, a header size
    field set to a boundary or random value (version 1, 2 or 3).

    Args:
        packet: False for bytes that are not a whole packet (an entropy-coded payload): no header edits.
        keep_length: only bit flips and byte sets (bytes inside a packet's sections, behind its header).
    """
    buf = bytearray(data)
    ops = 3 if keep_length else 8 if packet else 6
    for _ in range(int(rng.integers(1, 5))):
        op = int(rng.integers(0, ops))
        i = int(rng.integers(0, len(buf) + 1))
        if op <= 1 and i < len(buf):  # bit flip (twice as likely: the commonest transmission error)
            buf[i] ^= 1 << int(rng.integers(0, 8))
        elif op == 2 and i < len(buf):
            buf[i] = int(rng.integers(0, 256))
        elif op == 3:
            del buf[i:]
        elif op == 4:
            buf[i:i] = rng.integers(0, 256, size=int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
        elif op == 5:
            del buf[i:i + int(rng.integers(1, 9))]
        elif packet_version(bytes(buf)) in (VERSION_V2, VERSION_V3):
            # v2/v3 size-field inflation: a varint set to a boundary or random value
            try:
                h = _parse_header(bytes(buf))
            except PacketError:
                continue
            fields = (FIELDS_V2 if h.has_geometry else HEADER_V2_FIELDS if h.version == VERSION_V2
                      else HEADER_V3_DELTA)
            name, bits = fields[int(rng.integers(0, len(fields)))]
            v = (INTERESTING[int(rng.integers(0, len(INTERESTING)))] if op == 6
                 else int.from_bytes(rng.bytes(8), "little"))  # a timestamp is 64 bits: past numpy's int64
            buf[:h.header_size] = _repack(h, name, v % (1 << bits))
        elif len(buf) >= HEADER_SIZE:  # v1 size-field inflation: a header field set to a boundary or random value
            vals = list(HEADER.unpack_from(buf))
            f = int(rng.integers(0, len(SIZE_FIELDS)))
            v = INTERESTING[int(rng.integers(0, len(INTERESTING)))] if op == 6 else int(rng.integers(0, MAX32))
            vals[SIZE_FIELDS[f]] = v % (1 << FIELD_BITS[f])
            buf[:HEADER_SIZE] = HEADER.pack(*vals)
    return bytes(buf)


def _repack(h: PacketHeader, field: str, value: int) -> bytes:
    """``h``'s version 2 or 3 header bytes with one varint field replaced (the header may change length; a
    version 3 non-keyframe's ``timestamp_delta_us`` is its header's ``timestamp_us``)."""

    def get(name: str) -> int:
        return value if name == field else int(getattr(h, "timestamp_us" if name == "timestamp_delta_us" else name))

    geometry = ((get("width"), get("height"), get("grid_h"), get("grid_w"), get("bits_per_index"))
                if h.has_geometry else None)
    pack = pack_header_v2 if h.version == VERSION_V2 else pack_header_v3
    ts = get("timestamp_delta_us" if h.relative else "timestamp_us")
    return pack(h.flags, h.model_id, get("frame_index"), ts, get("k"), geometry)


_CUT = re.compile(r"[0-9'\"(:]")


def reason(e: PacketError) -> str:
    """The message up to its first number, quote or colon: a reason category (cheap: runs per packet)."""
    text = re.sub(r"^\d+ ", "N ", str(e))  # "N trailing bytes ..." keeps its words
    m = _CUT.search(text)
    return (text[:m.start()] if m else text).strip() or text.split(" ")[0]


class Tally:
    def __init__(self) -> None:
        self.total = self.accepted = 0
        self.reasons: Counter[str] = Counter()
        self.crashes: list[str] = []
        self.slowest_cpu_s = 0.0  # CPU time, not wall: other work on the machine does not count
        self.slowest_len = 0

    def feed(self, data: bytes, state: CoderState | None = None) -> None:
        """One input; a version 2 or 3 packet decodes with ``state`` (default: a fresh stream's coder state)."""
        self.total += 1
        t0 = time.thread_time()
        try:
            version = packet_version(data)
            if version in (VERSION_V2, VERSION_V3):
                st = state or CoderState.empty(LEVELS)
                p, _ = TokenPacket.unpack_any(data, st)
                again, _ = TokenPacket.unpack_any(p.pack_as(version, st)[0], st)
            else:
                p = TokenPacket.unpack(data)
                packed = p.pack()
                again = TokenPacket.unpack(packed)
                # version 1 takes only the encoder's bytes (the smallest mask mode): they re-pack to themselves
                if packed != data:
                    self.crashes.append(f"accepted bytes are not what pack() makes: {data.hex()[:400]}")
            # and they mean exactly what they re-pack to
            if again != p:
                self.crashes.append(f"accepted bytes do not round-trip: {data.hex()}")
            self.accepted += 1
        except PacketError as e:
            self.reasons[reason(e)] += 1
        except Exception as e:  # what this benchmark exists to find
            self.crashes.append(f"{type(e).__name__}: {e}: {data.hex()[:400]}")
        dt = time.thread_time() - t0
        if dt > self.slowest_cpu_s:
            self.slowest_cpu_s, self.slowest_len = dt, len(data)


def run_loop(packets: int, seed: int, progress: Callable[[int], None]) -> Tally:
    rng = np.random.default_rng(seed)
    pool = seed_packets(rng)
    tally = Tally()
    for i in range(packets):
        kind = i % 16
        state = None
        if kind == 15:  # random bytes, sometimes behind a valid magic and version, or version 3's first byte
            raw = rng.integers(0, 256, size=int(rng.integers(0, 200)), dtype=np.uint8).tobytes()
            lead = b"LTKP\x01" if i % 32 == 15 else bytes([MARKER_V3 | (i // 64) % 4]) if i % 64 == 31 else b""
            data = lead + raw
        else:
            original, state = pool[int(rng.integers(0, len(pool)))]
            data = mutate(rng, original)
            if kind % 2:
                data = reseal(data)
        tally.feed(data, state)
        if i % 100_000 == 0:
            progress(i)
    return tally


def run_atheris(packets: int, seed: int, done: Callable[[Tally], None]) -> Tally:
    """libFuzzer ends the process itself when its run count is reached (C exit: no Python code runs
    after `atheris.Fuzz()`), so `done` is called from the fuzzed function at the last packet and the
    process ends there with its exit status."""
    import atheris

    tally = Tally()

    def one(data: bytes) -> None:
        # libFuzzer cannot forge a CRC32, so past the CRC check it would learn nothing: the first
        # byte's low bit says whether the rest is re-sealed with a valid CRC (as the loop does half
        # the time), and the seeds are stored with that byte in front
        body = data[1:]
        tally.feed(reseal(body) if data[:1] and data[0] & 1 else body)
        if tally.crashes:
            raise RuntimeError(tally.crashes[-1])
        if tally.total == packets:
            done(tally)
            sys.stdout.flush()
            os._exit(0)

    corpus = [p for p, _ in seed_packets(np.random.default_rng(seed))]  # each decoded with a fresh state
    with tempfile.TemporaryDirectory() as d:
        for i, p in enumerate(corpus):
            with open(os.path.join(d, f"seed{i}"), "wb") as f:
                f.write(bytes([i % 2]) + p)
        with contextlib.redirect_stdout(sys.stderr):  # atheris says "Instrumentation complete" on stdout
            atheris.instrument_all()  # coverage of the already imported parser guides the mutations
        # a few runs to spare: libFuzzer's count and ours may differ by its own probe inputs
        atheris.Setup([sys.argv[0], f"-runs={packets + 100}", f"-seed={seed}", "-max_len=4096", d], one)
        atheris.Fuzz()  # does not return: `one` ends the process at the last packet
    return tally


# --- crafted packets (issue 14): valid CRC, well-formed header, built to be costly ---------------------------

SIDE = 2048  # grid side: N = 2**22, the format's limit


def craft_v1(mask: np.ndarray, mode: int, bits: int = 1, grid: tuple[int, int] = (SIDE, SIDE)) -> bytes:
    """A sealed version 1 packet with `mask` in `mode` (any mode, not only the encoder's) and zero tokens."""
    gh, gw = grid
    data = encode_mask_as(mask, mode)
    k = int(mask.sum())
    tokens = bytes(packed_size(k, bits))
    head = HEADER.pack(MAGIC, VERSION, 1, MODEL, 0, 0, min(8 * gw, 16384), min(8 * gh, 16384), gh, gw, bits, mode,
                       k, len(data), len(tokens))
    return reseal(head + data + tokens + bytes(CRC_SIZE))


def _every(step: int, count: int | None = None) -> np.ndarray:
    m = np.zeros(SIDE * SIDE, bool)
    m[::step][:count] = True
    return m


def _most_runs() -> np.ndarray:
    # runs of 1 (3 bits each) over a third of the grid, then one long run: about 1.4 million runs in
    # an RLE mask just under the BITMAP's 512 KiB, so RLE is the encoder's choice
    m = np.zeros(SIDE * SIDE, bool)
    m[:SIDE * SIDE // 3 - 64] = np.arange(SIDE * SIDE // 3 - 64) % 2 == 1
    return m


CRAFTED: dict[str, Callable[[], bytes]] = {
    "index_12mb": lambda: craft_v1(np.ones(SIDE * SIDE, bool), MaskMode.INDEX),  # the 12 MB
    "rle_1_8mb": lambda: craft_v1(np.arange(SIDE * SIDE) % 2 == 0, MaskMode.RLE),  # the 1.8 MB
    "index_bitmap_length": lambda: craft_v1(_every(22, 190650), MaskMode.INDEX),  # exactly the BITMAP's length
    "bitmap_of_all": lambda: craft_v1(np.ones(SIDE * SIDE, bool), MaskMode.BITMAP),
    "bitmap_of_index": lambda: craft_v1(_every(4096), MaskMode.BITMAP),
    # the costliest valid ones
    "rle_most_runs": lambda: craft_v1(_most_runs(), MaskMode.RLE),
    "bitmap_32bit_tokens": lambda: craft_v1(np.random.default_rng(0).random(SIDE * SIDE) < 0.5, MaskMode.BITMAP,
                                            bits=32),
    "index_sparse": lambda: craft_v1(_every(2048), MaskMode.INDEX),
    "all_32bit_tokens_16mb": lambda: craft_v1(np.ones(SIDE * (SIDE - 1), bool), MaskMode.ALL, bits=32,
                                              grid=(SIDE - 1, SIDE)),
}


def cost(fn: Callable[[], object]) -> tuple[float, int, object]:
    """(CPU seconds, peak traced bytes, fn's result or its PacketError): timed first without
    tracemalloc, whose bookkeeping would count in the time, then run again under it."""
    def run() -> object:
        try:
            return fn()
        except PacketError as e:
            return e
    t0 = time.thread_time()
    out = run()
    seconds = time.thread_time() - t0
    tracemalloc.start()
    try:
        run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return seconds, peak, out


def run_crafted() -> list[dict[str, Any]]:
    """`TokenPacket.unpack` of each crafted case: its size, CPU time, peak traced memory and outcome."""
    rows = []
    for name, build in CRAFTED.items():
        data = build()
        seconds, peak, out = cost(functools.partial(TokenPacket.unpack, data))
        rows.append({"case": name, "bytes": len(data), "cpu_s": round(seconds, 3), "peak_mib": round(peak / 2**20, 1),
                     "result": f"refused: {out}" if isinstance(out, PacketError) else "decoded"})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--engine", choices=["loop", "atheris"], default="loop")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--crafted", action="store_true",
                    help="instead: the cost of each crafted packet (issue 14) at the format's largest grid")
    a = ap.parse_args(argv)
    if a.crafted:
        for row in run_crafted():
            print(json.dumps(row) if a.json else "  ".join(f"{k}={v}" for k, v in row.items()))
        return 0
    t0, c0 = time.perf_counter(), time.process_time()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def progress(i: int) -> None:
        print(f"{i} packets, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)

    def report(tally: Tally) -> None:
        wall = time.perf_counter() - t0
        res: dict[str, Any] = {
            "engine": a.engine, "seed": a.seed, "packets": tally.total, "accepted": tally.accepted,
            "refused": sum(tally.reasons.values()), "crashes": len(tally.crashes),
            "crash_examples": tally.crashes[:5], "seconds": round(wall, 1),
            "cpu_seconds": round(time.process_time() - c0, 1),
            "packets_per_cpu_s": round(tally.total / max(1e-9, time.process_time() - c0)),
            "slowest_packet_cpu_ms": round(tally.slowest_cpu_s * 1e3, 2), "slowest_packet_bytes": tally.slowest_len,
            "peak_rss_mib_start": round(rss0 / 1024, 1),
            "peak_rss_mib_end": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "refused_by_reason": dict(tally.reasons.most_common()),
        }
        if a.json:
            print(json.dumps(res, indent=2))
        else:
            for k, v in res.items():
                print(f"{k}: {v}")

    tally = run_loop(a.packets, a.seed, progress) if a.engine == "loop" else run_atheris(a.packets, a.seed, report)
    report(tally)
    return 1 if tally.crashes else 0


if __name__ == "__main__":
    sys.exit(main())
