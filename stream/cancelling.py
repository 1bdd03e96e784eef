"""Cancel a task and be sure it ended: `cancel_and_wait`.

`task.cancel(); await task` can wait forever on Python 3.11: `asyncio.wait_for` returns its result
instead of raising when the cancellation arrives just as what it waits for completes (gh-86296,
fixed in 3.12 by the rewrite over `asyncio.timeout`), and aiomqtt's `publish` waits for the broker's
acknowledgement with `wait_for`. A loop around such a call (a control reader that republishes the
stream's info, a keyframe requester) swallows the one cancellation it was sent and runs on.
Measured: 1 run in 12 of tests/test_live_cli.py's two-publishers test hung in its stop this way.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["cancel_and_wait"]

RESEND_S = 0.25  # how long a cancelled task may run on before it is cancelled again


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None, raising: bool = True) -> None:
    """Cancel each of `tasks` (None: skipped) and return once all have ended, cancelling again any that
    runs on after `RESEND_S`. With `raising`, raises the first error a task ended with instead of being
    cancelled (as `await task` would; without it the caller reads each task's outcome). A cancellation
    of the caller itself propagates."""
    ours = [t for t in tasks if t is not None]
    pending = {t for t in ours if not t.done()}
    while pending:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=RESEND_S)
    if raising:
        for t in ours:
            if not t.cancelled() and (e := t.exception()) is not None:
                raise e
