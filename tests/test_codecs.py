"""x264 / VP8 baselines of the RD benchmark (livetok.bench.codecs), on 12 frames of the bundled clip."""

from __future__ import annotations

import math

import numpy as np
import pytest

from livetok.bench.codecs import (
    CodecPoint,
    bits_at_psnr,
    encode_decode,
    psnr_at_bits,
    rd_curve,
    strip_x264_sei,
)
from livetok.engine.metrics import mean_psnr
from livetok.stream.video_io import read_video

from .conftest import BUNDLED_CLIP


@pytest.fixture(scope="module")
def clip() -> tuple[np.ndarray, float]:
    frames, fps = read_video(BUNDLED_CLIP, max_frames=12)
    assert frames.shape == (12, 192, 256, 3)
    return frames, fps


def test_x264_round_trip(clip: tuple[np.ndarray, float]) -> None:
    frames, fps = clip
    out, sizes = encode_decode(frames, fps, "x264", 23)
    assert out.shape == frames.shape and out.dtype == np.uint8
    assert len(sizes) == len(frames) and all(s > 0 for s in sizes)
    assert sizes[0] > max(sizes[1:])  # the IDR frame, with SPS/PPS in-band
    assert mean_psnr(frames, out) > 30.0


def test_x264_info_sei_is_stripped(clip: tuple[np.ndarray, float]) -> None:
    # SPS, PPS, x264's info SEI, IDR slice: only the SEI goes
    sps, pps = b"\x00\x00\x00\x01\x67\x64\x00\x0c", b"\x00\x00\x00\x01\x68\xef"
    sei = b"\x00\x00\x01\x06\x05\x10" + bytes.fromhex("dc45e9bde6d948b7962cd820d923eeef") + b"x264\x80"
    idr = b"\x00\x00\x01\x65\x88\x84"
    assert strip_x264_sei(sps + pps + sei + idr) == sps + pps + idr
    assert strip_x264_sei(sps + pps + idr) == sps + pps + idr


@pytest.mark.parametrize("codec,settings", [("x264", [18, 28, 38]), ("vp8", [30_000, 120_000, 480_000])])
def test_rd_curve_is_monotone(clip: tuple[np.ndarray, float], codec: str, settings: list[int]) -> None:
    frames, fps = clip
    curve = rd_curve(frames, fps, codec, settings)
    assert [type(p) for p in curve] == [CodecPoint] * 3
    assert all(p.codec == codec and p.frames == 12 and p.encode_ms > 0 for p in curve)
    # sorted by bits; more bits <=> better setting (lower CRF / higher bitrate) and higher PSNR and SSIM
    best_first = sorted(settings, reverse=codec == "vp8")
    assert [p.setting for p in curve] == best_first[::-1]
    assert curve[0].bits_per_frame < curve[1].bits_per_frame < curve[2].bits_per_frame
    assert curve[0].psnr < curve[1].psnr < curve[2].psnr
    assert curve[0].ssim < curve[1].ssim < curve[2].ssim


def test_bits_per_frame_counts_every_packet_once(clip: tuple[np.ndarray, float]) -> None:
    frames, fps = clip
    for codec, setting in [("x264", 30), ("vp8", 60_000)]:
        out, sizes = encode_decode(frames, fps, codec, setting)
        (pt,) = rd_curve(frames, fps, codec, [setting])
        assert pt.bits_per_frame == 8 * sum(sizes) / len(frames)
        assert pt.psnr == pytest.approx(mean_psnr(frames, out))


def test_odd_size_round_trip(clip: tuple[np.ndarray, float]) -> None:
    frames, fps = clip
    src = np.ascontiguousarray(frames[:4, :95, :127])
    for codec, setting in [("x264", 20), ("vp8", 400_000)]:
        out, sizes = encode_decode(src, fps, codec, setting)
        assert out.shape == src.shape and len(sizes) == 4
        assert mean_psnr(src, out) > 28.0


def test_bad_arguments(clip: tuple[np.ndarray, float]) -> None:
    frames, fps = clip
    with pytest.raises(ValueError, match="unknown codec"):
        encode_decode(frames[:2], fps, "av1", 30)
    with pytest.raises(ValueError, match="CRF"):
        encode_decode(frames[:2], fps, "x264", 60)
    with pytest.raises(ValueError, match="uint8 RGB"):
        encode_decode(frames[:2].astype(np.float32), fps, "x264", 30)


def test_interpolation_on_a_hand_made_curve() -> None:
    curve = [
        {"bits_per_frame": 2000.0, "psnr": 34.0, "ssim": 0.9, "setting": 2},
        {"bits_per_frame": 1000.0, "psnr": 30.0, "ssim": 0.8, "setting": 1},  # unsorted on purpose
        {"bits_per_frame": 4000.0, "psnr": 36.0, "ssim": 0.95, "setting": 3},
    ]
    assert psnr_at_bits(curve, 1000.0) == 30.0
    assert psnr_at_bits(curve, 1500.0) == 32.0
    assert psnr_at_bits(curve, 3000.0) == 35.0
    assert psnr_at_bits(curve, 4000.0) == 36.0
    assert bits_at_psnr(curve, 31.0) == 1250.0
    assert bits_at_psnr(curve, 35.5) == 3500.0
    for v in (999.0, 4001.0, math.nan):
        assert math.isnan(psnr_at_bits(curve, v))
    for v in (29.9, 36.1):
        assert math.isnan(bits_at_psnr(curve, v))
    assert math.isnan(psnr_at_bits([], 1000.0))
    # CodecPoints work too
    pts = [CodecPoint("x264", c, b, p, 0.9, 12, 1.0) for c, b, p in [(40, 500.0, 25.0), (30, 1500.0, 31.0)]]
    assert psnr_at_bits(pts, 1000.0) == 28.0 and bits_at_psnr(pts, 28.0) == 1000.0
