"""Packet loss, simulated: a seeded lossy link (QoS-0 style: a dropped packet is gone, order kept)
between a sender and a `PacketReceiver`, on a virtual clock, so the figures (losses detected,
keyframes requested, recovery time, frames frozen, PSNR as seen) do not depend on how busy the
machine is. Used by tests/test_loss.py and benchmarks/loss.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from livetok.engine.config import SenderConfig
from livetok.engine.metrics import psnr
from livetok.engine.results import JsonResult
from livetok.engine.runtime import Runtime
from livetok.stream.packet_receiver import PacketReceiver, ReceivedFrame
from livetok.stream.session import SenderSession

__all__ = ["LossConfig", "LossyLink", "simulate_loss"]


@dataclass(frozen=True)
class LossConfig:
    """The network between sender and receiver.

    Args:
        loss: probability that a packet is dropped (independently, or in bursts).
        burst: mean length of a loss burst in packets (1 = independent losses).
        delay_s: one-way delay of packets and of keyframe requests.
        fps: frame rate of the sender.
        gap_timeout_s: the receiver's wait for a missing packet before it counts as lost.
        seed: the loss pattern's seed.
    """

    loss: float = 0.05
    burst: float = 1.0
    delay_s: float = 0.02
    fps: float = 30.0
    gap_timeout_s: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.loss < 1.0:
            raise ValueError(f"loss must be in [0, 1), got {self.loss}")
        if self.burst < 1.0:
            raise ValueError(f"burst must be >= 1 packet, got {self.burst}")
        if self.fps <= 0 or self.delay_s < 0 or self.gap_timeout_s <= 0:
            raise ValueError("fps and gap_timeout_s must be > 0 and delay_s >= 0")


class LossyLink:
    """Decides, packet by packet, whether the network drops it (a two-state Gilbert model whose
    mean loss is `loss` and mean burst `burst`; `burst=1` is independent loss)."""

    def __init__(self, cfg: LossConfig) -> None:
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)
        self.in_burst = False
        self.sent = self.dropped = 0
        # P(leave a burst) = 1/burst; P(enter one) chosen so the stationary loss rate is `loss`
        self.p_exit = 1.0 / cfg.burst
        self.p_enter = cfg.loss * self.p_exit / (1.0 - cfg.loss) if cfg.loss else 0.0

    def drops(self) -> bool:
        self.sent += 1
        if self.cfg.burst == 1.0:  # independent losses (two in a row happen, at rate loss^2)
            self.in_burst = bool(self.rng.random() < self.cfg.loss)
        else:
            self.in_burst = bool(self.rng.random() < (1.0 - self.p_exit if self.in_burst else self.p_enter))
        self.dropped += int(self.in_burst)
        return self.in_burst


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class _SimReceiver(PacketReceiver):
    """A receiver whose keyframe requests reach the simulated sender after the link's delay."""

    def __init__(self, model: Runtime, cfg: LossConfig, clock: _Clock) -> None:
        super().__init__(model, gap_timeout_s=cfg.gap_timeout_s, clock=clock)
        self.requests: list[float] = []  # when each request reaches the sender
        self.delay_s = cfg.delay_s

    async def send_keyframe_request(self, stream: str, payload: str) -> None:
        json.loads(payload)  # well-formed, as on the real control channel
        self.requests.append(self.clock() + self.delay_s)


@dataclass(frozen=True, kw_only=True)
class SimulatedLoss(JsonResult):
    """A simulated lossy run: counts (frames, packets dropped, decoded, frozen, losses counted by the receiver,
    keyframe requests and keyframes sent), recovery time after each loss (capture of the dropped frame to the
    next decoded frame: p50, max, share within 1 s) and the mean PSNR of what a viewer sees (frozen frames
    compared with the frames they stand in for)."""

    loss: float
    burst: float
    frames: int
    packets_dropped: int
    frames_decoded: int
    frames_frozen: int
    frozen_fraction: float
    frames_lost_counted: int
    keyframe_requests: int
    keyframes_sent: int
    # every frame of the run (tail included) is accounted for: decoded, or counted as lost
    losses_detected: bool
    recovery_s_p50: float | None
    recovery_s_max: float | None
    recovered_within_1s: float
    psnr_seen: float


async def _run(model: Runtime, frames: Iterable[np.ndarray], cfg: LossConfig, sender: SenderConfig
               ) -> SimulatedLoss:
    clock = _Clock()
    link = LossyLink(cfg)
    tx = SenderSession(model, sender)
    rx = _SimReceiver(model, cfg, clock)
    dropped: list[int] = []
    decoded: dict[int, tuple[float, np.ndarray]] = {}  # frame index -> (virtual decode time, frame)
    originals: list[np.ndarray] = []
    keyframes_sent = 0
    served = 0  # keyframe requests already acted on

    def drain() -> None:
        while not rx._out.empty():
            item = rx._out.get_nowait()
            if isinstance(item, ReceivedFrame):
                decoded[item.frame_index] = (clock.t, item.frame)

    body = list(frames)
    # a loss-free tail of 1.5 s (not in the figures) lets every loss in the body be resolved
    tail = [body[j % len(body)] for j in range(round(1.5 * cfg.fps))]
    for i, frame in enumerate(body + tail):
        t_capture = i / cfg.fps
        clock.t = t_capture
        await asyncio.sleep(0)  # let request tasks run
        due = [r for r in rx.requests[served:] if r <= t_capture]
        served += len(due)
        enc = tx.encode(frame, timestamp_us=round(t_capture * 1e6), force_keyframe=bool(due))
        keyframes_sent += int(enc.packet.keyframe and i < len(body))
        originals.append(frame)
        if i < len(body) and link.drops():
            dropped.append(i)
        else:
            clock.t = t_capture + cfg.delay_s
            await rx.feed("sim", enc.data)
        clock.t = t_capture + cfg.delay_s
        await rx.poll_gaps()
        drain()
    # let the last gap time out
    clock.t += cfg.gap_timeout_s + 0.1
    await rx.poll_gaps()
    await asyncio.sleep(0)
    drain()

    # what a viewer sees: the last decoded frame, frozen until the next one
    psnrs, frozen, shown = [], 0, None
    n_all, originals = len(originals), originals[: len(body)]
    for i, orig in enumerate(originals):
        if i in decoded:
            shown = decoded[i][1]
        else:
            frozen += 1
        psnrs.append(psnr(shown, orig) if shown is not None else 0.0)
    # recovery: from the capture of each dropped frame to the next decoded frame after it
    recover = []
    for i in dropped:
        later = [decoded[j][0] for j in decoded if j > i]
        recover.append(min(later) - i / cfg.fps if later else float("inf"))
    c = rx.streams["sim"].counters if "sim" in rx.streams else None
    n = len(originals)
    rec = np.array(recover) if recover else np.zeros(0)
    return SimulatedLoss(
        loss=cfg.loss, burst=cfg.burst, frames=n, packets_dropped=len(dropped),
        frames_decoded=sum(1 for i in decoded if i < n), frames_frozen=frozen,
        frozen_fraction=round(frozen / n, 4),
        frames_lost_counted=c.frames_lost if c else 0, keyframe_requests=c.keyframe_requests if c else 0,
        keyframes_sent=keyframes_sent,
        losses_detected=(c is not None and c.frames_lost + c.frames_decoded == n_all
                         and c.frames_lost >= len(dropped)),
        recovery_s_p50=round(float(np.median(rec)), 3) if rec.size else None,
        recovery_s_max=round(float(rec.max()), 3) if rec.size else None,
        recovered_within_1s=round(float(np.mean(rec <= 1.0)), 4) if rec.size else 1.0,
        psnr_seen=round(float(np.mean(psnrs)), 2),
    )


def simulate_loss(model: Runtime, frames: Iterable[np.ndarray], cfg: LossConfig,
                  sender: SenderConfig | None = None) -> SimulatedLoss:
    """Stream `frames` through a lossy link into a real `PacketReceiver` on a virtual clock (`SimulatedLoss`)."""
    return asyncio.run(_run(model, frames, cfg, sender or SenderConfig()))
