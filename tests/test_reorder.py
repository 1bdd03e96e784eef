"""Receiver ordering: exact delivery order and loss counts for scripted packet sequences."""

from __future__ import annotations

import numpy as np

from livetok.stream.reorder import StreamOrderer
from livetok.stream.wire import TokenPacket

MID = bytes(8)


def pkt(i: int, key: bool = False, eos: bool = False) -> TokenPacket:
    if eos:
        return TokenPacket(MID, i, 0, False, True, 0, 0, 0, 0, 10, np.zeros(0, bool), np.zeros(0, np.uint32))
    mask = np.array([True, False, True, False])
    return TokenPacket(MID, i, i * 1000, key, False, 16, 16, 2, 2, 10, mask, np.array([1, 2], np.uint32))


def indices(res) -> list[int]:  # type: ignore[no-untyped-def]
    return [p.frame_index for p in res.ready]


def test_in_order_and_reordered_within_the_window() -> None:
    o = StreamOrderer(max_buffer=4, gap_timeout_s=0.3)
    assert indices(o.push(pkt(0, key=True), 0.0)) == [0]
    assert indices(o.push(pkt(1), 0.01)) == [1]
    assert indices(o.push(pkt(3), 0.02)) == []  # 2 is late: hold 3
    assert indices(o.poll(0.2)) == []  # still within the timeout
    r = o.push(pkt(2), 0.25)
    assert indices(r) == [2, 3] and r.lost == 0
    assert o.push(pkt(2), 0.26).duplicate


def test_gap_timeout_resumes_at_the_next_keyframe_and_counts_the_loss() -> None:
    o = StreamOrderer(max_buffer=8, gap_timeout_s=0.3)
    o.push(pkt(0, key=True), 0.0)
    o.push(pkt(1), 0.0)
    o.push(pkt(3), 0.1)  # 2 never arrives
    o.push(pkt(4), 0.1)
    r = o.poll(0.5)
    assert r.need_keyframe and indices(r) == [] and r.skipped == 2
    assert o.waiting_for_keyframe
    r = o.push(pkt(5), 0.6)  # still no keyframe: dropped
    assert r.need_keyframe and r.skipped == 1 and indices(r) == []
    r = o.push(pkt(6, key=True), 0.7)
    assert indices(r) == [6] and r.lost == 4  # frames 2, 3, 4, 5 never decoded
    assert indices(o.push(pkt(7), 0.8)) == [7]


def test_a_buffered_keyframe_ends_the_gap_at_once() -> None:
    o = StreamOrderer(max_buffer=8, gap_timeout_s=0.3)
    o.push(pkt(0, key=True), 0.0)
    o.push(pkt(2), 0.0)  # 1 missing
    r = o.push(pkt(3, key=True), 0.0)  # a keyframe resets the decoder: no need to wait
    assert indices(r) == [3] and r.lost == 2  # 1 missing, 2 unusable without 1


def test_late_joiner_waits_for_a_keyframe_without_counting_losses() -> None:
    o = StreamOrderer()
    for i in range(10, 14):
        r = o.push(pkt(i), 0.0)
        assert r.need_keyframe and indices(r) == [] and r.lost == 0
    r = o.push(pkt(14, key=True), 0.1)
    assert indices(r) == [14] and r.lost == 0


def test_buffer_overflow_is_a_loss() -> None:
    o = StreamOrderer(max_buffer=2, gap_timeout_s=10.0)
    o.push(pkt(0, key=True), 0.0)
    o.push(pkt(2), 0.0)
    o.push(pkt(3), 0.0)
    r = o.push(pkt(4), 0.0)  # third out-of-order packet: the window is full
    assert r.need_keyframe and r.skipped == 3


def test_end_of_stream() -> None:
    o = StreamOrderer()
    o.push(pkt(0, key=True), 0.0)
    o.push(pkt(1), 0.0)
    r = o.push(pkt(2, eos=True), 0.0)
    assert indices(r) == [2] and r.ready[0].end_of_stream and o.ended
    assert o.push(pkt(3), 0.0).duplicate
