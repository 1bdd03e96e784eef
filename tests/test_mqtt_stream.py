"""Live streaming through a real mosquitto: whole files, late joiners, several streams, a broker
that is down at the start, a broker restarted mid-stream, and a receiver running other weights."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from livetok.bench.localbroker import Broker
from livetok.engine.checkpoint import model_identity
from livetok.engine.config import BudgetConfig, SenderConfig
from livetok.engine.model import Tokenizer
from livetok.stream.broker_url import parse_broker_url
from livetok.stream.capture import CaptureOptions, capture
from livetok.stream.errors import StreamError
from livetok.stream.live import RecordOptions, drain_frames
from livetok.stream.pipeline import PipelineConfig, run_pipeline
from livetok.stream.publisher import TokenPublisher
from livetok.stream.receiver import ReceivedFrame, Receiver
from livetok.stream.session import ReceiverSession, SenderSession
from livetok.stream.wire import CoderState, TokenPacket

from .conftest import BUNDLED_CLIP
from .recording import every_other_dropped, mp4_duration_s

pytestmark = pytest.mark.broker

SIZE = (128, 96)  # small frames keep the tiny model fast
SENDER = SenderConfig(budget=BudgetConfig(policy="infotok", rate=0.5), keyframe_interval=0)


class TeePublisher(TokenPublisher):
    """The real publisher, also keeping a copy of every packet it sends."""

    sent: list[bytes]

    async def send(self, data: bytes) -> None:
        await super().send(data)
        self.sent.append(data)


async def publish(model: Tokenizer, url: str | list[str], stream: str, source: str, *, realtime: bool, frames: int,
                  sender: SenderConfig = SENDER, connect_timeout: float | None = 5.0,
                  tee: list[bytes] | None = None) -> dict[str, Any]:
    """Publish `frames` of `source`; `url` may list the nodes of a cluster."""
    session = SenderSession(model, sender)
    info = {"model_id": session.model_id.hex(), "fps": 30.0, "width": SIZE[0], "height": SIZE[1]}
    brokers = [parse_broker_url(u) for u in ([url] if isinstance(url, str) else url)]
    async with TeePublisher(brokers, stream, info, first_connect_timeout_s=connect_timeout) as pub:
        pub.sent = tee if tee is not None else []
        src = capture(source, realtime=realtime, max_frames=frames, size=SIZE)
        stats = await run_pipeline(src, session, pub, PipelineConfig(size=SIZE, drop=realtime))
        return {**stats.to_json(), "reconnects": pub.link.connects - 1, "failovers": pub.link.failovers}


async def collect(rx: Receiver, until: float = 20.0) -> list[ReceivedFrame]:
    out: list[ReceivedFrame] = []
    async def run() -> None:
        async for f in rx:
            out.append(f)
    await asyncio.wait_for(run(), until)
    return out


def local_decode(model: Tokenizer, packets: list[bytes]) -> list[np.ndarray]:
    rx = ReceiverSession(model)
    return [rx.decode(p) for p in packets[:-1]]  # the last one is the end-of-stream packet


def test_published_file_arrives_whole_and_identical(mosquitto: Broker, tiny_model: Tokenizer) -> None:
    async def main() -> tuple[list[ReceivedFrame], dict[str, Any], list[bytes], dict[str, Any]]:
        broker = parse_broker_url(mosquitto.url)
        sent: list[bytes] = []
        async with Receiver(tiny_model, broker, "cam0") as rx:
            task = asyncio.create_task(collect(rx))
            stats = await publish(tiny_model, mosquitto.url, "cam0", str(BUNDLED_CLIP), realtime=False, frames=12,
                                  tee=sent)
            got = await task
            return got, stats, sent, rx.summary().to_json()

    got, stats, sent, summary = asyncio.run(main())
    assert stats["frames_published"] == 12 and stats["frames_dropped"] == 0
    assert [f.frame_index for f in got] == list(range(12))
    assert got[0].keyframe and not any(f.keyframe for f in got[1:])
    ref = local_decode(tiny_model, sent)
    assert len(ref) == 12
    coder = CoderState.empty(tiny_model.cfg.fsq.levels)
    for f, r, data in zip(got, ref, sent[:-1], strict=True):
        assert np.array_equal(f.frame, r)  # the receiver's pixels are exactly a local decode of the packets
        assert f.frame.shape == (96, 128, 3) and f.token_grid.shape == (12, 16)
        # the token grid holds exactly the transmitted tokens, -1 where none was sent
        assert data[0] == 0xF1 if f.keyframe else 0xF0  # packet v3: entropy-coded, decoded in order with the
        p, coder = TokenPacket.unpack_v3(data, coder)  # stream's coder state (which holds the model id, index, time)
        grid = f.token_grid.reshape(-1)
        assert np.array_equal(grid[p.mask], p.indices.astype(np.int32)) and (grid[~p.mask] == -1).all()
        assert f.bits == 8 * len(data)
    assert TokenPacket.unpack(sent[-1]).end_of_stream
    assert summary["frames_received"] == 12 and summary["frames_decoded"] == 12 and summary["frames_lost"] == 0
    assert summary["bits_per_s"] > 0 and summary["latency_ms_p99"] is not None


def test_late_joiner_starts_at_a_keyframe_within_a_second(mosquitto: Broker, tiny_model: Tokenizer) -> None:
    async def main() -> tuple[ReceivedFrame, float, dict[str, Any]]:
        pub = asyncio.create_task(publish(tiny_model, mosquitto.url, "cam0", "synthetic:calm", realtime=True,
                                          frames=150))
        await asyncio.sleep(1.5)  # the stream is well under way, its only natural keyframe long gone
        async with Receiver(tiny_model, parse_broker_url(mosquitto.url), "cam0") as rx:
            t0 = time.monotonic()
            first = await asyncio.wait_for(anext(rx), 5.0)
            waited = time.monotonic() - t0
            summary = rx.summary().to_json()
        pub.cancel()
        return first, waited, summary

    first, waited, summary = asyncio.run(main())
    assert first.keyframe and first.frame_index > 10
    assert waited < 1.0, f"late joiner waited {waited:.2f} s for a keyframe"
    assert summary["keyframe_requests"] >= 1 and summary["frames_lost"] == 0


def test_two_streams_through_one_wildcard_receiver(mosquitto: Broker, tiny_model: Tokenizer) -> None:
    async def main() -> dict[str, Any]:
        async with Receiver(tiny_model, parse_broker_url(mosquitto.url), "+") as rx:
            got: list[ReceivedFrame] = []

            async def gather() -> None:
                async for f in rx:
                    got.append(f)
                    if all(s.counters.ended for s in rx.streams.values()) and len(rx.streams) == 2:
                        return

            task = asyncio.create_task(gather())
            await asyncio.gather(
                publish(tiny_model, mosquitto.url, "cam0", str(BUNDLED_CLIP), realtime=False, frames=6),
                publish(tiny_model, mosquitto.url, "cam1", "synthetic:busy", realtime=False, frames=9),
            )
            deadline = time.monotonic() + 10
            while not (len(rx.streams) == 2 and all(s.counters.ended for s in rx.streams.values())):
                assert time.monotonic() < deadline, rx.summary()
                await asyncio.sleep(0.05)
            task.cancel()
            return rx.summary().to_json()

    s = asyncio.run(main())
    assert s["streams"]["cam0"]["frames_decoded"] == 6 and s["streams"]["cam1"]["frames_decoded"] == 9
    assert s["frames_decoded"] == 15 and s["frames_lost"] == 0


def test_publish_with_the_broker_down_logs_and_retries(mosquitto: Broker, tiny_model: Tokenizer,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="livetok.stream.mqtt")

    async def main() -> tuple[dict[str, Any], dict[str, Any]]:
        broker = parse_broker_url(mosquitto.url)
        # a persistent session for the receiver, so the broker keeps its messages while it is away
        async with Receiver(tiny_model, broker, "cam0", identifier="rx-down"):
            pass
        mosquitto.stop()
        pub = asyncio.create_task(publish(tiny_model, mosquitto.url, "cam0", str(BUNDLED_CLIP), realtime=False,
                                          frames=8, connect_timeout=None))
        await asyncio.sleep(1.0)
        assert not pub.done()
        mosquitto.start()
        stats = await asyncio.wait_for(pub, 30)
        async with Receiver(tiny_model, broker, "cam0", identifier="rx-down") as rx:
            await collect(rx)
            return stats, rx.summary().to_json()

    stats, summary = asyncio.run(main())
    msgs = [r.getMessage() for r in caplog.records]
    assert any("unreachable" in m and "retrying" in m and str(mosquitto.port) in m for m in msgs), msgs
    assert stats["frames_published"] == 8
    assert summary["frames_decoded"] == 8 and summary["frames_lost"] == 0


def test_broker_restart_mid_stream_loses_no_frame(mosquitto: Broker, tiny_model: Tokenizer) -> None:
    async def main() -> tuple[dict[str, Any], list[int], dict[str, Any]]:
        broker = parse_broker_url(mosquitto.url)
        async with Receiver(tiny_model, broker, "cam0", identifier="rx-restart") as rx:
            got: list[ReceivedFrame] = []

            async def receive() -> None:
                async for f in rx:
                    got.append(f)

            frames_task = asyncio.create_task(asyncio.wait_for(receive(), 90))
            pub = asyncio.create_task(publish(tiny_model, mosquitto.url, "cam0", "synthetic:calm", realtime=True,
                                              frames=90))
            # restart only once frames flow (however slow the machine is to start), so it is mid-stream
            deadline = time.monotonic() + 60
            while len(got) < 5 and not pub.done() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            mosquitto.stop()
            await asyncio.sleep(0.5)
            mosquitto.start()
            stats = await asyncio.wait_for(pub, 60)
            await frames_task
            return stats, [f.frame_index for f in got], rx.summary().to_json()

    stats, indices, summary = asyncio.run(main())
    n = stats["frames_published"]
    assert n >= 10 and stats["reconnects"] >= 1
    assert indices == list(range(n)), "every published frame decoded once, in order"
    assert summary["frames_lost"] == 0 and summary["reconnects"] >= 1


def test_receiver_with_other_weights_refuses_the_stream(mosquitto: Broker, tiny_model: Tokenizer) -> None:
    other = Tokenizer(tiny_model.cfg)
    other.load_state_dict(tiny_model.state_dict())
    with torch.no_grad():
        other.decoder.to_rgb.bias.add_(0.01)

    async def main() -> None:
        broker = parse_broker_url(mosquitto.url)
        async with Receiver(other, broker, "cam0") as rx:
            task = asyncio.create_task(collect(rx))
            await publish(tiny_model, mosquitto.url, "cam0", str(BUNDLED_CLIP), realtime=False, frames=3)
            await task

    with pytest.raises(StreamError) as e:
        asyncio.run(main())
    assert model_identity(tiny_model).hex() in str(e.value) and model_identity(other).hex() in str(e.value)


def test_cli_publish_and_receive(mosquitto: Broker, tiny_weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "rx.mp4"
    rx = subprocess.Popen(
        [sys.executable, "-m", "livetok.cli", "receive", "--broker", mosquitto.url, "--stream", "cli",
         "--out", str(out), "--json", "--timeout", "30", "--weights", str(tiny_weights)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    time.sleep(3.0)  # let the receiver subscribe
    pub = subprocess.run(
        [sys.executable, "-m", "livetok.cli", "publish", "--source", str(BUNDLED_CLIP), "--broker",
         mosquitto.url, "--stream", "cli", "--max-frames", "10", "--as-fast-as-possible", "--size", "128x96",
         "--json", "--weights", str(tiny_weights)],
        capture_output=True, text=True, timeout=60,
    )
    assert pub.returncode == 0, pub.stderr
    stdout, stderr = rx.communicate(timeout=60)
    assert rx.returncode == 0, stderr.decode()
    p, r = json.loads(pub.stdout), json.loads(stdout)
    assert p["frames_published"] == 10
    assert r["frames_received"] == 10 and r["frames_decoded"] == 10 and r["frames_lost"] == 0
    assert r["keyframes"] == 1 and r["outputs"] == [str(out)]
    for key in ("latency_ms_p50", "latency_ms_p99", "tokens_per_s", "bits_per_s"):
        assert r[key] is not None and r[key] > 0


def test_bench_stream_reports_every_stream(tiny_weights: Path, mosquitto: Broker,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from livetok.cli import main

    code = main(["bench", "stream", "--streams", "2", "--seconds", "1", "--size", "64x48", "--broker", mosquitto.url,
                 "--weights", str(tiny_weights), "--json"])
    assert code == 0
    res = json.loads(capsys.readouterr().out)["results"]
    assert len(res) == 1 and res[0]["streams"] == 2 and len(res[0]["per_stream"]) == 2
    for s in res[0]["per_stream"]:
        assert s["frames_captured"] == 30  # 1 s at 30 fps, whatever the encoder managed
        assert s["frames_published"] + s["frames_dropped"] == 30
        assert s["frames_decoded"] == s["frames_published"] and s["frames_lost"] == 0


def test_publish_several_sources_batches_them(tiny_weights: Path, tiny_model: Tokenizer, mosquitto: Broker,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """`livetok publish --source A --source B --stream cam`: two cameras in one process, published as
    cam-0 and cam-1, every frame decoded by a real receiver, and the encoder ran them as batched
    steps (fewer steps than frames)."""
    from livetok.cli import main

    frames = 10
    broker = parse_broker_url(mosquitto.url)

    async def run() -> tuple[int, list[ReceivedFrame], dict[str, Any]]:
        async with Receiver(tiny_model, broker, "+") as rx:
            got: list[ReceivedFrame] = []

            async def take() -> None:  # a wildcard receiver never ends by itself: stop at every frame
                async for f in rx:
                    got.append(f)
                    if len(got) == 2 * frames:
                        return

            task = asyncio.create_task(asyncio.wait_for(take(), 120.0))
            code = await asyncio.to_thread(main, [
                "publish", "--source", str(BUNDLED_CLIP), "--source", "synthetic", "--stream", "cam",
                "--broker", mosquitto.url, "--size", "64x48", "--as-fast-as-possible", "--max-frames", str(frames),
                "--keyframe-interval", "0", "--weights", str(tiny_weights), "--json"])
            await task
            return code, got, rx.summary().to_json()

    code, got, summary = asyncio.run(run())
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert res["streams"] == ["cam-0", "cam-1"] and res["frames_published"] == 2 * frames
    assert {n: (d["frames_captured"], d["frames_published"]) for n, d in res["per_stream"].items()} == \
        {n: (frames, frames) for n in ("cam-0", "cam-1")}
    # each stream's kbit/s, as its receiver counts it (stream/bitrate.py); the total is their sum
    assert {n: d["bits_per_s"] for n, d in res["per_stream"].items()} == \
        {n: summary["streams"][n]["bits_per_s"] for n in ("cam-0", "cam-1")}
    # every figure is rounded to 0.1 bit/s, the total from the unrounded rates: each term may be 0.05 off
    parts = [d["bits_per_s"] for d in res["per_stream"].values()]
    assert res["bits_per_s"] == pytest.approx(sum(parts), abs=0.05 * (len(parts) + 1) + 1e-6)
    # both streams ready at every tick of an as-fast-as-possible run: most steps carry both frames
    assert frames <= res["encode_steps"] < 2 * frames
    for name in ("cam-0", "cam-1"):
        mine = [f for f in got if f.stream == name]
        assert [f.frame_index for f in mine] == list(range(frames)) and mine[0].keyframe
        assert all(f.frame.shape == (48, 64, 3) for f in mine)
    assert summary["frames_lost"] == 0


def test_recording_lasts_as_long_as_the_stream_while_the_publisher_drops(mosquitto: Broker, tiny_model: Tokenizer,
                                                                         tmp_path: Path) -> None:
    """Issue 14 item 1: a 3 s source paced in real time, the publisher dropping every other frame at
    capture (its drop-oldest queue, as with an encoder slower than the camera): `receive --out`
    places each frame at its capture time, so the MP4 lasts 3 s, not 45 frames at 30 fps = 1.5 s."""
    source_frames, fps = 90, 30.0  # the bundled 30 fps clip, looped to 3 s
    out = tmp_path / "rec.mp4"

    async def main() -> tuple[dict[str, Any], dict[str, Any], list[str]]:
        broker = parse_broker_url(mosquitto.url)
        async with Receiver(tiny_model, broker, "rec") as rx:
            recording = asyncio.create_task(drain_frames(rx, RecordOptions(out=str(out), idle_timeout_s=30)))
            session = SenderSession(tiny_model, SENDER)
            info = {"model_id": session.model_id.hex(), "fps": fps}
            async with TokenPublisher(broker, "rec", info, first_connect_timeout_s=5.0) as pub:
                src = capture(str(BUNDLED_CLIP), realtime=True, loop=True, max_frames=source_frames, size=SIZE)
                stats = (await run_pipeline(every_other_dropped(src), session, pub,
                                            PipelineConfig(size=SIZE, drop=True))).to_json()
            outputs = await recording
            return stats, rx.summary().to_json(), outputs

    stats, summary, outputs = asyncio.run(main())
    assert outputs == [str(out)]
    assert stats["frames_captured"] == source_frames and stats["frames_dropped"] >= source_frames // 2
    published = stats["frames_published"]
    assert summary["frames_decoded"] == published and summary["frames_lost"] == 0
    duration, written = mp4_duration_s(out)
    assert written == published
    assert abs(duration - source_frames / fps) <= 0.1 * source_frames / fps, (duration, written)


def _publish_cli(tiny_weights: Path, *args: str, verbose: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "livetok.cli", *(["-v"] if verbose else []), "publish", "--source",
         str(BUNDLED_CLIP), "--stream", "cam0", "--size", "64x48", "--weights", str(tiny_weights), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_cli_unreachable_broker_is_one_line_within_30_s(tiny_weights: Path) -> None:
    """Issue 14 item 2: a refused port and a host name that does not resolve (.invalid never does,
    RFC 6761; answered without asking a DNS server) end `livetok publish` with exit 2 and one line
    naming the broker and the cause, after the default connect timeout (10 s), instead of retrying
    for ever (the old behaviour: still running at 30 s)."""
    started = time.monotonic()
    procs = {"refused": _publish_cli(tiny_weights, "--broker", "mqtt://127.0.0.1:1"),
             "unresolvable": _publish_cli(tiny_weights, "--broker", "mqtt://nonexistent.invalid:1883")}
    ended: dict[str, float] = {}  # seconds from the start to each exit
    try:
        while len(ended) < len(procs) and time.monotonic() - started < 30:
            for name, proc in procs.items():
                if name not in ended and proc.poll() is not None:
                    ended[name] = time.monotonic() - started
            time.sleep(0.05)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    errs = {n: p.communicate()[1] for n, p in procs.items()}
    assert set(ended) == set(procs), f"still running after 30 s: {set(procs) - set(ended)}"
    for name, proc in procs.items():
        assert proc.returncode == 2, (name, proc.returncode, errs[name])
        assert "Traceback" not in errs[name] and len(errs[name].strip().splitlines()) == 1, (name, errs[name])
    assert errs["refused"].strip() == ("livetok: error: cannot connect to broker mqtt://127.0.0.1:1: "
                                       "connection refused (gave up after 10 s)")
    assert errs["unresolvable"].strip() == (
        "livetok: error: cannot connect to broker mqtt://nonexistent.invalid:1883: host name nonexistent.invalid "
        "does not resolve (gave up after 10 s)")


def test_cli_connect_timeout_counts_from_the_first_attempt(tiny_weights: Path) -> None:
    """`--connect-timeout 2`: the publisher exits 2 s after its first connection attempt (seen in
    the -v log, so the model's load time does not blur the measure), with the error as last line."""
    lines: list[tuple[float, str]] = []
    with _publish_cli(tiny_weights, "--broker", "mqtt://127.0.0.1:1", "--connect-timeout", "2", verbose=True) as proc:
        assert proc.stderr is not None
        killer = threading.Timer(30, proc.kill)  # a publisher that never gives up must not hang the test
        killer.start()
        try:
            for line in proc.stderr:  # `livetok -v` logs every attempt as it happens
                lines.append((time.monotonic(), line.strip()))
            proc.wait()
            t_exit = time.monotonic()
        finally:
            killer.cancel()
    attempts = [t for t, line in lines if "mqtt://127.0.0.1:1 unreachable (connection refused); retrying" in line]
    assert proc.returncode == 2 and attempts, lines
    assert lines[-1][1] == ("livetok: error: cannot connect to broker mqtt://127.0.0.1:1: connection refused "
                            "(gave up after 2 s)")
    assert 1.8 <= t_exit - attempts[0] <= 4.0, t_exit - attempts[0]


def test_retained_info_lets_a_receiver_without_the_model_read_the_tokens(mosquitto: Broker,
                                                                          tiny_model: Tokenizer) -> None:
    """The FSQ levels travel in no packet, and a version 2 packet decodes only with a coder state made
    from them: the retained info carries them (issue 24 item 10), so a consumer of tokens that runs no
    model reads the stream from the broker alone."""
    import aiomqtt

    from livetok.stream.broker_url import topics
    from livetok.stream.live import publish_sources

    broker = parse_broker_url(mosquitto.url)
    t = topics("bare")

    async def main() -> tuple[list[bytes], dict[str, Any]]:
        packets: list[bytes] = []
        info: dict[str, Any] = {}
        async with aiomqtt.Client(**broker.client_kwargs()) as sub:
            await sub.subscribe(t.tokens, qos=1)
            await sub.subscribe(t.info, qos=1)  # (withdrawn when the publisher leaves: read while it runs)

            async def read() -> None:
                async for m in sub.messages:
                    payload = bytes(m.payload)  # type: ignore[arg-type]
                    if m.topic.value == t.tokens:
                        packets.append(payload)
                        if len(packets) == 7:
                            return
                    elif payload:
                        info.update(json.loads(payload))

            reader = asyncio.create_task(read())
            await publish_sources(tiny_model, ["synthetic:calm"], [broker], ["bare"], SENDER,
                                  CaptureOptions(realtime=False, max_frames=6, size=SIZE))
            await asyncio.wait_for(reader, 10)
        return packets, info

    packets, info = asyncio.run(main())
    assert info["fsq_levels"] == [5, 5, 5] == list(tiny_model.cfg.fsq.levels) and info["wire"] == 3
    assert info["bits_per_index"] == 7 and info["model_id"] == model_identity(tiny_model).hex()
    coder = CoderState.empty(info["fsq_levels"])  # nothing else from the model
    decoded = []
    for data in packets:
        # the end-of-stream packet is version 1 (52 bytes) even in a version 3 stream: unpack_any reads all
        p, coder = TokenPacket.unpack_any(data, coder, expect_model_id=bytes.fromhex(info["model_id"]))
        decoded.append(p)
    assert [p.frame_index for p in decoded] == [0, 1, 2, 3, 4, 5, 6] and decoded[0].keyframe
    assert [d[0] for d in packets] == [0xF1] + [0xF0] * 5 + [ord("L")] and len(packets[-1]) == 52  # v3, then v1
    assert decoded[-1].end_of_stream and decoded[-1].n == 0
    assert decoded[0].k > 0 and all((p.grid_h, p.grid_w, p.width) == (12, 16, 128) for p in decoded[:6])


def test_publisher_and_receiver_report_one_bit_rate(mosquitto: Broker, tiny_model: Tokenizer) -> None:
    """Issue 24: the publisher said 43.2 and the receiver 47.4 kbit/s for one stream (the publisher divided
    by the time since its pipeline started, the receiver all packets by the n - 1 intervals between their
    arrivals). Both now count the stream's packets over its capture time (stream/bitrate.py)."""
    from livetok.stream.bitrate import stream_seconds

    async def main() -> tuple[dict[str, Any], list[bytes], dict[str, Any]]:
        sent: list[bytes] = []
        async with Receiver(tiny_model, parse_broker_url(mosquitto.url), "rate") as rx:
            task = asyncio.create_task(collect(rx))
            stats = await publish(tiny_model, mosquitto.url, "rate", str(BUNDLED_CLIP), realtime=True, frames=15,
                                  tee=sent)
            await task
            return stats, sent, rx.summary().to_json()

    stats, sent, summary = asyncio.run(main())
    # a live source: the publisher may drop frames it cannot encode in time; those it sent all arrive
    n = stats["frames_published"]
    assert summary["frames_decoded"] == n >= 2 and summary["frames_lost"] == 0
    coder = CoderState.empty(tiny_model.cfg.fsq.levels)
    stamps = []
    for data in sent[:-1]:  # not the end-of-stream packet
        p, coder = TokenPacket.unpack_v3(data, coder)
        stamps.append(p.timestamp_us)
    expected = 8 * sum(map(len, sent[:-1])) / stream_seconds(n, min(stamps), max(stamps))
    assert stats["bits_per_s"] == summary["bits_per_s"] == round(expected, 1)
    assert stats["per_stream"][""]["bits_per_s"] == summary["streams"]["rate"]["bits_per_s"]


def test_out_dash_streams_the_video_to_a_player_on_stdout(mosquitto: Broker, tiny_weights: Path,
                                                         tmp_path: Path) -> None:
    """Issue 24 item 5: `--show` could never open a window (livetok needs the headless OpenCV build);
    how to watch a stream is a pipe to a player, `livetok receive ... --out - | ffplay -`. Here the pipe
    goes to a file, read back as a player would read it."""
    import av

    video = tmp_path / "piped.mkv"
    with video.open("wb") as sink:
        rx = subprocess.Popen(
            [sys.executable, "-m", "livetok.cli", "receive", "--broker", mosquitto.url, "--stream", "view",
             "--out", "-", "--timeout", "30", "--weights", str(tiny_weights), "--threads", "1"],
            stdout=sink, stderr=subprocess.PIPE, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
        time.sleep(3.0)  # let the receiver subscribe
        pub = subprocess.run(
            [sys.executable, "-m", "livetok.cli", "publish", "--source", str(BUNDLED_CLIP), "--broker",
             mosquitto.url, "--stream", "view", "--max-frames", "10", "--as-fast-as-possible", "--size", "128x96",
             "--weights", str(tiny_weights), "--threads", "1"],
            capture_output=True, text=True, timeout=60)
        assert pub.returncode == 0, pub.stderr
        _, stderr = rx.communicate(timeout=60)
    assert rx.returncode == 0, stderr.decode()
    assert "received 10 frames, decoded 10" in stderr.decode()  # people's lines stay on stderr
    with av.open(str(video)) as c:
        s = c.streams.video[0]
        frames = list(c.decode(s))
        assert c.format.name.startswith("matroska") and s.codec_context.name == "h264"
    assert len(frames) == 10 and (frames[0].width, frames[0].height) == (128, 96)
