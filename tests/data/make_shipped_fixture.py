"""Regenerate ``shipped_v23.npz``: the shipped weights' tokens and decode of a small made-up clip.

It pins what the shipped model (v23, identity 16802af157862480) computes: the input frames, the
tokens the default sender sends for them (indices and keep-masks), and the receiver's decoded frames
(uint8, with the sum and the sum of squares of each float frame as a fingerprint), so a refactor of
the networks is proven to load the same weights and compute the same frames
(tests/test_checkpoint.py). Only new shipped weights may regenerate it.

    python tests/data/make_shipped_fixture.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
FRAMES, HEIGHT, WIDTH = 6, 64, 96  # six: v20 kept every position of the first five (v21-v23: the third is partial)


def clip() -> np.ndarray:
    """uint8 RGB [6, 64, 96, 3]: a smooth colour ramp with seeded texture and a square moving 6 px a
    frame (pure numpy, so the input is the same on every machine)."""
    rng = np.random.default_rng(26)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    base = np.stack([xx / WIDTH * 200 + 30, yy / HEIGHT * 180 + 40, (xx + yy) / (WIDTH + HEIGHT) * 150 + 60], -1)
    base += rng.normal(0.0, 8.0, base.shape).astype(np.float32)
    out = np.empty((FRAMES, HEIGHT, WIDTH, 3), np.uint8)
    for t in range(FRAMES):
        f = base.copy()
        f[14:30, 6 + 6 * t:22 + 6 * t] = (240.0, 230.0, 40.0)
        out[t] = np.clip(f, 0, 255).astype(np.uint8)
    return out


def main() -> None:
    import torch

    from livetok.engine.checkpoint import load_default
    from livetok.engine.frames import to_tensor, to_uint8

    torch.set_num_threads(1)
    model = load_default()
    frames = clip()
    x = to_tensor(frames)
    tx, rx = None, None
    indices, masks, recons, sums = [], [], [], []
    for t in range(FRAMES):
        tok, tx = model.encode_step(x[t : t + 1], tx)  # the default sender (learned, rate 0.5)
        out, rx = model.decode_step(tok, rx)
        indices.append(tok.indices[0].numpy().astype(np.uint16))
        masks.append(tok.mask[0].numpy())
        recons.append(to_uint8(out[0]))
        sums.append((float(out.double().sum()), float(out.double().square().sum())))
    path = HERE / "shipped_v23.npz"
    np.savez_compressed(path, frames=frames, indices=np.stack(indices), masks=np.stack(masks),
                        recon=np.stack(recons), recon_sums=np.array(sums), model_id=np.array(model.identity.hex()))
    print(f"wrote {path} ({path.stat().st_size} bytes; kept {[int(m.sum()) for m in masks]} of {masks[0].size})")


if __name__ == "__main__":
    main()
