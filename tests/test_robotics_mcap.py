"""MCAP recordings: written by livetok (foxglove-sdk), read back with the `mcap` library's reader (not our code),
and decoded to exactly the frames of the `.ltk` file made from the same clip; `decode` and `eval` read MCAP."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("foxglove", reason="needs the robotics extra: pip install 'livetok[robotics]'")
mcap_reader = pytest.importorskip("mcap.reader", reason="needs the robotics extra: pip install 'livetok[robotics]'")

from livetok.cli import main  # noqa: E402
from livetok.engine.model import Tokenizer  # noqa: E402
from livetok.stream.session import ReceiverSession  # noqa: E402
from livetok.stream.video_io import read_video  # noqa: E402
from livetok.stream.wire import LtkReader  # noqa: E402

from .robotics_helpers import SMALL_FRAMES as FRAMES  # noqa: E402
from .robotics_helpers import small_clip_fixture  # noqa: E402, F401  (the fixture `small_clip`)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def _decode_all(model: Tokenizer, packets: list[bytes]) -> list[np.ndarray]:
    rx = ReceiverSession(model)
    return [rx.decode(p) for p in packets]


def test_mcap_reads_back_with_the_mcap_library_and_decodes_like_the_ltk(
        tmp_path: Path, small_clip: Path, tiny_weights: Path, tiny_model: Tokenizer,
        capsys: pytest.CaptureFixture[str]) -> None:
    ltk, mcap = tmp_path / "x.ltk", tmp_path / "x.mcap"
    common = ["--weights", str(tiny_weights), "--threads", "1", "--rate", "0.5", "--json"]
    code, out = _run(capsys, "encode", str(small_clip), "-o", str(ltk), *common)
    assert code == 0
    ltk_summary = json.loads(out)
    code, out = _run(capsys, "encode", str(small_clip), "-o", str(mcap), *common)
    assert code == 0
    mcap_summary = json.loads(out)
    assert mcap_summary["frames"] == ltk_summary["frames"] == FRAMES
    assert mcap_summary["bits_per_frame"] == ltk_summary["bits_per_frame"]

    # the mcap library's own reader: schemas, channels, messages
    tokens: list[bytes] = []
    previews, times = 0, []
    with open(mcap, "rb") as f:
        reader = mcap_reader.make_reader(f)
        summary = reader.get_summary()
        assert summary is not None and summary.statistics is not None
        assert summary.statistics.message_count == 2 * FRAMES  # tokens + preview per frame
        topics = sorted(c.topic for c in summary.channels.values())
        assert topics == ["/cam0/preview", "/cam0/tokens"]
        for schema, channel, message in reader.iter_messages():
            if channel.topic == "/cam0/tokens":
                assert schema.name == "livetok.TokenPacket" and schema.encoding == "jsonschema"
                assert channel.message_encoding == "json"
                assert channel.metadata["frame_id"] == "cam0"
                assert json.loads(channel.metadata["fsq_levels"]) == list(tiny_model.cfg.fsq.levels)
                doc = json.loads(message.data)
                assert doc["frame_index"] == len(tokens)
                assert doc["timestamp"]["sec"] * 10**9 + doc["timestamp"]["nsec"] == message.log_time
                tokens.append(base64.b64decode(doc["packet"]))
                times.append(message.log_time)
            else:
                assert schema.name == "foxglove.CompressedImage" and channel.message_encoding == "protobuf"
                previews += 1
    assert previews == FRAMES
    assert times == sorted(times) and times[0] == 0  # frame i at i / fps on the recording's clock

    # the same packet bytes as the .ltk file, and the same frames out of a receiver
    with LtkReader(ltk) as r:
        ltk_packets = list(r.iter_raw())
    assert tokens == ltk_packets
    a, b = _decode_all(tiny_model, tokens), _decode_all(tiny_model, ltk_packets)
    assert len(a) == FRAMES and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))

    # `livetok decode` reads MCAP as it reads .ltk: the same number of frames, the same pictures in the MP4
    mp4_m, mp4_l = tmp_path / "m.mp4", tmp_path / "l.mp4"
    code, out = _run(capsys, "decode", str(mcap), "-o", str(mp4_m), "--weights", str(tiny_weights), "--json")
    assert code == 0 and json.loads(out)["frames"] == FRAMES
    assert _run(capsys, "decode", str(ltk), "-o", str(mp4_l), "--weights", str(tiny_weights))[0] == 0
    vm, _ = read_video(mp4_m)
    vl, _ = read_video(mp4_l)
    assert vm.shape == vl.shape == (FRAMES, 96, 128, 3) and np.array_equal(vm, vl)


def test_eval_reads_mcap_and_ltk_alike(tmp_path: Path, small_clip: Path, tiny_weights: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--weights", str(tiny_weights), "--threads", "1"]
    for name in ("e.ltk", "e.mcap"):
        assert _run(capsys, "encode", str(small_clip), "-o", str(tmp_path / name), *common)[0] == 0
    results = {}
    for name in ("e.ltk", "e.mcap"):
        code, out = _run(capsys, "eval", str(tmp_path / name), "--reference", str(small_clip), "--json", *common)
        assert code == 0
        results[name] = json.loads(out)["overall"]
    code, out = _run(capsys, "eval", str(small_clip), "--json", *common)
    direct = json.loads(out)["overall"]
    for m in results.values():
        assert m["frames"] == FRAMES
        assert m["bits_per_frame"] == pytest.approx(direct["bits_per_frame"])
        assert m["tokens_per_frame"] == pytest.approx(direct["tokens_per_frame"])
        assert m["psnr"] == pytest.approx(direct["psnr"], abs=1e-6)  # the same frames decoded
    assert results["e.ltk"] == {**results["e.mcap"], "decode_ms": results["e.ltk"]["decode_ms"]}


def test_mcap_errors_are_one_line(tmp_path: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.mcap"
    bad.write_bytes(b"not an mcap file at all")
    code = main(["decode", str(bad), "-o", str(tmp_path / "o.mp4"), "--weights", str(tiny_weights)])
    err = capsys.readouterr().err
    assert code == 2 and "not a readable MCAP file" in err and len(err.strip().splitlines()) == 1
