"""Per-stream packet ordering for receivers: deliver frames in index order, wait a little for
late packets, declare a loss when a gap persists, and resume only at a keyframe (the decoder's
state needs every frame since the last one). Pure logic: time is passed in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar


class Sequenced(Protocol):
    """What ordering reads of a packet: a parsed `TokenPacket`, or a received packet whose header
    alone was read (a v2 payload can only be decoded in order, so it waits here undecoded)."""

    @property
    def frame_index(self) -> int: ...

    @property
    def keyframe(self) -> bool: ...

    @property
    def end_of_stream(self) -> bool: ...

    @property
    def n(self) -> int: ...


P = TypeVar("P", bound=Sequenced)


@dataclass
class OrderResult(Generic[P]):
    ready: list[P] = field(default_factory=list)  # decode these, in this order
    lost: int = 0  # frame indices that will never be decoded (missing, or received but unusable)
    need_keyframe: bool = False  # ask the sender for a keyframe
    duplicate: bool = False
    skipped: int = 0  # received packets dropped because they cannot be decoded (part of `lost`)


class StreamOrderer(Generic[P]):
    """Ordering state of one stream.

    Args:
        max_buffer: out-of-order packets held while waiting for a missing one.
        gap_timeout_s: how long a gap may stay open before the missing frames count as lost.
    """

    def __init__(self, max_buffer: int = 16, gap_timeout_s: float = 0.3) -> None:
        self.max_buffer = max_buffer
        self.gap_timeout_s = gap_timeout_s
        self.expected: int | None = None  # next frame index to decode; None until a keyframe
        self.buffer: dict[int, P] = {}
        self.gap_since: float | None = None
        self.ended = False
        # after a loss: the first frame index not yet counted as lost (None before the first
        # keyframe: frames sent before a late joiner arrived are not its losses)
        self.lost_from: int | None = None

    @property
    def waiting_for_keyframe(self) -> bool:
        return self.expected is None

    def push(self, packet: P, now: float) -> OrderResult[P]:
        res: OrderResult[P] = OrderResult()
        idx = packet.frame_index
        if self.ended:
            res.duplicate = True
            return res
        if self.expected is None:
            if packet.keyframe:
                if self.lost_from is not None and idx > self.lost_from:
                    res.lost += idx - self.lost_from
                self.lost_from = None
                self._deliver(packet, res)
            elif packet.end_of_stream and packet.n == 0:
                if self.lost_from is not None and idx > self.lost_from:
                    res.lost += idx - self.lost_from
                self.ended = True
                res.ready.append(packet)
            else:
                # joined late or lost sync: nothing decodes until a keyframe arrives
                res.need_keyframe = True
                if self.lost_from is not None:
                    res.skipped += 1
            return res
        if idx < self.expected or idx in self.buffer:
            res.duplicate = True
            return res
        if idx == self.expected:
            self._deliver(packet, res)
            self._flush(res)
        elif packet.keyframe:
            # a keyframe resets the decoder: everything before it is lost, decoding resumes now
            res.lost += idx - self.expected
            self.buffer = {i: p for i, p in self.buffer.items() if i > idx}
            self.expected = idx
            self._deliver(packet, res)
            self._flush(res)
        else:
            self.buffer[idx] = packet
            if self.gap_since is None:
                self.gap_since = now
            if len(self.buffer) > self.max_buffer:
                self._give_up(res)
        return res

    def poll(self, now: float) -> OrderResult[P]:
        """Call periodically: a gap open longer than the timeout becomes a loss."""
        res: OrderResult[P] = OrderResult()
        if self.expected is not None and self.gap_since is not None and now - self.gap_since > self.gap_timeout_s:
            self._give_up(res)
        return res

    def resync(self) -> int:
        """Stop decoding until the next keyframe (the receiver fell behind); returns how many
        buffered packets were dropped. Frames dropped this way are the caller's to count."""
        dropped = len(self.buffer)
        self.buffer.clear()
        self.expected = None
        self.gap_since = None
        self.lost_from = None
        return dropped

    # -- internals -----------------------------------------------------------------------------

    def _deliver(self, packet: P, res: OrderResult[P]) -> None:
        res.ready.append(packet)
        self.expected = packet.frame_index + 1
        if packet.end_of_stream:
            self.ended = True

    def _flush(self, res: OrderResult[P]) -> None:
        while self.expected is not None and not self.ended and self.expected in self.buffer:
            self._deliver(self.buffer.pop(self.expected), res)
        self.gap_since = None if not self.buffer else self.gap_since

    def _give_up(self, res: OrderResult[P]) -> None:
        """The missing frame is not coming: resume at the first buffered keyframe, if any."""
        assert self.expected is not None
        keys = sorted(i for i, p in self.buffer.items() if p.keyframe)
        if keys:
            k = keys[0]
            res.lost += k - self.expected
            res.skipped += sum(1 for i in self.buffer if i < k)
            self.buffer = {i: p for i, p in self.buffer.items() if i >= k}
            self.expected = k
            self.gap_since = None
            self._flush(res)
            return
        # no keyframe to resume from: frames from the gap up to the next keyframe are lost (counted
        # when that keyframe arrives)
        res.skipped += len(self.buffer)
        self.lost_from = self.expected
        self.buffer.clear()
        self.expected = None
        self.gap_since = None
        res.need_keyframe = True
