"""Classic-codec baselines for the rate–distortion benchmark: x264 and VP8 through PyAV, in memory.

What a "bit" is here (the same for every point of every curve):

* The bytes of each encoded video packet (the raw elementary stream: H.264 Annex B NAL units with their
  start codes, or VP8 frames), exactly as they are handed to the decoder. No container (MP4/IVF/WebM/RTP)
  overhead is counted.
* Stream headers are counted once: x264 writes its SPS and PPS in-band in the first packet (no global
  header, so `extradata` is empty), and they are part of frame 0's size. If an encoder ever does put
  headers in `extradata`, its length is added to frame 0's size once. Averaging over the clip amortises
  them.
* Dropped: x264's informational SEI (user_data_unregistered with x264's UUID, about 600 bytes: the version
  string and the option list). It carries nothing a decoder needs, WebRTC senders do not transmit it, and
  it would cost x264 ~100 bits/frame on a 48-frame clip. It is cut out before decoding, so the decoded
  frames come from exactly the bytes counted. (`keep_x264_sei=True` keeps it.)
* VP8 has no stream headers outside its frames.

bits_per_frame = 8 * sum(per-frame packet sizes) / frames.

Both codecs see yuv420p made from the RGB frames by swscale (BT.601, limited range) and are measured
after converting back to RGB, so a round trip through yuv420p alone bounds their PSNR (~41 dB on the
asl-no clip).
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np
from av.video.codeccontext import VideoCodecContext

from livetok.engine.metrics import mean_psnr
from livetok.engine.metrics import ssim as frame_ssim
from livetok.stream.video_io import read_video

CODECS = ("x264", "vp8")

# x264 CRF (lower = better). At 256x192 this spans roughly 350..30000 bits/frame.
X264_CRFS: tuple[int, ...] = (15, 18, 21, 24, 27, 30, 33, 36, 39, 42, 45, 48, 51)
# VP8 target bitrates in bits/s; bits/frame ~ bitrate / fps (333..21000 at 30 fps), but VP8 bottoms out at its
# max quantizer (~500..1250 bits/frame on the eval clips), so the lowest rungs sit near that floor.
VP8_BITRATES: tuple[int, ...] = (
    10_000,
    15_000,
    20_000,
    30_000,
    40_000,
    60_000,
    80_000,
    120_000,
    160_000,
    240_000,
    320_000,
    480_000,
    640_000,
)
DEFAULT_SETTINGS: dict[str, tuple[int, ...]] = {"x264": X264_CRFS, "vp8": VP8_BITRATES}
SETTING_NAME = {"x264": "crf", "vp8": "bitrate_bps"}

X264_SEI_UUID = bytes.fromhex("dc45e9bde6d948b7962cd820d923eeef")
_START_CODE = re.compile(b"\x00\x00\x01")


@dataclass(frozen=True)
class CodecPoint:
    """One point of a codec's RD curve on one clip (or a frame-weighted average over clips)."""

    codec: str  # "x264" or "vp8"
    setting: int  # x264: CRF; vp8: target bitrate in bits/s
    bits_per_frame: float  # 8 * sum(packet bytes) / frames; see the module docstring for what is counted
    psnr: float  # dB, per RGB frame, averaged over frames
    ssim: float  # per RGB frame, averaged over frames
    frames: int
    encode_ms: float  # median wall time of one encoder call per frame (yuv420p in, packet out), in ms


def _check(codec: str, setting: int) -> None:
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; expected one of {', '.join(CODECS)}")
    if codec == "x264" and not 0 <= int(setting) <= 51:
        raise ValueError(f"x264 CRF must be in 0..51, got {setting}")
    if codec == "vp8" and int(setting) <= 0:
        raise ValueError(f"vp8 bitrate (bits/s) must be positive, got {setting}")


def _encoder(codec: str, setting: int, width: int, height: int, fps: float) -> VideoCodecContext:
    rate = Fraction(fps).limit_denominator(1001)
    if codec == "x264":
        ctx = av.CodecContext.create("libx264", "w")
        # What WebRTC-style x264 sends: fast preset, no lookahead, no B-frames, one thread here.
        options = {"preset": "veryfast", "tune": "zerolatency", "crf": str(int(setting)), "bf": "0", "threads": "1"}
    else:
        ctx = av.CodecContext.create("libvpx", "w")
        # Realtime libvpx: fastest realtime speed, no lookahead (so no alt-ref frames), one thread.
        # Rate control: libvpx's default (VBR) towards the target bitrate; on 48-frame clips it lands
        # within a few % of bitrate/fps (above the q=63 floor, ~500..1250 bits/frame per clip) and beats
        # fixed q (qmin=qmax) by 0.4-2.5 dB at equal bits; CBR (minrate=maxrate) gave the same RD.
        ctx.bit_rate = int(setting)
        options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "threads": "1"}
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base = 1 / rate
    ctx.framerate = rate
    ctx.options = options
    return ctx


def strip_x264_sei(data: bytes) -> bytes:
    """An Annex B access unit without x264's informational SEI NAL units (all other NAL units kept)."""
    starts = [m.start() for m in _START_CODE.finditer(data)]
    if not starts:
        return data
    # each NAL unit runs from its start code (with a leading zero byte for 4-byte codes) to the next one
    begins = [s - 1 if s > 0 and data[s - 1] == 0 else s for s in starts]
    out = bytearray(data[: begins[0]])
    for i, (b, s) in enumerate(zip(begins, starts, strict=True)):
        end = begins[i + 1] if i + 1 < len(begins) else len(data)
        nal = data[s + 3 : end]
        if nal and nal[0] & 0x1F == 6 and X264_SEI_UUID in nal[:32]:
            continue
        out += data[b:end]
    return bytes(out)


def _encode_decode(
    frames: np.ndarray, fps: float, codec: str, setting: int, keep_x264_sei: bool = False
) -> tuple[np.ndarray, list[int], list[float]]:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"expected uint8 RGB frames [T, H, W, 3] with T > 0, got {frames.dtype} {frames.shape}")
    _check(codec, setting)
    t, h, w = frames.shape[:3]
    ph, pw = h % 2, w % 2
    enc = _encoder(codec, setting, w + pw, h + ph, fps)

    payloads: list[bytes | None] = [None] * t
    encode_ms: list[float] = []

    def collect(packets: list[av.Packet[Any]]) -> None:
        for p in packets:
            i = -1 if p.pts is None else int(p.pts)
            if not 0 <= i < t or payloads[i] is not None:
                raise RuntimeError(f"{codec}: unexpected packet pts {p.pts}")
            data = bytes(p)
            payloads[i] = data if codec != "x264" or keep_x264_sei else strip_x264_sei(data)

    for i, f in enumerate(frames):
        if ph or pw:
            f = np.pad(f, ((0, ph), (0, pw), (0, 0)), mode="edge")
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24").reformat(format="yuv420p")
        vf.pts = i
        t0 = time.perf_counter()
        packets = enc.encode(vf)
        encode_ms.append((time.perf_counter() - t0) * 1e3)
        collect(packets)
    collect(enc.encode(None))

    extradata = bytes(enc.extradata or b"")
    sizes = [len(p) if p is not None else 0 for p in payloads]
    sizes[0] += len(extradata)  # headers outside the packets (none with these settings) counted once

    dec = av.CodecContext.create("h264" if codec == "x264" else "vp8", "r")
    dec.thread_count = 1
    if extradata:
        dec.extradata = extradata
    decoded: list[np.ndarray] = []
    order: list[int] = []  # frame index of each packet fed to the decoder, in decoding order
    for i, data in enumerate(payloads):
        if data is None:
            continue  # a frame the encoder dropped: the receiver keeps showing the previous one
        order.append(i)
        decoded += [fr.to_ndarray(format="rgb24") for fr in dec.decode(av.Packet(data))]
    decoded += [fr.to_ndarray(format="rgb24") for fr in dec.decode(None)]
    if len(decoded) != len(order) or not order or order[0] != 0:
        raise RuntimeError(f"{codec}: {len(order)} packets for {t} frames decoded to {len(decoded)} frames")
    out = np.empty((t, h + ph, w + pw, 3), np.uint8)
    k = -1
    for i in range(t):
        if k + 1 < len(order) and order[k + 1] == i:
            k += 1
        out[i] = decoded[k]
    return out[:, :h, :w], sizes, encode_ms


def encode_decode(frames: np.ndarray, fps: float, codec: str, setting: int) -> tuple[np.ndarray, list[int]]:
    """Encode uint8 RGB frames [T, H, W, 3] with `codec` ("x264": CRF; "vp8": bits/s) and decode them back.

    Returns the decoded RGB frames (same shape; odd sizes are edge-padded to even and cropped back) and the
    size in bytes of each frame's packet as counted for bits/frame (see the module docstring).
    """
    out, sizes, _ = _encode_decode(frames, fps, codec, setting)
    return out, sizes


def _quality(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    p = mean_psnr(a, b)
    s = float(np.mean([frame_ssim(x, y) for x, y in zip(a, b, strict=True)]))
    return p, s


def rd_curve(frames: np.ndarray, fps: float, codec: str, settings: Sequence[int] | None = None) -> list[CodecPoint]:
    """The codec's RD points on one clip, one per setting (default: DEFAULT_SETTINGS[codec]), sorted by bits."""
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; expected one of {', '.join(CODECS)}")
    points = []
    for setting in DEFAULT_SETTINGS[codec] if settings is None else settings:
        out, sizes, ms = _encode_decode(frames, fps, codec, int(setting))
        p, s = _quality(frames, out)
        points.append(
            CodecPoint(
                codec=codec,
                setting=int(setting),
                bits_per_frame=8.0 * sum(sizes) / len(frames),
                psnr=p,
                ssim=s,
                frames=len(frames),
                encode_ms=float(np.median(ms)),
            )
        )
    return sorted(points, key=lambda q: (q.bits_per_frame, q.setting))


def curves_for_clips(
    paths: Sequence[str | os.PathLike[str]],
    codec: str,
    settings: Sequence[int] | None = None,
    max_frames: int | None = None,
) -> list[dict[str, float]]:
    """Per setting, the frame-weighted average over clips of bits/frame, PSNR and SSIM, sorted by bits.

    Returns [{"bits_per_frame", "psnr", "ssim", "setting"}, ...]: what `bench rd` puts under codecs[<name>].
    """
    if not paths:
        raise ValueError("curves_for_clips needs at least one clip")
    acc: dict[int, list[float]] = {}  # setting -> [frames, sum bits, sum psnr*frames, sum ssim*frames]
    for path in paths:
        frames, fps = read_video(path, max_frames=max_frames)
        for pt in rd_curve(frames, fps, codec, settings):
            a = acc.setdefault(pt.setting, [0.0, 0.0, 0.0, 0.0])
            a[0] += pt.frames
            a[1] += pt.bits_per_frame * pt.frames
            a[2] += pt.psnr * pt.frames
            a[3] += pt.ssim * pt.frames
    rows = [
        {"bits_per_frame": b / n, "psnr": p / n, "ssim": s / n, "setting": setting}
        for setting, (n, b, p, s) in acc.items()
    ]
    return sorted(rows, key=lambda r: (r["bits_per_frame"], r["setting"]))


def _xy(curve: Sequence[CodecPoint | Mapping[str, Any]], x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    def get(pt: CodecPoint | Mapping[str, Any], k: str) -> float:
        return float(pt[k]) if isinstance(pt, Mapping) else float(getattr(pt, k))

    pairs = sorted((get(pt, x), get(pt, y)) for pt in curve)
    return np.array([p[0] for p in pairs], np.float64), np.array([p[1] for p in pairs], np.float64)


def _interp(xs: np.ndarray, ys: np.ndarray, v: float) -> float:
    if len(xs) == 0 or not math.isfinite(v) or v < xs[0] or v > xs[-1]:
        return math.nan
    return float(np.interp(v, xs, ys))


def psnr_at_bits(curve: Sequence[CodecPoint | Mapping[str, Any]], bits: float) -> float:
    """PSNR linearly interpolated at `bits` bits/frame on the curve (points or dicts); nan outside its range."""
    return _interp(*_xy(curve, "bits_per_frame", "psnr"), float(bits))


def bits_at_psnr(curve: Sequence[CodecPoint | Mapping[str, Any]], psnr: float) -> float:
    """Bits/frame linearly interpolated at `psnr` dB on the curve (assumed monotone); nan outside its range."""
    return _interp(*_xy(curve, "psnr", "bits_per_frame"), float(psnr))
