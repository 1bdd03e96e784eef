"""What the live commands share (`publish`/`receive`, `webrtc`, the robot transports): broker and source
options, a clean stop on SIGINT/SIGTERM, and the receiver's summary."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar

from .options import parse_size
from .output import EXIT_NO_FRAMES, LiveTable, console, fmt_ms, print_json, warn

if TYPE_CHECKING:
    import asyncio

    from livetok.stream.broker_url import BrokerConfig
    from livetok.stream.capture import CaptureOptions
    from livetok.stream.live import RecordOptions

# `receive` and `webrtc recv` end after this many seconds without a frame (--timeout): a receiver
# whose publisher was killed, or never came, ends on its own instead of waiting for ever
IDLE_TIMEOUT_S = 30.0


def add_broker_args(p: argparse.ArgumentParser, many_streams: bool = False) -> None:
    # not required: `publish`/`receive` may go over --zenoh/--foxglove/--mcap instead (cli/robotics.py),
    # and robotics.wants_robot says in one line when none of them is given
    p.add_argument("--broker", required=False, action="append",
                   help="mqtt://[user[:pass]@]host[:port] or mqtts://...; repeat it for the nodes of one broker "
                        "cluster: a lost node fails over to the next and the persistent session resumes there")
    if many_streams:
        p.add_argument("--stream", required=True, action="append", help="stream name (one, or one per --source)")
    else:
        p.add_argument("--stream", required=True, help="stream name (receive: '+' for every stream)")
    p.add_argument("--ca-file", default=None, help="CA certificate for mqtts://")
    p.add_argument("--password-file", default=None, help="read the broker password from this file")
    p.add_argument("--connect-timeout", type=float, default=10.0, metavar="SEC",
                   help="give up (exit 2, one line naming the broker and the cause) if the first connection "
                        "has not succeeded in SEC (default: 10); once connected, a lost broker is retried "
                        "without end")


def brokers(a: argparse.Namespace) -> list[BrokerConfig]:
    """Every --broker (the nodes of one cluster, tried in order on failure), parsed."""
    from livetok.stream.broker_url import parse_broker_url

    if a.connect_timeout <= 0:
        raise ValueError(f"--connect-timeout must be > 0 seconds, got {a.connect_timeout:g}")
    return [parse_broker_url(url, ca_file=a.ca_file, password_file=a.password_file) for url in a.broker]


def stream_names(sources: list[str], streams: list[str]) -> list[str]:
    """One stream name per --source: as given, or NAME-0, NAME-1, ... from one --stream NAME."""
    if len(streams) == len(sources):
        return streams
    if len(streams) == 1:
        return [f"{streams[0]}-{i}" for i in range(len(sources))]
    raise ValueError(f"{len(sources)} --source for {len(streams)} --stream: give one --stream, or one per --source")


def check_sources(sources: Sequence[str]) -> None:
    """Refuse a missing or unreadable file, a malformed webcam:N or an unknown synthetic preset in
    one line before the model loads and the broker is reached (what encode and demo do, by the
    same function); a camera or URL that cannot be opened is said in one line when capture starts."""
    from livetok.stream.sources import frame_total

    for source in sources:
        frame_total(source)


def idle_timeout(a: argparse.Namespace) -> float | None:
    """`--timeout SEC` as the receiver's idle timeout (None: 0, wait for ever)."""
    if a.timeout < 0:
        raise ValueError(f"--timeout must be >= 0 seconds (0: wait for ever), got {a.timeout:g}")
    return float(a.timeout) or None


class Ending(Protocol):
    """A run's summary that can say why the run ended (`ended_by`)."""

    def ended(self, by: str) -> Self: ...


class Documented(Protocol):
    """A run's summary as its --json document (engine/results.py `JsonResult`)."""

    def to_json(self) -> dict[str, Any]: ...


class SentSummary(Ending, Documented, Protocol):
    """A sender's summary (publish, webrtc send, the robot transports): why it ended, its warnings, its JSON."""

    @property
    def ended_by(self) -> str | None: ...

    @property
    def warnings(self) -> list[str] | None: ...


E = TypeVar("E", bound=Ending)
S = TypeVar("S", bound=SentSummary)


def until_stopped(work: Callable[[asyncio.Event], Awaitable[E]]) -> tuple[E, int | None]:
    """Run `work(stop_event)` with SIGINT and SIGTERM as a clean stop (stream/stopping.py): the run
    finishes its streams and returns its summary, with `ended_by` the signal's name. Returns the
    summary and the exit status the signal asks for (128 + its number), or None."""
    import asyncio

    from livetok.stream.stopping import StopSignals

    con = console()

    def said(name: str) -> None:
        con.print(f"{name}: stopping: finishing the stream(s) (send it again to quit at once)")

    async def run() -> tuple[E, StopSignals]:
        async with StopSignals(on_stop=said) as stop:
            return await work(stop.event), stop

    res, stop = asyncio.run(run())
    if stop.name is not None:
        res = res.ended(stop.name)
    return res, stop.exit_status


def run_sender(work: Callable[[asyncio.Event, Callable[..., Any]], Awaitable[S]], line: Callable[[S], str],
               as_json: bool) -> int:
    """A sending command's run: `work(stop_event, on_stats)` under a live table and a clean stop on a
    signal; then its summary `line`, its warnings and, with --json, its document. Returns the exit status."""
    table = LiveTable()
    try:
        res, status = until_stopped(lambda stop: work(stop, table.update))
    finally:
        table.stop()
    if res.ended_by is None:
        res = res.ended("end_of_source")
    console().print(line(res))
    for w in res.warnings or []:
        warn(w)
    if as_json:
        print_json(res.to_json())
    return status or 0


def capture_options(a: argparse.Namespace) -> CaptureOptions:
    """How a sender command reads its sources: --as-fast-as-possible, --loop, --max-frames, --size."""
    from livetok.stream.capture import CaptureOptions

    return CaptureOptions(realtime=not a.as_fast_as_possible, loop=a.loop, max_frames=a.max_frames,
                          size=parse_size(a.size))


def record_options(a: argparse.Namespace, on_status: Callable[[str], Any] | None = None) -> RecordOptions:
    """What a receiver command does with its frames: --out, --show (refused), --timeout, --max-frames."""
    from livetok.stream.live import RecordOptions

    return RecordOptions(out=a.out, show=a.show, idle_timeout_s=idle_timeout(a), max_frames=a.max_frames,
                         on_status=on_status)


# A receiver's summary for people reads its JSON document (`to_json()`): the same for every transport and for
# a worker group, whose summary is merged from its workers' documents (stream/workers.py `merge_summaries`)
def received_line(res: Mapping[str, Any]) -> str:
    """The receiver's summary for people (receive, webrtc recv)."""
    if not res["frames_received"]:
        return "no frames received"  # latencies and rates of nothing would read "None"
    return (f"received {res['frames_received']} frames, decoded {res['frames_decoded']}, lost {res['frames_lost']}, "
            f"keyframes {res['keyframes']}, latency p50 {fmt_ms(res['latency_ms_p50'])} ms p99 "
            f"{fmt_ms(res['latency_ms_p99'])} ms, {res['bits_per_s'] / 1000:.1f} kbit/s")


def report_received(res: Documented, status: int | None, as_json: bool) -> int:
    """A receiving command's ending: its summary for people, its JSON with --json, its exit status."""
    doc = res.to_json()
    print_received(doc)
    if as_json:
        print_json(doc)
    return received_status(doc, status)


def received_status(res: Mapping[str, Any], status: int | None) -> int:
    """A receiver's exit status: a signal's, else EXIT_NO_FRAMES when it decoded nothing, else 0."""
    return status or (0 if res["frames_decoded"] else EXIT_NO_FRAMES)


def print_received(res: Mapping[str, Any]) -> None:
    """A receiver's summary line and the files it wrote, on stderr."""
    con = console()
    con.print(received_line(res))
    for p in res["outputs"]:
        con.print(f"  wrote {p}")
