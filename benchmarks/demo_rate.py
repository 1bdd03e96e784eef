"""The webcam demo's rate slider, measured (issue 14): the demo server (`DemoServer`, the code
`livetok webrtc serve` runs) answers a real aiortc peer that plays the page's part: a real eval clip
as its camera track at 30 fps in real time (looped, as Chromium loops its fake camera), the
reconstruction and heat-map tracks received, and the slider's target messages and the per-frame
stats on the real data channel. For each target it reports the target the server aimed at, the rate
achieved over every 10-second window of the stream (the bits of the frames captured in the window,
summed here from each frame's stats, not the server's figure) and the figures the page shows.

    unshare -n sh -c 'ip link set lo up; python -m livetok.bench.demo_rate --json'
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from livetok.engine.config import SenderConfig
from livetok.engine.results import JsonResult
from livetok.engine.runtime import Runtime
from livetok.stream.video_io import read_video
from livetok.stream.webrtc import SignalingConfig
from livetok.stream.webrtc.demo_server import DemoConfig, DemoServer
from livetok.stream.webrtc.ice import LOOPBACK, offering, wait_connected
from livetok.stream.webrtc.signaling import post_offer, start_site

from .model_args import add_model_args, model_from_args

__all__ = ["ClipCamera", "demo_rate"]

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT.parent / "shared" / "data" / "eval" / "asl-yes.mkv"
SIZE = (256, 192)
WINDOW_S = 10.0  # the span a target must be held over
VIDEO_CLOCK = 90_000


class ClipCamera(MediaStreamTrack):
    """A camera track that plays a clip's frames at `fps` in real time, looping."""

    kind = "video"

    def __init__(self, frames: Sequence[np.ndarray], fps: float = 30.0) -> None:
        super().__init__()
        self.frames, self.fps = frames, fps
        self.sent = 0
        self._t0 = time.monotonic()

    async def recv(self) -> av.VideoFrame:
        await asyncio.sleep(max(0.0, self._t0 + self.sent / self.fps - time.monotonic()))
        out = av.VideoFrame.from_ndarray(np.ascontiguousarray(self.frames[self.sent % len(self.frames)]),
                                         format="rgb24")
        out.pts, out.time_base = round(self.sent * VIDEO_CLOCK / self.fps), Fraction(1, VIDEO_CLOCK)
        self.sent += 1
        return out


async def _drain(track: MediaStreamTrack) -> None:
    with contextlib.suppress(MediaStreamError):
        while True:
            await track.recv()  # the page shows them; here they are only taken off the receiver


@dataclass(frozen=True, kw_only=True)
class RatePhase(JsonResult):
    """One target's stretch: what the server aimed at and could reach, the rate achieved over every 10 s
    window of capture times, what the page showed, and the server's target messages of the stretch."""

    requested_kbps: float
    target_kbps: float  # what the server aimed at (the request, within reach)
    reachable_kbps: list[float] | None
    fps: float
    windows: int
    achieved_kbps_mean: float | None
    achieved_kbps_max: float | None
    achieved_kbps_min: float | None
    worst_vs_target: float | None
    # what the page shows: its live (1 s) figure and, where the server sends it, the 10 s mean
    page_kbps_1s_mean: float | None
    page_kbps_1s_max: float | None
    page_kbps_10s_last: float | None
    tokens_per_frame: float | None
    told: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # the server's target messages


def _phase(msgs: list[dict[str, Any]], t0: float, t1: float, requested: float) -> RatePhase:
    """One target's stretch (the frames whose stats arrived in [t0, t1)): the achieved rate over
    every 10 s window of their capture times (1 s apart), as rate control counts time. `msgs` are the
    page's data-channel messages (JSON) with their arrival time `t`."""
    frames = [m for m in msgs if m["type"] == "frame" and t0 <= m["t"] < t1]
    t = np.array([m["timestamp_us"] / 1e6 for m in frames])
    bits = np.array([m["bits"] for m in frames], dtype=np.float64)
    # a window starts at a frame's capture and must end before the last frame's
    starts = np.arange(t[0], t[-1] - WINDOW_S + 1e-9, 1.0) if len(t) else np.zeros(0)
    windows = [bits[(t >= s) & (t < s + WINDOW_S)].sum() / WINDOW_S / 1000 for s in starts]
    last = frames[-1] if frames else {}
    aimed = float(last.get("target_kbps", float("nan")))
    return RatePhase(
        requested_kbps=requested,
        target_kbps=round(aimed, 2),
        reachable_kbps=last.get("reachable_kbps"),
        fps=round((len(frames) - 1) / (t[-1] - t[0]), 2) if len(frames) > 1 else 0.0,
        windows=len(windows),
        achieved_kbps_mean=round(float(np.mean(windows)), 2) if windows else None,
        achieved_kbps_max=round(float(np.max(windows)), 2) if windows else None,
        achieved_kbps_min=round(float(np.min(windows)), 2) if windows else None,
        worst_vs_target=round(float(max(abs(w / aimed - 1) for w in windows)), 4) if windows else None,
        page_kbps_1s_mean=round(float(np.mean([m["kbps"] for m in frames])), 2) if frames else None,
        page_kbps_1s_max=round(float(np.max([m["kbps"] for m in frames])), 2) if frames else None,
        page_kbps_10s_last=last.get("kbps_mean"),
        tokens_per_frame=round(float(np.mean([m["tokens"] for m in frames])), 1) if frames else None,
    )


async def demo_rate(model: Runtime, clip: Path, targets: Sequence[float], settle_s: float, record_s: float,
                    size: tuple[int, int] = SIZE, sender: SenderConfig | None = None, fps: float = 30.0
                    ) -> list[RatePhase]:
    """Run the demo server and one aiortc peer; for each target: send it, wait `settle_s`, record
    `record_s` seconds (a little over 10 for one window). The camera plays at `fps`. Returns one phase
    per target (see `_phase`), with the server's target messages of its stretch under `told`."""
    video, _ = read_video(clip)
    frames = [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in video]
    server = DemoServer(model, sender or SenderConfig(), SignalingConfig(port=0),
                        DemoConfig(size=size, target_kbps=targets[0]))
    site = await start_site(server.app, "127.0.0.1", 0)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    msgs: list[dict[str, Any]] = []
    drains: list[asyncio.Task[None]] = []
    try:
        channel = pc.createDataChannel("livetok-stats")
        opened = asyncio.Event()
        channel.on("open", opened.set)

        @channel.on("message")
        def on_message(message: str | bytes) -> None:
            if isinstance(message, str):
                msgs.append({**json.loads(message), "t": time.monotonic()})

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            drains.append(asyncio.create_task(_drain(track)))

        pc.addTransceiver(ClipCamera(frames, fps), direction="sendrecv")  # the camera; the reconstruction comes back
        pc.addTransceiver("video", direction="recvonly")  # the heat-map
        with offering(LOOPBACK):
            await pc.setLocalDescription(await pc.createOffer())
        answer = await post_offer(site.url + "/offer", {"sdp": pc.localDescription.sdp, "type": "offer"})
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        await wait_connected(pc, 10.0, "the demo server")
        await asyncio.wait_for(opened.wait(), 10.0)
        out = []
        for kbps in targets:
            channel.send(json.dumps({"type": "target", "kbps": kbps}))
            await asyncio.sleep(settle_s)
            t0 = time.monotonic()
            await asyncio.sleep(record_s)
            told = [m for m in msgs if m["type"] == "target" and m["t"] >= t0 - settle_s]
            out.append(dataclasses.replace(_phase(msgs, t0, time.monotonic(), kbps), told=told))
        return out
    finally:
        for task in drains:
            task.cancel()
        await pc.close()
        await server._shutdown(server.app)
        await site.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(p)
    p.add_argument("--clip", default=str(CLIP))
    p.add_argument("--targets", type=float, nargs="+", default=[12.0, 40.0, 100.0], help="kbit/s, in order")
    p.add_argument("--settle", type=float, default=3.0, help="seconds under a new target before recording")
    p.add_argument("--record", type=float, default=20.0, help="seconds recorded per target (> 10)")
    p.add_argument("--fps", type=float, default=30.0, help="the camera's frame rate")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    if a.record <= WINDOW_S:
        p.error(f"--record must be over {WINDOW_S:g} s (one window of capture times)")
    if not Path(a.clip).is_file():
        p.error(f"no such clip: {a.clip}")
    model = model_from_args(a)
    phases = asyncio.run(demo_rate(model, Path(a.clip), a.targets, a.settle, a.record, fps=a.fps))
    res = [{k: v for k, v in p.to_json().items() if k != "told"} for p in phases]
    print(json.dumps(res, indent=2) if a.json else res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
