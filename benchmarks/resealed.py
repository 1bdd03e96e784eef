"""Version 2 and 3 payloads changed behind a recomputed CRC: what the receiver's checks catch (issue 24 item 8).

A transmission error fails the CRC. A payload byte changed by something that then recomputes the CRC (a
buggy relay, an editing tool) reaches the payload's own checks (docs/PACKET.md §6.6): the decoded mask
must keep `k` positions, the range decoder must find a valid symbol at every step, and the payload must be
exactly what the encoder makes for the symbols it decodes to. Whatever passes all three is a valid packet
of other tokens, so no check of that packet can refuse it; but its tokens leave the receiver's coder state
different from the sender's, and the packets after it then (nearly always) fail those checks. This
measures both: for every payload byte of every version 2 or 3 packet of the recordings, `--values` other
byte values each resealed, decoded with the right coder state; for each one accepted, how many of the
following packets still decode with the state it left before one is refused (or a keyframe comes).

    OMP_NUM_THREADS=1 python -m livetok.bench.resealed clip1.ltk clip2.ltk --json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

from livetok.stream.wire import CoderState, LtkReader, PacketError, TokenPacket, peek_header
from livetok.stream.wire.packet import _verify

from .fuzz_packets import reseal

REASONS = (  # the check that refused a packet, by a fragment of its message
    ("mask_popcount", "keeps"),
    ("coder_invalid", "does not decode"),
    ("not_canonical", "not what the encoder makes"),
    ("zero_end", "zero byte"),
)


def _reason(message: str) -> str:
    return next((name for name, fragment in REASONS if fragment in message), "other")


def resealed(paths: Sequence[str], values: int = 4, seed: int = 0) -> dict[str, Any]:
    """Counts of refused (by check) and accepted corruptions, and for the accepted ones the number of
    following packets that still decoded (`later_decoded`: 0 = the next one was refused)."""
    rng = random.Random(seed)
    refused: Counter[str] = Counter()
    later: Counter[str] = Counter()
    total = accepted = 0
    for path in paths:
        with LtkReader(path) as reader:
            levels, raws, model = reader.meta["fsq_levels"], list(reader.iter_raw()), reader.model_id
        states = [CoderState.empty(levels)]
        for data in raws:
            states.append(TokenPacket.unpack_any(data, states[-1])[1])
        for t, data in enumerate(raws):
            start = _verify(data, states[t]).header_size
            for j in range(start, len(data) - 4):
                for v in rng.sample([b for b in range(256) if b != data[j]], values):
                    bad = reseal(data[:j] + bytes([v]) + data[j + 1:], model)  # v3: the CRC covers the model id
                    total += 1
                    try:
                        _, state = TokenPacket.unpack_any(bad, states[t])
                    except PacketError as e:
                        refused[_reason(str(e))] += 1
                        continue
                    accepted += 1
                    later[str(_decoded_after(raws[t + 1:], state))] += 1
    return {"corruptions": total, "refused": dict(refused), "accepted": accepted,
            "accepted_fraction": round(accepted / total, 4) if total else 0.0,
            "later_decoded": dict(sorted(later.items()))}


def _decoded_after(following: Sequence[bytes], state: CoderState) -> int | str:
    """How many of `following` decode with `state` before one is refused; "keyframe" when a keyframe
    (which resets the state) comes first, "end" at the end of the recording."""
    for n, data in enumerate(following):
        if peek_header(data).keyframe:
            return "keyframe"
        try:
            _, state = TokenPacket.unpack_any(data, state)
        except PacketError:
            return n
    return "end"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recordings", nargs="+", help=".ltk files of version 2 or 3 packets (`livetok encode`)")
    ap.add_argument("--values", type=int, default=4, help="other values tried per payload byte (default 4)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    res = resealed(a.recordings, a.values, a.seed)
    if a.json:
        json.dump(res, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
