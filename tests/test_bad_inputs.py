"""Video inputs that go wrong (issue 7): each is one clear line from the CLI (no traceback) or a
handled case — missing, empty, non-video and folder inputs, absent cameras, a camera that ends or
fails mid-stream, odd sizes, gray and 16-bit video, and a frame-size change mid-stream."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest

from livetok.bench.localbroker import Broker
from livetok.cli import main
from livetok.engine.checkpoint import model_identity
from livetok.engine.model import Tokenizer
from livetok.stream import sources
from livetok.stream.errors import VideoError
from livetok.stream.session import ReceiverSession, SenderSession
from livetok.stream.video_io import Mp4Writer, as_rgb8, read_video
from livetok.stream.wire import LtkWriter, read_ltk

from .conftest import BUNDLED_CLIP


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def one_error_line(code: int, err: str, fragment: str) -> None:
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("livetok: error:") and fragment in lines[0], err


@pytest.mark.parametrize(("make", "fragment"), [
    (None, "no such file"),
    (b"", "is empty (0 bytes)"),
    (b"hello, not a video\n" * 50, "cannot open"),
    ("dir", "is a folder, not a video file"),
], ids=["missing", "empty", "not-video", "folder"])
def test_encode_bad_files_are_one_line(tmp_path: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str],
                                       make: bytes | str | None, fragment: str) -> None:
    p = tmp_path / "in.mp4"
    if make == "dir":
        p.mkdir()
    elif isinstance(make, bytes):
        p.write_bytes(make)
    code, out, err = run(capsys, "encode", str(p), "-o", str(tmp_path / "x.ltk"), "--weights", str(tiny_weights))
    one_error_line(code, err, fragment)
    assert out == ""


def test_encode_absent_camera_is_one_line(tmp_path: Path, tiny_weights: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "encode", "webcam:57", "-o", str(tmp_path / "x.ltk"), "--weights", str(tiny_weights))
    one_error_line(code, err, "no camera at index 57")


class FakeCamera:
    """cv2.VideoCapture stand-in: `frames` good frames, then an unplug (read fails) or a driver error."""

    def __init__(self, frames: int, then: str) -> None:
        self.left, self.then, self.released = frames, then, False

    def isOpened(self) -> bool:  # OpenCV's name
        return True

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.left > 0:
            self.left -= 1
            return True, np.full((48, 64, 3), 40 * self.left, np.uint8)
        if self.then == "error":
            raise cv2.error("OpenCV(4.10) videoio: VIDIOC_DQBUF: No such device")
        return False, None

    def release(self) -> None:
        self.released = True


@pytest.mark.parametrize("then", ["unplug", "error"])
def test_camera_that_ends_or_fails_mid_stream(tmp_path: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch, then: str) -> None:
    cams: list[FakeCamera] = []

    def fake(*_: Any) -> FakeCamera:
        cams.append(FakeCamera(4, then))
        return cams[-1]

    monkeypatch.setattr(sources.cv2, "VideoCapture", fake)
    ltk = tmp_path / "cam.ltk"
    code, _, err = run(capsys, "encode", "webcam:0", "-o", str(ltk), "--weights", str(tiny_weights), "--json")
    if then == "unplug":
        assert code == 0  # the stream simply ends
    else:
        one_error_line(code, err, "camera 0 failed after 4 frames: OpenCV(4.10) videoio: VIDIOC_DQBUF: No such device")
    _, packets, damage = read_ltk(ltk)
    assert len(packets) == 4 and damage is None  # what was captured before is kept, in a valid file
    assert cams[0].released


def _ffv1(path: Path, frames: list[np.ndarray], pix_fmt: str) -> Path:
    """A lossless (FFV1) MKV; gray16le frames are uint16 [H, W]."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=30)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv444p" if pix_fmt == "rgb24" else pix_fmt  # FFV1 stores colour as YUV
        for f in frames:
            vf = av.VideoFrame.from_ndarray(f, format=pix_fmt)
            for pkt in s.encode(vf.reformat(format=s.pix_fmt) if pix_fmt == "rgb24" else vf):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


@pytest.mark.parametrize("pix_fmt", ["gray16le", "gray", "rgb24"])
def test_odd_sized_gray_and_16_bit_video_through_the_cli(tmp_path: Path, tiny_weights: Path, pix_fmt: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(3)
    shape = (217, 333) if pix_fmt != "rgb24" else (217, 333, 3)
    dtype = np.uint16 if pix_fmt == "gray16le" else np.uint8
    frames = [rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype) for _ in range(3)]
    clip = _ffv1(tmp_path / f"odd_{pix_fmt}.mkv", frames, pix_fmt)
    ltk, mp4 = tmp_path / "x.ltk", tmp_path / "x.mp4"
    code, _, err = run(capsys, "encode", str(clip), "-o", str(ltk), "--weights", str(tiny_weights), "--json")
    assert code == 0, err
    meta, packets, _ = read_ltk(ltk)
    assert (meta["width"], meta["height"]) == (333, 217) and len(packets) == 3
    assert (packets[0].grid_h, packets[0].grid_w) == (28, 42)  # ceil(217/8) x ceil(333/8)
    assert run(capsys, "decode", str(ltk), "-o", str(mp4), "--weights", str(tiny_weights))[0] == 0
    assert read_video(mp4)[0].shape == (3, 218, 334, 3)  # H.264 needs even sides: padded by one


def test_gray_rgba_and_16_bit_arrays_through_the_api(tiny_model: Tokenizer) -> None:
    tx, rx = SenderSession(tiny_model), ReceiverSession(tiny_model)
    gray16 = np.full((20, 30), 0x8000, np.uint16)
    for frame in (gray16, gray16[..., None], np.full((20, 30, 4), 200, np.uint8), np.full((20, 30, 3), 9, np.uint8)):
        enc = tx.encode(frame)
        assert rx.decode(enc.data).shape == (20, 30, 3)
    assert as_rgb8(gray16)[0, 0].tolist() == [128, 128, 128]
    with pytest.raises(VideoError, match=r"frames must be uint8 or uint16, got float32"):
        as_rgb8(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(VideoError, match=r"got shape \(4, 4, 2\)"):
        as_rgb8(np.zeros((4, 4, 2), np.uint8))


def _size_change_frames(real_frames: np.ndarray) -> Iterator[np.ndarray]:
    for i in range(4):
        yield np.ascontiguousarray(real_frames[i, :48, :64])
    for i in range(4, 8):
        yield np.ascontiguousarray(real_frames[i, :96, :80])  # a new camera mode mid-stream


def test_frame_size_change_mid_stream(tmp_path: Path, tiny_model: Tokenizer, tiny_weights: Path,
                                      real_frames: np.ndarray, capsys: pytest.CaptureFixture[str]) -> None:
    tx, rx = SenderSession(tiny_model), ReceiverSession(tiny_model)
    ltk = tmp_path / "resize.ltk"
    with LtkWriter(ltk, {"model_id": model_identity(tiny_model), "fps": 30, "width": 64, "height": 48,
                              "fsq_levels": list(tiny_model.cfg.fsq.levels),
                         "preset": "tiny"}) as w:
        for i, frame in enumerate(_size_change_frames(real_frames)):
            enc = tx.encode(frame, timestamp_us=i)
            assert enc.packet.keyframe == (i in (0, 4))  # the new size starts with a keyframe
            assert rx.decode(enc.data).shape == frame.shape  # the receiver follows
            w.write(enc.data)
    mp4 = tmp_path / "resize.mp4"
    code, out, err = run(capsys, "decode", str(ltk), "-o", str(mp4), "--weights", str(tiny_weights), "--json")
    assert code == 0 and json.loads(out)["frames"] == 8 and "Traceback" not in err
    assert read_video(mp4)[0].shape == (8, 48, 64, 3)  # later frames scaled to the first size


def test_mp4_writer_scales_after_a_size_change(tmp_path: Path) -> None:
    with Mp4Writer(tmp_path / "x.mp4", 30) as w:
        w.write(np.zeros((48, 64, 3), np.uint8))
        w.write(np.full((97, 131, 3), 255, np.uint8))
    assert w.frames == 2 and w.frames_resized == 1
    back = read_video(tmp_path / "x.mp4")[0]
    assert back.shape == (2, 48, 64, 3) and back[1].mean() > 240


# issue 14, item 6: noise in errors ----------------------------------------------------------------


def cli(*argv: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI in a fresh process (what a user's terminal shows, C-level stderr included), with no
    OpenCV logging variables of the caller's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV")}
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "livetok.cli", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("make", ["truncated-mp4", "absent-camera"])
def test_no_opencv_or_ffmpeg_log_lines(tmp_path: Path, tiny_weights: Path, make: str) -> None:
    """OpenCV prints "[ WARN:0@0.264] global cap_v4l.cpp ..." and its FFmpeg "moov atom not found" on
    the C stderr; the user sees only our line."""
    if make == "truncated-mp4":
        src = tmp_path / "cut.mp4"
        src.write_bytes(BUNDLED_CLIP.read_bytes()[:3000])  # the header, no moov atom
        want = f"livetok: error: cannot open {src} as a video (not a video file, or an unsupported codec)"
    else:
        src, want = Path("webcam:57"), "livetok: error: no camera at index 57 (is one connected, and is it free?)"
    r = cli("encode", str(src), "-o", str(tmp_path / "x.ltk"), "--weights", str(tiny_weights))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == want, r.stderr


@pytest.mark.parametrize("case", ["missing-ltk", "missing-folder", "folder"])
def test_os_errors_are_one_line_in_words(tmp_path: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str],
                                         case: str) -> None:
    """No "[Errno 2] No such file or directory: '...'": the cause in words, then the path."""
    w = ["--weights", str(tiny_weights)]
    if case == "missing-ltk":
        argv, want = ["decode", str(tmp_path / "gone.ltk"), "-o", str(tmp_path / "x.mp4")], \
            f"no such file: {tmp_path / 'gone.ltk'}"
    elif case == "missing-folder":
        argv, want = ["encode", str(BUNDLED_CLIP), "-o", str(tmp_path / "nowhere" / "x.ltk"), "--max-frames", "1"], \
            f"no such folder: {tmp_path / 'nowhere'}"
    else:
        argv = ["decode", str(tmp_path), "-o", str(tmp_path / "x.mp4")]
        want = f"{tmp_path} is a folder, not a .ltk file"
    code, out, err = run(capsys, *argv, *w)
    assert code == 2 and out == "" and err.strip() == f"livetok: error: {want}"


@pytest.mark.parametrize("argv", [["eval", "--bogus", "x.mkv"], ["bench", "rd", "x.mkv", "--bogus"]])
def test_unknown_flag_prints_the_subcommands_usage(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    name = " ".join(a for a in argv if not a.startswith("-") and not a.endswith(".mkv"))
    assert e.value.code == 2
    assert err[0].startswith(f"usage: livetok {name} [-h]") and err[-1] == f"livetok {name}: error: " \
        "unrecognized arguments: --bogus"


def test_bad_rate_is_refused_before_torch_is_imported() -> None:
    """`--rate 7` used to be refused only after the command had imported torch and loaded the model."""
    r = cli(code=f"import sys; from livetok.cli import main; "
                 f"c = main(['eval', {str(BUNDLED_CLIP)!r}, '--rate', '7']); print(c, 'torch' in sys.modules)")
    assert r.stdout.split() == ["2", "False"] and r.stderr.strip() == "livetok: error: rate must be in (0, 1], got 7.0"


def test_receiving_an_ended_stream_says_no_frames(mosquitto: Broker, tiny_weights: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Its latencies are unknown: not "latency p50 None ms"; exit 1, so a script does not read an empty
    run as success (issue 24 item 3; it was 0)."""
    w = ["--weights", str(tiny_weights)]
    assert main(["publish", "--source", str(BUNDLED_CLIP), "--broker", mosquitto.url, "--stream", "over",
                 "--max-frames", "3", "--as-fast-as-possible", "--size", "64x48", *w]) == 0
    capsys.readouterr()
    code, out, err = run(capsys, "receive", "--broker", mosquitto.url, "--stream", "over", "--timeout", "1", "--json",
                         *w)
    assert code == 1 and json.loads(out)["frames_received"] == 0
    assert err.strip() == "no frames received"


@pytest.mark.parametrize("argv", [
    ["receive", "--broker", "mqtt://127.0.0.1:1", "--stream", "cam", "--show"],
    ["webrtc", "recv", "--show"],
])
def test_show_says_what_to_use_instead(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    """Issue 24 item 5: `--show` needs a GUI build of OpenCV, which livetok's headless one can never be;
    it is refused in one line (before a model loads or a broker is tried) that names the way to watch."""
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        "livetok: error: --show cannot open a window (livetok uses the headless OpenCV build): pipe the video to "
        "a player instead, e.g. `livetok receive ... --out - | ffplay -` (or `| mpv -`), or record it with "
        "--out FILE.mp4"]


@pytest.mark.parametrize(("extra", "why"), [
    (["--json"], "--out - writes the video to stdout, where --json would print too: drop one"),
    (["--stream", "+"], "--out - carries one stream: receive one --stream, not '+'"),
])
def test_out_dash_is_one_stream_without_json(capsys: pytest.CaptureFixture[str], extra: list[str],
                                             why: str) -> None:
    code, out, err = run(capsys, "receive", "--broker", "mqtt://127.0.0.1:1", "--stream", "cam", "--out", "-",
                         *extra)
    assert code == 2 and out == "" and err.startswith(f"livetok: error: {why}") and len(err.splitlines()) == 1
