"""What the CLI says: one JSON document on stdout (`--json`), lines and live tables for people on stderr,
and the exit statuses."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # rich loads when a command prints, not for `livetok --help`
    from rich.console import Console
    from rich.live import Live
    from rich.progress import Progress
    from rich.table import Table

    from livetok.stream.pipeline import PipelineSnapshot

EXIT_ERROR = 2  # an error said in one line (`livetok: error: ...`), or no command given
EXIT_DAMAGED = 1  # `decode`: the video was written, but frames were lost to damage in the file
# `receive` / `webrtc recv` when the run decoded no frame: a script must not read an empty recording
# as success (a signal's 128 + N, and errors' 2, come first)
EXIT_NO_FRAMES = 1


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()


def console() -> Console:
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


def progress() -> Progress:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    con = console()
    # off when nobody watches (a pipe, a log file): a stopped bar would leave a blank line there
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=con, transient=True, disable=not con.is_interactive)


def warn(text: str | None) -> None:
    """One warning line on stderr (a rate target below what the stream can reach, ...)."""
    if text:
        console().print(f"[yellow]warning[/]: {text}")


def fmt_ms(v: float | None) -> str:
    """A latency for people: "–" when no frame has been timed yet (never "None")."""
    return "–" if v is None else f"{v:g}"


# the live table's columns. Headers short enough that the table fits an 80-column terminal whole; the
# full names are the JSON keys
_STAGE_COLUMNS = ("stage", "frames", "fps", "p50 ms", "p99 ms", "queue", "dropped")


def _stats_table(d: PipelineSnapshot) -> Table:
    from rich.table import Table

    t = Table(title=f"{d.frames_published} published, {d.frames_dropped} dropped, "
                    f"p50 {fmt_ms(d.latency_ms_p50)} ms, {d.bits_per_s / 1000:.1f} kbit/s")
    for header in _STAGE_COLUMNS:
        t.add_column(header, justify="left" if header == "stage" else "right", no_wrap=True)
    for s in d.stages:
        t.add_row(s.stage, str(s.count), str(s.fps), fmt_ms(s.latency_ms_p50), fmt_ms(s.latency_ms_p99),
                  str(s.queue_depth), str(s.dropped))
    return t


class LiveTable:
    """The live per-stage table of a sender on stderr (only when stderr is a terminal)."""

    def __init__(self) -> None:
        self.con = console()
        self.live: Live | None = None
        if self.con.is_terminal:
            from rich.live import Live

            self.live = Live(console=self.con, refresh_per_second=4, transient=True)
            self.live.start()

    def update(self, d: PipelineSnapshot) -> None:
        if self.live is None:
            return
        self.live.update(_stats_table(d))

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
