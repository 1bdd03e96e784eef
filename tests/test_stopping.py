"""The clean stop (stream/stopping.py): a run slow to end after the signal names what it waits on, and
a cancelled task ends even where Python 3.11's wait_for swallows the cancellation
(stream/cancelling.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time

import pytest

from livetok.stream.cancelling import cancel_and_wait
from livetok.stream.stopping import StopSignals
from livetok.stream.waiting_on import waiting_on


def test_waiting_on_names_tasks_and_busy_threads() -> None:
    release = threading.Event()

    def blocking_call_here() -> None:
        release.wait(5.0)

    async def awaits_forever_here(ev: asyncio.Event) -> None:
        await ev.wait()

    async def main() -> list[str]:
        ev = asyncio.Event()
        task = asyncio.create_task(awaits_forever_here(ev), name="the-stuck-one")
        worker = asyncio.ensure_future(asyncio.to_thread(blocking_call_here))
        await asyncio.sleep(0.1)
        loop = asyncio.get_running_loop()
        lines = await loop.run_in_executor(None, waiting_on, loop)  # read from another thread, as the timer does
        release.set()
        ev.set()
        await asyncio.gather(task, worker)
        return lines

    lines = asyncio.run(main())
    stuck = [line for line in lines if line.startswith("task the-stuck-one:")]
    assert len(stuck) == 1, lines
    # innermost first: the Event's wait, then the coroutine that awaits it
    assert "asyncio/locks.py" in stuck[0] and "awaits_forever_here" in stuck[0].split(" <- ")[1], stuck[0]
    threads = [line for line in lines if line.startswith("thread ") and "blocking_call_here" in line]
    assert len(threads) == 1, lines
    assert "threading.py" in threads[0].split(": ", 1)[1].split(" <- ")[0], threads[0]  # inside Event.wait
    assert not any("waiting_on" in line for line in lines if line.startswith("thread "))  # not the reader itself


def test_a_stop_that_does_not_end_says_what_it_waits_on(caplog: pytest.LogCaptureFixture) -> None:
    async def finish_the_stream_here() -> None:
        await asyncio.sleep(0.6)  # longer than the stall limit below

    async def main() -> StopSignals:
        async with StopSignals(signals=[signal.SIGUSR2], stall_after_s=0.2) as stop:
            os.kill(os.getpid(), signal.SIGUSR2)
            await stop.event.wait()
            await finish_the_stream_here()
        return stop

    with caplog.at_level(logging.WARNING, logger="livetok.stream.stopping"):
        stop = asyncio.run(main())
    assert stop.name == "SIGUSR2" and stop.exit_status == 128 + signal.SIGUSR2
    said = [r.getMessage() for r in caplog.records if "still finishing" in r.getMessage()]
    assert len(said) == 1, said
    assert said[0].startswith("still finishing 0.2 s after SIGUSR2 (send it again to quit at once); waiting on: ")
    assert "finish_the_stream_here" in said[0] and "tasks.py" in said[0], said[0]  # asyncio.sleep's frame


def test_a_quick_stop_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with StopSignals(signals=[signal.SIGUSR2], stall_after_s=0.3) as stop:
            os.kill(os.getpid(), signal.SIGUSR2)
            await stop.event.wait()

    with caplog.at_level(logging.WARNING, logger="livetok.stream.stopping"):
        asyncio.run(main())
        time.sleep(0.5)  # past the limit: the timer must not speak for a run that ended
    assert not [r for r in caplog.records if "still finishing" in r.getMessage()]


def test_cancel_and_wait_ends_a_task_whose_wait_for_swallowed_the_cancel() -> None:
    """The hang behind a stopped publisher that never ended: a loop around `wait_for` (aiomqtt's publish)
    cancelled just as what it waits for completes goes on (Python 3.11, gh-86296)."""

    async def main() -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        acks: list[asyncio.Future[None]] = []

        async def reader() -> None:
            while True:
                acks.append(loop.create_future())
                await asyncio.wait_for(acks[-1], 5.0)

        task = asyncio.create_task(reader())
        await asyncio.sleep(0.01)
        acks[-1].set_result(None)  # the broker's ack arrives...
        task.cancel()  # ...in the same turn of the loop as the stop
        done, _ = await asyncio.wait([task], timeout=0.3)
        survived = not done
        await cancel_and_wait(task)
        return survived, task.cancelled()

    survived, cancelled = asyncio.run(main())
    if sys.version_info < (3, 12):
        assert survived  # the one cancel was swallowed: `await task` would wait forever
    assert cancelled


def test_cancel_and_wait_raises_what_a_task_failed_with() -> None:
    async def fails() -> None:
        raise ValueError("the task's own error")

    async def main() -> None:
        task = asyncio.create_task(fails())
        await asyncio.sleep(0)
        await cancel_and_wait(task, None)

    with pytest.raises(ValueError, match="the task's own error"):
        asyncio.run(main())

    async def quiet() -> bool:
        task = asyncio.create_task(fails())
        await asyncio.sleep(0)
        await cancel_and_wait(task, raising=False)
        return isinstance(task.exception(), ValueError)

    assert asyncio.run(quiet())
