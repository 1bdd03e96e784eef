"""`train`: weights from video clips and the synthetic generator (engine/train.py)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .output import console

if TYPE_CHECKING:
    from .options import Subparsers


def register(sub: Subparsers) -> None:
    t = sub.add_parser("train", help="train weights on video clips and the synthetic generator")
    t.add_argument("--data", nargs="*", default=["../shared/data/train"], help="clip files/folders (never eval clips)")
    t.add_argument("--preset", default="default")
    t.add_argument("--arm", default="elbo", choices=["fixed", "uniform", "elbo"])
    t.add_argument("--fixed-rate", type=float, default=1.0, help="rate of the `fixed` arm")
    t.add_argument("--steps", type=int, default=6000,
                   help="trunk steps (0 = train only the budget head, e.g. of --init)")
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--crop", type=int, default=96)
    t.add_argument("--clip-frames", type=int, default=8, help="frames per gradient window (truncated BPTT)")
    t.add_argument("--stream-frames", type=int, nargs=2, default=[24, 120], metavar=("MIN", "MAX"),
                   help="each batch row plays a stream this many frames long, window by window")
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--lr-warmup", type=int, default=200)
    t.add_argument("--mse-weight", type=float, default=0.0)
    t.add_argument("--no-worse-weight", type=float, default=0.0,
                   help="weight of a hinge on held frames that get worse than the frame already shown")
    t.add_argument("--rate-weight", type=float, default=0.0,
                   help="weight of bits/pixel (under a learned stand-in of packet v2's entropy model) in "
                        "the loss; 0 = no rate term")
    t.add_argument("--router-signal", default="gain", choices=["error", "gain"],
                   help="signal of the elbo arm's router and of the ranking (default: gain)")
    t.add_argument("--zero-k-prob", type=float, default=0.1, help="share of frames trained with no tokens")
    t.add_argument("--head-steps", type=int, default=1500,
                   help="then train the budget head alone for this many steps (0 = skip)")
    t.add_argument("--head-schedule", default="constant", choices=["constant", "cosine"],
                   help="the budget head's learning rate: constant, or annealed to 0 over --head-steps")
    t.add_argument("--no-head-skips", action="store_true",
                   help="the budget head's training streams never skip a frame (default: they skip as the "
                        "served router does, so the head learns on held frames)")
    t.add_argument("--synthetic-fraction", type=float, default=0.3)
    t.add_argument("--freeze-prob", type=float, default=0.3, help="share of streams with a frozen stretch")
    t.add_argument("--scale-range", type=float, nargs=2, metavar=("LO", "HI"), default=[0.6, 1.0],
                   help="a crop covers crop/scale pixels of the cached clip (short side 288), scale drawn in "
                        "[LO, HI]; ~0.67 matches a whole scene at 192 pixels high (default: 0.6 1.0)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=0)
    t.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    t.add_argument("--init", default=None, help="start from these weights (fine-tuning)")
    t.add_argument("--max-minutes", type=float, default=0.0,
                   help="stop after this much wall time; the learning rate anneals to it (0 = steps only)")
    t.add_argument("--sampler", default="auto", choices=["auto", "host", "device"],
                   help="where training streams are cut: host (numpy), device (clips as uint8 tensors on the "
                        "training device), auto (device on CUDA)")
    t.add_argument("--amp", default="auto", choices=["auto", "on", "off"],
                   help="bf16 autocast (auto: on CUDA and on CPUs with native bf16, AVX-512 bf16 or AMX)")
    t.add_argument("--depth-rate-scale", type=float, default=1.0,
                   help="depth-2 presets: the second token stage's bits weigh --rate-weight times this "
                        "(0 = free: what the second stage can carry at most)")
    t.add_argument("--grown-lr-scale", type=float, default=10.0,
                   help="learning-rate factor of modules grown over the --init checkpoint")
    t.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"],
                   help="weights in channels_last memory (auto: on the CPU)")
    t.add_argument("--no-resume", action="store_true", help="start over even if OUTPUT has a checkpoint")
    t.add_argument("--calibrate", action="store_true",
                   help="after training, measure the population error on the training clips and store it")
    t.add_argument("-o", "--output", required=True, help="output folder (model.safetensors, log, checkpoint)")
    t.set_defaults(func=cmd_train)


def cmd_train(a: argparse.Namespace) -> int:
    from livetok.engine.data import DataConfig
    from livetok.engine.train import TrainConfig, train

    cfg = TrainConfig(
        preset=a.preset, arm=a.arm, fixed_rate=a.fixed_rate, steps=a.steps, batch=a.batch,
        clip_frames=a.clip_frames, stream_frames=(a.stream_frames[0], a.stream_frames[1]), lr=a.lr,
        warmup_steps=a.lr_warmup,
        mse_weight=a.mse_weight, rate_weight=a.rate_weight, no_worse_weight=a.no_worse_weight,
        max_minutes=a.max_minutes, sampler=a.sampler,
        amp=a.amp, channels_last=a.channels_last, seed=a.seed, threads=a.threads, device=a.device,
        depth_rate_scale=a.depth_rate_scale, grown_lr_scale=a.grown_lr_scale,
        router_signal=a.router_signal, zero_k_prob=a.zero_k_prob, head_steps=a.head_steps,
        head_skips=not a.no_head_skips, head_schedule=a.head_schedule,
        data=DataConfig(crop=a.crop, synthetic_fraction=a.synthetic_fraction, freeze_prob=a.freeze_prob,
                        scale_range=(a.scale_range[0], a.scale_range[1])),
    )
    path = train(cfg, a.output, a.data, resume=not a.no_resume, progress=True, init_weights=a.init)
    if a.calibrate:
        from livetok.engine.calibrate import calibrate_file

        calibrate_file(path, a.data)
    console().print(f"wrote {path}")
    return 0
