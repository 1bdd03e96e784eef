"""How far can a model's decoder take a held frame when its codes are chosen freely? (issue 23)

A static camera's frame is "streamed" for T frames through the decoder alone, starting from a reset
state, with every position kept. Instead of the encoder's quantized codes, each frame's codes are free
continuous parameters ([T, D, h, w], bounded to FSQ's [-1, 1] by tanh, or unbounded), optimised by Adam
over the unrolled stream to minimise the reconstruction's MSE at every frame. The PSNR reached at frame t
is then an upper bound on what *any* encoder and quantizer could give through this decoder at full rate:
if it stays low, the decoder (not the encoder, the quantizer or the entropy coder) is the ceiling.

Modes beside the plain one test cheap decoder changes on the frozen weights, each optimised jointly with
the codes: `scale` multiplies each frame's update by a free scalar (a per-frame step size), `stage` adds a
free per-frame vector to the token embedding (a "refinement level" embedding).

usage: python experiments/decoder_ceiling.py [--weights W] [--mode tanh|free|scale|stage] [--frames 12]
       [--iters 400] [--clips ../shared/data/eval/*.mkv] [--every 2] [--limit 3]
"""

from __future__ import annotations

import argparse
import glob

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from livetok.engine.checkpoint import load_default, load_weights
from livetok.engine.frames import to_tensor
from livetok.engine.layers import SLOPE, masked_embedding
from livetok.engine.metrics import psnr_from_mse
from livetok.stream.video_io import read_video


def ceiling(model: torch.nn.Module, x: Tensor, frames: int, iters: int, mode: str) -> list[float]:
    """PSNR at each of `frames` frames of x held still, with the codes optimised for `iters` steps."""
    dec = model.decoder
    _, _, height, width = x.shape
    h, w = height // dec.stride, width // dec.stride
    mask = torch.ones(1, h * w, dtype=torch.bool)
    lat = torch.zeros(frames, 1, model.cfg.fsq.dim, h, w, requires_grad=True)
    scale = torch.zeros(frames, requires_grad=True)
    stage = torch.zeros(frames, dec.embed.out_channels, 1, 1, requires_grad=True)
    opt = torch.optim.Adam([lat, scale, stage], lr=0.05)

    def step(codes: Tensor, prev: Tensor, hidden: Tensor, t: int) -> tuple[Tensor, Tensor]:
        if mode in ("tanh", "free"):  # the real decoder
            out: tuple[Tensor, Tensor] = dec(codes, mask, prev, hidden)
            return out
        # its forward written out (depth 1, no refinement) with the modes' hooks
        e = masked_embedding(dec.embed(codes), dec.mask_embedding, mask)
        if mode == "stage":
            e = e + stage[t]
        f = dec.blocks(F.leaky_relu(dec.fuse(torch.cat([e, hidden, F.pixel_unshuffle(prev, dec.stride)], 1)), SLOPE))
        update = F.pixel_shuffle(dec.to_rgb(f), dec.stride)
        if mode == "scale":
            update = update * torch.exp(scale[t])
        return (prev + update).clamp(-1.0, 1.0), torch.tanh(dec.to_hidden(f))

    mses: list[Tensor] = []
    for _ in range(iters):
        recon = torch.zeros_like(x)
        hidden = torch.zeros(1, model.cfg.decoder.state_channels, h, w)
        loss = x.new_zeros(())
        mses = []
        for t in range(frames):
            codes = lat[t] if mode == "free" else torch.tanh(lat[t])
            recon, hidden = step(codes, recon, hidden, t)
            mses.append(((recon - x) ** 2).mean())
            loss = loss + mses[-1] * (1 + t / frames)  # later frames weigh more: the held frame is the aim
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
    # the last pass's figures (before its own update), read once rather than every frame of every pass
    return [psnr_from_mse(float(m.detach()), peak=2.0) for m in mses]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", default=None)
    p.add_argument("--mode", choices=("tanh", "free", "scale", "stage"), default="tanh")
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--iters", type=int, default=400)
    p.add_argument("--clips", nargs="*", default=sorted(glob.glob("../shared/data/eval/*.mkv")))
    p.add_argument("--every", type=int, default=2, help="take every Nth clip")
    p.add_argument("--limit", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    model = load_weights(a.weights) if a.weights else load_default()
    model.eval()
    for q in model.parameters():
        q.requires_grad_(False)
    rows = []
    for path in a.clips[:: a.every][: a.limit]:
        frame, _ = read_video(path, max_frames=1)
        x = to_tensor(frame[0])
        ps = ceiling(model, x, a.frames, a.iters, a.mode)
        print(path.rsplit("/", 1)[-1], a.mode, " ".join(f"{v:.2f}" for v in ps), flush=True)
        rows.append(ps)
    print("mean", a.mode, " ".join(f"{v:.2f}" for v in np.mean(rows, 0)))


if __name__ == "__main__":
    main()
