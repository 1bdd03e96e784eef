"""What a receiver reports (DESIGN.md §6 keys): per stream, in total, and what each transport adds (MQTT's
link, a worker's group, Zenoh's frame ids, WebRTC's signalling URL). `to_json()` is the JSON document that
`livetok receive --json` (and `webrtc recv`) prints."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Self

from livetok.engine.results import JsonResult, optional

if TYPE_CHECKING:
    from .live import Drained

__all__ = ["MqttReceiverSummary", "ReceiverSummary", "StreamSummary", "WebRTCReceiverSummary", "WorkerSummary",
           "ZenohReceiverSummary"]


@dataclass(frozen=True)
class StreamSummary(JsonResult):
    """One stream's counters."""

    frames_received: int
    frames_decoded: int
    frames_lost: int
    frames_shed: int  # dropped undecoded because the receiver fell more than max_lag_s behind
    keyframes: int
    duplicates: int
    packets_rejected: int  # bad bytes, or a packet our model could not have made
    keyframe_requests: int
    latency_ms_p50: float | None  # capture -> decoded, over the last frames; None before the first
    latency_ms_p99: float | None
    # over the stream's capture time, not arrival times: the sender's figure (stream/bitrate.py)
    tokens_per_s: float
    bits_per_s: float
    ended: bool
    conflicting_packets: int  # a frame index already taken by another frame: a second publisher
    publishers: int  # publisher sessions seen in the stream's info


@dataclass(frozen=True, kw_only=True)
class ReceiverSummary(JsonResult):
    """Totals over a receiver's streams (rates summed, latencies over every stream's frames) and each
    stream's own; `outputs` and `ended_by` once a recording ended (`recorded`, after `live.record_frames`)."""

    frames_received: int
    frames_decoded: int
    frames_lost: int
    frames_shed: int
    keyframes: int
    duplicates: int
    keyframe_requests: int
    packets_rejected: int
    conflicting_packets: int
    latency_ms_p50: float | None
    latency_ms_p99: float | None
    tokens_per_s: float
    bits_per_s: float
    streams: dict[str, StreamSummary]
    outputs: list[str] | None = optional()  # the files written
    ended_by: str | None = optional()  # see `live.Drained`, or the signal that stopped the run

    def recorded(self, drained: Drained) -> Self:
        """This summary with a recording's `outputs` and `ended_by`."""
        return dataclasses.replace(self, outputs=drained.outputs, ended_by=drained.ended_by)

    def ended(self, by: str) -> Self:
        """This summary with `ended_by`."""
        return dataclasses.replace(self, ended_by=by)


@dataclass(frozen=True, kw_only=True)
class MqttReceiverSummary(ReceiverSummary):
    """An MQTT receiver's: the totals plus what its broker link went through."""

    reconnects: int
    broker_downtime_s: float
    failovers: int  # reconnections that landed on another cluster node
    outages_s: list[float]
    messages_dropped: int  # the consumer fell behind


@dataclass(frozen=True, kw_only=True)
class WorkerSummary(MqttReceiverSummary):
    """One worker of a receiver group (stream/workers.py): which streams it owned and handed over."""

    worker: str
    group: str
    members: list[str]
    streams_owned: list[str]
    handoffs_in: int
    handoffs_out: int


@dataclass(frozen=True, kw_only=True)
class ZenohReceiverSummary(ReceiverSummary):
    """A Zenoh receiver's: the camera frame id of each stream, and how long `receive_zenoh` ran."""

    transport: str
    frame_ids: dict[str, str]
    seconds: float | None = optional()


@dataclass(frozen=True, kw_only=True)
class WebRTCReceiverSummary(ReceiverSummary):
    """`webrtc recv`'s: where it listened."""

    signal_url: str
