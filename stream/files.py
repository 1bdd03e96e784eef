"""`.ltk` files as a library: encode a video (or any source `open_source` knows) into a token file,
and decode a token file into an MP4. The CLI's `encode` and `decode` commands only parse their
arguments, call these and print the summaries."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from livetok.engine.config import SenderConfig
from livetok.engine.errors import TokenizerError
from livetok.engine.results import JsonResult, optional
from livetok.engine.runtime import Runtime

from .heatmap import token_heatmap
from .info import reader_info
from .session import EncodedFrame, ReceiverSession, SenderSession
from .sources import open_source
from .video_io import Mp4Writer
from .wire import Damage, LtkReader, LtkWriter, PacketError

ProgressCallback = Callable[[str, int], None]  # (source name, frames done since the last call)


# outputs `encode` refuses: the bytes it writes are tokens, which no player reads under these names
_MEDIA_SUFFIXES = frozenset({".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".y4m", ".ts", ".gif", ".png", ".jpg",
                             ".jpeg"})


def check_ltk_output(output: str | Path) -> None:
    """Refuse (ValueError, one line) a token file named like a video or picture: `encode -o clip.mp4`
    would write .ltk bytes under an .mp4 name, which every player then fails to open."""
    out = Path(output)
    if out.suffix.lower() in _MEDIA_SUFFIXES:
        raise ValueError(f"{out} names a {out.suffix} video, but encode writes livetok tokens (a .ltk file): use "
                         f"-o {out.with_suffix('.ltk')}, then `livetok decode {out.with_suffix('.ltk')} -o {out}` "
                         f"for the video")


@dataclass(frozen=True, kw_only=True)
class EncodeTotals(JsonResult):
    """What `encode_frames` wrote: frames, and the means per frame."""

    frames: int
    tokens_per_frame: float
    bits_per_frame: float


@dataclass(frozen=True, kw_only=True)
class EncodeSummary(JsonResult):
    """What `encode` wrote: the file, its frames and rates; the target keys (`TargetCheck`) with a `target_bps`."""

    output: str
    frames: int
    tokens_per_frame: float
    bits_per_frame: float
    bits_per_s: float  # at the source's frame rate (stream/bitrate.py)
    bytes: int
    target_bps: float | None = optional()
    target_below_floor: bool | None = optional()
    floor_share: float | None = optional()
    warning: str | None = optional(present_with="target_bps")  # when the target is below the floor


@dataclass(frozen=True)
class DecodeSummary(JsonResult):
    """What `decode` wrote: `frames` decoded, `frames_lost` to damage (the gap in frame indices around it; after
    the last good frame, the records left), `damaged` the damaged packets and stretches, `error` the first
    damage in words (None for an intact file)."""

    output: str
    frames: int
    frames_lost: int
    damaged: int
    error: str | None


def encode_file(
    model: Runtime,
    input: str,
    output: str | Path,
    sender: SenderConfig,
    max_frames: int | None = None,
    meta_extra: dict[str, Any] | None = None,
    progress: ProgressCallback | None = None,
) -> EncodeSummary:
    """Encode the source `input` (a file, URL, `webcam:N` or `synthetic[:preset]`) into the `.ltk`
    file `output`, frame by frame with one `SenderSession`.

    The file is created at the first frame; its header holds `model_id, fps, width, height,
    preset, source, policy, rate` (policy and rate from `sender.budget`), updated with
    `meta_extra`. Frame i is stamped i / fps seconds. `progress(name, n)` is called once with
    n = 0 when the source is open, then with n = 1 per frame written.

    Returns:
        the file, its frames and rates (`EncodeSummary`).

    Raises:
        ValueError: the source gave no frames (no file is written), or `output` is named like a video
            (`check_ltk_output`).
    """
    check_ltk_output(output)
    out = Path(output)
    stats, tx = encode_frames(model, input, sender, lambda meta: _LtkFrames(LtkWriter(out, meta)),
                              max_frames=max_frames, meta_extra=meta_extra, progress=progress)
    return summarize_encode(EncodeSummary, out, stats, tx)


S = TypeVar("S", bound=EncodeSummary)


def summarize_encode(kind: type[S], out: Path, stats: EncodeTotals, tx: SenderSession, **extra: Any) -> S:
    """An encode's summary of kind `kind` (`EncodeSummary` or a subclass, whose own fields are `extra`): the
    file written, its rates, and the target check when the sender had a target."""
    summary = kind(output=str(out), frames=stats.frames, tokens_per_frame=stats.tokens_per_frame,
                   bits_per_frame=stats.bits_per_frame, bits_per_s=tx.rate.bits_per_s(), bytes=out.stat().st_size,
                   **extra)
    check = tx.target_check()
    if check is not None:
        summary = dataclasses.replace(summary, **check.as_json(), warning=check.warning())
    return summary


class FrameWriter(Protocol):
    """Where `encode_frames` puts each encoded frame (a `.ltk` file; an MCAP file's camera channels)."""

    def write(self, enc: EncodedFrame) -> None: ...

    def close(self) -> None: ...


class _LtkFrames:
    def __init__(self, writer: LtkWriter) -> None:
        self.writer = writer

    def write(self, enc: EncodedFrame) -> None:
        self.writer.write(enc.data)

    def close(self) -> None:
        self.writer.close()


def encode_frames(
    model: Runtime,
    input: str,
    sender: SenderConfig,
    open_writer: Callable[[dict[str, Any]], FrameWriter],
    max_frames: int | None = None,
    meta_extra: dict[str, Any] | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[EncodeTotals, SenderSession]:
    """The frame loop of `encode_file` and `stream.mcap_file.encode_mcap`: encode the source `input` frame by
    frame with one `SenderSession`, frame i stamped i / fps seconds, into the writer `open_writer(meta)` makes
    at the first frame (`meta`: the `.ltk` header's keys, see `encode_file`, updated with `meta_extra`). The
    writer is closed however the loop ends (what was written is a valid prefix for a tolerant reader).
    `progress(name, n)`: n = 0 once the source is open, then n = 1 per frame written.

    Returns:
        (the frames and their means, the sender session: its bit rate and target check).

    Raises:
        ValueError: the source gave no frames (no writer is made).
    """
    src = open_source(input, max_frames)
    if progress is not None:
        progress(src.name, 0)
    tx = SenderSession(model, sender)
    frames = bits = tokens = 0
    writer: FrameWriter | None = None
    try:
        for i, frame in enumerate(src.frames):
            if writer is None:
                h, w = frame.shape[:2]
                meta = {"model_id": tx.model_id.hex(), "fps": src.fps, "width": w, "height": h,
                        "preset": model.cfg.name, "source": src.name, "policy": sender.budget.policy,
                        "rate": sender.budget.rate, **reader_info(model, sender), **(meta_extra or {})}
                writer = open_writer(meta)
            enc = tx.encode(frame, timestamp_us=round(i * 1e6 / src.fps))
            writer.write(enc)
            frames, bits, tokens = frames + 1, bits + 8 * len(enc.data), tokens + enc.packet.k
            if progress is not None:
                progress(src.name, 1)
    finally:
        if writer is not None:
            writer.close()
    if frames == 0:
        raise ValueError(f"{input}: no frames to encode")
    return EncodeTotals(frames=frames, tokens_per_frame=tokens / frames, bits_per_frame=bits / frames), tx


def ltk_records(path: str | Path) -> int | None:
    """Packet records in a `.ltk` file up to any damage (a progress bar's total: an end-of-stream
    record, when a file has one, is counted too); None when the file cannot be read."""
    try:
        with LtkReader(path) as reader:
            count = 0
            try:
                for _ in reader.iter_raw(verify=False):  # framing only: cheap
                    count += 1
            except PacketError:
                pass  # decode_file stops there too
            return count
    except (OSError, PacketError):
        return None  # decode_file says why, in its own words


def decode_file(
    model: Runtime,
    input: str | Path,
    output: str | Path,
    heatmap: bool = False,
    progress: ProgressCallback | None = None,
) -> DecodeSummary:
    """Decode the `.ltk` file `input` into the MP4 `output`, each frame at its capture time.

    With `heatmap`, each frame is shown beside a map of the token positions its packet kept. A
    damaged file (a flipped bit, a cut, a packet the model refuses) is decoded around the damage:
    the damaged packets and the frames after them that need them are skipped and decoding resumes at
    the next keyframe (`LtkReader.recover`). As every frame is placed at its capture time (its
    packet's timestamp), the last good frame stays on screen over the lost ones, as on a live
    receiver, and the video keeps its length. `progress(name, n)` is called once with n = 0, then
    with n = 1 per frame written.

    Returns:
        what was decoded and lost (`DecodeSummary`). No file is written when no frame could be decoded
        (`frames` 0).

    Raises:
        PacketError: the file is not a `.ltk` file, or was made by another model (both ids named).
    """
    rx = ReceiverSession(model)
    frames = lost = damaged = 0
    first_error: str | None = None
    # the receiver's bounds on every record, before it is read or decoded: a crafted file costs at most
    # what this model's largest frame costs
    with LtkReader(input, max_packet_bytes=rx.max_packet_bytes, screen=rx.screen) as reader:
        meta = reader.meta
        if meta.get("model_id") != rx.model_id.hex():
            raise PacketError(f"{input} was made by model {meta.get('model_id')} (preset "
                              f"{meta.get('preset', '?')!r}); this receiver runs model {rx.model_id.hex()} "
                              f"(preset {model.cfg.name!r}): decode it with --weights <that model's weights>")
        name = Path(input).name
        if progress is not None:
            progress(name, 0)
        last_index: int | None = None  # frame index of the last frame written
        passed = 0  # records passed over since it: damaged, or needing a frame that was
        with Mp4Writer(output, float(meta.get("fps", 30.0))) as writer:
            for item in reader.recover():
                if isinstance(item, Damage):
                    damaged += 1
                    first_error = first_error or item.error
                    passed += item.records
                    continue
                packet = item
                if packet.end_of_stream and packet.n == 0:
                    break
                if passed and not packet.keyframe:
                    passed += 1  # after a packet the model refused: it needs that frame
                    continue
                try:
                    frame = rx.decode(packet)
                except (PacketError, TokenizerError) as e:
                    # a packet this model could not have made: damage too; resume at a keyframe
                    damaged += 1
                    first_error = first_error or f"packet of frame {packet.frame_index}: {e}"
                    passed += 1
                    continue
                if passed:
                    gap = packet.frame_index - last_index - 1 if last_index is not None else 0
                    lost += gap if gap > 0 else passed  # indices vouched for by the CRC; else what was passed
                    passed = 0
                if heatmap:
                    frame = np.concatenate([frame, token_heatmap(frame, packet.mask, (packet.grid_h, packet.grid_w))],
                                           1)
                writer.write(frame, packet.timestamp_us)
                frames += 1
                last_index = packet.frame_index
                if progress is not None:
                    progress(name, 1)
        lost += passed  # damage after the last good frame: the records left
    return DecodeSummary(str(output), frames, lost, damaged, first_error)
