"""Which local addresses ICE offers, and a connection wait that ends with a reason, not a hang.

aioice leaves 127.0.0.1 and ::1 out of its host candidates. On a loopback-only host (a sandbox, a
network namespace, a CI container) that means an offer with no candidate at all, and the connection
then sits in state "new" for ever: no error, no event. We choose the addresses ourselves:

- both peers on this host (the signalling address is loopback): 127.0.0.1 only, so the media and
  data never touch another interface;
- otherwise aioice's own list plus 127.0.0.1 (a loopback pair simply fails between two machines,
  and it is what connects a sandbox that has nothing else).

The choice is a context variable read by a wrapper around `aioice.ice.get_host_addresses`, so
peers with different needs can live in one process: it applies to the candidates gathered inside
the `offering(...)` block (aiortc gathers in `setLocalDescription`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ipaddress
import re
from collections.abc import Callable, Iterator
from typing import Any

import aioice.ice
from aiortc import RTCPeerConnection

from ..errors import StreamError

LOOPBACK = ("127.0.0.1",)

_addresses: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar("livetok_ice", default=None)
_aioice_host_addresses: Callable[[bool, bool], list[str]] = aioice.ice.get_host_addresses


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    chosen = _addresses.get()
    if chosen is None:
        return _aioice_host_addresses(use_ipv4, use_ipv6)
    return [a for a in chosen if (use_ipv6 if ":" in a else use_ipv4)]


aioice.ice.get_host_addresses = _host_addresses  # idempotent: it defers to the original unless told


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def auto_addresses(peer_host: str | None) -> tuple[str, ...]:
    """The addresses to offer to a peer reached (or listening) at `peer_host`."""
    if peer_host is not None and is_loopback(peer_host):
        return LOOPBACK
    found = [a for a in _aioice_host_addresses(True, False) if a not in LOOPBACK]
    return (*found, *LOOPBACK)


@contextlib.contextmanager
def offering(addresses: tuple[str, ...]) -> Iterator[None]:
    """Gather ICE candidates on exactly `addresses` inside this block."""
    token = _addresses.set(addresses)
    try:
        yield
    finally:
        _addresses.reset(token)


def candidates(sdp: str) -> list[str]:
    """The `address port` of every candidate line of an SDP (for messages)."""
    return [f"{m.group(1)}:{m.group(2)}" for m in re.finditer(r"a=candidate:\S+ \d+ \S+ \d+ (\S+) (\d+)", sdp)]


def require_candidates(sdp: str, role: str) -> None:
    if not candidates(sdp):
        raise StreamError(f"WebRTC {role}: no ICE candidate could be gathered (this host has no usable network "
                          f"address; on a loopback-only host use a loopback signalling address)")


async def wait_connected(pc: RTCPeerConnection, timeout_s: float, peer: str,
                         extra: asyncio.Event | None = None) -> None:
    """Wait until the connection is up (and `extra`, e.g. a data channel's open, is set), or raise
    StreamError naming the candidates that were tried."""
    done = asyncio.Event()
    failed: list[str] = []

    def check(*_: Any) -> None:
        if pc.connectionState in ("failed", "closed"):
            failed.append(pc.connectionState)
            done.set()
        elif pc.connectionState == "connected" and (extra is None or extra.is_set()):
            done.set()

    pc.on("connectionstatechange", check)
    waiter = asyncio.create_task(extra.wait()) if extra is not None else None
    if waiter is not None:
        waiter.add_done_callback(check)
    check()
    try:
        await asyncio.wait_for(done.wait(), timeout_s)
    except TimeoutError:
        failed.append(f"no connection within {timeout_s:g} s")
    finally:
        if waiter is not None:
            waiter.cancel()
        pc.remove_listener("connectionstatechange", check)
    if failed:
        local = candidates(pc.localDescription.sdp) if pc.localDescription else []
        remote = candidates(pc.remoteDescription.sdp) if pc.remoteDescription else []
        raise StreamError(
            f"WebRTC to {peer}: ICE {failed[0]} (ICE state {pc.iceConnectionState}; local candidates "
            f"{', '.join(local) or 'none'}; remote candidates {', '.join(remote) or 'none'}): "
            f"the peers cannot reach each other on these addresses"
        )
