"""WebRTC (aiortc): token packets on a data channel between peers, HTTP offer/answer signalling,
and the browser webcam demo (`livetok webrtc serve`)."""

from __future__ import annotations

from .channel_receiver import ChannelReceiver
from .channel_sink import ChannelSink
from .config import SignalingConfig, WebRTCConfig, parse_listen
from .receiver import ReceiverEndpoint, webrtc_recv
from .sender import SenderPeer, webrtc_send

__all__ = [
    "ChannelReceiver",
    "ChannelSink",
    "ReceiverEndpoint",
    "SenderPeer",
    "SignalingConfig",
    "WebRTCConfig",
    "parse_listen",
    "webrtc_recv",
    "webrtc_send",
]
