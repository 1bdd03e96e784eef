"""Training throughput on this machine: frames/s of one training step (issue 23, item 1).

One step = `engine.train.run_clip` over a batch of B streams x T frames (the elbo arm's two no-grad
router decodes per frame, the rate term's prior), backward, AdamW. Variants, each measured on the same
random frames after warm-up steps (the first steps of a compiled model include its compile):

- ``fp32``      today's default;
- ``bf16``      `torch.autocast("cpu", torch.bfloat16)` (oneDNN's AVX-512 bf16 kernels);
- ``cl``        `channels_last` weights and inputs;
- ``compile``   `torch.compile` of the encoder and decoder (inductor's C++ CPU backend);
- and ``+``-joined combinations (``bf16+cl``, ``compile+bf16``).

    python -m livetok.bench.train_speed --variants fp32 bf16 cl compile --steps 6 --json

Rounds alternate the variants (A B C A B C ...), so a machine whose load changes while it runs
biases none of them; the median over rounds is reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from livetok.engine.config import get_preset
from livetok.engine.model import Tokenizer
from livetok.engine.rate_prior import DigitPrior
from livetok.engine.train import ClipState, TrainConfig, draw_budgets, run_clip

KNOWN = ("fp32", "bf16", "cl", "compile")


@dataclass(frozen=True)
class SpeedConfig:
    preset: str = "rt-fsq6-d5"
    batch: int = 8
    crop: int = 96
    clip_frames: int = 16
    threads: int = 2
    rate_weight: float = 0.45


class Arm:
    """One variant: its own model copy (same init), optimiser and prior, stepped on shared frames."""

    def __init__(self, name: str, cfg: SpeedConfig, base: Tokenizer) -> None:
        parts = set(name.split("+"))
        unknown = parts - set(KNOWN)
        if unknown:
            raise SystemExit(f"train_speed: unknown variant part(s) {sorted(unknown)}; known: {', '.join(KNOWN)}")
        self.name, self.cfg = name, cfg
        self.bf16, self.cl = "bf16" in parts, "cl" in parts
        self.model = Tokenizer(base.cfg)
        self.model.load_state_dict(base.state_dict())
        if self.cl:
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload, unused-ignore]  # torch 2.13: Module.to's stubs omit memory_format (2.14 has it)
        self.runner = self.model
        if "compile" in parts:
            # compiling the two networks, not run_clip: its Python loop and budget draws stay eager
            self.model.encoder = torch.compile(self.model.encoder, dynamic=False)  # type: ignore[assignment]
            self.model.decoder = torch.compile(self.model.decoder, dynamic=False)  # type: ignore[assignment]
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.prior = DigitPrior(base.cfg.fsq.levels)
        self.prior_opt = torch.optim.Adam(self.prior.parameters(), lr=1e-2)
        self.tcfg = TrainConfig(preset=cfg.preset, batch=cfg.batch, clip_frames=cfg.clip_frames)
        self.gen = torch.Generator().manual_seed(0)
        self.state: ClipState | None = None

    def step(self, frames: Tensor) -> tuple[float, float]:
        """One training step; returns (seconds, loss)."""
        if self.cl:
            frames = frames.contiguous(memory_format=torch.channels_last) if frames.dim() == 4 else frames
        betas = torch.full((self.cfg.batch,), 0.5)

        def budget_fn(err: Tensor, t: int) -> Tensor:
            return draw_budgets("elbo", err, betas, 0.004, self.tcfg, self.gen)

        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            loss, _, st = run_clip(self.model, frames, budget_fn, state=self.state, mse_weight=1.0, signal="gain",
                                   prior=self.prior, rate_weight=self.cfg.rate_weight)
        self.state = ClipState(st.recon.detach().float(), st.hidden.detach().float(), st.last)
        self.opt.zero_grad(set_to_none=True)
        self.prior_opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.prior_opt.step()
        return time.perf_counter() - t0, float(loss.detach())


def run(variants: list[str], cfg: SpeedConfig, steps: int, warmup: int,
        clips: list[Tensor]) -> dict[str, dict[str, float]]:
    torch.manual_seed(0)
    base = Tokenizer(get_preset(cfg.preset))
    arms = [Arm(v, cfg, base) for v in variants]
    times: dict[str, list[float]] = {a.name: [] for a in arms}
    losses: dict[str, list[float]] = {a.name: [] for a in arms}
    for r in range(warmup + steps):
        frames = clips[r % len(clips)]
        for a in arms:
            dt, loss = a.step(frames)
            if r >= warmup:
                times[a.name].append(dt)
            losses[a.name].append(loss)
            print(f"round {r} {a.name}: {dt:.2f} s, loss {loss:.6f}", file=sys.stderr, flush=True)
    n_frames = cfg.batch * cfg.clip_frames
    out = {}
    for a in arms:
        med, best = statistics.median(times[a.name]), min(times[a.name])
        # the minimum too: on a shared machine other work only ever adds time to a round
        out[a.name] = {"step_s": med, "frames_per_s": n_frames / med, "best_frames_per_s": n_frames / best,
                       "last_loss": losses[a.name][-1], "first_loss": losses[a.name][0]}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m livetok.bench.train_speed", description=__doc__.splitlines()[0])
    p.add_argument("--variants", nargs="+", default=["fp32", "bf16", "cl", "compile"])
    p.add_argument("--preset", default=SpeedConfig.preset)
    p.add_argument("--batch", type=int, default=SpeedConfig.batch)
    p.add_argument("--crop", type=int, default=SpeedConfig.crop)
    p.add_argument("--clip-frames", type=int, default=SpeedConfig.clip_frames)
    p.add_argument("--threads", type=int, default=SpeedConfig.threads)
    p.add_argument("--steps", type=int, default=5, help="timed rounds (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first (compiles happen here)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    cfg = SpeedConfig(a.preset, a.batch, a.crop, a.clip_frames, a.threads)
    torch.set_num_threads(cfg.threads)
    gen = torch.Generator().manual_seed(1)
    # smooth random frames (a blurred noise field drifting over time): the values do not change the cost
    clips = []
    for _ in range(3):
        base = torch.rand(cfg.batch, 1, 3, cfg.crop // 8, cfg.crop // 8, generator=gen) * 2 - 1
        drift = torch.linspace(0, 0.2, cfg.clip_frames).view(1, -1, 1, 1, 1)
        small = (base + drift).clamp(-1, 1).flatten(0, 1)
        big = torch.nn.functional.interpolate(small, scale_factor=8, mode="bilinear", align_corners=False)
        clips.append(big.view(cfg.batch, cfg.clip_frames, 3, cfg.crop, cfg.crop).contiguous())
    res = run(a.variants, cfg, a.steps, a.warmup, clips)
    ref = res.get("fp32", next(iter(res.values())))
    for r in res.values():
        r["factor_vs_fp32"] = r["frames_per_s"] / ref["frames_per_s"]
        r["best_factor_vs_fp32"] = r["best_frames_per_s"] / ref["best_frames_per_s"]
    if a.json:
        print(json.dumps({"config": cfg.__dict__, "torch": torch.__version__, "results": res}, indent=2))
    else:
        for name, r in res.items():
            print(f"{name:>16}: median {r['frames_per_s']:7.1f} frames/s ({r['factor_vs_fp32']:.2f}x), "
                  f"best {r['best_frames_per_s']:7.1f} ({r['best_factor_vs_fp32']:.2f}x)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
