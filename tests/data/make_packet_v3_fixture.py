"""Regenerate the golden fixture of packet version 3 (version 2's payload behind a trimmed header,
docs/PACKET.md §7).

- ``packet_v3.bin``: the stream of ``packet_v2.bin`` (keyframe, two non-keyframes, end of stream) as
  version 3 packets, each preceded by its length as u32 little-endian. It pins the bytes: only a
  deliberate format change (a new version) may alter them.

    python tests/data/make_packet_v3_fixture.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from livetok.stream.wire import CoderState

if __package__:  # imported by the tests
    from .make_packet_v2_fixture import LEVELS, MODEL, RECORD, fixture_packets
else:  # run as a script
    sys.path.insert(0, str(Path(__file__).parent))
    from make_packet_v2_fixture import LEVELS, MODEL, RECORD, fixture_packets

HERE = Path(__file__).parent
__all__ = ["LEVELS", "MODEL", "fixture_bytes", "fixture_packets"]


def fixture_bytes() -> list[bytes]:
    state = CoderState.empty(LEVELS)
    out = []
    for p in fixture_packets():
        data, state = p.pack_v3(state)
        out.append(data)
    return out


if __name__ == "__main__":
    out = HERE / "packet_v3.bin"
    blob = b"".join(RECORD.pack(len(d)) + d for d in fixture_bytes())
    out.write_bytes(blob)
    print(f"wrote {out} ({len(blob)} bytes: packets of {[len(d) for d in fixture_bytes()]} bytes)")
