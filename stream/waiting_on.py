"""What a run that is slow to end is waiting on, in a few short lines: each asyncio task's innermost
await and each busy worker thread's current call (`waiting_on`). A stopped run that has not ended
after a while says so with these lines (stream/stopping.py), so a shutdown that hangs names its
cause instead of leaving only "stopping..." behind.

Python 3.11 has no asyncio call graph (3.14's `asyncio.capture_call_graph`), so a task's awaits are
followed by hand through `cr_await` / `gi_yieldfrom` / `ag_await`; an `async for` over an async
generator ends the chain at the loop that iterates it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = ["waiting_on"]

_MAX_DEPTH = 64  # awaits followed per task (a chain is a handful deep; the bound guards a cycle)
_FRAMES_SHOWN = 3  # innermost frames named per task or thread


def _where(frame: FrameType) -> str:
    path = Path(frame.f_code.co_filename)
    # short and still findable: the package directory and the file ("stream/mqtt.py", "aiomqtt/client.py")
    return f"{path.parent.name}/{path.name}:{frame.f_lineno} {frame.f_code.co_name}"


def _await_chain(coro: Any) -> list[FrameType]:
    frames: list[FrameType] = []
    for _ in range(_MAX_DEPTH):
        if coro is None:
            break
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None) or getattr(coro, "ag_frame", None)
        if frame is not None:
            frames.append(frame)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None) or getattr(coro, "ag_await", None)
    return frames


def _task_lines(loop: asyncio.AbstractEventLoop) -> list[str]:
    lines = []
    for task in sorted(asyncio.all_tasks(loop), key=lambda t: t.get_name()):
        frames = _await_chain(task.get_coro())
        if not frames:
            continue
        shown = " <- ".join(_where(f) for f in reversed(frames[-_FRAMES_SHOWN:]))
        lines.append(f"task {task.get_name()}: {shown}")
    return lines


def _thread_lines() -> list[str]:
    names = {t.ident: t.name for t in threading.enumerate()}
    me, main = threading.get_ident(), threading.main_thread().ident
    lines = []
    for ident, top in sys._current_frames().items():
        if ident == me:
            continue
        stack = [f for f, _ in traceback.walk_stack(top)]  # innermost first
        # a worker thread is busy while a work item runs on it (concurrent/futures/thread.py); an idle one
        # waits for the next item and says nothing
        runs = [i for i, f in enumerate(stack)
                if f.f_code.co_name == "run" and Path(f.f_code.co_filename).match("concurrent/futures/thread.py")]
        if runs:
            inner = stack[:runs[0]]
        elif ident == main and not top.f_code.co_filename.endswith("selectors.py"):
            inner = stack  # the main thread stuck outside the event loop's select (a join, a blocking call)
        else:
            continue
        shown = " <- ".join(_where(f) for f in inner[:_FRAMES_SHOWN])
        lines.append(f"thread {names.get(ident, ident)}: {shown}")
    return lines


def waiting_on(loop: asyncio.AbstractEventLoop | None) -> list[str]:
    """One line per pending task of `loop` (None: no tasks) and per busy thread: where each is now,
    innermost first. Safe to call from another thread than the loop's (it only reads)."""
    lines: list[str] = []
    if loop is not None and not loop.is_closed():
        # RuntimeError: the task set changed while it was read (the threads still tell)
        with contextlib.suppress(RuntimeError):
            lines += _task_lines(loop)
    return lines + _thread_lines()
