"""Run test code inside a fresh loopback-only network namespace (ecosystem.md §8: WebRTC tests must
keep their traffic on loopback; outside such a namespace Chromium and aioice would offer the
machine's other interfaces).

The namespace belongs to one new thread (Linux namespaces are per task): sockets that thread and
the threads and processes it starts open (the event loop, its executor, Chromium) live in it, and
the namespace disappears with them. It needs CAP_SYS_ADMIN (CI runs as root); elsewhere the tests
that need it are skipped with the reason.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

__all__ = ["enter_loopback_netns", "run_in_loopback_netns"]

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def _lo_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, ifr)[:18])[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def _interfaces() -> list[str]:
    return [name for _, name in socket.if_nameindex()]


def enter_loopback_netns() -> str | None:
    """Move the calling thread (and every thread and process it starts from now on) into a new
    network namespace with only `lo`, up. Returns None on success, else why it could not."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        return "needs CAP_SYS_ADMIN: run as root" if err == errno.EPERM else os.strerror(err)
    _lo_up()
    names = _interfaces()
    return None if names == ["lo"] else f"the new namespace is not loopback-only: {names}"


def run_in_loopback_netns(fn: Callable[[], T], timeout_s: float = 300.0) -> T:
    """Call `fn()` in a new thread whose network namespace has only `lo` (up); return its result,
    re-raise its exception, or skip the test when namespaces cannot be made here."""
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            why = enter_loopback_netns()
            if why is not None:
                out["skip"] = f"cannot make a loopback-only network namespace ({why})"
                return
            out["value"] = fn()
        except BaseException as e:
            out["error"] = e

    t = threading.Thread(target=target, name="loopback-netns", daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        pytest.fail(f"the test in the loopback namespace ran past {timeout_s:g} s")
    if "skip" in out:
        pytest.skip(out["skip"])
    if "error" in out:
        raise out["error"]
    return out["value"]  # type: ignore[no-any-return]
