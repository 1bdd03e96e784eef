"""livetok streams as Foxglove channels: recorded to MCAP, served live on Foxglove's WebSocket protocol, or both.

Two channels per camera (docs/ROBOTICS.md):

* ``/<camera>/tokens`` — schema ``livetok.TokenPacket`` (JSON Schema, message encoding ``json``): the frame's
  packet exactly as the wire carries it (``packet``, base64 of the packet bytes made by stream/wire), with its
  header fields spelt out beside it (frame index, capture timestamp, keyframe flag, k, grid, model id, FSQ
  levels) so that Foxglove's panels can plot and filter them without our code.
* ``/<camera>/preview`` — ``foxglove.CompressedImage`` (JPEG): the frame as a receiver decodes it, for stock
  viewers. It is a picture to look at, lossy on top of the tokens; the tokens channel is the data.

Every message is stamped with the capture time of its frame (the sender's clock, one clock for all the cameras
of a publisher): the MCAP log time, and ``timestamp`` inside both messages. Each camera has a ``frame_id``
(ROS's name for the camera's coordinate frame; default ``<camera>``) in both messages and in the channel
metadata.

One `foxglove.Context` per feed holds the channels; an MCAP writer and a WebSocket server are sinks of that
context, so a frame logged once goes to both. foxglove-sdk is imported here only when a feed is made
(`optional.require`): the core install does not need it.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from livetok.engine.runtime import Runtime

from .errors import StreamError
from .optional import require
from .wire import TokenPacket, peek_header

log = logging.getLogger(__name__)

TOKEN_SCHEMA_NAME = "livetok.TokenPacket"
SCHEMA_VERSION = "1"  # of the tokens message below; channel metadata `livetok_schema`
PREVIEW_SCHEMA_NAME = "foxglove.CompressedImage"
DEFAULT_FOXGLOVE = ("127.0.0.1", 8765)  # Foxglove's default WebSocket address
JPEG_QUALITY = 85

# The tokens message. Field names follow Foxglove's conventions (`timestamp` as {sec, nsec}, `frame_id`).
TOKEN_SCHEMA: dict[str, Any] = {
    "title": TOKEN_SCHEMA_NAME,
    "description": "One frame of a livetok stream: its token packet (docs/PACKET.md) and the header fields of it",
    "type": "object",
    "properties": {
        "timestamp": {"type": "object", "title": "time", "description": "capture time (the sender's clock)",
                      "properties": {"sec": {"type": "integer", "minimum": 0},
                                     "nsec": {"type": "integer", "minimum": 0, "maximum": 999999999}}},
        "camera": {"type": "string", "description": "the stream name"},
        "frame_id": {"type": "string", "description": "the camera's coordinate frame"},
        "frame_index": {"type": "integer", "description": "frame number in the stream, from 0"},
        "keyframe": {"type": "boolean", "description": "decodable without the frames before it"},
        "end_of_stream": {"type": "boolean"},
        "k": {"type": "integer", "description": "tokens kept (positions sent)"},
        "n": {"type": "integer", "description": "positions of the frame's grid"},
        "grid_h": {"type": "integer"}, "grid_w": {"type": "integer"},
        "width": {"type": "integer"}, "height": {"type": "integer"},
        "model_id": {"type": "string", "description": "16 hex digits: the weights and config that made it"},
        "fsq_levels": {"type": "array", "items": {"type": "integer"}},
        "wire_version": {"type": "integer", "description": "packet version (2, 3: entropy-coded)"},
        "bits": {"type": "integer", "description": "8 x the packet's length"},
        "packet": {"type": "string", "contentEncoding": "base64",
                   "description": "the packet bytes (docs/PACKET.md); version 2 decodes in stream order from a "
                                  "keyframe"},
    },
    "required": ["timestamp", "camera", "frame_id", "frame_index", "keyframe", "model_id", "packet"],
}


def tokens_topic(camera: str) -> str:
    return f"/{camera}/tokens"


def preview_topic(camera: str) -> str:
    return f"/{camera}/preview"


def parse_host_port(text: str | None, default: tuple[str, int] = DEFAULT_FOXGLOVE) -> tuple[str, int]:
    """"HOST:PORT", ":PORT", "HOST" or None -> (host, port); one-line ValueError otherwise."""
    if not text:
        return default
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, str(default[1])
    try:
        p = int(port)
    except ValueError:
        raise ValueError(f"bad address {text!r}: use HOST:PORT, e.g. 127.0.0.1:8765") from None
    if not 0 <= p <= 65535:
        raise ValueError(f"bad address {text!r}: port {p} is not in 0..65535")
    return host or default[0], p


def token_message(packet: TokenPacket | None, data: bytes, camera: str, frame_id: str,
                  levels: Sequence[int]) -> dict[str, Any]:
    """The tokens message of one packet (`packet`: its decoded form, for k, the grid, and in version 3 the
    frame index, timestamp and model id, which a non-keyframe's header does not carry in full; None: from
    the header alone, e.g. an end-of-stream packet)."""
    h = peek_header(data)
    src = packet if packet is not None else h
    ts = src.timestamp_us
    return {
        "timestamp": {"sec": ts // 1_000_000, "nsec": (ts % 1_000_000) * 1000},
        "camera": camera,
        "frame_id": frame_id,
        "frame_index": src.frame_index,
        "keyframe": h.keyframe,
        "end_of_stream": h.end_of_stream,
        "k": src.k,
        "n": src.grid_h * src.grid_w,
        "grid_h": src.grid_h, "grid_w": src.grid_w,
        "width": src.width, "height": src.height,
        "model_id": src.model_id.hex(),
        "fsq_levels": [int(v) for v in levels],
        "wire_version": h.version,
        "bits": 8 * len(data),
        "packet": base64.b64encode(data).decode("ascii"),
    }


def packet_bytes(message: bytes | str) -> bytes:
    """The packet bytes of a tokens message as read back (the JSON text of one message)."""
    try:
        doc = json.loads(message)
        return base64.b64decode(doc["packet"], validate=True)
    except (ValueError, KeyError, TypeError) as e:
        raise StreamError(f"not a {TOKEN_SCHEMA_NAME} message: {e}") from None


class _KeyframeOnSubscribe:
    """foxglove ServerListener: a client that subscribes to a camera's tokens asks that camera for a keyframe,
    so it can decode from the next packet on (version 2 packets decode only in order from a keyframe).
    Called on the SDK's threads: it only raises a flag per camera."""

    def __init__(self, feed: FoxgloveFeed) -> None:
        self.feed = feed

    def on_subscribe(self, client: Any, channel: Any) -> None:
        for cam in self.feed.cameras.values():
            if channel.topic == cam.tokens_topic:
                cam.keyframe_wanted.set()
                cam.subscribers += 1

    def on_unsubscribe(self, client: Any, channel: Any) -> None:
        for cam in self.feed.cameras.values():
            if channel.topic == cam.tokens_topic:
                cam.subscribers = max(0, cam.subscribers - 1)


class CameraChannels:
    """One camera's two channels in a feed; `log` writes one frame to them."""

    def __init__(self, feed: FoxgloveFeed, camera: str, frame_id: str, meta: dict[str, Any]) -> None:
        fg = feed.fg
        self.feed = feed
        self.camera = camera
        self.frame_id = frame_id
        self.tokens_topic = tokens_topic(camera)
        self.preview_topic = preview_topic(camera)
        self.keyframe_wanted = threading.Event()
        self.subscribers = 0  # live clients subscribed to the tokens channel
        self.frames = 0
        # channel metadata is string -> string: lists and numbers as JSON text
        md = {"camera": camera, "frame_id": frame_id, "livetok_schema": SCHEMA_VERSION,
              **{k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}}
        schema = fg.Schema(name=TOKEN_SCHEMA_NAME, encoding="jsonschema", data=json.dumps(TOKEN_SCHEMA).encode())
        self.tokens = fg.Channel(self.tokens_topic, schema=schema, message_encoding="json", context=feed.context,
                                 metadata=md)
        self.preview = (feed.channels.CompressedImageChannel(self.preview_topic, context=feed.context,
                                                             metadata={"camera": camera, "frame_id": frame_id})
                        if feed.preview else None)

    def log(self, packet: TokenPacket | None, data: bytes, frame: np.ndarray | None) -> None:
        """One frame: its tokens message and (with a decoded `frame`, uint8 RGB) its preview, both stamped
        with the packet's capture time."""
        ts = (packet if packet is not None else peek_header(data)).timestamp_us  # a v3 header's may be relative
        t_ns = ts * 1000
        msg = token_message(packet, data, self.camera, self.frame_id, self.feed.levels)
        self.tokens.log(json.dumps(msg, separators=(",", ":")).encode(), log_time=t_ns)
        if self.preview is not None and frame is not None:
            import cv2

            ok, jpg = cv2.imencode(".jpg", np.ascontiguousarray(frame[..., ::-1]),
                                   [cv2.IMWRITE_JPEG_QUALITY, self.feed.jpeg_quality])
            if ok:
                m = self.feed.messages
                self.preview.log(m.CompressedImage(timestamp=m.Timestamp(sec=ts // 1_000_000,
                                                                         nsec=(ts % 1_000_000) * 1000),
                                                   frame_id=self.frame_id, data=jpg.tobytes(), format="jpeg"),
                                 log_time=t_ns)
        self.frames += 1

    def close(self) -> None:
        self.tokens.close()
        if self.preview is not None:
            self.preview.close()


class FoxgloveFeed:
    """Channels of several cameras, written to an MCAP file and/or served live.

    Args:
        model: the model whose packets are logged (its FSQ levels and identity go into the messages).
        mcap: write an MCAP file here (overwritten).
        serve: serve live on Foxglove's WebSocket protocol at (host, port) (port 0: any free port; `port`
            then says which).
        preview: also log the decoded frames as JPEG `foxglove.CompressedImage`.
        compression: MCAP chunk compression, "zstd" (default), "lz4" or None.

    Use as a context manager; `camera(name, ...)` adds a camera's channels.
    """

    def __init__(self, model: Runtime, *, mcap: str | os.PathLike[str] | None = None,
                 serve: tuple[str, int] | None = None, preview: bool = True, jpeg_quality: int = JPEG_QUALITY,
                 compression: str | None = "zstd", name: str = "livetok") -> None:
        if mcap is None and serve is None:
            raise ValueError("a Foxglove feed needs an MCAP file, a server address, or both")
        self.fg = require("foxglove", "foxglove-sdk", "Foxglove and MCAP output")
        self.channels = require("foxglove.channels", "foxglove-sdk", "Foxglove and MCAP output")
        self.messages = require("foxglove.messages", "foxglove-sdk", "Foxglove and MCAP output")
        self.model = model
        self.levels = [int(v) for v in model.cfg.fsq.levels]
        self.preview = preview
        self.jpeg_quality = int(jpeg_quality)
        self.context = self.fg.Context()
        self.cameras: dict[str, CameraChannels] = {}
        self.mcap_path = Path(mcap) if mcap is not None else None
        self._writer: Any = None
        self._server: Any = None
        if self.mcap_path is not None:
            fmcap = require("foxglove.mcap", "foxglove-sdk", "MCAP output")
            comp = {"zstd": fmcap.MCAPCompression.Zstd, "lz4": fmcap.MCAPCompression.Lz4, None: None}[compression]
            # compression_threads=0: compress on the logging thread (the encoder has the cores)
            opts = fmcap.MCAPWriteOptions(compression=comp, profile="", compression_threads=0)
            self._writer = self.fg.open_mcap(self.mcap_path, allow_overwrite=True, context=self.context,
                                             writer_options=opts)
        if serve is not None:
            host, port = serve
            try:
                self._server = self.fg.start_server(name=name, host=host, port=port, context=self.context,
                                                    server_listener=_KeyframeOnSubscribe(self))
            except Exception as e:  # the SDK raises its own error types (address in use, bad host)
                self.close()
                raise StreamError(f"cannot serve Foxglove on {host}:{port}: {e}") from None

    @property
    def port(self) -> int | None:
        """The live server's port (None without a server)."""
        return int(self._server.port) if self._server is not None else None

    def camera(self, name: str, frame_id: str | None = None, meta: dict[str, Any] | None = None) -> CameraChannels:
        """The channels of camera `name` (made on first use); `meta` goes into the channel metadata (the .ltk
        header's keys: fps, width, height, preset...)."""
        if name not in self.cameras:
            base = {"model_id": self.model.identity.hex(), "preset": self.model.cfg.name, "fsq_levels": self.levels}
            self.cameras[name] = CameraChannels(self, name, frame_id or name, {**base, **(meta or {})})
        return self.cameras[name]

    def write_metadata(self, name: str, meta: dict[str, Any]) -> None:
        """An MCAP metadata record (string values; others as JSON text)."""
        if self._writer is not None:
            self._writer.write_metadata(name, {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()})

    def close(self) -> None:
        for cam in self.cameras.values():
            cam.close()
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> FoxgloveFeed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FoxgloveSink:
    """A pipeline sink (stream/pipeline.py `PacketSink`) that logs one camera's packets to a feed. It decodes
    them (its own receiver, in order, off the event loop) for the preview and for k: the preview is what a
    receiver shows. A client subscribing to the tokens channel asks for a keyframe (`take_keyframe_request`)."""

    def __init__(self, model: Runtime, channels: CameraChannels) -> None:
        from .session import ReceiverSession

        self.channels = channels
        self.rx = ReceiverSession(model)
        self.packets = 0

    async def send(self, data: bytes) -> None:
        import asyncio

        await asyncio.to_thread(self.log, data)

    def log(self, data: bytes) -> None:
        h = peek_header(data)
        if h.end_of_stream and h.n == 0:
            self.channels.log(None, data, None)
            return
        packet, frame = self.rx.decode_packet(data)
        self.channels.log(packet, data, frame)
        self.packets += 1

    def take_keyframe_request(self) -> bool:
        if self.channels.keyframe_wanted.is_set():
            self.channels.keyframe_wanted.clear()
            return True
        return False
