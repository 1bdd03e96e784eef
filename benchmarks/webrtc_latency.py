"""Capture-to-decoded latency over WebRTC at 256×192 (issue 6), for docs/BENCHMARKS.md:

- peers: `webrtc send` -> `webrtc recv` in one process on loopback (an eval clip played at 30 fps;
  latency = receiver's decode time minus the sender's capture timestamp, per frame);
- browser: headless Chromium runs the demo page in probe mode: its "camera" is a canvas whose cells
  spell a frame code; when a reconstruction is decoded the server sends back the camera frame it was
  decoded for (instead of the reconstruction's pixels, same moment, same path), and the page reads
  the code, so each latency is browser capture -> VP8 -> server (tokenize, decode) -> VP8 -> shown.
  The same run with the real clip as the fake camera writes the screenshot.

Run it inside a loopback-only network namespace (as root), niced if something else runs:

    unshare -n sh -c 'ip link set lo up; OMP_NUM_THREADS=1 python -m livetok.bench.webrtc_latency --json'
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from livetok.engine.config import SenderConfig
from livetok.engine.results import JsonResult, optional
from livetok.engine.runtime import Runtime
from livetok.stream.capture import CaptureOptions
from livetok.stream.stages import percentile
from livetok.stream.webrtc import ReceiverEndpoint, SignalingConfig, WebRTCConfig, webrtc_send
from livetok.stream.webrtc.demo_server import DemoConfig, DemoServer
from livetok.stream.webrtc.signaling import start_site

from .model_args import add_model_args, model_from_args

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT.parent / "shared" / "data" / "eval" / "asl-yes.mkv"
SIZE = (256, 192)
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--allow-loopback-in-peer-connection",
                "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


@dataclass(frozen=True)
class Percentiles(JsonResult):
    n: int
    p50: float | None
    p99: float | None


@dataclass(frozen=True, kw_only=True)
class PeersLatency(JsonResult):
    """`webrtc send` -> `webrtc recv` on loopback: capture-to-decoded latency per frame, and the stream."""

    mode: str  # "reliable" or "unreliable"
    latency_ms: Percentiles
    frames_captured: int
    frames_dropped_before_encoder: int
    frames_decoded: int
    frames_lost: int
    fps_decoded: float
    kbit_per_s: float
    tokens_per_frame: float


@dataclass(frozen=True, kw_only=True)
class BrowserLatency(JsonResult):
    """The demo page in headless Chromium, probe mode: browser capture -> server -> shown, per frame."""

    round_trip_ms: Percentiles
    server_ms_p50: float
    server_ms_p99: float
    frames_decoded_by_server: int
    fps_returned: float
    console_errors: list[str]


@dataclass(frozen=True, kw_only=True)
class WebRTCLatency(JsonResult):
    size: str
    preset: str
    clip: str
    peers: list[PeersLatency] | None = optional()
    browser: BrowserLatency | None = optional()


def _pcts(values: list[float]) -> Percentiles:
    return Percentiles(len(values), round(percentile(values, 50), 1) if values else None,
                       round(percentile(values, 99), 1) if values else None)


async def peers(model: Runtime, seconds: float, unreliable: bool) -> PeersLatency:
    cfg = WebRTCConfig(unreliable=unreliable)
    async with ReceiverEndpoint(model, SignalingConfig(port=0), cfg) as ep:
        lat: list[float] = []

        async def collect() -> None:
            async for f in ep.receiver:
                lat.append(f.latency_ms)

        task = asyncio.create_task(collect())
        sent = await webrtc_send(model, str(CLIP), ep.url, SenderConfig(), cfg,
                                 CaptureOptions(loop=True, max_frames=int(seconds * 30), size=SIZE))
        await asyncio.wait_for(task, 30)
        summary = ep.receiver.summary()
    return PeersLatency(mode="unreliable" if unreliable else "reliable", latency_ms=_pcts(lat),
                        frames_captured=sent.frames_captured, frames_dropped_before_encoder=sent.frames_dropped,
                        frames_decoded=summary.frames_decoded, frames_lost=summary.frames_lost,
                        fps_decoded=round(summary.frames_decoded / seconds, 2), kbit_per_s=sent.bits_per_s / 1000,
                        tokens_per_frame=sent.tokens_per_frame)


async def browser(model: Runtime, seconds: float, chromium: str, screenshot: Path | None,
                  target_kbps: float) -> BrowserLatency:
    from playwright.async_api import async_playwright

    sys.path.insert(0, str(ROOT))
    from tests.webcam_y4m import write_y4m

    tmp = Path(tempfile.mkdtemp(prefix="livetok-bench-"))
    cam = write_y4m(CLIP, tmp / "cam.y4m", frames=90, size=SIZE)
    server = DemoServer(model, SenderConfig(), SignalingConfig(port=0), DemoConfig(size=SIZE, target_kbps=target_kbps))
    site = await start_site(server.app, "127.0.0.1", 0)
    errors: list[str] = []
    try:
        async with async_playwright() as p:
            b = await p.chromium.launch(executable_path=chromium,
                                        args=[*BROWSER_ARGS, f"--use-file-for-fake-video-capture={cam}"])
            if screenshot is not None:  # the real clip as the camera, for the picture
                page = await b.new_page(viewport={"width": 1280, "height": 760})
                await page.goto(site.url + "/")
                await page.wait_for_function("window.livetok.reconFrames >= 20", timeout=120_000)
                await asyncio.sleep(12.0)  # let the chart fill a little
                await page.screenshot(path=str(screenshot))
                await page.close()
            page = await b.new_page(viewport={"width": 1280, "height": 760})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            await page.goto(site.url + "/?probe=1")
            await page.wait_for_function("window.livetok.probe.latencies.length >= 3", timeout=120_000)
            await page.evaluate("window.livetok.probe.latencies = []")  # the start-up frames do not count
            await asyncio.sleep(seconds)
            s = await page.evaluate("({...window.livetok, history: undefined})")
            hist = await page.evaluate("window.livetok.history")
            await b.close()
    finally:
        await site.close()
        shutil.rmtree(tmp, ignore_errors=True)
    span = (hist[-1]["t"] - hist[0]["t"]) / 1000 if len(hist) > 1 else 0.0
    # `s` and `hist` are the page's own JSON (window.livetok)
    return BrowserLatency(round_trip_ms=_pcts(s["probe"]["latencies"]), server_ms_p50=s["serverMsP50"],
                          server_ms_p99=s["serverMsP99"], frames_decoded_by_server=s["serverDecoded"],
                          fps_returned=round((len(hist) - 1) / span, 2) if span else 0.0, console_errors=errors)


async def run(a: argparse.Namespace) -> WebRTCLatency:
    model = model_from_args(a)
    res = WebRTCLatency(size=f"{SIZE[0]}x{SIZE[1]}", preset=model.cfg.name, clip=CLIP.name)
    if a.only != "browser":
        res = dataclasses.replace(res, peers=[await peers(model, a.seconds, False),
                                              await peers(model, a.seconds, True)])
    chromium = shutil.which("chromium")
    if chromium is not None and a.only != "peers":
        shot = Path(a.screenshot) if a.screenshot else None
        res = dataclasses.replace(res, browser=await browser(model, a.seconds, chromium, shot, a.target_kbps))
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(p)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--screenshot", default=None, help="also write a screenshot of the demo page here")
    p.add_argument("--target-kbps", type=float, default=40.0,
                   help="the demo page's starting rate target (the screenshot: `webrtc serve`'s default, within "
                        "reach at 256x192); the probe runs at full rate")
    p.add_argument("--only", choices=["peers", "browser"], default=None)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    res = asyncio.run(run(a)).to_json()
    print(json.dumps(res, indent=2) if a.json else res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
