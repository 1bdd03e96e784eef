"""The robotics side of the live commands as a user runs them:

- `publish --zenoh --mcap F` and `receive --zenoh` stopped by a real SIGTERM end as MQTT's publish/receive do
  (stream/stopping.py): the end of stream goes out, the MCAP file is finalised (the `mcap` library's reader
  opens it and it decodes to every frame sent), the MP4 plays, the summary and JSON are printed, exit 143;
- a plain `publish --broker` (MQTT only) carries each camera's `frame_id` and the capture clock in its
  retained info, as the robot outputs do;
- `encode -o x.mcap --no-preview` records the tokens channel alone.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("zenoh", reason="needs the robotics extra: pip install 'livetok[robotics]'")
mcap_reader = pytest.importorskip("mcap.reader", reason="needs the robotics extra: pip install 'livetok[robotics]'")

from livetok.bench.localbroker import Broker, free_port  # noqa: E402
from livetok.cli import main  # noqa: E402
from livetok.engine.model import Tokenizer  # noqa: E402
from livetok.stream.broker_url import parse_broker_url, topics  # noqa: E402
from livetok.stream.capture import CAPTURE_CLOCK  # noqa: E402
from livetok.stream.session import ReceiverSession  # noqa: E402
from livetok.stream.video_io import read_video  # noqa: E402
from livetok.stream.wire import peek_header  # noqa: E402
from livetok.stream.zenoh_transport import open_router  # noqa: E402

from .conftest import BUNDLED_CLIP  # noqa: E402
from .recording import mp4_duration_s  # noqa: E402
from .robotics_helpers import (  # noqa: E402
    SMALL_FRAMES,
    small_clip_fixture,  # noqa: F401  (the fixture `small_clip`)
)

CLI = [sys.executable, "-m", "livetok.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


def _livetok(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def _finish(p: subprocess.Popen[str], timeout: float) -> tuple[int, str, str]:
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        raise AssertionError(f"still running after {timeout:g} s: {p.args}\n{p.communicate()[1][-3000:]}") from None
    return p.returncode, out, err


def _wait(cond: Any, timeout: float, what: str, *procs: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        for p in procs:
            assert p.poll() is None, f"{p.args} exited ({p.returncode}) waiting for {what}: {p.communicate()}"
        assert time.monotonic() < deadline, f"no {what} after {timeout:g} s"
        time.sleep(0.05)


def test_sigterm_ends_zenoh_publish_and_receive_cleanly_and_finalises_the_mcap(
        tmp_path: Path, tiny_weights: Path, tiny_model: Tokenizer) -> None:
    """Mid-stream, SIGTERM stops a Zenoh receiver (its MP4 plays, as long as what it decoded; exit 143), then
    the publisher (its MCAP file opens with the `mcap` library's reader and decodes to every frame it
    published, frame 0 on; its end of stream ends the other receiver by itself; exit 143)."""
    # through a router (the library's router mode) so the three processes start together: in peer mode the
    # receivers could connect only once the publisher listens
    endpoint = f"tcp/127.0.0.1:{free_port()}"
    router = open_router(endpoint)
    zen = ["--zenoh", endpoint, "--zenoh-mode", "client"]
    w = ["--weights", str(tiny_weights), "--threads", "1"]
    mcap, stopped_mp4, whole_mp4 = tmp_path / "run.mcap", tmp_path / "stopped.mp4", tmp_path / "whole.mp4"
    common = ["receive", "--stream", "cam0", "--json", "--timeout", "60", *zen, *w]
    rx_stopped = _livetok(*common, "--out", str(stopped_mp4))
    rx_whole = _livetok(*common, "--out", str(whole_mp4))
    pub = _livetok("publish", "--source", str(BUNDLED_CLIP), "--loop", "--stream", "cam0", "--frame-id", "front",
                   "--size", "128x96", "--mcap", str(mcap), "--json", *zen, *w)
    procs = [pub, rx_stopped, rx_whole]
    try:
        _wait(lambda: stopped_mp4.exists() and stopped_mp4.stat().st_size > 0, 120, "a first frame", *procs)
        time.sleep(1.0)
        rx_stopped.send_signal(signal.SIGTERM)
        code, out, err = _finish(rx_stopped, 30)
        assert code == 143 and "Traceback" not in err, err
        r = json.loads(out)
        assert r["ended_by"] == "SIGTERM" and r["outputs"] == [str(stopped_mp4)] and r["transport"] == "zenoh"
        assert r["frames_decoded"] >= 10 and r["frames_lost"] == 0 and r["frame_ids"] == {"cam0": "front"}
        assert f"received {r['frames_received']} frames" in err
        duration, written = mp4_duration_s(stopped_mp4)  # finalised: it opens and holds every decoded frame
        assert written == r["frames_decoded"] and duration > 0

        time.sleep(0.5)
        pub.send_signal(signal.SIGTERM)
        code, out, err = _finish(pub, 30)
        assert code == 143 and "Traceback" not in err, err
        p = json.loads(out)
        assert p["ended_by"] == "SIGTERM" and p["frames_published"] > r["frames_decoded"]
        assert f"published {p['frames_published']} frames" in err

        code, out, err = _finish(rx_whole, 30)  # ended by the end-of-stream packet, not by its timeout
        assert code == 0, err
        whole = json.loads(out)
        assert whole["ended_by"] == "end_of_stream" and whole["frames_lost"] == 0
        assert 0 < whole["frames_decoded"] <= p["frames_published"]  # it joined late, at a keyframe
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        router.close()

    # the MCAP file, read by the mcap library (not our code): finalised (a summary section), every frame
    # published from frame 0, in order, plus the end of stream; the packets decode to frames
    packets: list[bytes] = []
    with open(mcap, "rb") as f:
        reader = mcap_reader.make_reader(f)
        summary = reader.get_summary()
        assert summary is not None and summary.statistics is not None
        for _, channel, message in reader.iter_messages(topics=["/cam0/tokens"]):
            assert channel.metadata["frame_id"] == "front"
            doc = json.loads(message.data)
            assert doc["frame_id"] == "front"
            packets.append(base64.b64decode(doc["packet"]))
    headers = [peek_header(d) for d in packets]
    assert headers[-1].end_of_stream and not any(h.end_of_stream for h in headers[:-1])
    frames = packets[:-1]
    assert len(frames) == p["frames_published"] and headers[0].keyframe
    rx = ReceiverSession(tiny_model)
    decoded = [rx.decode_packet(d) for d in frames]  # a v3 non-keyframe's index and time are its stream's
    assert [q.frame_index for q, _ in decoded] == list(range(len(frames)))
    stamps = [q.timestamp_us for q, _ in decoded]
    assert stamps == sorted(stamps)
    assert all(x.shape == (96, 128, 3) and x.dtype == np.uint8 for _, x in decoded)


def test_plain_mqtt_publish_carries_frame_ids_and_the_capture_clock(mosquitto: Broker, tiny_weights: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """`publish --broker` alone (the MQTT path, not the robot outputs): each stream's retained info names its
    camera's frame_id (given, or the stream name) and the clock its timestamps come from, one for all cameras."""
    import aiomqtt

    broker = parse_broker_url(mosquitto.url)
    common = ["--broker", mosquitto.url, "--size", "128x96", "--max-frames", "3", "--as-fast-as-possible",
              "--weights", str(tiny_weights), "--threads", "1", "--json"]

    async def run(argv: list[str], streams: list[str]) -> tuple[int, dict[str, dict[str, Any]], dict[str, list[int]]]:
        infos: dict[str, dict[str, Any]] = {s: {} for s in streams}
        stamps: dict[str, list[int]] = {s: [] for s in streams}
        async with aiomqtt.Client(**broker.client_kwargs()) as sub:
            for s in streams:  # (the info is withdrawn when the publisher leaves: read while it runs)
                await sub.subscribe(topics(s).info, qos=1)
                await sub.subscribe(topics(s).tokens, qos=1)

            async def read() -> None:
                ended = 0
                async for m in sub.messages:
                    payload = bytes(m.payload)  # type: ignore[arg-type]
                    stream = m.topic.value.split("/")[1]
                    if m.topic.value == topics(stream).tokens:
                        h = peek_header(payload)
                        if h.end_of_stream:
                            ended += 1
                            if ended == len(streams):
                                return
                        else:  # a v3 non-keyframe carries the µs since its stream's previous packet
                            stamps[stream].append(h.timestamp_us + (stamps[stream][-1] if h.relative else 0))
                    elif payload:
                        infos[stream].update(json.loads(payload))

            reader = asyncio.create_task(read())
            # main() in a worker thread (its own asyncio.run; no signal handlers off the main thread)
            code = await asyncio.to_thread(main, ["publish", *argv, *common])
            await asyncio.wait_for(reader, 20)
        return code, infos, stamps

    clip = str(BUNDLED_CLIP)
    code, infos, stamps = asyncio.run(run(["--source", clip, "--source", clip, "--stream", "cam",
                                           "--frame-id", "front_optical", "--frame-id", "rear_optical"],
                                          ["cam-0", "cam-1"]))
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert "outputs" not in res  # the MQTT path (publish_sources), not the robot outputs
    assert res["frame_ids"] == {"cam-0": "front_optical", "cam-1": "rear_optical"}
    assert infos["cam-0"]["frame_id"] == "front_optical" and infos["cam-1"]["frame_id"] == "rear_optical"
    assert infos["cam-0"]["clock"] == infos["cam-1"]["clock"] == CAPTURE_CLOCK
    assert infos["cam-0"]["width"] == 128  # the full info (updated at the first frame) kept them
    # one capture clock: frame i of both cameras captured in the same pipeline tick, on the wall clock
    assert len(stamps["cam-0"]) == len(stamps["cam-1"]) == 3
    assert max(abs(a - b) for a, b in zip(stamps["cam-0"], stamps["cam-1"], strict=True)) < 500_000
    assert abs(stamps["cam-0"][0] / 1e6 - time.time()) < 120

    code, infos, _ = asyncio.run(run(["--source", clip, "--stream", "solo"], ["solo"]))
    assert code == 0 and json.loads(capsys.readouterr().out)["frame_ids"] == {"solo": "solo"}
    assert infos["solo"]["frame_id"] == "solo" and infos["solo"]["clock"] == CAPTURE_CLOCK

    assert main(["publish", "--source", clip, "--stream", "x", "--frame-id", "a", "--frame-id", "b", *common]) == 2
    assert "2 --frame-id for 1 streams" in capsys.readouterr().err


def test_encode_mcap_no_preview_records_tokens_only(tmp_path: Path, small_clip: Path, tiny_weights: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--weights", str(tiny_weights), "--threads", "1", "--json"]
    sizes, rates = {}, {}
    for name, extra in (("with.mcap", []), ("without.mcap", ["--no-preview"])):
        out = tmp_path / name
        assert main(["encode", str(small_clip), "-o", str(out), *extra, *common]) == 0
        res = json.loads(capsys.readouterr().out)
        assert res["frames"] == SMALL_FRAMES and res["preview"] == (not extra)
        with open(out, "rb") as f:
            summary = mcap_reader.make_reader(f).get_summary()
        assert summary is not None and summary.statistics is not None
        topics_ = sorted(c.topic for c in summary.channels.values())
        assert topics_ == (["/cam0/preview", "/cam0/tokens"] if not extra else ["/cam0/tokens"])
        assert summary.statistics.message_count == SMALL_FRAMES * (1 if extra else 2)
        sizes[name] = out.stat().st_size
        rates[name] = (res["bits_per_frame"], res["bits_per_s"])
    assert sizes["without.mcap"] < sizes["with.mcap"]
    # a .ltk has no preview channel: the flag changes nothing there
    assert main(["encode", str(small_clip), "-o", str(tmp_path / "x.ltk"), "--no-preview", *common]) == 0
    ltk = json.loads(capsys.readouterr().out)
    # the same packets, so the same rates as the .ltk's (kbit/s at the clip's frame rate, stream/bitrate.py)
    fps = read_video(small_clip, max_frames=1)[1]
    assert ltk["bits_per_s"] > 0 and ltk["bits_per_s"] == pytest.approx(ltk["bits_per_frame"] * fps, rel=0.02)
    assert rates["with.mcap"] == rates["without.mcap"] == (ltk["bits_per_frame"], ltk["bits_per_s"])
