"""Budget policies: how many tokens frame t gets. Pure functions of plain numbers, state passed in
and returned (no torch, no clock), so the tests can assert exact integers.

InfoTok (arXiv 2512.16975, Eq. 4) sets N_x = beta * L(x) / E[L(x)]: tokens in proportion to the
frame's information content L (its negative ELBO, measured as the full-rate reconstruction error)
relative to the population mean. Made causal here: L is frame t's own full-rate error (available
to the sender before it sends anything) and the normaliser is either

- "population": a constant measured on the training data and stored with the weights (the
  paper's E[ELBO]); a quiet stream spends fewer tokens than a busy one; or
- "ema": the stream's own exponential moving average over *past* frames only, warm-started from
  the population constant; every stream then averages about beta tokens (rate control in disguise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from .config import BudgetConfig


@dataclass(frozen=True)
class BudgetState:
    """Per-stream router memory (sender side only)."""

    ema_error: float  # EMA of the router signal of past predicted (non-key) frames
    frames: int = 0  # frames budgeted so far
    scale: float = 1.0  # multiplies beta; set by rate control (engine/rate_control.py)
    # mean position error of what the receiver shows after the last frame, against that frame (NaN
    # before the first): how much a repeat of it loses on this frame is what the scene changed
    shown_error: float = math.nan


def initial_budget_state(population_error: float) -> BudgetState:
    # warm start from the population constant: a cold EMA would clip the first frames to N
    return BudgetState(ema_error=float(population_error))


def k_min(cfg: BudgetConfig, n: int) -> int:
    return max(1, min(n, math.ceil(cfg.k_min_fraction * n)))


def k_max(cfg: BudgetConfig, n: int) -> int:
    """The hard ceiling `max_rate` sets: floor(max_rate * N), so k <= max_rate * N always (at least 1)."""
    if cfg.max_rate is None:
        return n
    return max(1, min(n, math.floor(cfg.max_rate * n)))


def _bounded(cfg: BudgetConfig, n: int, k: float) -> int:
    """`round(k)` between the policy's floor and its ceiling; the ceiling wins when max_rate is set
    below the floor N/16."""
    return min(k_max(cfg, n), max(k_min(cfg, n), round(k)))


def frame_budget(
    cfg: BudgetConfig,
    n: int,
    state: BudgetState,
    *,
    mean_error: float | None,
    population_error: float,
    keyframe: bool,
) -> tuple[int, BudgetState]:
    """Token budget k for one frame of N positions.

    Args:
        cfg: the policy and its rate.
        n: positions in the frame's latent grid.
        state: this stream's router state after the previous frame.
        mean_error: the frame's mean full-rate error (needed by `infotok`, else ignored).
        population_error: the population mean error stored with the weights.
        keyframe: keyframes are coded from nothing; their error does not enter the EMA.
    Returns:
        (k, new state) with k in [1, n].
    """
    if n < 1:
        raise ValueError(f"a frame needs at least one position, got n={n}")
    beta = cfg.rate * n * state.scale
    if cfg.policy == "fixed":
        k = max(1, min(k_max(cfg, n), round(beta)))
        return k, replace(state, frames=state.frames + 1)
    if mean_error is None or not math.isfinite(mean_error) or mean_error < 0:
        raise ValueError(f"policy 'infotok' needs the frame's mean full-rate error >= 0, got {mean_error}")
    norm = population_error if cfg.normaliser == "population" else state.ema_error
    norm = max(norm, 1e-8)
    k = _bounded(cfg, n, beta * mean_error / norm)
    ema = state.ema_error
    if not keyframe:
        ema = cfg.ema_decay * ema + (1.0 - cfg.ema_decay) * mean_error
    return k, replace(state, ema_error=ema, frames=state.frames + 1)


# policies with InfoTok's rule, to which the skip mode applies (its threshold is a token budget)
SKIP_POLICIES = ("infotok", "learned")


def skip_frame(cfg: BudgetConfig, n: int, state: BudgetState, *, repeat_gain: float, population_gain: float,
               keyframe: bool) -> bool:
    """Whether a frame sends no tokens (the receiver repeats its previous frame, state unchanged).

    InfoTok's rule on the repeat gain — the mean error of repeating the previous reconstruction minus
    the frame's mean full-rate error, i.e. all that tokens could buy over a skip — normalised by the
    population gain: skip when that budget is under ``skip_fraction * N``. Keyframes never skip, nor
    does a frame whose repeat gain is unknown (NaN). Rate control's scale does not move the line: a skip
    says there is nothing worth sending, whatever the bit budget (scaled, a tight target would turn
    frames into repeats below the floor rate it prices and holds, and credit would buy tokens a still
    scene cannot use).
    """
    if keyframe or cfg.skip_fraction <= 0 or cfg.policy not in SKIP_POLICIES or math.isnan(repeat_gain):
        return False
    beta = cfg.rate * n
    return beta * max(repeat_gain, 0.0) / max(population_gain, 1e-8) < cfg.skip_fraction * n


def prior_budget(cfg: BudgetConfig, n: int, state: BudgetState, *, population_error: float, keyframe: bool) -> int:
    """The `prior` policy: frame t's budget from the stream's past alone (the EMA of past frames'
    signals), decided before the frame is seen, so a sender can reserve bandwidth ahead of capture.
    A keyframe (known in advance: scheduled or requested) gets all N."""
    if keyframe:
        return k_max(cfg, n)
    beta = cfg.rate * n * state.scale
    return _bounded(cfg, n, beta * state.ema_error / max(population_error, 1e-8))


def observe(cfg: BudgetConfig, state: BudgetState, *, mean_error: float, keyframe: bool) -> BudgetState:
    """Fold a frame's signal into the router state once it is known (the EMA skips keyframes)."""
    ema = state.ema_error
    if not keyframe:
        ema = cfg.ema_decay * ema + (1.0 - cfg.ema_decay) * mean_error
    return replace(state, ema_error=ema, frames=state.frames + 1)
