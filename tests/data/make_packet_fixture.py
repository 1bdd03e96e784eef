"""Regenerate tests/data/packet_v1.bin, the golden packet pinning wire format version 1.

Run ``python tests/data/make_packet_fixture.py`` only together with a VERSION bump (docs/PACKET.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from livetok.stream.wire import VERSION, TokenPacket

# A 64x96 frame on a 4x6 latent grid (16x downsampling), 10 bits per index, keyframe 7.
# Positions 5..11 are kept: runs 5 dropped / 7 kept / 12 dropped (implicit), so RLE (2 bytes) beats
# BITMAP (3 bytes) and INDEX (7 x 5 bits = 5 bytes); the indices cover 0 and 2**10 - 1.
MASK = np.zeros(24, dtype=bool)
MASK[5:12] = True
INDICES = np.array([1023, 0, 512, 7, 300, 999, 1], dtype=np.uint32)


def fixture_packet() -> TokenPacket:
    """The packet stored in packet_v1.bin."""
    return TokenPacket(
        model_id=bytes.fromhex("0123456789abcdef"),
        frame_index=7,
        timestamp_us=1234567,
        keyframe=True,
        end_of_stream=False,
        width=96,
        height=64,
        grid_h=4,
        grid_w=6,
        bits_per_index=10,
        mask=MASK,
        indices=INDICES,
    )


if __name__ == "__main__":
    out = Path(__file__).with_name(f"packet_v{VERSION}.bin")
    data = fixture_packet().pack()
    out.write_bytes(data)
    print(f"wrote {out} ({len(data)} bytes)")
