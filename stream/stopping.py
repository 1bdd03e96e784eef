"""SIGINT and SIGTERM as a request to end a live run cleanly (what Ctrl-C, systemd and docker send).

The first signal sets an asyncio event: a publisher stops capturing, sends what it has captured
and the end-of-stream packet; a receiver stops taking frames and finalises its recording; both
print their summary. The run then exits with 128 + the signal's number (130 for SIGINT, 143 for
SIGTERM: the status a shell reports for a process killed by that signal), so scripts still see
that it was stopped. A second signal restores the default action and delivers itself again: the
process dies at once (for a shutdown that hangs, e.g. on a broker that is gone). A stopped run that
has not ended after `stall_after_s` says so once, naming what it still waits on (stream/waiting_on.py).

    async with StopSignals() as stop:
        await run(..., stop=stop.event)
    sys.exit(stop.exit_status or 0)
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence
from types import FrameType, TracebackType
from typing import Any

from .waiting_on import waiting_on

__all__ = ["STOP_SIGNALS", "StopSignals"]

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_Handler = Callable[[int, FrameType | None], Any] | int | None


class StopSignals:
    """Within `async with`, the first of `signals` sets `event` (and `signum`); a second one kills.

    Args:
        signals: the signals that stop the run.
        on_stop: called with the signal's name when the first one arrives (e.g. to print
            "stopping...: finishing the stream").
        stall_after_s: after the first signal, how long the run may take to end before a warning
            names what it is still waiting on (None: never).
    """

    def __init__(self, signals: Sequence[signal.Signals] = STOP_SIGNALS,
                 on_stop: Callable[[str], Any] | None = None, stall_after_s: float | None = 10.0) -> None:
        self.signals = tuple(signals)
        self.on_stop = on_stop
        self.stall_after_s = stall_after_s
        self.event = asyncio.Event()
        self.signum: int | None = None
        self._previous: dict[signal.Signals, _Handler] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: threading.Timer | None = None

    @property
    def name(self) -> str | None:
        """"SIGINT" / "SIGTERM" once stopped by one, else None."""
        return None if self.signum is None else signal.Signals(self.signum).name

    @property
    def exit_status(self) -> int | None:
        """128 + the signal's number once stopped by one (the shell's convention), else None."""
        return None if self.signum is None else 128 + self.signum

    def _received(self, sig: signal.Signals) -> None:
        if self.signum is not None:
            # the second signal: the clean shutdown is taking too long for whoever sends it
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
            return
        self.signum = int(sig)
        self.event.set()
        if self.on_stop is not None:
            self.on_stop(sig.name)
        if self.stall_after_s is not None:
            # a thread, not a loop timer: it must also speak when the loop itself is blocked (a call
            # that never returns); a daemon, so it never holds a process that is ending
            self._timer = threading.Timer(self.stall_after_s, self._stalled, (sig.name,))
            self._timer.daemon = True
            self._timer.start()

    def _stalled(self, name: str) -> None:
        lines = waiting_on(self._loop)
        log.warning("still finishing %g s after %s (send it again to quit at once); waiting on: %s",
                    self.stall_after_s, name, "; ".join(lines) or "nothing in Python (a native call)")

    async def __aenter__(self) -> StopSignals:
        loop = asyncio.get_running_loop()
        for sig in self.signals:
            previous = signal.getsignal(sig)
            try:
                loop.add_signal_handler(sig, self._received, sig)
            except (NotImplementedError, RuntimeError):  # not the main thread, or no signals (Windows)
                log.debug("cannot handle %s here: it keeps its default action", sig.name)
                continue
            self._previous[sig] = previous
        self._loop = loop
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._loop is not None
        if self._timer is not None:  # the run ended: nothing to report
            self._timer.cancel()
        for sig, previous in self._previous.items():
            self._loop.remove_signal_handler(sig)
            if previous is not None:  # None: set outside Python; remove_signal_handler left the default
                signal.signal(sig, previous)  # what was there before (asyncio.run's own SIGINT handler)
        self._previous.clear()
