"""Damaged recordings and misnamed files through the CLI (issue 24 item 8): `decode` skips damage and
resumes at the next keyframe; a file with nothing decodable is an error; `encode` refuses a video name;
`eval` takes a folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from livetok.cli import main
from livetok.stream.wire import Damage, LtkReader

from .conftest import EVAL_DIR, eval_clips
from .recording import mp4_duration_s


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def clip_ltk(tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path) -> Path:
    """24 frames of a real clip, a keyframe every 8 (frames 0, 8, 16), through `livetok encode`."""
    ltk = tmp_path_factory.mktemp("damage") / "clip.ltk"
    assert main(["encode", str(eval_clips()[0]), "-o", str(ltk), "--weights", str(tiny_weights), "--max-frames",
                 "24", "--keyframe-interval", "8", "--threads", "1"]) == 0
    return ltk


def test_a_flipped_bit_loses_frames_up_to_the_next_keyframe_only(
    tmp_path: Path, clip_ltk: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 24: one flipped bit 60% into a recording stopped decoding there (27 of 48 frames lost)."""
    raw = bytearray(clip_ltk.read_bytes())
    raw[int(0.6 * len(raw))] ^= 0x08
    bad, out = tmp_path / "bad.ltk", tmp_path / "bad.mp4"
    bad.write_bytes(bytes(raw))
    with LtkReader(bad) as r:
        (damaged,) = (d for d in r.recover() if isinstance(d, Damage))
    code, stdout, err = run(capsys, "decode", str(bad), "-o", str(out), "--weights", str(tiny_weights), "--json",
                            "--threads", "1")
    res = json.loads(stdout)
    assert code == 1 and res["damaged"] == 1 and res["frames"] + res["frames_lost"] == 24
    # the damage is in frame D; D .. the next keyframe's frame - 1 are lost, nothing after it
    lost_from = damaged.number  # one record per frame
    assert res["frames_lost"] == 8 - lost_from % 8 if lost_from < 16 else 24 - lost_from
    assert f"packet #{lost_from} at byte offset" in res["error"]
    assert f"wrote {out}: {res['frames']} frames, {res['frames_lost']} lost to damage" in err
    seconds, frames = mp4_duration_s(out)
    assert frames == res["frames"]
    # each frame at its capture time: the last good frame stays on screen over the lost ones
    assert seconds == pytest.approx((24 if lost_from < 16 else 24 - res["frames_lost"]) / 30, abs=0.002)


def test_a_corrupt_first_packet_is_an_error_and_writes_nothing(
    tmp_path: Path, clip_ltk: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with LtkReader(clip_ltk) as r:
        first = r.data_offset
    raw = bytearray(clip_ltk.read_bytes())
    raw[first + 30] ^= 0x01
    bad, out = tmp_path / "corrupt.ltk", tmp_path / "corrupt.mp4"
    bad.write_bytes(bytes(raw))
    code, stdout, err = run(capsys, "decode", str(bad), "-o", str(out), "--weights", str(tiny_weights), "--json")
    # frames 1..7 need frame 0; the keyframe at 8 decodes: 16 frames written, 8 lost
    assert code == 1 and json.loads(stdout)["frames"] == 16 and json.loads(stdout)["frames_lost"] == 8
    # a file whose only keyframe is damaged: nothing decodes
    single = tmp_path / "one-keyframe.ltk"
    assert main(["encode", str(eval_clips()[0]), "-o", str(single), "--weights", str(tiny_weights),
                 "--max-frames", "3", "--threads", "1"]) == 0
    capsys.readouterr()
    raw = bytearray(single.read_bytes())
    raw[first + 30] ^= 0x01
    single.write_bytes(bytes(raw))
    out = tmp_path / "nothing.mp4"
    code, stdout, err = run(capsys, "decode", str(single), "-o", str(out), "--weights", str(tiny_weights))
    assert code == 2 and stdout == "" and not out.exists()
    (line,) = err.strip().splitlines()
    assert line.startswith(f"livetok: error: {single}: no frame could be decoded, nothing written: ")
    assert "packet #0 at byte offset" in line and "CRC mismatch" in line


@pytest.mark.parametrize("name", ["x.mp4", "x.MKV", "x.png"])
def test_encode_refuses_a_video_name(tmp_path: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str],
                                     name: str) -> None:
    out = tmp_path / name
    code, stdout, err = run(capsys, "encode", str(eval_clips()[0]), "-o", str(out), "--weights", str(tiny_weights))
    assert code == 2 and stdout == "" and not out.exists()
    (line,) = err.strip().splitlines()
    assert line == (f"livetok: error: {out} names a {out.suffix} video, but encode writes livetok tokens (a .ltk "
                    f"file): use -o {out.with_suffix('.ltk')}, then `livetok decode {out.with_suffix('.ltk')} -o "
                    f"{out}` for the video")


@pytest.mark.skipif(not EVAL_DIR.is_dir(), reason="needs the shared eval clips")
def test_eval_takes_a_folder(tmp_path: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = run(capsys, "eval", str(EVAL_DIR), "--weights", str(tiny_weights), "--max-frames", "1",
                          "--threads", "1", "--json")
    assert code == 0
    assert sorted(json.loads(stdout)["clips"]) == sorted(p.stem for p in EVAL_DIR.glob("*.mkv"))
    assert json.loads(stdout)["overall"]["frames"] == len(list(EVAL_DIR.glob("*.mkv")))
    (tmp_path / "notes.txt").write_text("no clips here")
    code, stdout, err = run(capsys, "eval", str(tmp_path), "--weights", str(tiny_weights))
    assert code == 2 and stdout == ""
    assert err.strip() == f"livetok: error: {tmp_path} is a folder with no video files in it " \
                          f"(.mp4, .mkv, .webm, .avi, .mov, .m4v, .y4m)"


def test_resealed_payload_changes_are_refused_or_caught_a_packet_later(tmp_path: Path) -> None:
    """A payload byte changed behind a recomputed CRC (docs/PACKET.md §6.6): the payload's checks refuse
    most; the few accepted (valid packets of other tokens) leave the receiver's coder state off the
    sender's, and the next packet is then refused: decoding resumes at the next keyframe."""
    import numpy as np

    from livetok.bench.resealed import resealed
    from livetok.stream.wire import CoderState, LtkWriter, TokenPacket

    from .test_entropy import real_frames

    path, state = tmp_path / "real.ltk", CoderState.empty((8, 5, 5, 5))
    model = bytes(8)
    with LtkWriter(path, {"model_id": model, "fps": 30, "width": 256, "height": 192, "preset": "default",
                          "fsq_levels": [8, 5, 5, 5]}) as w:
        for t, (grid, mask, idx, key) in enumerate(list(real_frames("infotok"))[:6]):
            data, state = TokenPacket(model, t, t * 33_333, key, False, 256, 192, grid[0], grid[1], 10, mask,
                                      np.asarray(idx)).pack_v2(state)
            w.write(data)
    res = resealed([str(path)], values=1, seed=0)  # every payload byte of 6 real frames, one other value each
    assert res["corruptions"] == 2464
    assert res["refused"] == {"not_canonical": 1831, "coder_invalid": 244, "mask_popcount": 321}
    assert res["accepted"] == 68  # 2.8%: valid packets of other tokens
    # ... of which the next packet was refused for 61, the one after for 4; 3 were in the last packet
    assert res["later_decoded"] == {"0": 61, "1": 4, "end": 3}
