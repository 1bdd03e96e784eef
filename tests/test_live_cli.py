"""The live commands as a user runs them (issue 24): `livetok publish`, `receive`, `webrtc send` and
`webrtc recv` as real processes against a real mosquitto, stopped with real signals.

- bad sources are one line and exit 2, never an ExceptionGroup traceback (item 1);
- SIGINT and SIGTERM end a run cleanly: the end of stream goes out, the recording is finalised and
  as long as what was received, the summary and JSON are printed, exit 128 + signal (item 2);
- a waiting receiver says so, ends after its idle timeout (also when its publisher is killed) or
  once every stream of '+' has ended, and exits 1 when it decoded nothing (item 3);
- two publishers on one stream are warned about, `--workers 2 --json` prints one document, and a
  '+' receiver does not list an earlier run's stream (item 6).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from livetok.bench.cluster import wait_for_workers
from livetok.bench.localbroker import Broker, free_port
from livetok.cli import main
from livetok.stream.broker_url import parse_broker_url

from .conftest import BUNDLED_CLIP
from .netns import run_in_loopback_netns
from .recording import mp4_duration_s

pytestmark = pytest.mark.broker

CLI = [sys.executable, "-m", "livetok.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
FPS = 30.0  # the bundled clip's rate: a paced run's capture times step by 1/30 s
SMALL = ["--size", "128x96"]


def livetok(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def finish(p: subprocess.Popen[str], timeout: float = 60.0) -> tuple[int, str, str]:
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        err = kill(p)
        raise AssertionError(f"still running after {timeout:g} s: {p.args}\n{err[-3000:]}") from None
    return p.returncode, out, err


def kill(p: subprocess.Popen[str]) -> str:
    """Kill a process left running and return its stderr (not waiting on pipes that children it
    started may still hold open)."""
    if p.poll() is None:
        p.kill()
    try:
        return p.communicate(timeout=10)[1] or ""
    except subprocess.TimeoutExpired:
        return "(its output is held open by processes it started)"


def wait_until(cond: Callable[[], bool], timeout: float, what: str, *procs: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        for p in procs:
            assert p.poll() is None, f"{p.args} exited ({p.returncode}) while waiting for {what}: {p.communicate()}"
        assert time.monotonic() < deadline, f"no {what} after {timeout:g} s"
        time.sleep(0.05)


def subscribed(*receivers: subprocess.Popen[str]) -> None:
    """Until each receiver is subscribed: its first status line ("waiting for a publisher ...") comes
    2 s after it subscribed, however long loading the model took (a fixed sleep would not do on a
    busy machine, and a late joiner starts at a keyframe instead of the first frame)."""
    for rx in receivers:
        assert rx.stderr is not None
        line = rx.stderr.readline()
        assert line.startswith("waiting for a publisher"), (line, rx.poll())


def recording_started(path: Path) -> Callable[[], bool]:
    """True once the receiver has written its first frame (the MP4 is opened on the first frame)."""
    return lambda: path.exists() and path.stat().st_size > 0


class SessionWatch:
    """Watches a stream's info topic (in a thread of its own) until `n` publisher sessions have
    announced a captured frame (the info gains the frame size at the first frame)."""

    def __init__(self, url: str, stream: str, n: int) -> None:
        self.n = n
        self.sessions: set[str] = set()
        self.subscribed = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._watch(url, stream, n)), daemon=True)
        self.thread.start()
        assert self.subscribed.wait(30), "could not subscribe"

    async def _watch(self, url: str, stream: str, n: int) -> None:
        import aiomqtt

        b = parse_broker_url(url)
        async with aiomqtt.Client(b.host, b.port) as c:
            await c.subscribe(f"livetok/{stream}/info", qos=1)
            self.subscribed.set()
            async for m in c.messages:
                info = json.loads(bytes(m.payload)) if isinstance(m.payload, bytes) and m.payload else {}
                if "width" in info and "session" in info:
                    self.sessions.add(info["session"])
                if len(self.sessions) >= n:
                    return

    def wait(self, timeout: float, *procs: subprocess.Popen[str]) -> None:
        wait_until(lambda: not self.thread.is_alive(), timeout, f"{self.n} publisher(s) streaming", *procs)
        assert len(self.sessions) >= self.n, self.sessions  # the watch ended without them: it failed


def one_error_line(code: int, err: str, fragment: str) -> None:
    assert code == 2 and "Traceback" not in err and "ExceptionGroup" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("livetok: error:") and fragment in lines[0], err


def assert_playable(path: Path, frames: int) -> float:
    """The MP4 opens and holds `frames` frames spanning their capture times; returns its duration."""
    duration, written = mp4_duration_s(path)
    assert written == frames, (written, frames)
    # capture times step by 1/30 s (a frame the receiver missed leaves its predecessor on screen)
    assert frames / FPS * 0.9 - 0.1 <= duration <= frames / FPS * 1.25 + 0.1, (duration, frames)
    return duration


# ---------------------------------------------------------------------------------------------
# item 1: bad sources


def _bad_sources(tmp_path: Path) -> dict[str, tuple[str, str]]:
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a video\n" * 50, encoding="utf-8")
    return {  # case -> (source, fragment of the one line)
        "missing": (str(tmp_path / "nope.mp4"), "no such file"),
        "text": (str(text), "notes.txt is a text file, not a video"),
        "no-webcam": ("webcam:57", "no camera at index 57"),
        "bad-webcam": ("webcam:abc", "bad webcam source 'webcam:abc'"),
        "rtsp": ("rtsp://127.0.0.1:1/cam", "cannot open stream rtsp://127.0.0.1:1/cam"),
    }


def test_publish_refuses_bad_sources_in_one_line(mosquitto: Broker, tiny_weights: Path, tmp_path: Path) -> None:
    """The issue's 46-52-line ExceptionGroup tracebacks (exit 1): now one line and exit 2, as encode."""
    cases = _bad_sources(tmp_path)
    w = ["--weights", str(tiny_weights), "--threads", "1", *SMALL]
    procs = {name: livetok("publish", "--source", src, "--broker", mosquitto.url, "--stream", f"bad-{name}", *w)
             for name, (src, _) in cases.items()}
    for name, p in procs.items():
        code, out, err = finish(p)
        one_error_line(code, err, cases[name][1])
        assert out == ""


def test_webrtc_send_refuses_bad_sources_in_one_line(tiny_weights: Path, tmp_path: Path) -> None:
    """Files and `webcam:abc` are refused before signalling; a camera that cannot be opened is one
    line too once a real receiver has accepted the peer (its pipeline's capture fails)."""
    cases = _bad_sources(tmp_path)
    w = ["--weights", str(tiny_weights), "--threads", "1"]

    def run() -> dict[str, tuple[int, str, str]]:
        port = free_port()
        rx = livetok("webrtc", "recv", "--listen", f"127.0.0.1:{port}", "--timeout", "30", *w)
        dead = f"http://127.0.0.1:{free_port()}/offer"  # nobody listens: these never get that far
        procs = {name: livetok("webrtc", "send", "--source", cases[name][0], "--signal", dead, *SMALL, *w)
                 for name in ("missing", "text", "bad-webcam")}
        try:
            wait_until(lambda: _listening(port), 120, "webrtc recv listening", rx)
            procs["no-webcam"] = livetok("webrtc", "send", "--source", "webcam:57", "--signal",
                                         f"http://127.0.0.1:{port}/offer", *SMALL, *w)
            return {name: finish(p) for name, p in procs.items()}
        finally:
            rx.send_signal(signal.SIGTERM)
            finish(rx)

    for name, (code, out, err) in run_in_loopback_netns(run).items():
        one_error_line(code, err, cases[name][1])
        assert out == ""


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# item 2: SIGINT and SIGTERM


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_ends_publish_and_receive_cleanly(mosquitto: Broker, tiny_weights: Path, tmp_path: Path,
                                                   sig: signal.Signals) -> None:
    """Mid-stream, `sig` stops one receiver (its MP4 is finalised: it plays, as many frames as it
    decoded, lasting as long as they did), then the publisher (its summary and JSON are printed and
    its end of stream reaches the other receiver, which ends by itself with every frame)."""
    w = ["--weights", str(tiny_weights), "--threads", "1"]
    common = ["--broker", mosquitto.url, "--stream", "live", "--json", "--timeout", "30", *w]
    stopped_mp4, whole_mp4 = tmp_path / "stopped.mp4", tmp_path / "whole.mp4"
    rx_stopped = livetok("receive", *common, "--out", str(stopped_mp4))
    rx_whole = livetok("receive", *common, "--out", str(whole_mp4))
    subscribed(rx_stopped, rx_whole)  # before the first frame
    pub = livetok("publish", "--source", str(BUNDLED_CLIP), "--loop", "--broker", mosquitto.url, "--stream", "live",
                  "--json", "--size", "128x96", *w)
    try:
        wait_until(recording_started(stopped_mp4), 120, "first frame", rx_stopped, pub)
        time.sleep(1.5)
        rx_stopped.send_signal(sig)
        code, out, err = finish(rx_stopped, 30)
        assert code == 128 + sig, err
        r = json.loads(out)
        assert r["ended_by"] == sig.name and r["outputs"] == [str(stopped_mp4)]
        assert r["frames_decoded"] >= 30 and r["frames_lost"] == 0
        assert_playable(stopped_mp4, r["frames_decoded"])
        assert f"received {r['frames_received']} frames" in err

        time.sleep(0.5)
        pub.send_signal(sig)
        code, out, err = finish(pub, 30)
        assert code == 128 + sig and "Traceback" not in err, err
        p = json.loads(out)
        assert p["ended_by"] == sig.name and p["frames_published"] > r["frames_decoded"]
        assert f"published {p['frames_published']} frames" in err

        code, out, err = finish(rx_whole, 30)  # ended by the end-of-stream packet, not by its timeout
        assert code == 0, err
        whole = json.loads(out)
        assert whole["ended_by"] == "end_of_stream"
        assert whole["frames_decoded"] == p["frames_published"] and whole["frames_lost"] == 0
        assert_playable(whole_mp4, whole["frames_decoded"])
    finally:
        for proc in (rx_stopped, rx_whole, pub):
            kill(proc)


def test_sigterm_ends_webrtc_send_and_recv_records_everything(tiny_weights: Path, tmp_path: Path) -> None:
    """`webrtc send` stopped by SIGTERM sends its end of stream down the channel: `webrtc recv` ends
    (exit 0) with every frame sent, in a playable MP4; the sender prints its JSON and exits 143."""
    out_mp4 = tmp_path / "rtc.mp4"
    w = ["--weights", str(tiny_weights), "--threads", "1"]

    def run() -> tuple[tuple[int, str, str], tuple[int, str, str]]:
        port = free_port()
        rx = livetok("webrtc", "recv", "--listen", f"127.0.0.1:{port}", "--out", str(out_mp4), "--json",
                     "--timeout", "30", *w)
        tx: subprocess.Popen[str] | None = None
        try:
            wait_until(lambda: _listening(port), 120, "webrtc recv listening", rx)
            tx = livetok("webrtc", "send", "--source", str(BUNDLED_CLIP), "--loop", "--signal",
                         f"http://127.0.0.1:{port}/offer", "--size", "128x96", "--json", *w)
            wait_until(recording_started(out_mp4), 120, "first frame", rx, tx)
            time.sleep(1.5)
            tx.send_signal(signal.SIGTERM)
            return finish(tx, 30), finish(rx, 30)
        finally:
            for p in (rx, tx):
                if p is not None:
                    kill(p)

    (tx_code, tx_out, tx_err), (rx_code, rx_out, rx_err) = run_in_loopback_netns(run)
    assert tx_code == 143, tx_err
    sent = json.loads(tx_out)
    assert sent["ended_by"] == "SIGTERM" and sent["frames_published"] >= 30
    assert rx_code == 0, rx_err
    got = json.loads(rx_out)
    assert got["ended_by"] == "end_of_stream" and got["frames_decoded"] == sent["frames_published"]
    assert_playable(out_mp4, got["frames_decoded"])


# ---------------------------------------------------------------------------------------------
# item 3: waiting, idle timeout, nothing received


def test_a_receiver_without_publisher_says_so_and_exits_1(mosquitto: Broker, tiny_weights: Path) -> None:
    t0 = time.monotonic()
    code, out, err = finish(livetok("receive", "--broker", mosquitto.url, "--stream", "nobody", "--timeout", "3",
                                    "--json", "--weights", str(tiny_weights), "--threads", "1"))
    assert code == 1, err
    res = json.loads(out)
    assert res["frames_received"] == 0 and res["ended_by"] == "timeout"
    lines = err.strip().splitlines()
    assert lines[0].startswith(f"waiting for a publisher on stream 'nobody' at {mosquitto.url}: none yet after 2 s; "
                               "stopping after 3 s without a frame (--timeout)"), err
    assert lines[-1] == "no frames received"
    assert time.monotonic() - t0 < 30


def test_webrtc_recv_without_sender_says_so_and_exits_1(tiny_weights: Path) -> None:
    """It used to exit 0 with nothing received."""
    port = free_port()
    code, out, err = finish(livetok("webrtc", "recv", "--listen", f"127.0.0.1:{port}", "--timeout", "3", "--json",
                                    "--weights", str(tiny_weights), "--threads", "1"))
    assert code == 1, err
    assert json.loads(out)["frames_received"] == 0 and json.loads(out)["ended_by"] == "timeout"
    assert err.strip().splitlines() == [
        f"listening for a sender: livetok webrtc send --signal http://127.0.0.1:{port}/offer",
        f"waiting for a sender at http://127.0.0.1:{port}/offer: none yet after 2 s; stopping after 3 s without a "
        "frame (--timeout)",
        "no frames received"], err


def test_timeout_0_waits_for_ever_until_a_signal(mosquitto: Broker, tiny_weights: Path) -> None:
    rx = livetok("receive", "--broker", mosquitto.url, "--stream", "nobody", "--timeout", "0", "--json",
                 "--weights", str(tiny_weights), "--threads", "1")
    try:
        assert rx.stderr is not None
        first = rx.stderr.readline()  # the first status line: 2 s after subscribing
        assert "none yet after 2 s; waiting for ever (--timeout 0)" in first, first
        time.sleep(2.0)
        assert rx.poll() is None  # an idle timeout of 0 s would have ended it at once (the old behaviour)
        rx.send_signal(signal.SIGINT)
        code, out, err = finish(rx, 30)
    finally:
        kill(rx)
    assert code == 130 and json.loads(out)["ended_by"] == "SIGINT", err


def test_a_negative_timeout_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["receive", "--broker", "mqtt://127.0.0.1:1", "--stream", "x", "--timeout", "-1"]) == 2
    assert capsys.readouterr().err.strip() == ("livetok: error: --timeout must be >= 0 seconds (0: wait for ever), "
                                               "got -1")


def test_a_receiver_ends_within_its_timeout_when_its_publisher_is_killed(mosquitto: Broker, tiny_weights: Path,
                                                                         tmp_path: Path) -> None:
    """SIGKILL: no end of stream. The receiver says the publisher disconnected (its will withdrew
    the stream's info), ends `--timeout` after the last frame, keeps a playable recording, exit 0."""
    timeout = 3.0
    mp4 = tmp_path / "killed.mp4"
    w = ["--weights", str(tiny_weights), "--threads", "1"]
    watch = SessionWatch(mosquitto.url, "doomed", 1)
    pub = livetok("publish", "--source", str(BUNDLED_CLIP), "--loop", "--broker", mosquitto.url, "--stream", "doomed",
                  "--size", "128x96", *w)
    rx: subprocess.Popen[str] | None = None
    try:
        watch.wait(120, pub)  # streaming before the receiver's 3 s start, however long the model took to load
        rx = livetok("receive", "--broker", mosquitto.url, "--stream", "doomed", "--timeout", f"{timeout:g}", "--json",
                     "--out", str(mp4), *w)
        wait_until(recording_started(mp4), 120, "first frame", rx, pub)
        time.sleep(1.0)
        pub.kill()
        t_kill = time.monotonic()
        pub.communicate()
        code, out, err = finish(rx, 30)
        waited = time.monotonic() - t_kill
    finally:
        for p in (rx, pub):
            if p is not None:
                kill(p)
    assert code == 0, err
    res = json.loads(out)
    assert res["ended_by"] == "timeout" and res["frames_decoded"] >= 20
    assert timeout - 0.5 <= waited <= timeout + 3.0, waited
    assert "(the publisher of 'doomed' disconnected without ending its stream)" in err, err
    assert_playable(mp4, res["frames_decoded"])


def test_wildcard_receiver_lists_live_streams_only_and_ends_when_they_end(mosquitto: Broker, tiny_weights: Path,
                                                                           tmp_path: Path) -> None:
    """An earlier run's stream ('old') is not listed; the '+' receiver ends once both streams of the
    live publisher have ended (long before its 60 s timeout), one finalised MP4 per stream."""
    w = ["--weights", str(tiny_weights), "--threads", "1"]
    src = ["--broker", mosquitto.url, "--size", "64x48", "--as-fast-as-possible", *w]
    assert finish(livetok("publish", "--source", str(BUNDLED_CLIP), "--stream", "old", "--max-frames", "3",
                          *src))[0] == 0
    rx = livetok("receive", "--broker", mosquitto.url, "--stream", "+", "--timeout", "60", "--json",
                 "--out", str(tmp_path / "all.mp4"), *w)
    subscribed(rx)
    t0 = time.monotonic()
    code, _, err = finish(livetok("publish", "--source", str(BUNDLED_CLIP), "--source", "synthetic:calm", "--stream",
                                  "cam", "--max-frames", "15", "--keyframe-interval", "0", *src))
    assert code == 0, err
    code, out, err = finish(rx, 60)
    assert code == 0, err
    assert time.monotonic() - t0 < 30  # not the 60 s timeout
    res = json.loads(out)
    assert res["ended_by"] == "end_of_stream"
    assert sorted(res["streams"]) == ["cam-0", "cam-1"]
    for name in ("cam-0", "cam-1"):
        s = res["streams"][name]
        assert s["ended"] and s["frames_decoded"] == 15 and s["publishers"] == 1
    assert sorted(res["outputs"]) == [str(tmp_path / f"all-cam-{i}.mp4") for i in (0, 1)]
    for path in res["outputs"]:
        assert mp4_duration_s(path)[1] == 15


# ---------------------------------------------------------------------------------------------
# item 6: several cameras


def test_two_publishers_on_one_stream_are_warned(mosquitto: Broker, tiny_weights: Path) -> None:
    """Both publishers name the other's session; the receiver warns once that the stream has two
    publishers and counts them."""
    w = ["--weights", str(tiny_weights), "--threads", "1"]
    rx = livetok("receive", "--broker", mosquitto.url, "--stream", "shared", "--timeout", "30", "--json", *w)
    subscribed(rx)  # it sees the second publisher's info arrive while the first one's is live
    watch = SessionWatch(mosquitto.url, "shared", 2)
    pubs = [livetok("publish", "--source", src, "--loop", "--broker", mosquitto.url, "--stream", "shared", "--json",
                    "--size", "64x48", *w) for src in (str(BUNDLED_CLIP), "synthetic:calm")]
    try:
        watch.wait(120, *pubs)  # both publishing (a frame captured), however long loading the model took
        time.sleep(2.0)
        for p in pubs:
            assert p.poll() is None, p.communicate()
            p.send_signal(signal.SIGINT)
        results = [finish(p, 30) for p in pubs]
        code, out, err = finish(rx, 30)
    finally:
        for p in (rx, *pubs):
            kill(p)
    sessions = []
    for code_p, out_p, err_p in results:
        assert code_p == 130, err_p
        sessions.append(json.loads(out_p)["other_publishers"])
    assert all(len(s) == 1 for s in sessions) and sessions[0] != sessions[1]
    # the later publisher found the earlier one's info; the earlier one saw the later one's
    assert sum("has another publisher (session" in e for _, _, e in results) == 2
    assert code == 0, err  # ended by the first end of stream
    res = json.loads(out)
    assert res["streams"]["shared"]["publishers"] == 2
    warned = [line for line in err.splitlines() if "has two publishers" in line]
    assert len(warned) == 1 and "give each camera its own --stream" in warned[0], err


def test_receive_workers_json_is_one_document(mosquitto: Broker, tiny_weights: Path, tmp_path: Path) -> None:
    """`receive --workers 2 --json`: one JSON object (the workers' summaries merged), ending once
    every stream has ended."""
    w = ["--weights", str(tiny_weights), "--threads", "1"]
    rx = livetok("receive", "--broker", mosquitto.url, "--stream", "+", "--workers", "2", "--group", "g24",
                 "--timeout", "60", "--json", "--out", str(tmp_path / "w.mp4"), *w)
    try:
        asyncio.run(wait_for_workers(mosquitto.url, "g24", {"w0", "w1"}, 120))
        names = [f"cam{i}" for i in range(4)]
        code, _, err = finish(livetok(
            "publish", *[a for _ in names for a in ("--source", "synthetic:calm")], *[a for n in names for a in
                                                                                     ("--stream", n)],
            "--broker", mosquitto.url, "--size", "64x48", "--as-fast-as-possible", "--max-frames", "10",
            "--keyframe-interval", "0", *w))
        assert code == 0, err
        code, out, err = finish(rx, 60)
    finally:
        kill(rx)
    assert code == 0, err
    res: dict[str, Any] = json.loads(out)  # two documents would not parse
    assert sorted(res["workers"]) == ["w0", "w1"] and res["ended_by"] == "end_of_stream"
    assert sorted(res["streams"]) == names and res["frames_decoded"] == 40 == sum(
        d["frames_decoded"] for d in res["workers"].values())
    assert all(res["streams"][n]["frames_decoded"] == 10 for n in names)
    assert len(res["outputs"]) == 4 and "2 workers: received 40 frames, decoded 40" in err


def test_sigterm_to_receive_workers_reaches_every_worker(mosquitto: Broker, tiny_weights: Path,
                                                         tmp_path: Path) -> None:
    """The parent of `--workers 2` passes SIGTERM on: each worker finalises its recordings, the
    parent prints one merged JSON and exits 143."""
    w = ["--weights", str(tiny_weights), "--threads", "1"]
    rx = livetok("receive", "--broker", mosquitto.url, "--stream", "+", "--workers", "2", "--group", "gterm",
                 "--timeout", "60", "--json", "--out", str(tmp_path / "w.mp4"), *w)
    pub: subprocess.Popen[str] | None = None
    try:
        asyncio.run(wait_for_workers(mosquitto.url, "gterm", {"w0", "w1"}, 120))
        names = [f"cam{i}" for i in range(4)]
        pub = livetok("publish", *[a for _ in names for a in ("--source", "synthetic:calm")],
                      *[a for n in names for a in ("--stream", n)], "--broker", mosquitto.url, "--size", "64x48",
                      *w)
        wait_until(lambda: len(list(tmp_path.glob("w-*.mp4"))) == 4, 120, "four recordings", rx, pub)
        time.sleep(1.0)
        rx.send_signal(signal.SIGTERM)
        code, out, err = finish(rx, 30)
    finally:
        for p in (rx, pub):
            if p is not None:
                kill(p)
    assert code == 143, err
    res = json.loads(out)
    assert res["ended_by"] == "SIGTERM" and sorted(res["workers"]) == ["w0", "w1"]
    assert all(d["ended_by"] == "SIGTERM" for d in res["workers"].values())
    assert sorted(res["streams"]) == names and len(res["outputs"]) == 4
    for path in res["outputs"]:
        stream = Path(path).stem.split("-")[-1]
        assert mp4_duration_s(path)[1] == res["streams"][stream]["frames_decoded"] > 0
