"""Run-time settings of the WebRTC transport and of its signalling endpoint (frozen, validated)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PORT = 8765  # `webrtc recv`; `webrtc serve` defaults to 8080 (DESIGN.md §6)
# aiortc assumes 65,536 bytes when the remote SDP carries no max-message-size, and browsers differ:
# a packet above this is refused before it reaches the channel
MAX_MESSAGE_BYTES = 65_536


@dataclass(frozen=True)
class WebRTCConfig:
    """How a peer connection is made and what its data channel promises.

    Attributes:
        unreliable: unordered, no retransmissions (a lost packet stays lost and the receiver asks for
            a keyframe); the default is reliable and ordered, like MQTT at QoS 1.
        ice_timeout_s: give up (with a message saying why) if ICE has not connected by then.
        ice_addresses: local addresses ICE offers; None = automatic (see `webrtc/ice.py`).
        buffer_high_bytes: stop sending while the channel holds more than this (aiortc's SCTP is pure
            Python and slow; queueing on it only adds latency, and an unreliable channel drops bursts).
        gap_timeout_s: receiver: a missing packet counts as lost after this long.
        unordered_gap_timeout_s: the same when the sender's channel is unordered: a lost packet is
            never retransmitted and reordering is rare, so waiting long only delays the keyframe.
    """

    unreliable: bool = False
    ice_timeout_s: float = 10.0
    ice_addresses: tuple[str, ...] | None = None
    buffer_high_bytes: int = 256 * 1024
    gap_timeout_s: float = 0.3
    unordered_gap_timeout_s: float = 0.15

    def __post_init__(self) -> None:
        if not self.ice_timeout_s > 0:
            raise ValueError(f"the ICE timeout must be > 0 s, got {self.ice_timeout_s}")
        if self.buffer_high_bytes < MAX_MESSAGE_BYTES:
            raise ValueError(f"buffer_high_bytes must be >= {MAX_MESSAGE_BYTES}, got {self.buffer_high_bytes}")
        if not (self.gap_timeout_s > 0 and self.unordered_gap_timeout_s > 0):
            raise ValueError(f"gap timeouts must be > 0, got {self.gap_timeout_s}, {self.unordered_gap_timeout_s}")


@dataclass(frozen=True)
class SignalingConfig:
    """The HTTP offer/answer endpoint (issue 7: loopback by default, bounded requests, optional token).

    Attributes:
        host: address to bind; 127.0.0.1 unless told otherwise, so nothing off this host can reach it.
        port: TCP port (0 = any free one).
        token: when set, every offer must carry it (`Authorization: Bearer T` or `?token=T`); the
            demo page itself is served without it and passes on the `?token=` it was opened with.
        max_request_bytes: larger request bodies are refused (413) before they are read; an SDP
            offer is a few kB.
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = None
    max_request_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"bad port {self.port}: use 0-65535")
        if self.max_request_bytes < 1024:
            raise ValueError(f"max_request_bytes must be >= 1024, got {self.max_request_bytes}")
        if self.token is not None and not self.token:
            raise ValueError("an empty signalling token protects nothing: leave it unset or give one")


def parse_listen(spec: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """`HOST:PORT`, `[V6]:PORT`, `:PORT` or `PORT` -> (host, port)."""
    s = spec.strip()
    host, port_s = default_host, s
    if s.startswith("["):
        end = s.find("]")
        if end < 0 or not s[end + 1:].startswith(":"):
            raise ValueError(f"bad address {spec!r}: use HOST:PORT, e.g. 127.0.0.1:{DEFAULT_PORT}")
        host, port_s = s[1:end], s[end + 2:]
    elif ":" in s:
        host, port_s = s.rsplit(":", 1)
        host = host or default_host
    try:
        port = int(port_s)
    except ValueError:
        raise ValueError(f"bad address {spec!r}: use HOST:PORT, e.g. 127.0.0.1:{DEFAULT_PORT}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"bad port in {spec!r}: use 0-65535")
    return host, port
