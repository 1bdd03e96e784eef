"""`webrtc send`, `webrtc recv` and `webrtc serve`: token streaming between WebRTC peers, and the browser
webcam demo."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from .options import (
    add_model_args,
    add_sender_args,
    open_model,
    required_size,
    sender_config,
)
from .output import console
from .streaming import (
    IDLE_TIMEOUT_S,
    capture_options,
    check_sources,
    record_options,
    report_received,
    run_sender,
    until_stopped,
)

if TYPE_CHECKING:
    from livetok.stream.webrtc import WebRTCConfig

    from .options import Subparsers


def register(sub: Subparsers) -> None:
    wr = sub.add_parser("webrtc", help="WebRTC: token streaming between peers, the browser webcam demo"
                        ).add_subparsers(dest="webrtc", metavar="MODE")
    ws = wr.add_parser("send", help="tokenize a live source and stream the packets to a `webrtc recv` peer")
    ws.add_argument("--source", required=True, help="PATH, rtsp://..., webcam:N or synthetic[:PRESET]")
    ws.add_argument("--signal", dest="signal_url", required=True,
                    help="the receiver's offer URL, e.g. http://127.0.0.1:8765/offer")
    ws.add_argument("--stream", default="webrtc", help="stream name shown by the receiver")
    ws.add_argument("--unreliable", action="store_true",
                    help="unordered channel without retransmissions: a lost packet is repaired by a keyframe")
    ws.add_argument("--size", default=None, help="resize frames to WIDTHxHEIGHT (e.g. 256x192)")
    ws.add_argument("--as-fast-as-possible", action="store_true", help="do not pace a file at its frame rate")
    ws.add_argument("--loop", action="store_true", help="start a file again when it ends")
    ws.add_argument("--max-frames", type=int, default=None)
    ws.add_argument("--json", action="store_true", help="print the final statistics as JSON")
    add_sender_args(ws, signal_flag="--router-signal")
    add_model_args(ws)
    ws.set_defaults(func=cmd_webrtc_send)
    wv = wr.add_parser("recv", help="listen for a `webrtc send` peer; decode, record and report its stream")
    wv.add_argument("--listen", default="127.0.0.1:8765",
                    help="HOST:PORT of the signalling endpoint (default 127.0.0.1:8765: this host only)")
    wv.add_argument("--out", default=None, help="write the decoded video to this MP4, each frame at its capture "
                                                 "time (the file lasts as long as the stream); '-': live, as "
                                                 "Matroska on stdout for a player (`--out - | ffplay -`)")
    wv.add_argument("--show", action="store_true", help=argparse.SUPPRESS)  # refused in one line: SHOW_UNSUPPORTED
    wv.add_argument("--timeout", type=float, default=IDLE_TIMEOUT_S, metavar="SEC",
                    help=f"stop after SEC without a frame, whether no sender has come yet or the stream went "
                         f"quiet (default {IDLE_TIMEOUT_S:g}; 0: wait for ever). Exit status 1 when no frame was "
                         f"decoded")
    wv.add_argument("--max-frames", type=int, default=None)
    wv.add_argument("--json", action="store_true")
    add_model_args(wv)
    wv.set_defaults(func=cmd_webrtc_recv)
    wd = wr.add_parser("serve", help="the browser webcam demo: original | reconstruction | token heat-map")
    wd.add_argument("--host", default="127.0.0.1", help="address to bind "
                    "(default 127.0.0.1: this host only; browsers allow cameras only on localhost or HTTPS)")
    wd.add_argument("--port", type=int, default=8080)
    wd.add_argument("--size", default="256x192", help="largest frame the server tokenizes (aspect kept)")
    wd.add_argument("--target-kbps", type=float, default=40.0,
                    help="initial rate target in kbit/s (the page has a slider and shows the range reachable "
                         "at the frame rate the server runs at; a target beyond it runs at the bound)")
    add_sender_args(wd)
    add_model_args(wd)
    wd.set_defaults(func=cmd_webrtc_serve)
    for w in (ws, wv, wd):
        w.add_argument("--token", default=None,
                       help="signalling token (or $LIVETOK_SIGNAL_TOKEN); a receiver/server with one refuses "
                            "requests without it")
        w.add_argument("--ice-timeout", type=float, default=10.0, help="give up if ICE has not connected in SEC")


def _webrtc_cfg(a: argparse.Namespace) -> WebRTCConfig:
    from livetok.stream.webrtc import WebRTCConfig

    return WebRTCConfig(unreliable=getattr(a, "unreliable", False), ice_timeout_s=a.ice_timeout)


def _signal_token(a: argparse.Namespace) -> str | None:
    # a flag beats the environment; an empty value means no token
    token: str | None = a.token or os.environ.get("LIVETOK_SIGNAL_TOKEN") or None
    return token


def cmd_webrtc_send(a: argparse.Namespace) -> int:
    from livetok.stream.webrtc import webrtc_send

    sender, capture, cfg = sender_config(a), capture_options(a), _webrtc_cfg(a)
    check_sources([a.source])
    model = open_model(a)
    return run_sender(
        lambda stop, on_stats: webrtc_send(
            model, a.source, a.signal_url, sender, cfg, capture, stream=a.stream, token=_signal_token(a),
            on_stats=on_stats, stop=stop),
        lambda res: (f"sent {res.frames_published} frames to {a.signal_url}: {res.fps} fps, "
                     f"{res.frames_dropped} dropped, {res.keyframe_requests} keyframe requests, "
                     f"{res.tokens_per_frame} tokens/frame, {res.bits_per_s / 1000:.1f} kbit/s"),
        a.json)


def cmd_webrtc_recv(a: argparse.Namespace) -> int:
    from livetok.stream.webrtc import SignalingConfig, parse_listen, webrtc_recv

    host, port = parse_listen(a.listen)
    sig = SignalingConfig(host=host, port=port, token=_signal_token(a))
    cfg = _webrtc_cfg(a)
    con = console()
    record = record_options(a, on_status=con.print)
    model = open_model(a)
    res, status = until_stopped(lambda stop: webrtc_recv(
        model, sig, cfg, record,
        on_listening=lambda url: con.print(f"listening for a sender: livetok webrtc send --signal {url}"),
        stop=stop))
    return report_received(res, status, a.json)


def cmd_webrtc_serve(a: argparse.Namespace) -> int:
    import asyncio

    from livetok.stream.webrtc import SignalingConfig
    from livetok.stream.webrtc.demo_server import DemoConfig, serve

    size = required_size(a.size)
    sig = SignalingConfig(host=a.host, port=a.port, token=_signal_token(a))
    demo = DemoConfig(size=size, target_kbps=a.target_kbps, ice_timeout_s=a.ice_timeout)
    sender = sender_config(a)
    model = open_model(a)
    asyncio.run(serve(model, sender, sig, demo, on_listening=lambda url: console().print(
        f"livetok webcam demo: open {url} (Ctrl-C stops)")))
    return 0
