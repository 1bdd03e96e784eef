"""One definition of a stream's bit rate (kbit/s), for every command that reports one, and the check of a
rate target against the floor a stream cannot go below.

**bits_per_s** of a stream = 8 x the bytes of its packets / its duration, where

- the packets are whole packets as sent (header, mask and tokens or entropy-coded payload, CRC): the bytes
  rate control counts. Not the transport's framing (MQTT headers, a `.ltk` record's length prefix), not
  the end-of-stream packet, and a packet counts once however often it was sent;
- the duration is in the stream's capture time, from its packets' timestamps: the span from the first
  frame to the last, times n / (n - 1) for n frames (n frames cover n frame intervals, the span only
  n - 1). A clip played at its frame rate therefore runs at exactly `bits_per_frame * fps`.

Sender and receiver count the same packets over the same timestamps, so they report the same figure for
one stream (frames the receiver lost aside): not the wall-clock time packets took to arrive, and not the
time from a pipeline's start. Several streams together: the sum of their rates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

from livetok.engine.budget import k_min
from livetok.engine.config import SenderConfig

__all__ = ["FLOOR_SHARE", "HOLD_WINDOW_S", "TARGET_TOLERANCE", "BitRate", "TargetCheck", "check_target", "policy_floor",
           "stream_seconds"]

# a target counts as reached within this: rate control holds ±5% over 10 s (docs/BENCHMARKS.md)
TARGET_TOLERANCE = 0.05
# ... and is below the floor when most coded non-keyframes keep no more than the policy's floor of tokens
FLOOR_SHARE = 0.5
# ... and rate control holds it over windows this long: a shorter stream that misses its target is told so, with
# its length as the likely reason
HOLD_WINDOW_S = 10.0


def stream_seconds(frames: int, first_us: int, last_us: int) -> float:
    """The duration of `frames` frames whose capture timestamps run from `first_us` to `last_us` (see the
    module): the span times n / (n - 1); 0 for fewer than two frames."""
    if frames < 2 or last_us <= first_us:
        return 0.0
    return (last_us - first_us) / 1e6 * frames / (frames - 1)


@dataclass
class BitRate:
    """A running tally of one stream's packets: `add` each frame's packet, read `bits_per_s`."""

    frames: int = 0
    bits: int = 0
    tokens: int = 0
    first_us: int | None = None
    last_us: int | None = None

    def add(self, packet_bytes: int, timestamp_us: int, tokens: int = 0) -> None:
        """One frame's packet: its length in bytes and its capture timestamp (µs, any origin)."""
        self.frames += 1
        self.bits += 8 * packet_bytes
        self.tokens += tokens
        # a sender's clock may step back (NTP): the span is from the earliest to the latest
        self.first_us = timestamp_us if self.first_us is None else min(self.first_us, timestamp_us)
        self.last_us = timestamp_us if self.last_us is None else max(self.last_us, timestamp_us)

    @property
    def seconds(self) -> float:
        if self.first_us is None or self.last_us is None:
            return 0.0
        return stream_seconds(self.frames, self.first_us, self.last_us)

    def bits_per_s(self) -> float:
        s = self.seconds
        return self.bits / s if s > 0 else 0.0

    def tokens_per_s(self) -> float:
        s = self.seconds
        return self.tokens / s if s > 0 else 0.0


def policy_floor(sender: SenderConfig, n: int) -> int:
    """The fewest tokens `sender`'s policy keeps in a frame of `n` positions that it does not skip: N/16
    (engine/budget.py `k_min`), or 1 for `fixed`; rate control scales beta, never below it."""
    return 1 if sender.budget.policy == "fixed" else k_min(sender.budget, n)


@dataclass(frozen=True)
class TargetCheck:
    """A stream's bit rate against its `--target-bps`."""

    target_bps: float
    bits_per_s: float
    floor_share: float  # of the coded non-keyframes, those that kept no more than the policy's floor
    seconds: float = 0.0  # the stream's duration (stream_seconds); 0 = unknown

    @property
    def missed(self) -> bool:
        """The stream ran above its target beyond the tolerance, whatever the reason."""
        return self.bits_per_s > self.target_bps * (1 + TARGET_TOLERANCE)

    @property
    def below_floor(self) -> bool:
        """The target was missed because the stream could not go lower: it ran above the target (beyond
        the tolerance) with most frames at the floor. Scaling beta cannot take a frame below N/16 tokens
        (engine/budget.py), so such a stream runs at its floor rate instead of the target."""
        return self.missed and self.floor_share >= FLOOR_SHARE

    def warning(self, name: str = "") -> str | None:
        """One line for people (None when there is nothing to say): the target is below the floor, or it was
        missed for another reason (most often a stream shorter than rate control's window)."""
        if not self.missed:
            return None
        target = (f"{f'stream {name!r}: ' if name else ''}--target-bps {self.target_bps:g} "
                  f"({self.target_bps / 1000:.1f} kbit/s)")
        if not self.below_floor:
            why = (f"; rate control holds a target over {HOLD_WINDOW_S:g} s and the stream lasted {self.seconds:.1f} s"
                   if 0 < self.seconds < HOLD_WINDOW_S else "")
            return (f"{target} was missed: the stream ran at {self.bits_per_s / 1000:.1f} kbit/s, "
                    f"{self.floor_share:.0%} of its frames at the floor{why}")
        return (f"{target} is below what this stream can reach: {self.floor_share:.0%} of its frames kept only the "
                f"floor of tokens (N/16 a frame unless skipped), and it ran at {self.bits_per_s / 1000:.1f} kbit/s")

    def as_json(self) -> TargetJson:
        return {"target_bps": self.target_bps, "target_below_floor": self.below_floor,
                "floor_share": round(self.floor_share, 3)}


class TargetJson(TypedDict):
    """A `TargetCheck`'s keys in a result (the keyword arguments of the results that carry them)."""

    target_bps: float
    target_below_floor: bool
    floor_share: float


def check_target(target_bps: float | None, bits_per_s: float, floor_frames: int,
                 coded_frames: int, seconds: float = 0.0) -> TargetCheck | None:
    """The check for a stream with a bit-rate target (None without one). `floor_frames` of its
    `coded_frames` (non-keyframes that carried tokens) kept no more than the policy's floor; the stream
    lasted `seconds` (0 = unknown)."""
    if target_bps is None:
        return None
    return TargetCheck(target_bps, bits_per_s, floor_frames / coded_frames if coded_frames else 0.0, seconds)
