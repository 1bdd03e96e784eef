"""What bit rate a stream can reach, measured on its own frames, and its real rate over a window.

Rate control (engine/rate_control.py) scales beta, but a frame never keeps fewer tokens than its
policy's floor (N/16 for the error-driven policies, InfoTok's) nor more than N (or `max_rate`'s
cap), and rate control's scale itself stops at [min_scale, max_scale]: below what the frames cost
at the smallest scale, times the frame rate, no target can be met and the stream runs at its floor
instead (the shipped model at 256x192: 48-60 tokens, ~1,000 bits a frame, so ~30 kbit/s at 30 fps).
The bounds depend on the content (the budget policy and the entropy coder) and on the frame rate
the machine really reaches, so they are measured: each frame is packed once more, not sent, with
the tokens it would keep at the smallest and at the largest scale, from the coder state it was
coded from (`frame_bounds`), and `RateMeter` turns those costs into bits per second at the
stream's real frame rate.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

import numpy as np

from livetok.engine.budget import k_max, k_min
from livetok.engine.config import SenderConfig
from livetok.engine.rate_control import RateControlConfig
from livetok.engine.state import FrameTokens

from .wire import CoderState, TokenPacket


def token_bounds(sender: SenderConfig, n: int, k: int, scale: float) -> tuple[int, int]:
    """The tokens a frame of N positions that kept k at rate control's `scale` would keep at the
    smallest and the largest scale. The policies' budgets are proportional to the scale (beta * scale
    times the frame's signal over its normaliser, engine/budget.py) between their floor (k_min; at
    least 1 for `fixed`) and their ceiling (k_max); a frame at a bound gives the scale a lower bound
    on its signal, which is what is used (the exact signal is the router's)."""
    bud = sender.budget
    rc = sender.rate_control or RateControlConfig(target_tokens=1.0)  # its scale limits
    hi = k_max(bud, n)
    floor = 1 if bud.policy == "fixed" else k_min(bud, n)
    lo = max(floor, min(k, round(k * rc.min_scale / scale)))
    return min(lo, hi), min(hi, max(k, round(k * rc.max_scale / scale)))


def _ranked(tokens: FrameTokens, ranking: str) -> np.ndarray:
    """The frame's positions in the order the router would keep them: the kept ones first (a
    smaller budget keeps a subset of them), then by the ranking's score where the frame carries it,
    else in raster order (ElasticTok's prefix order)."""
    mask = tokens.mask[0].cpu().numpy()
    scores = {"gain": tokens.gain, "error": tokens.error}.get(ranking)
    score = np.zeros(mask.shape[0]) if scores is None else scores[0].detach().float().cpu().numpy()
    # lexsort sorts by the last key first: kept before dropped, then higher score, then raster index
    return np.lexsort((-score, ~mask))


def frame_bounds(packet: TokenPacket, tokens: FrameTokens, coder: CoderState, sender: SenderConfig, sent_bits: int,
                 scale: float) -> tuple[int, int]:
    """What this frame, coded at rate control's `scale`, would have cost on the wire (bits) at the
    smallest and the largest scale (`token_bounds`): the same header and the coder state `coder` it
    was packed from (packet v2), its own token indices at the positions the router ranks first.
    Nothing is sent; the coder state is unchanged.

    A frame sent at a bound costs `sent_bits` there. That matters at the ceiling: a full frame
    priced from the context of sparse ones costs up to twice what a run of full frames does (the
    coder's models predict from the tokens last sent), so the estimate is rough until the stream
    reaches the ceiling, and exact once it is there, where a target is clipped to it."""
    lo, hi = token_bounds(sender, packet.n, packet.k, scale)
    order = _ranked(tokens, sender.ranking)
    indices = tokens.indices[0].cpu().numpy()
    bits = []
    for k in (lo, hi):
        if packet.k == k:
            bits.append(sent_bits)
            continue
        mask = np.zeros(packet.n, dtype=bool)
        mask[order[:k]] = True
        p = replace(packet, mask=mask, indices=indices[mask].astype(np.uint32))
        data = p.pack_as(sender.wire, coder)[0]
        bits.append(8 * len(data))
    return bits[0], bits[1]


@dataclass(frozen=True)
class _Frame:
    t_s: float  # capture time
    bits: int  # sent
    floor_bits: int | None
    ceiling_bits: int | None


class RateMeter:
    """A stream's frames over a trailing window of capture time: its real rate and reachable range.

    The rate is stream/bitrate.py's, over the window's frames: their bits over their span times
    n / (n - 1), as n frames cover n frame intervals. (Dividing the bits by the span alone, as the
    demo page once did, overstates the rate by n/(n-1): +7% at 15 fps over one second.)
    """

    def __init__(self, window_s: float = 10.0) -> None:
        if not window_s > 0:
            raise ValueError(f"the window must be > 0 s, got {window_s}")
        self.window_s = window_s
        self._frames: deque[_Frame] = deque()

    def add(self, t_s: float, bits: int, bounds: tuple[int, int] | None = None) -> None:
        """One frame captured at `t_s` that cost `bits`; `bounds`: its (floor, ceiling) cost."""
        lo, hi = bounds if bounds is not None else (None, None)
        self._frames.append(_Frame(t_s, bits, lo, hi))
        while self._frames and self._frames[0].t_s < t_s - self.window_s:
            self._frames.popleft()

    def _last(self, window_s: float | None) -> tuple[list[_Frame], float]:
        """The frames within the last `window_s` (default: the whole window) and their span."""
        if not self._frames:
            return [], 0.0
        end = self._frames[-1].t_s
        frames = [f for f in self._frames if f.t_s >= end - (self.window_s if window_s is None else window_s)]
        return frames, frames[-1].t_s - frames[0].t_s

    def span_s(self, window_s: float | None = None) -> float:
        """Capture time from the oldest to the newest frame within the last `window_s`."""
        return self._last(window_s)[1]

    def bits_per_s(self, window_s: float | None = None) -> float | None:
        """The rate over the last `window_s` (default: the whole window); None before two frames."""
        frames, span = self._last(window_s)
        if span <= 0:
            return None
        return sum(f.bits for f in frames) / (span * len(frames) / (len(frames) - 1))

    def fps(self, window_s: float | None = None) -> float | None:
        frames, span = self._last(window_s)
        return (len(frames) - 1) / span if span > 0 else None

    def reachable_bps(self) -> tuple[float, float] | None:
        """(lowest, highest) bits per second this stream reaches at its real frame rate: the mean
        floor and ceiling cost of the window's frames times its frames per second; None before
        two priced frames."""
        priced = [(f.floor_bits, f.ceiling_bits) for f in self._frames
                  if f.floor_bits is not None and f.ceiling_bits is not None]
        fps = self.fps()
        if len(priced) < 2 or fps is None:
            return None
        lo, hi = np.mean(np.array(priced, dtype=np.float64), axis=0) * fps
        return float(lo), float(hi)
