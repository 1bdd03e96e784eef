"""Which receiver worker owns which stream: rendezvous (highest-random-weight) hashing over the live
workers — a pure function of the stream name and the set of workers.

Every worker computes the same answer from the same membership, with no coordinator and no message
between them; when a worker joins or leaves, only the streams it gains or held move (about 1/W of
them), and each stream still has exactly one owner. Thaler & Ravishankar 1998; the scheme behind
many sharded caches. Hashes are BLAKE2b (stable across processes and Python versions, unlike hash()).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

__all__ = ["owned", "owner"]


def _weight(worker: str, stream: str) -> int:
    digest = hashlib.blake2b(f"{worker}\x00{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(stream: str, workers: Iterable[str]) -> str | None:
    """The worker that decodes `stream` (None when there is no worker). Ties, which need a 64-bit
    collision, go to the smaller worker name so the answer stays deterministic."""
    best: tuple[int, str] | None = None
    for w in workers:
        key = (_weight(w, stream), w)
        if best is None or key[0] > best[0] or (key[0] == best[0] and w < best[1]):
            best = key
    return None if best is None else best[1]


def owned(streams: Iterable[str], me: str, workers: Iterable[str]) -> set[str]:
    """The subset of `streams` that worker `me` owns among `workers` (which should include `me`)."""
    ws = list(workers)
    return {s for s in streams if owner(s, ws) == me}
