"""Rate control: scale the router's beta so a stream meets a target mean rate (bits/s or tokens per
frame), like a video codec's rate control. Pure functions of plain numbers; time is an argument.

The controller keeps a *debt*: what the stream spent above its target so far. beta is scaled by
base * exp(-debt / (target * window)), a proportional-integral controller in the log domain:
spending too much lowers beta at once, and `base` slowly absorbs the ratio between what the
content asks for and the target, so the debt itself returns to zero (an early overspend is paid
back instead of being carried for ever). `window_s` sets how fast it reacts; the debt is bounded
so a long quiet stretch cannot bank an unbounded burst.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class RateControlConfig:
    """Exactly one of `target_bps` and `target_tokens` is set."""

    target_bps: float | None = None  # bits per second, headers and masks included
    target_tokens: float | None = None  # mean tokens per frame
    window_s: float = 0.5  # reaction time; +-5% over 10 s windows needs < 1 s (docs/BENCHMARKS.md)
    fps: float = 30.0  # frame rate assumed for token targets and the first frame's interval
    max_debt_windows: float = 3.0  # debt is clipped to +-this many windows of budget
    min_scale: float = 1.0 / 32.0
    max_scale: float = 32.0

    def __post_init__(self) -> None:
        if (self.target_bps is None) == (self.target_tokens is None):
            raise ValueError("set exactly one of target_bps and target_tokens")
        target = self.target_bps if self.target_bps is not None else self.target_tokens
        if target is None or not target > 0:
            raise ValueError(f"the rate target must be > 0, got {target}")
        if self.window_s <= 0 or self.fps <= 0:
            raise ValueError(f"window_s and fps must be > 0, got {self.window_s}, {self.fps}")

    @property
    def per_second(self) -> float:
        """The target as a rate per second (tokens/frame * fps for token targets)."""
        if self.target_bps is not None:
            return self.target_bps
        assert self.target_tokens is not None
        return self.target_tokens * self.fps


@dataclass(frozen=True)
class RateState:
    scale: float = 1.0  # multiplies beta
    debt: float = 0.0  # bits (or tokens) spent above the target so far
    log_base: float = 0.0  # the slowly adapting part of log(scale)
    last_s: float | None = None  # time of the previous frame


def rate_update(cfg: RateControlConfig, state: RateState, used: float, now_s: float) -> RateState:
    """Account for one frame that cost `used` (bits, or tokens for a token target) at time `now_s`.

    Returns the state whose `scale` applies to the next frame.
    """
    if used < 0:
        raise ValueError(f"a frame cannot cost {used}")
    if state.last_s is None or cfg.target_tokens is not None:
        dt = 1.0 / cfg.fps  # token targets are per frame, whatever the clock says
    else:
        dt = max(0.0, now_s - state.last_s)
    budget = cfg.per_second * cfg.window_s
    debt = state.debt + used - cfg.per_second * dt
    bound = cfg.max_debt_windows * budget
    debt = min(bound, max(-bound, debt))
    lo, hi = math.log(cfg.min_scale), math.log(cfg.max_scale)
    log_base = min(hi, max(lo, state.log_base - (debt / budget) * (dt / cfg.window_s)))
    scale = min(cfg.max_scale, max(cfg.min_scale, math.exp(log_base - debt / budget)))
    return replace(state, scale=scale, debt=debt, log_base=log_base, last_s=now_s)


def retarget(state: RateState) -> RateState:
    """The state to carry into a new target: the credit or debt run up under the old one is
    dropped (it was measured against another budget: a stream that sat far under a generous target
    must not spend that credit at a tight one), the scale and its slow part are kept."""
    return replace(state, debt=0.0)
