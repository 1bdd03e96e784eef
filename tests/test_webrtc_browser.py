"""The webcam demo in a real headless Chromium (Debian's, driven by Playwright), inside a
loopback-only network namespace: a real eval clip is the fake camera; the server tokenizes and
decodes it live, the page gets the reconstruction and heat-map back, the rate slider moves
tokens/frame, no console errors; and a browser without a camera gets a clear message."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from livetok.engine.config import BudgetConfig, SenderConfig
from livetok.engine.model import Tokenizer
from livetok.stream.webrtc import SignalingConfig
from livetok.stream.webrtc.demo_server import DemoConfig, DemoServer
from livetok.stream.webrtc.signaling import start_site

from .conftest import eval_clips
from .netns import run_in_loopback_netns
from .webcam_y4m import write_y4m

pytestmark = [pytest.mark.browser, pytest.mark.slow]

INSTALL_HINT = "Chromium is not installed: apt-get install chromium (the browser tests need a real browser)"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--allow-loopback-in-peer-connection"]
MIN_FRAMES = 10


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.fail(INSTALL_HINT)  # CI installs it (.ci/run): a missing browser is a failure, not a skip
    return path


SETTLE_FRAMES = 12  # frames under a new target before tokens/frame is read (rate control reacts in ~0.5 s)
READ_FRAMES = 5  # then tokens/frame is the mean of the last this many


async def tokens_at(page: Any, slider: int, target_kbps: float) -> float:
    """Move the slider, wait until SETTLE_FRAMES frames were coded under the new request (however
    slow the machine; the server may move a request out of reach to the nearest reachable rate),
    and return the mean tokens/frame of the last READ_FRAMES of them."""
    await page.locator("#rate").fill(str(slider))
    under = f"window.livetok.history.filter((p) => Math.abs(p.requested - {target_kbps}) < 0.01)"
    await wait_for(page, f"{under}.length >= {SETTLE_FRAMES}", 120, f"{SETTLE_FRAMES} frames at {target_kbps} kbit/s")
    tokens = await page.evaluate(f"{under}.slice(-{READ_FRAMES}).map((p) => p.tokens)")
    return sum(tokens) / len(tokens)


async def wait_for(page: Any, expr: str, timeout_s: float, what: str) -> None:
    try:
        await page.wait_for_function(expr, timeout=timeout_s * 1000)
    except Exception as e:
        state = await page.evaluate("JSON.stringify({...window.livetok, history: undefined})")
        raise AssertionError(f"{what} did not happen within {timeout_s:g} s: {state}") from e


def test_demo_round_trip_in_chromium(chromium: str, tiny_model: Tokenizer, tmp_path: Path) -> None:
    # small frames at 10 fps keep the camera, both VP8 legs and the model cheap on a 2-core machine
    cam = write_y4m(eval_clips()[0], tmp_path / "cam.y4m", frames=60, size=(128, 96), fps=10)
    # fixed budget: tokens/frame = rate * N * (rate control's scale), so the slider's effect is plain
    sender = SenderConfig(budget=BudgetConfig(policy="fixed", rate=0.25))

    async def main() -> dict[str, Any]:
        from playwright.async_api import async_playwright

        server = DemoServer(tiny_model, sender, SignalingConfig(port=0), DemoConfig(size=(128, 96), target_kbps=40.0))
        site = await start_site(server.app, "127.0.0.1", 0)
        errors: list[str] = []
        try:
            async with async_playwright() as p:
                browser = await p.chromium.launch(executable_path=chromium, args=[
                    *BROWSER_ARGS, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                    f"--use-file-for-fake-video-capture={cam}"])
                page = await browser.new_page(viewport={"width": 1280, "height": 760})
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(str(e)))
                await page.goto(site.url + "/")
                await wait_for(page, f"window.livetok.reconFrames >= {MIN_FRAMES} && "
                                     f"window.livetok.heatFrames >= {MIN_FRAMES} && "
                                     f"window.livetok.serverDecoded >= {MIN_FRAMES}", 120, "streaming")
                # the slider at its bottom, then its top: the rate target moves tokens/frame
                low = await tokens_at(page, 0, 2.0)
                reach_low = await page.locator("#reach").inner_text()
                target_low = await page.evaluate("window.livetok.targetKbps")
                high = await tokens_at(page, 1000, 400.0)
                stats = await page.evaluate("({...window.livetok, history: undefined})")
                await page.screenshot(path=str(tmp_path / "demo.png"))
                await browser.close()
        finally:
            await site.close()
        return {"stats": stats, "low": low, "high": high, "errors": errors, "reach_low": reach_low,
                "target_low": target_low, "server_decoded": sum(p.decoded for p in server.peers.values())}

    res = run_in_loopback_netns(lambda: asyncio.run(main()))
    s = res["stats"]
    assert s["state"] == "streaming", s
    assert s["serverDecoded"] >= MIN_FRAMES and s["reconFrames"] >= MIN_FRAMES and s["heatFrames"] >= MIN_FRAMES
    assert s["width"] == 128 and s["height"] == 96 and s["positions"] == 192
    assert res["high"] > 2 * res["low"], (res["low"], res["high"])
    # 400 kbit/s is beyond every token of 128x96 at 10 fps: the page shows the reachable range and
    # the server's target is the highest reachable rate; 2 kbit/s was below the lowest
    assert s["requestedKbps"] == pytest.approx(400.0)
    lo, hi = s["reachable"]
    assert 0 < lo < hi < 400.0 and s["targetKbps"] == pytest.approx(hi, rel=0.10), s
    assert "lowest reachable" in res["reach_low"], res["reach_low"]
    if res["target_low"] > 2.0:  # moved up to the floor (below ~10 fps it may not be)
        assert "2.0 kbit/s is out of reach" in res["reach_low"], res["reach_low"]
    assert res["errors"] == [], res["errors"]


def test_no_camera_gives_a_clear_state(chromium: str, tiny_model: Tokenizer) -> None:
    async def main() -> tuple[dict[str, Any], str, list[str]]:
        from playwright.async_api import async_playwright

        server = DemoServer(tiny_model, SenderConfig(), SignalingConfig(port=0))
        site = await start_site(server.app, "127.0.0.1", 0)
        errors: list[str] = []
        try:
            async with async_playwright() as p:
                # no fake device: the camera request is refused, as when a user says no
                browser = await p.chromium.launch(executable_path=chromium,
                                                  args=[*BROWSER_ARGS, "--deny-permission-prompts"])
                page = await browser.new_page()
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(str(e)))
                await page.goto(site.url + "/")
                await wait_for(page, "window.livetok.state === 'no-camera'", 30, "the no-camera state")
                stats = await page.evaluate("({...window.livetok, history: undefined})")
                notice = await page.locator("#nocamera").inner_text()
                visible = await page.locator("#nocamera").is_visible()
                await browser.close()
        finally:
            await site.close()
        assert visible
        return stats, notice, errors

    stats, notice, errors = run_in_loopback_netns(lambda: asyncio.run(main()))
    assert stats["state"] == "no-camera" and "Try again" in notice
    assert any(w in notice for w in ("blocked", "No camera", "not allowed")), notice
    assert errors == [], errors
