"""`livetok train`: long streams run through the stream state in windows of T frames (truncated
BPTT: the state carries over from window to window, detached), per-frame budgets drawn by the arm
under test, ranked keep-masks from a no-grad full-rate pass.

Arms (InfoTok, arXiv 2512.16975, §3 and Thm 2.2):
- fixed:   k = rate * N every frame (one model per rate, the Cosmos-style baseline);
- uniform: k ~ U{N/16 .. N} per frame (ElasticTok's data-agnostic sampler);
- elbo:    k = clip(beta * e_t / E[e], N/16, N), beta drawn per clip from {1/4, 1/2, 3/4, 1} * N
           (InfoTok-Flex), e_t the frame's router signal under the current weights (full-rate
           error, or the gain of the tokens over a zero-token decode), E[e] an EMA.
Outside `fixed`, a share of frames gets no tokens at all, so the decoder learns what to do with
nothing new (hold a static scene, carry motion on): the gain signal needs that decode to be sane.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from .checkpoint import save_weights
from .config import BudgetConfig, get_preset
from .data import ClipSampler, DataConfig, StreamSampler, default_cache_dir, find_videos, load_clips
from .device_data import DeviceStreamSampler
from .frames import to_tensor
from .layers import DepthConvBlock
from .metrics import psnr_from_mse
from .model import Tokenizer
from .rate_prior import DigitPrior, empty_last
from .selection import keep_mask, position_error
from .step import hold_where

log = logging.getLogger(__name__)

ARMS = ("fixed", "uniform", "elbo")
FLEX_BETAS = (0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "default"
    arm: str = "elbo"
    fixed_rate: float = 1.0  # the `fixed` arm's rate
    steps: int = 20000
    batch: int = 8
    clip_frames: int = 8  # frames per gradient window (truncated BPTT)
    stream_frames: tuple[int, int] = (24, 120)  # each batch row plays a stream this long, window by window
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_steps: int = 300
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    mse_weight: float = 0.0  # loss = L1 + mse_weight * MSE (pixels in [-1, 1])
    # + no_worse_weight * max(0, MSE(t) - MSE of frame t-1's reconstruction against frame t), on rows whose
    # frame repeats the last one (a held stretch): a still camera sent tokens must not drift down (issue 23)
    no_worse_weight: float = 0.0
    # + rate_weight * bits per pixel of the kept tokens under a learned stand-in of the wire's
    # entropy model (engine/rate_prior.py); 0 = no rate term
    rate_weight: float = 0.0
    depth_rate_scale: float = 1.0  # depth-2 models: the second stage's bits weigh rate_weight times this
    prior_lr: float = 1e-2  # the stand-in's learning rate (a table of logits: it can move fast)
    k_min_fraction: float = 1.0 / 16.0
    zero_k_prob: float = 0.1  # share of frames (not in the fixed arm) sent with no tokens
    router_signal: str = "gain"  # the elbo arm's signal, and the ranking of positions: error | gain
    ema_decay: float = 0.99  # InfoTok's training EMA of the router signal
    seed: int = 0
    threads: int = 0  # torch threads; 0 = leave torch's default
    device: str = "auto"  # auto = CUDA when present, else CPU
    log_every: int = 25
    checkpoint_every: int = 500
    head_steps: int = 1500  # then the budget head alone, on the frozen tokenizer (0 = skip)
    head_lr: float = 2e-3
    # the head's schedule: "constant" (head_lr throughout), or "cosine" (annealed to 0 over head_steps, so the
    # weights it ends on are not one noisy batch's step: the low-rate end of the curve follows them)
    head_schedule: str = "constant"
    head_skips: bool = True  # the head's streams skip frames as the served router does (hold the shown frame)
    # stop after this much wall time (0 = only `steps`); the learning-rate schedule then follows
    # whichever of steps and time runs out first, so a fixed GPU window ends annealed
    max_minutes: float = 0.0
    # where streams are cut: "host" (numpy, engine/data.py), "device" (clips as uint8 tensors on the
    # training device, engine/device_data.py) or "auto" (device on CUDA)
    sampler: str = "auto"
    # bf16 autocast: "on", "off" or "auto" (on CUDA, and on a CPU with native bf16: AVX-512 bf16 /
    # AMX, where it and channels_last train 1.6x faster at equal loss, benchmarks/train_speed.py)
    amp: str = "auto"
    grown_lr_scale: float = 10.0  # learning-rate factor of modules grown over the --init checkpoint
    channels_last: str = "auto"  # weights in channels_last memory: "on", "off" or "auto" (on the CPU)
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        if self.arm not in ARMS:
            raise ValueError(f"unknown arm {self.arm!r}; choose one of {', '.join(ARMS)}")
        get_preset(self.preset)
        if self.steps < 0 or self.batch < 1 or self.clip_frames < 1:
            raise ValueError("steps must be >= 0, batch and clip_frames >= 1")
        if self.steps == 0 and self.head_steps < 1:
            raise ValueError("steps 0 trains the budget head alone: it needs head_steps >= 1")
        if not 1 <= self.stream_frames[0] <= self.stream_frames[1]:
            raise ValueError(f"stream_frames must satisfy 1 <= min <= max, got {self.stream_frames}")
        if self.router_signal not in ("error", "gain"):
            raise ValueError(f"router_signal must be 'error' or 'gain', got {self.router_signal!r}")
        if not 0.0 <= self.zero_k_prob < 1.0:
            raise ValueError(f"zero_k_prob must be in [0, 1), got {self.zero_k_prob}")
        if not 0.0 < self.fixed_rate <= 1.0:
            raise ValueError(f"fixed_rate must be in (0, 1], got {self.fixed_rate}")
        if (self.sampler not in ("auto", "host", "device") or self.amp not in ("auto", "on", "off")
                or self.channels_last not in ("auto", "on", "off")):
            raise ValueError(f"sampler must be auto|host|device, amp and channels_last auto|on|off, got "
                             f"{self.sampler!r}, {self.amp!r}, {self.channels_last!r}")
        if self.head_schedule not in ("constant", "cosine"):
            raise ValueError(f"head_schedule must be constant|cosine, got {self.head_schedule!r}")
        if self.max_minutes < 0:
            raise ValueError(f"max_minutes must be >= 0, got {self.max_minutes}")
        if self.rate_weight < 0 or self.no_worse_weight < 0:
            raise ValueError(f"rate_weight and no_worse_weight must be >= 0, got {self.rate_weight}, "
                             f"{self.no_worse_weight}")


# ---------------------------------------------------------------------------------------------
# budgets drawn per frame during training


def draw_budgets(
    arm: str, err: Tensor, betas: Tensor, pop_error: float, cfg: TrainConfig, gen: torch.Generator
) -> Tensor:
    """[B] token budgets for one frame from its [B, N] router signal map."""
    b, n = err.shape
    kmin = max(1, math.ceil(cfg.k_min_fraction * n))
    if arm == "fixed":
        return torch.full((b,), max(1, round(cfg.fixed_rate * n)), dtype=torch.long)
    if arm == "uniform":
        k = torch.randint(kmin, n + 1, (b,), generator=gen)
    else:
        k = (betas * n * err.mean(dim=1).cpu() / max(pop_error, 1e-8)).round().long()  # budgets live on the CPU
        k = k.clamp(kmin, n)
    return torch.where(torch.rand(b, generator=gen) < cfg.zero_k_prob, 0, k)


# ---------------------------------------------------------------------------------------------
# one clip through the stream


BITS_FRAME_PIXELS = 256 * 192  # stats["bits"] is per frame of this size (bits per pixel x this)


class ClipState(NamedTuple):
    """What a window hands the next one (detached by the caller): the receiver's state, and the
    rate term's last-sent digits of each token stage (None when training without it / depth 1)."""

    recon: Tensor
    hidden: Tensor
    last: Tensor | None = None
    last2: Tensor | None = None


DEPTH_FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)  # dropout over depth: share of kept positions given a 2nd token


def depth_mask(scores: Tensor, mask: Tensor, fraction: Tensor) -> Tensor:
    """[B, N] the positions given a second token: the `fraction` [B] of the kept positions `mask` with
    the highest scores (InfoTok's ranking again, one level down)."""
    k2 = (mask.sum(dim=1).float() * fraction.to(mask.device)).round().long()
    return keep_mask(scores.masked_fill(~mask, float("-inf")), k2)


def run_clip(
    model: Tokenizer,
    frames: Tensor,
    budget_fn: Callable[[Tensor, int], Tensor],
    *,
    state: ClipState | None = None,
    grad_from: int = 0,
    mse_weight: float = 0.0,
    collect: list[tuple[Tensor, Tensor]] | None = None,
    signal: str = "error",
    router: bool = True,
    prior: DigitPrior | None = None,
    rate_weight: float = 0.0,
    depth_fn: Callable[[int], Tensor] | None = None,
    prior2: DigitPrior | None = None,
    depth_rate_scale: float = 1.0,
    no_worse_weight: float = 0.0,
) -> tuple[Tensor, dict[str, float], ClipState]:
    """Stream a batch of clips through the model the way `encode_step` does, with gradients.

    Args:
        frames: [B, T, 3, H, W] in [-1, 1].
        budget_fn: (full-rate error [B, N], t) -> [B] budgets.
        state: (recon [B, 3, H, W], hidden [B, Cs, H/8, W/8], last-sent digits or None) after the
            previous window; None (or zero rows) = the window starts a stream with a keyframe.
        grad_from: frames before this index run without gradient.
        collect: if given, (reconstruction, keep-mask) of every frame is appended to it.
        signal: the router map that sets budgets and ranks positions: full-rate `error` or `gain`.
        router: False skips the router's no-grad passes and keeps every token (the full-rate `fixed`
            arm needs no ranking); budget_fn is not called and stats["err"] stays 0.
        prior: the rate term's entropy model; its code length (stats["bits"], per 256x192 frame) is
            measured whenever it is given and weighted into the loss by rate_weight.
        depth_fn: depth-2 models: t -> [B] share of each row's kept positions that also get a second
            token (ranked by the router signal); None = all of them. The router's full-rate pass codes
            both stages everywhere.
        prior2: the second stage's entropy model (its own contexts), as `prior`; its bits weigh
            rate_weight * depth_rate_scale in the loss (0: the second stage is free, an upper bound).
        no_worse_weight: on rows whose frame t repeats frame t-1 of this window, the weight of
            max(0, MSE(t) - MSE(reconstruction t-1 against frame t)): a hinge that pays only for a held
            frame getting worse than the one already shown (the last frame the receiver has).
    Returns:
        (loss averaged over the gradient frames, stats, the state after the last frame).
    """
    b, t_total, _, h, w = frames.shape
    s = model.stride
    n = (h // s) * (w // s)
    if state is None:
        recon = frames.new_zeros(b, 3, h, w)
        hidden = frames.new_zeros(b, model.cfg.decoder.state_channels, h // s, w // s)
        last: Tensor | None = None
        last2: Tensor | None = None
    else:
        recon, hidden, last, last2 = state
    if prior is not None and last is None:
        last = empty_last(b, model.cfg.fsq.levels, n, frames.device)
    depth2 = model.cfg.depth == 2
    if prior2 is not None and last2 is None:
        last2 = empty_last(b, model.cfg.fsq.levels, n, frames.device)
    full = torch.ones(b, n, dtype=torch.bool, device=frames.device)
    # [B, T] rows whose frame t repeats frame t-1 of this window: known from the input, so found once here and
    # not with a host sync per frame
    held: Tensor | None = None
    if no_worse_weight > 0:
        held = frames.new_zeros(b, t_total, dtype=torch.bool)
        held[:, 1:] = (frames[:, 1:] == frames[:, :-1]).flatten(2).all(2)
    loss = frames.new_zeros(())
    mse_sum, k_sum, err_sum, err_count, bits_sum, d_sum = 0.0, 0.0, 0.0, 0, 0.0, 0.0
    for t in range(t_total):
        x = frames[:, t]
        before = recon.detach()  # what the receiver shows until frame t decodes
        with torch.set_grad_enabled(t >= grad_from and torch.is_grad_enabled()):
            z, feats = model.encoder(x, recon, hidden)
            codes, _ = model.fsq(z)
            codes2: Tensor | None = None
            z2: Tensor | None = None
            if depth2:
                bounded = model.fsq.bound(z.float())
                z2 = model.encoder.second(feats, codes, bounded - bounded.detach().round())
                codes2, _ = model.fsq(z2)
            if router:
                with torch.no_grad():
                    # the router's pass, under no-grad with the current weights (as InfoTok does each step)
                    c2 = codes2.detach() if codes2 is not None else None
                    recon_full, _ = model.decoder(codes.detach(), full, recon.detach(), hidden.detach(), c2, full)
                    err = position_error(x, recon_full, s)
                    if signal == "gain":
                        recon_zero, _ = model.decoder(codes.detach(), ~full, recon.detach(), hidden.detach())
                        err = (position_error(x, recon_zero, s) - err).clamp_min(0.0)
                k = budget_fn(err, t).to(err.device)
                mask = full if bool((k >= n).all()) else keep_mask(err, k)
            else:
                k = torch.full((b,), n, dtype=torch.long, device=frames.device)
                mask = full
                err = torch.rand(b, n, device=frames.device)  # no router: the second tokens go anywhere
            mask2: Tensor | None = None
            if depth2:
                frac = depth_fn(t) if depth_fn is not None else torch.ones(b)
                mask2 = depth_mask(err, mask, frac)
                d_sum += float(mask2.float().mean())
            recon, hidden = model.decoder(codes, mask, recon, hidden,
                                          *((codes2, mask2) if codes2 is not None else ()))
            if collect is not None:
                collect.append((recon.detach(), mask))
            bpp = bpp_extra = None
            if prior is not None and last is not None:
                bits, last = prior(model.fsq.bound(z.float()), mask, last)
                if prior2 is not None and last2 is not None and z2 is not None and mask2 is not None:
                    # at depth_rate_scale 0 the encoder sees no price for its second tokens; the prior
                    # still learns their code length (Adam: its step does not depend on the weight)
                    z2_in = z2.float() if depth_rate_scale > 0 else z2.float().detach()
                    bits2, last2 = prior2(model.fsq.bound(z2_in), mask2, last2)
                    # counted in full in the stats; weighted by depth_rate_scale in the loss
                    bpp_extra = bits2.mean() / (h * w)
                bpp = bits.mean() / (h * w)
            if t >= grad_from:
                l1 = (recon - x).abs().mean()
                mse = (recon - x).pow(2).mean()
                loss = loss + l1 + mse_weight * mse
                if held is not None and t > 0:
                    now = (recon - x).pow(2).flatten(1).mean(1)
                    shown = (before - x).pow(2).flatten(1).mean(1)
                    loss = loss + no_worse_weight * ((now - shown).clamp_min(0.0) * held[:, t]).sum() / b
                if bpp is not None:
                    loss = loss + rate_weight * bpp
                    bits_sum += float(bpp.detach()) * BITS_FRAME_PIXELS
                if bpp_extra is not None:
                    loss = loss + rate_weight * (depth_rate_scale if depth_rate_scale > 0 else 1.0) * bpp_extra
                    bits_sum += float(bpp_extra.detach()) * BITS_FRAME_PIXELS
                mse_sum += float(mse.detach())
                k_sum += float(k.float().mean()) / n
            if router and (t > 0 or state is not None):
                err_sum += float(err.mean())
                err_count += 1
    frames_g = t_total - grad_from
    stats = {
        "psnr": psnr_from_mse(mse_sum / frames_g, peak=2.0),  # pixels in [-1, 1]: peak-to-peak 2
        "rate": k_sum / frames_g,
        "err": err_sum / max(err_count, 1),
        "bits": bits_sum / frames_g,
        "depth2": d_sum / t_total,  # share of positions carrying a second token
    }
    return loss / frames_g, stats, ClipState(recon, hidden, last, last2)


# ---------------------------------------------------------------------------------------------
# the loop


def cpu_has_bf16() -> bool:
    """Native bf16 arithmetic on this CPU (AVX-512 bf16 or AMX), where bf16 autocast pays; elsewhere
    oneDNN emulates it and it is slower than fp32."""
    try:
        return bool(torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
                    and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def use_amp(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether a run of `cfg` on `device` trains under bf16 autocast."""
    if cfg.amp != "auto":
        return cfg.amp == "on"
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16())


def use_channels_last(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether a run of `cfg` on `device` keeps its weights in channels_last memory."""
    return cfg.channels_last == "on" or (cfg.channels_last == "auto" and device.type == "cpu")


def _cosine(hi: float, lo: float, progress: float) -> float:
    """Half a cosine from `hi` at progress 0 down to `lo` at progress 1 (and after)."""
    return lo + 0.5 * (hi - lo) * (1 + math.cos(math.pi * min(1.0, progress)))


def _lr(cfg: TrainConfig, step: int, elapsed_s: float = 0.0) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    p = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    if cfg.max_minutes > 0:
        p = max(p, elapsed_s / (60.0 * cfg.max_minutes))
    return _cosine(cfg.lr, cfg.min_lr, p)


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    data_paths: list[str | Path],
    resume: bool = True,
    progress: bool = True,
    init_weights: str | Path | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> Path:
    """Train (or resume) and write `out_dir/model.safetensors`; returns its path.

    `on_step(step, stats)` is called after every step of the main phase (stats: loss, psnr, rate,
    frames_per_s), e.g. to drive a progress display.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    files = find_videos(data_paths) if data_paths else []
    clips = load_clips(files, cfg.data, default_cache_dir())
    if not clips and cfg.data.synthetic_fraction < 1.0:
        log.warning("no real clips found: training on synthetic data only")
        cfg = replace(cfg, data=replace(cfg.data, synthetic_fraction=1.0))

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device)
    model = Tokenizer(get_preset(cfg.preset))
    if init_weights:
        from .checkpoint import load_weights

        grown = _load_tolerating_head(model, load_weights(init_weights, allow_missing_head=True).state_dict())
    else:
        grown = []
    model.to(device)
    # modules grown over the checkpoint start at zero under a fine-tuning learning rate: they learn at
    # grown_lr_scale times it, so they catch up within a run (the group's "scale" rides on the schedule)
    fresh = [p for name, p in model.named_parameters() if any(name.startswith(g + ".") for g in grown)
             and not name.startswith("budget_head.")]
    fresh_ids = {id(p) for p in fresh}
    groups = [{"params": [p for p in model.parameters() if id(p) not in fresh_ids], "scale": 1.0}]
    if fresh:
        groups.append({"params": fresh, "scale": cfg.grown_lr_scale})
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    prior = DigitPrior(model.cfg.fsq.levels).to(device) if cfg.rate_weight > 0 else None
    # the second token stage's digits have their own contexts (depth-2 models)
    prior2 = DigitPrior(model.cfg.fsq.levels).to(device) if prior is not None and model.cfg.depth == 2 else None
    # Adam is invariant to the loss's scale, so the prior learns at its own pace whatever rate_weight
    prior_params = [*prior.parameters(), *(prior2.parameters() if prior2 is not None else ())] if prior else []
    prior_opt = torch.optim.Adam(prior_params, lr=cfg.prior_lr) if prior is not None else None
    step, pop_ema = 0, model.population(cfg.router_signal)
    head_step = 0
    state_path = out / "train_state.pt"
    seed = cfg.seed
    gen = torch.Generator().manual_seed(cfg.seed)
    if resume and state_path.exists():
        st = torch.load(state_path, weights_only=True, map_location=device)
        _load_tolerating_head(model, st["model"])
        opt.load_state_dict(st["opt"])
        if prior is not None and prior_opt is not None and "prior" in st and ("prior2" in st) == (prior2 is not None):
            prior.load_state_dict(st["prior"])
            if prior2 is not None:
                prior2.load_state_dict(st["prior2"])
            prior_opt.load_state_dict(st["prior_opt"])
        step, pop_ema = int(st["step"]), float(st["pop_ema"])
        head_step = int(st.get("head_step", 0))
        # new seeds derived from the step: a resumed run does not replay the same batches
        seed = cfg.seed + 7919 * step
        gen.manual_seed(seed)
        log.info("resumed from %s at step %d", state_path, step)
    log.info("training %s (%s arm) on %s", cfg.preset, cfg.arm, device)
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))

    crop, n_state = cfg.data.crop, model.cfg.decoder.state_channels
    amp, channels_last = use_amp(cfg, device), use_channels_last(cfg, device)
    if channels_last:  # oneDNN's convolutions run their native layout: no reorders around each one
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload, unused-ignore]  # torch 2.13's stubs omit it (2.14's have it)
    log.info("bf16 autocast %s, channels_last %s", "on" if amp else "off", "on" if channels_last else "off")
    if cfg.sampler == "device" or (cfg.sampler == "auto" and device.type == "cuda"):
        sample = DeviceStreamSampler(clips, cfg.data, cfg.batch, cfg.stream_frames, device, seed=seed).next
    else:
        streams = StreamSampler(ClipSampler(clips, cfg.data, seed=seed), cfg.batch, cfg.stream_frames, seed=seed)

        def sample(t: int) -> tuple[Tensor, NDArray[np.bool_]]:
            raw, new = streams.next(t)
            return to_tensor(raw.reshape(-1, crop, crop, 3), device).view(cfg.batch, t, 3, crop, crop), new

    recon = torch.zeros(cfg.batch, 3, crop, crop, device=device)
    hidden = torch.zeros(cfg.batch, n_state, crop // model.stride, crop // model.stride, device=device)
    last: Tensor | None = None  # the rate term's last-sent digits: run_clip starts them at the first window
    last2: Tensor | None = None  # and the second stage's
    betas = torch.zeros(cfg.batch)
    # the full-rate fixed arm keeps every token: no router passes (they would only feed the EMA)
    full_rate = cfg.arm == "fixed" and cfg.fixed_rate >= 1.0
    model.train()
    logf = (out / "log.jsonl").open("a")
    t_start, frames_seen = time.perf_counter(), 0

    bar = _progress(progress, cfg.steps, step)
    # nobody watches a bar in a log file: there a plain line per logged step says how the run goes
    plain = progress and bar is None
    out_of_time = False  # read once per step, so the step that ends the run also writes its checkpoint
    try:
        while step < cfg.steps and not out_of_time:
            t_total = cfg.clip_frames
            frames, new = sample(t_total)
            new_t = torch.from_numpy(new)
            # a new stream starts with a keyframe (zero state) and draws its own beta (InfoTok-Flex)
            keep = (~new_t).to(device).view(-1, 1, 1, 1).float()
            recon, hidden = recon * keep, hidden * keep
            if last is not None:
                last = torch.where(new_t.to(device).view(-1, 1, 1), -1, last)
            if last2 is not None:
                last2 = torch.where(new_t.to(device).view(-1, 1, 1), -1, last2)
            draw = torch.tensor(FLEX_BETAS)[torch.randint(0, len(FLEX_BETAS), (cfg.batch,), generator=gen)]
            betas = torch.where(new_t, draw, betas)
            pe = pop_ema

            def budget_fn(err: Tensor, t: int, betas: Tensor = betas, pe: float = pe) -> Tensor:
                return draw_budgets(cfg.arm, err, betas, pe, cfg, gen)

            def depth_fn(t: int) -> Tensor:  # dropout over depth: one model serves every depth
                return torch.tensor(DEPTH_FRACTIONS)[torch.randint(0, len(DEPTH_FRACTIONS), (cfg.batch,),
                                                                   generator=gen)]

            for g in opt.param_groups:
                g["lr"] = _lr(cfg, step, time.perf_counter() - t_start) * g.get("scale", 1.0)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss, stats, (recon, hidden, last, last2) = run_clip(
                    model, frames, budget_fn, state=ClipState(recon, hidden, last, last2),
                    mse_weight=cfg.mse_weight, signal=cfg.router_signal, router=not full_rate, prior=prior,
                    rate_weight=cfg.rate_weight, depth_fn=depth_fn, prior2=prior2,
                    depth_rate_scale=cfg.depth_rate_scale, no_worse_weight=cfg.no_worse_weight)
            # truncated BPTT: carry the state, not the graph; in fp32 whatever the autocast dtype
            recon, hidden = recon.detach().float(), hidden.detach().float()
            opt.zero_grad(set_to_none=True)
            if prior_opt is not None:
                prior_opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
            gnorm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
            opt.step()
            if prior_opt is not None:
                prior_opt.step()
            if stats["err"] > 0:
                pop_ema = cfg.ema_decay * pop_ema + (1 - cfg.ema_decay) * stats["err"]
            step += 1
            frames_seen += cfg.batch * t_total
            fps = frames_seen / (time.perf_counter() - t_start)
            if step % cfg.log_every == 0 or step == cfg.steps:
                rec = {"step": step, "loss": float(loss.detach()), "psnr": stats["psnr"], "rate": stats["rate"],
                       "bits": stats["bits"],
                       "err": stats["err"], "depth2": stats["depth2"], "pop_ema": pop_ema, "gnorm": gnorm,
                       "lr": _lr(cfg, step - 1, time.perf_counter() - t_start),
                       "frames_per_s": fps, "time": time.time()}
                logf.write(json.dumps(rec) + "\n")
                logf.flush()
                if plain:
                    print(f"train step {step}/{cfg.steps} loss {rec['loss']:.4f} psnr {rec['psnr']:.2f} "
                          f"bits {rec['bits']:.0f} {fps:.0f} frames/s "
                          f"{(time.perf_counter() - t_start) / 60:.1f} min", file=sys.stderr, flush=True)
            if on_step is not None:
                on_step(step, {"loss": float(loss.detach()), "psnr": stats["psnr"], "rate": stats["rate"],
                               "frames_per_s": fps})
            if bar is not None:
                desc = f"loss {float(loss.detach()):.4f} psnr {stats['psnr']:.2f} {fps:.0f} frames/s"
                if prior is not None:
                    desc += f" {stats['bits']:.0f} bits"
                bar[0].update(bar[1], completed=step, description=desc)
            out_of_time = cfg.max_minutes > 0 and time.perf_counter() - t_start > 60.0 * cfg.max_minutes
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or out_of_time:
                # the population mean first: the resume state and the weights file must agree
                (model.population_gain if cfg.router_signal == "gain" else model.population_error).fill_(pop_ema)
                _save_state(state_path, model, opt, step, pop_ema, prior=prior, prior_opt=prior_opt,
                            prior2=prior2)
                save_weights(model, out / "model.safetensors", {"step": step, "train": asdict(cfg)})
        if cfg.head_steps > 0 and head_step < cfg.head_steps:
            if bar is not None:
                bar[0].stop()
            bar = _progress(progress, cfg.head_steps, head_step, label="head")
            head_step = _train_head(model, cfg, sample, gen, pop_ema, head_step, bar, logf, plain,
                                    lambda hs: _save_state(state_path, model, opt, step, pop_ema, hs, prior, prior_opt,
                                                           prior2))
            save_weights(model, out / "model.safetensors", {"step": step, "head_step": head_step,
                                                            "train": asdict(cfg)})
    finally:
        logf.close()
        if bar is not None:
            bar[0].stop()
    model.eval()
    return out / "model.safetensors"


# modules a model may gain over the checkpoint it starts from (budget head, decoder refinement, more
# decoder or encoder blocks); each grown one starts as the identity, so the grown model codes as the
# checkpoint did
_STACKS = ("decoder.blocks.", "encoder.blocks.")  # block stacks that grow at their end
_GROWABLE = ("budget_head.", "decoder.refine.", "encoder.head2.", "decoder.embed2.", *_STACKS)


def _widen_decoder_ffn(model: Tokenizer, sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """A checkpoint whose decoder feed-forwards are narrower than the model's (a larger mlp_ratio):
    embed each one's hidden channels in the model's, the new ones fed by the model's fresh init and
    read out by zeros, so the widened block computes exactly what the checkpoint's did."""
    own = model.state_dict()
    out = dict(sd)
    for key, w in sd.items():
        if not (key.startswith("decoder.blocks.") and ".ffn.inp." in key) or key not in own:
            continue
        big = own[key]
        if big.shape[0] <= w.shape[0] or big.shape[1:] != w.shape[1:]:
            continue
        h, hb = w.shape[0] // 2, big.shape[0] // 2  # inp makes [a | g], each `hidden` channels
        wide = big.clone()
        wide[:h], wide[hb:hb + h] = w[:h], w[h:]
        out[key] = wide
        if key.endswith(".weight"):
            o = key.replace(".ffn.inp.", ".ffn.out.")
            out_w = torch.zeros_like(own[o])
            out_w[:, :h] = sd[o]
            out[o] = out_w
    return out


def _load_tolerating_head(model: Tokenizer, sd: dict[str, Tensor]) -> list[str]:
    """Load a checkpoint that may predate the budget head or be a smaller model: missing head
    weights start untrained; a missing refinement or missing trailing decoder or encoder blocks start as the
    identity (their residual outputs zeroed), and narrower decoder feed-forwards are embedded in wider
    ones (`_widen_decoder_ffn`), so training grows the checkpoint's model."""
    sd = _widen_decoder_ffn(model, sd)
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # a tensor of another shape: one line, not torch's list of every mismatch
        raise RuntimeError(f"checkpoint does not fit the model: {str(e).splitlines()[1].strip()}") from None
    bad = [k for k in missing if not k.startswith(_GROWABLE)] + list(unexpected)
    # a block is grown only if it is wholly missing and follows the checkpoint's last block of its stack
    for stack in _STACKS:
        have = {int(k.split(".")[2]) for k in sd if k.startswith(stack)}
        bad += [k for k in missing if k.startswith(stack) and int(k.split(".")[2]) <= max(have, default=-1)]
    if bad:
        raise RuntimeError(f"checkpoint does not fit the model: {bad[:5]}")
    grown = sorted({".".join(k.split(".")[:3 if k.startswith(_STACKS) else 2])
                    for k in missing if not k.startswith("budget_head.")})
    with torch.no_grad():  # the refinement is the identity as built; a block starts near it: make it exact
        for block in (model.get_submodule(n) for n in grown):
            if isinstance(block, DepthConvBlock):
                for conv in (block.conv.pw2, block.ffn.out):
                    conv.weight.zero_()
                    conv.bias.zero_()  # type: ignore[union-attr]  # built with bias=True
    if grown:
        log.info("grown from the checkpoint: %s (starting as the identity)", ", ".join(grown))
    return grown


def _train_head(model: Tokenizer, cfg: TrainConfig, sample: Callable[[int], tuple[Tensor, NDArray[np.bool_]]],
                gen: torch.Generator, pop: float,
                head_step: int, bar: object, logf: object, plain: bool, checkpoint: Callable[[int], None]) -> int:
    """Fit the budget head to the router's measured maps on the frozen tokenizer; returns the step."""
    for p in model.parameters():
        p.requires_grad_(False)
    head = model.budget_head
    for p in head.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.head_lr, weight_decay=1e-4)
    device = next(model.parameters()).device
    crop, s = cfg.data.crop, model.stride
    recon = torch.zeros(cfg.batch, 3, crop, crop, device=device)
    hidden = torch.zeros(cfg.batch, model.cfg.decoder.state_channels, crop // s, crop // s, device=device)
    betas = torch.zeros(cfg.batch)
    n = (crop // s) ** 2
    full = torch.ones(cfg.batch, n, dtype=torch.bool, device=device)
    model.eval()
    skip_fraction = BudgetConfig().skip_fraction if cfg.head_skips else 0.0
    while head_step < cfg.head_steps:
        if cfg.head_schedule == "cosine":
            for g in opt.param_groups:
                g["lr"] = _cosine(cfg.head_lr, 0.0, head_step / cfg.head_steps)
        frames, new = sample(cfg.clip_frames)
        new_t = torch.from_numpy(new)
        keep = (~new_t).to(device).view(-1, 1, 1, 1).float()
        recon, hidden = recon * keep, hidden * keep
        draw = torch.tensor(FLEX_BETAS)[torch.randint(0, len(FLEX_BETAS), (cfg.batch,), generator=gen)]
        betas = torch.where(new_t, draw, betas)
        feats, errs, gains = [], [], []
        with torch.no_grad():
            # the serving router (infotok, gain signal) drives the streams: the head learns the
            # states it will see in use
            for t in range(cfg.clip_frames):
                x = frames[:, t]
                z, f = model.encoder(x, recon, hidden)
                codes, _ = model.fsq(z)
                err = position_error(x, model.decoder(codes, full, recon, hidden)[0], s)
                gain = (position_error(x, model.decoder(codes, ~full, recon, hidden)[0], s) - err).clamp_min(0)
                k = draw_budgets("elbo", gain, betas, pop, replace(cfg, zero_k_prob=0.0), gen).to(device)
                held = recon, hidden
                recon, hidden = model.decoder(codes, keep_mask(gain, k), recon, hidden)
                if skip_fraction > 0:
                    # the served skip (engine/budget.py skip_frame, on the measured repeat gain): a
                    # skipped frame leaves the receiver on the frame it shows, so the head learns from
                    # held states as it meets them in use. A stream's first frame is a keyframe.
                    repeat_gain = (position_error(x, held[0], s).mean(dim=1) - err.mean(dim=1)).clamp_min(0)
                    skip = betas.to(device) * repeat_gain / max(pop, 1e-8) < skip_fraction
                    if t == 0:
                        skip &= ~new_t.to(device)
                    recon, hidden = hold_where(skip, held, (recon, hidden))
                feats.append(f)
                errs.append(err)
                gains.append(gain)
        pe, pg = head(torch.cat(feats))
        te, tg = torch.cat(errs), torch.cat(gains)
        eps = 2e-3  # log targets: ranking cares about ratios, budgets about means; both at every scale
        loss = ((torch.log(pe + eps) - torch.log(te + eps)).abs().mean()
                + (torch.log(pg + eps) - torch.log(tg + eps)).abs().mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
        opt.step()
        head_step += 1
        if head_step % cfg.log_every == 0 or head_step == cfg.head_steps:
            rec = {"head_step": head_step, "head_loss": float(loss.detach()), "lr": opt.param_groups[0]["lr"],
                   "time": time.time()}
            logf.write(json.dumps(rec) + "\n")  # type: ignore[attr-defined]
            logf.flush()  # type: ignore[attr-defined]
            if plain:
                print(f"head step {head_step}/{cfg.head_steps} loss {rec['head_loss']:.4f}", file=sys.stderr,
                      flush=True)
        if bar is not None:
            bar[0].update(bar[1], completed=head_step, description=f"head loss {float(loss.detach()):.4f}")  # type: ignore[index]
        if head_step % cfg.checkpoint_every == 0 or head_step == cfg.head_steps:
            checkpoint(head_step)
    return head_step


def _save_state(path: Path, model: Tokenizer, opt: torch.optim.Optimizer, step: int, pop_ema: float,
                head_step: int = 0, prior: DigitPrior | None = None,
                prior_opt: torch.optim.Optimizer | None = None, prior2: DigitPrior | None = None) -> None:
    tmp = path.with_suffix(".tmp")
    st = {"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "pop_ema": pop_ema,
          "head_step": head_step}
    if prior is not None and prior_opt is not None:
        st.update(prior=prior.state_dict(), prior_opt=prior_opt.state_dict())
    if prior2 is not None:
        st.update(prior2=prior2.state_dict())
    torch.save(st, tmp)
    tmp.replace(path)


def _progress(enabled: bool, total: int, start: int, label: str = "train"):  # type: ignore[no-untyped-def]
    """A rich bar on an interactive terminal; None otherwise (a stopped bar only prints when it ends)."""
    if not enabled:
        return None
    from rich.console import Console
    con = Console(stderr=True)
    if not con.is_interactive:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    p = Progress(TextColumn(f"[bold]{label}[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                 TimeRemainingColumn(), transient=False, console=con)
    task = p.add_task("", total=total, completed=start)
    p.start()
    return p, task
