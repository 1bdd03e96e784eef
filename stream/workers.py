"""Receiver workers: W processes that split the streams of `livetok receive --stream '+'`, each
stream decoded by exactly one worker at a time (decoding is sequential per stream).

How: every worker of a group announces itself with a retained presence message on
`livetok/_workers/<group>/<worker>` and leaves a *will* — an empty retained message on the same
topic, which the broker publishes when the worker's connection dies without a goodbye (a crash, a
kill, a lost machine). Every worker therefore sees the same set of live workers, and rendezvous
hashing (ownership.py) turns that set into one owner per stream, with no coordinator. A worker
subscribes to every stream's tokens, decodes the streams it owns and drops the rest unread (a topic
comparison); when a worker dies its streams move to the others, whose receivers see a stream start
mid-way and ask its sender for a keyframe (the late-join path). Why not MQTT 5 shared subscriptions:
they balance message by message, which scatters one stream's packets over workers, and the NATS
MQTT gateway speaks MQTT 3.1.1 only. The cost of the choice: each worker receives every stream's
packets (a few kbit/s per stream), which is cheap next to decoding them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from typing import Any

import aiomqtt

from livetok.engine.runtime import Runtime

from .broker_url import PREFIX, stream_from_topic
from .mqtt import Brokers
from .ownership import owner
from .receiver import Receiver
from .summaries import WorkerSummary
from .wire import PacketError, peek_header

__all__ = ["WORKERS_LEVEL", "WorkerReceiver", "merge_summaries", "presence_topic"]

log = logging.getLogger(__name__)

WORKERS_LEVEL = "_workers"  # livetok/_workers/<group>/<worker>: four levels, so no stream wildcard matches it


def _ends(payload: bytes) -> bool:
    """Whether a packet is an end of stream (its header only: the packet itself is not ours to decode)."""
    try:
        return peek_header(payload).end_of_stream
    except PacketError:
        return False


def presence_topic(group: str, worker: str) -> str:
    for name, value in (("group", group), ("worker", worker)):
        if not value or any(c in value for c in "/#+\x00"):
            raise ValueError(f"worker {name} {value!r} must be non-empty without '/', '#', '+'")
    return f"{PREFIX}/{WORKERS_LEVEL}/{group}/{worker}"


class WorkerReceiver(Receiver):
    """One worker of `group`: receives every stream, decodes those it owns among the live workers.

    Args:
        model, broker: as Receiver.
        group: the worker group's name (workers of one group split the streams).
        worker: this worker's name, unique in the group; also its MQTT client id's suffix, so a
            restarted worker resumes its persistent session.
        kwargs: passed to Receiver (gap_timeout_s, first_connect_timeout_s, max_lag_s).
    """

    def __init__(self, model: Runtime, broker: Brokers, group: str, worker: str, **kwargs: Any) -> None:
        self.group, self.worker = group, worker
        self.presence = presence_topic(group, worker)
        super().__init__(model, broker, "+", identifier=f"livetok-{group}-{worker}",
                         extra_subscriptions=[(f"{PREFIX}/{WORKERS_LEVEL}/{group}/+", 1)],
                         on_connect=self._announce, will=aiomqtt.Will(self.presence, b"", qos=1, retain=True),
                         **kwargs)
        self.members: set[str] = {worker}
        self.handoffs_in = 0  # streams this worker took over from another (or at start)
        self.handoffs_out = 0  # streams it gave up because a worker joined
        self._owned: set[str] = set()
        self._infos: dict[str, bytes] = {}  # every stream's retained info, fed when we take the stream
        self._others_ended: set[str] = set()  # streams of other workers seen ending (their header read)

    async def _announce(self, client: aiomqtt.Client) -> None:
        payload = json.dumps({"worker": self.worker, "pid": os.getpid(), "time": time.time()})
        await client.publish(self.presence, payload, qos=1, retain=True)

    async def __aexit__(self, *exc: Any) -> None:
        # a clean exit withdraws the presence itself (the will only fires on a dirty one)
        try:
            await asyncio.wait_for(self.link.publish(self.presence, b"", qos=1, retain=True), 2.0)
        except Exception as e:  # the broker may be gone: then the will does it
            log.info("worker %s: could not withdraw its presence: %s", self.worker, e)
        await super().__aexit__(*exc)

    def owns(self, stream: str) -> bool:
        return owner(stream, self.members) == self.worker

    def others_live(self) -> bool:
        # another worker's stream still announced: the group's work is not over, stay for a handoff
        return any(info for name, info in self._infos.items() if name not in self._owned)

    def others_ended(self) -> bool:
        # so a worker that owned no stream also ends when the group's streams have
        return bool(self._others_ended)

    def summary(self) -> WorkerSummary:
        return WorkerSummary.extending(
            super().summary(), worker=self.worker, group=self.group, members=sorted(self.members),
            streams_owned=sorted(self._owned), handoffs_in=self.handoffs_in, handoffs_out=self.handoffs_out)

    def _membership(self, topic: str, payload: bytes) -> None:
        name = topic.rsplit("/", 1)[-1]
        if name == self.worker:
            return  # always a member of our own group, whatever an old retained message says
        before = set(self.members)
        if payload:
            self.members.add(name)
        else:
            self.members.discard(name)
        if self.members != before:
            log.info("worker %s: group %s is now %s", self.worker, self.group, sorted(self.members))
            for stream in list(self._owned):
                if not self.owns(stream):
                    self._release(stream)

    def _release(self, stream: str) -> None:
        # the new owner starts from a keyframe; our state for it would only go stale
        self._owned.discard(stream)
        self.streams.pop(stream, None)
        self.handoffs_out += 1

    async def on_message(self, topic: str, payload: bytes) -> None:
        if topic.startswith(f"{PREFIX}/{WORKERS_LEVEL}/"):
            self._membership(topic, payload)
            return
        name = stream_from_topic(topic)
        is_info = topic.endswith("/info")
        if is_info:
            self._infos[name] = payload
        if not self.owns(name):
            if not is_info and _ends(payload):
                self._others_ended.add(name)
            await self.check_all_ended()  # another worker's stream ended or withdrawn: maybe all are over
            return
        if name not in self._owned:
            self._owned.add(name)
            self.handoffs_in += 1
            if not is_info and name in self._infos:
                self.feed_info(name, self._infos[name])
        await super().on_message(topic, payload)


# how the workers' summaries add up into one (`receive --workers W --json`): counts add, a latency
# is the slowest worker's (percentiles of parts do not combine exactly), rates add (the workers run
# at the same time), lists join
_MAX_KEYS = ("latency_ms_p50", "latency_ms_p99", "broker_downtime_s")
_SUM_RATE_KEYS = ("tokens_per_s", "bits_per_s")


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in sorted({k for d in parts for k in d}):
        values = [d[key] for d in parts if key in d]
        present = [v for v in values if v is not None]
        if key in _MAX_KEYS:
            out[key] = max(present) if present else None
        elif key in _SUM_RATE_KEYS:
            out[key] = round(sum(present), 1)
        elif all(isinstance(v, bool) for v in values):
            out[key] = all(values)  # e.g. `ended`: a stream handed over ended once, at its last owner
        elif all(isinstance(v, int) for v in values):
            out[key] = sum(values)
        elif all(isinstance(v, list) for v in values):
            out[key] = [x for v in values for x in v]
    return out


def merge_summaries(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """One summary of a worker group from each worker's (`receive --worker ... --json`): totals as
    `livetok receive` reports them, `streams` merged (a stream handed from one worker to another
    adds up), and `workers`: each worker's own summary by name."""
    total = _merge([{k: v for k, v in d.items() if k not in ("streams", "members", "streams_owned")} for d in docs])
    names = sorted({n for d in docs for n in d.get("streams", {})})
    total["streams"] = {n: _merge([d["streams"][n] for d in docs if n in d.get("streams", {})]) for n in names}
    total["workers"] = {str(d.get("worker", i)): d for i, d in enumerate(docs)}
    total.pop("worker", None)
    total.pop("group", None)
    if docs and "group" in docs[0]:
        total["group"] = docs[0]["group"]
    total["ended_by"] = ",".join(sorted({str(d.get("ended_by")) for d in docs}))  # one reason, or each worker's
    return total
