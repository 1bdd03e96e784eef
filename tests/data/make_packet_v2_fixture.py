"""Regenerate the fixtures of packet version 2 (the entropy-coded layout, docs/PACKET.md §6).

- ``packet_v2.bin``: a golden four-packet stream (keyframe, two non-keyframes, end of stream), each
  packet preceded by its length as u32 little-endian. It pins the bytes: only a deliberate format
  change (a new version) may alter them.
- ``tokens_real.npz`` (with ``--real``): 12 frames of the shipped model's tokens on
  ``../shared/data/eval/asl-yes.mkv`` at full rate and at infotok rate 0.5, for the tests that code
  real tokens without running the model.

    python tests/data/make_packet_v2_fixture.py [--real]
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np

from livetok.stream.wire import CoderState, TokenPacket

HERE = Path(__file__).parent
MODEL = bytes.fromhex("0123456789abcdef")
LEVELS = (8, 5, 5, 5)  # the shipped model's FSQ: 1000 codes, 10 bits per index
RECORD = struct.Struct("<I")


def _mask(kept: range | list[int], n: int = 24) -> np.ndarray:
    m = np.zeros(n, dtype=bool)
    m[list(kept)] = True
    return m


def fixture_packets() -> list[TokenPacket]:
    """The stream stored in packet_v2.bin: a 64x96 frame on a 4x6 grid, as in packet_v1.bin."""
    full = [(37 * i) % 1000 for i in range(24)]
    full[5:14] = [999, 0, 513, 7, 300, 998, 1, 42, 640]  # what frames 7 and 8 sent there
    frames = [  # (frame index, timestamp, keyframe, mask, indices)
        (7, 1234567, True, _mask(range(5, 12)), [999, 0, 512, 7, 300, 998, 1]),
        (8, 1267900, False, _mask(range(5, 14)), [999, 0, 513, 7, 300, 998, 1, 42, 640]),
        (9, 1301233, False, _mask(range(24)), full),
    ]
    out = [TokenPacket(MODEL, index, ts, key, False, 96, 64, 4, 6, 10, mask, np.array(idx, np.uint32))
           for index, ts, key, mask, idx in frames]
    out.append(TokenPacket(MODEL, 10, 1334566, False, True, 0, 0, 0, 0, 10, np.zeros(0, bool),
                           np.zeros(0, np.uint32)))
    return out


def fixture_bytes() -> list[bytes]:
    state = CoderState.empty(LEVELS)
    out = []
    for p in fixture_packets():
        data, state = p.pack_v2(state)
        out.append(data)
    return out


def write_real(path: Path) -> None:
    import torch

    from livetok.engine.checkpoint import load_default
    from livetok.engine.config import BudgetConfig, SenderConfig
    from livetok.stream.session import SenderSession
    from livetok.stream.video_io import read_video

    torch.set_num_threads(1)
    model = load_default()
    frames, fps = read_video(HERE.parents[1] / ".." / "shared" / "data" / "eval" / "asl-yes.mkv", max_frames=12)
    arrays: dict[str, np.ndarray] = {"levels": np.array(model.cfg.fsq.levels)}
    for name, budget in (("fixed", BudgetConfig(policy="fixed", rate=1.0)),
                         ("infotok", BudgetConfig(policy="infotok", rate=0.5))):
        tx = SenderSession(model, SenderConfig(budget=budget))
        masks, indices, keys = [], [], []
        for i, frame in enumerate(frames):
            enc = tx.encode(frame, timestamp_us=round(i * 1e6 / fps))
            masks.append(enc.packet.mask)
            indices.append(enc.tokens.indices[0].numpy().astype(np.uint16))  # all N; the mask picks the kept
            keys.append(enc.packet.keyframe)
            arrays["grid"] = np.array([enc.packet.grid_h, enc.packet.grid_w])
        arrays[f"{name}_mask"] = np.stack(masks)
        arrays[f"{name}_indices"] = np.stack(indices)
        arrays[f"{name}_keyframe"] = np.array(keys)
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
    print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    out = HERE / "packet_v2.bin"
    blob = b"".join(RECORD.pack(len(d)) + d for d in fixture_bytes())
    out.write_bytes(blob)
    print(f"wrote {out} ({len(blob)} bytes: packets of {[len(d) for d in fixture_bytes()]} bytes)")
    if "--real" in sys.argv[1:]:
        write_real(HERE / "tokens_real.npz")
