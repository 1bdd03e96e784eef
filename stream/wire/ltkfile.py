"""The ``.ltk`` recording: a small JSON-carrying header, then length-prefixed packets (the wire bytes).

Damage is local: a reader yields every packet before a truncation or corruption, then says where it stopped.
Version 2 and 3 (entropy-coded) packets are decoded in file order with one coder state, built from the
metadata's ``fsq_levels``; a version 3 non-keyframe's CRC is checked with the file's model id.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from .entropy import CoderState
from .errors import PacketError
from .packet import (
    HEADER_V2_PREFIX,
    MARKER_V3,
    MAX_PACKET_BYTES,
    MIN_PACKET_BYTES,
    MIN_PACKET_BYTES_V2,
    MIN_PACKET_BYTES_V3,
    MODEL_ID_SIZE,
    VERSION,
    PacketHeader,
    TokenPacket,
    packet_version,
    verify_packet,
)

__all__ = [
    "FILE_HEADER",
    "FILE_HEADER_SIZE",
    "FILE_MAGIC",
    "FILE_VERSION",
    "MAX_META_BYTES",
    "REQUIRED_META",
    "Damage",
    "LtkReader",
    "LtkWriter",
    "read_ltk",
]

FILE_MAGIC = b"LTKF"
FILE_VERSION = 1
FILE_HEADER = struct.Struct("<4sBI")  # magic, version, JSON length
FILE_HEADER_SIZE = FILE_HEADER.size  # 9
RECORD_PREFIX = struct.Struct("<I")  # length of the packet that follows
MAX_META_BYTES = 1024 * 1024
REQUIRED_META = ("model_id", "fps", "width", "height", "preset")
LEVELS_META = "fsq_levels"  # the model's FSQ levels: required to read version 2 and 3 (entropy-coded) packets
MIN_RECORD_BYTES = min(MIN_PACKET_BYTES, MIN_PACKET_BYTES_V2, MIN_PACKET_BYTES_V3)  # 8
# where a record is tried after damage: where the file's model id lies at offset 6 of a version 1 or 2 packet
# or at offset 1 of a version 3 keyframe or end-of-stream packet, and where a version 3 non-keyframe's first
# byte (0xf0, which carries no model id) lies at offset 0
_MODEL_OFFSETS = (HEADER_V2_PREFIX.size - MODEL_ID_SIZE, 1)
_MARKER_OFFSETS = (0,)
_SCAN_CHUNK = 1 << 20  # bytes read at a time while looking for the next record after damage


def _normalise_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """Check the required keys and coerce them to their JSON types (model_id as lowercase hex)."""
    if not isinstance(meta, dict):
        raise ValueError(f"meta must be a dict, got {type(meta).__name__}")
    missing = [key for key in REQUIRED_META if key not in meta]
    if missing:
        raise ValueError(f"meta lacks required keys {missing} (required: {list(REQUIRED_META)})")
    out = dict(meta)
    model_id = meta["model_id"]
    if isinstance(model_id, (bytes, bytearray)):
        model_id = bytes(model_id).hex()
    if not isinstance(model_id, str) or not _is_model_hex(model_id):
        raise ValueError(f"meta model_id must be {MODEL_ID_SIZE} bytes or {2 * MODEL_ID_SIZE} hex digits, "
                         f"got {meta['model_id']!r}")
    out["model_id"] = model_id.lower()
    fps = meta["fps"]
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < float(fps) < float("inf"):
        raise ValueError(f"meta fps must be a positive finite number, got {fps!r}")
    out["fps"] = float(fps)
    for key in ("width", "height"):
        if isinstance(meta[key], bool) or not isinstance(meta[key], int) or meta[key] < 0:
            raise ValueError(f"meta {key} must be a non-negative int, got {meta[key]!r}")
    if not isinstance(meta["preset"], str):
        raise ValueError(f"meta preset must be a str, got {meta['preset']!r}")
    if LEVELS_META in meta:
        levels = meta[LEVELS_META]
        if (not isinstance(levels, (list, tuple)) or not levels
                or any(isinstance(v, bool) or not isinstance(v, int) or not 2 <= v <= 255 for v in levels)):
            raise ValueError(f"meta {LEVELS_META} must be a non-empty list of ints in 2..255, got {levels!r}")
        try:  # the coder's own limits (count table sizes), here rather than at the first version 2 packet
            CoderState.empty(levels)
        except ValueError as e:
            raise ValueError(f"meta {LEVELS_META}: {e}") from None
        out[LEVELS_META] = [int(v) for v in levels]
    return out


def _is_coded(data: bytes) -> bool:
    """Whether a packet is entropy-coded (version 2 or 3): it decodes with the stream's coder state."""
    return packet_version(data) != VERSION


def _is_model_hex(text: str) -> bool:
    if len(text) != 2 * MODEL_ID_SIZE:
        return False
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


# --- writing ------------------------------------------------------------------------------------------------


class LtkWriter:
    """Write a ``.ltk`` file packet by packet; use as a context manager.

    Args:
        path: file to create (overwritten if it exists).
        meta: JSON-serialisable metadata with at least ``model_id`` (8 bytes or 16 hex digits),
            ``fps``, ``width``, ``height`` and ``preset``; ``fsq_levels`` (the model's FSQ levels) is
            required before version 2 or 3 packets can be written; other keys are kept as given.

    Raises:
        ValueError: missing or ill-typed metadata, or metadata over :data:`MAX_META_BYTES`.
    """

    def __init__(self, path: str | os.PathLike[str], meta: dict[str, Any]) -> None:
        self.meta = _normalise_meta(meta)
        self.model_id = bytes.fromhex(self.meta["model_id"])
        try:
            blob = json.dumps(self.meta, ensure_ascii=False, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as e:
            raise ValueError(f"meta is not JSON-serialisable: {e}") from e
        if len(blob) > MAX_META_BYTES:
            raise ValueError(f"meta is {len(blob)} bytes of JSON, the limit is {MAX_META_BYTES}")
        self.path = Path(path)
        self.packets_written = 0
        self._file: IO[bytes] | None = open(self.path, "wb")  # noqa: SIM115  (closed in close())
        self._file.write(FILE_HEADER.pack(FILE_MAGIC, FILE_VERSION, len(blob)) + blob)

    def write(self, packet: bytes | TokenPacket) -> None:
        """Append one packet (its wire bytes, or a :class:`TokenPacket` to pack).

        Raises:
            PacketError: the bytes are not a valid packet.
            ValueError: the packet is for another model than the file's, or the writer is closed.
        """
        if self._file is None:
            raise ValueError(f"LtkWriter for {self.path} is closed")
        data = packet.pack() if isinstance(packet, TokenPacket) else bytes(memoryview(packet))
        # refuse to record bytes no reader would accept (a version 3 non-keyframe's CRC covers the file's
        # model id: another model's fails it)
        header = verify_packet(data, model_id=self.model_id)
        if header.model_id != self.model_id:
            raise ValueError(f"packet is for model {header.model_id.hex()}, this file records model "
                             f"{self.model_id.hex()}")
        if header.version != VERSION and LEVELS_META not in self.meta:
            raise ValueError(f"a version {header.version} packet needs the FSQ levels to be read back: put "
                             f"{LEVELS_META!r} in the file's metadata")
        self._file.write(RECORD_PREFIX.pack(len(data)) + data)
        self.packets_written += 1

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> LtkWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()  # even on error: what was written is a valid prefix for a tolerant reader


# --- reading ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Damage:
    """A damaged stretch of a ``.ltk`` file that :meth:`LtkReader.recover` passed over.

    Attributes:
        number: the packet number where the damage begins (records are counted as read; a stretch
            whose framing was lost counts as one).
        offset: its byte offset in the file.
        error: the first damage in words (the ``PacketError`` message, naming number and offset).
        records: records passed over: damaged ones (an unframed stretch counts 1) and the intact
            non-keyframes after them, which cannot be decoded without the frames before them.
        skipped_bytes: bytes from ``offset`` to where reading resumed (or to the end of the file).
        resumed: True when a keyframe (or the end-of-stream packet) follows; False at the end of the file.

    How many *frames* were lost is the gap between the frame indices around the stretch (a sender
    numbers every frame, and the CRC vouches for both indices): ``records`` undercounts where bytes
    were cut out rather than changed.
    """

    number: int
    offset: int
    error: str
    records: int
    skipped_bytes: int
    resumed: bool


class LtkReader:
    """Read a ``.ltk`` file; use as a context manager and iterate for :class:`TokenPacket` objects.

    Iteration yields every valid packet in order. At the first damage (truncation, a bad length
    prefix, a packet failing its checks or for another model) it raises :class:`PacketError` naming the
    packet number and byte offset. Each iteration starts again from the first packet.

    Args:
        path: the file.
        max_packet_bytes: the longest record accepted, refused before it is read (a receiver passes
            the largest packet its model sends; default the format's 16 MiB).
        screen: called with each packet's bytes before they are decoded (a receiver's size and header
            checks, `ReceiverSession.screen`): a ``PacketError`` from it stops the iteration like damage.

    Attributes:
        meta: the metadata dict (``model_id`` is lowercase hex).
        model_id: ``meta["model_id"]`` as 8 bytes.
        data_offset: byte offset of the first packet record.

    Raises:
        PacketError: the file is not a livetok ``.ltk`` file, or its header or metadata is damaged.
    """

    def __init__(self, path: str | os.PathLike[str], max_packet_bytes: int = MAX_PACKET_BYTES,
                 screen: Callable[[bytes], None] | None = None) -> None:
        self.path = Path(path)
        self.max_packet_bytes = min(max_packet_bytes, MAX_PACKET_BYTES)
        self.screen = screen
        self._file: IO[bytes] = open(self.path, "rb")  # noqa: SIM115  (closed in close())
        try:
            self.meta, self.data_offset = self._read_header()
        except BaseException:
            self._file.close()
            raise
        self.model_id = bytes.fromhex(self.meta["model_id"])

    def _read_header(self) -> tuple[dict[str, Any], int]:
        head = self._file.read(FILE_HEADER_SIZE)
        if len(head) < FILE_HEADER_SIZE or head[:4] != FILE_MAGIC:
            raise PacketError(f"not a livetok .ltk file: {self.path} starts with {head[:4]!r}, "
                              f"expected {FILE_MAGIC!r}")
        _, version, size = FILE_HEADER.unpack(head)
        if version != FILE_VERSION:
            raise PacketError(f"unsupported .ltk version {version} in {self.path} "
                              f"(this build supports version {FILE_VERSION})")
        if size > MAX_META_BYTES:
            raise PacketError(f"corrupt .ltk file {self.path}: metadata length {size} exceeds the limit "
                              f"of {MAX_META_BYTES}")
        blob = self._file.read(size)
        if len(blob) < size:
            raise PacketError(f"truncated .ltk file {self.path}: metadata needs {size} bytes, "
                              f"got {len(blob)}")
        try:
            meta = json.loads(blob.decode("utf-8"))
            meta = _normalise_meta(meta)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise PacketError(f"corrupt .ltk file {self.path}: bad metadata: {e}") from e
        return meta, FILE_HEADER_SIZE + size

    def _records(self) -> Iterator[tuple[int, int, bytes]]:
        """Yield ``(packet number, byte offset, packet bytes)``, checking only the framing."""
        number, offset = 0, self.data_offset
        while True:
            self._file.seek(offset)  # seek every time: several iterators may be live at once
            prefix = self._file.read(RECORD_PREFIX.size)
            if not prefix:
                return
            data = self._framed(prefix, f"{self.path}: packet #{number} at byte offset {offset}")
            yield number, offset, data
            number += 1
            offset += RECORD_PREFIX.size + len(data)

    def iter_raw(self, verify: bool = True) -> Iterator[bytes]:
        """Yield each packet's wire bytes.

        Args:
            verify: also check each packet's header, lengths, CRC and model id (not its sections).

        Raises:
            PacketError: at the first damaged record, naming its number and byte offset.
        """
        for number, offset, data in self._records():
            if verify:
                try:
                    self._check_model(verify_packet(data, model_id=self.model_id))
                except PacketError as e:
                    raise PacketError(f"corrupt packet in .ltk file {self.path}: packet #{number} at byte "
                                      f"offset {offset}: {e}") from e
            yield data

    def __iter__(self) -> Iterator[TokenPacket]:
        state = self._coder_state()
        for number, offset, data in self._records():
            try:
                packet, state = self._unpack(data, state)
            except PacketError as e:
                raise PacketError(f"corrupt packet in .ltk file {self.path}: packet #{number} at byte "
                                  f"offset {offset}: {e}") from e
            yield packet

    def recover(self) -> Iterator[TokenPacket | Damage]:
        """Every decodable packet of a possibly damaged file, with the damage in between.

        Where :meth:`__iter__` stops at the first damage, this passes over it: it looks for the next
        intact record (one of the file's model whose length and CRC check out; the length prefix of a
        damaged record is not trusted), skips the intact non-keyframes after it — they need the frames
        lost before them — and resumes at the next keyframe, or at an end-of-stream packet with no grid.
        A :class:`Damage` is yielded just before the packet it resumes at (or last, when no keyframe
        follows). Packets yielded are exactly those ``__iter__`` yields on an intact file.

        Raises:
            PacketError: only for a damaged file header (the constructor's); damage after it is yielded.
        """
        state = self._coder_state()
        number, offset = 0, self.data_offset
        damage: dict[str, Any] | None = None  # the stretch being passed over: its start and counts
        while True:
            self._file.seek(offset)
            prefix = self._file.read(RECORD_PREFIX.size)
            if not prefix:
                break
            where = f"{self.path}: packet #{number} at byte offset {offset}"
            data: bytes = b""  # what was read of the record before it failed
            header: PacketHeader | None = None
            try:
                data = self._framed(prefix, where)  # its messages name the file and the record
                # CRC before anything: a damaged length reads here as a bad CRC
                header = verify_packet(data, model_id=self.model_id)
                self._check_model(header)  # another model's record: its length is true, passed over
                eos = header.end_of_stream and header.n == 0
                if damage is not None and not (header.keyframe or eos):
                    damage["records"] += 1  # intact, but its frame needs the ones lost before it
                    number, offset = number + 1, offset + RECORD_PREFIX.size + len(data)
                    continue
                packet, state = self._unpack(data, state)
            except PacketError as e:
                if damage is None:
                    error = str(e) if not data else f"corrupt packet in .ltk file {where}: {e}"
                    damage = {"number": number, "offset": offset, "error": error, "records": 0}
                damage["records"] += 1
                number += 1
                if header is not None:  # its CRC held: its length is true, the next record follows it
                    offset += RECORD_PREFIX.size + len(data)
                    continue
                found = self._next_record(offset + 1)
                if found is None:
                    offset = self._size()
                    break
                offset = found
                continue
            if damage is not None:
                yield Damage(damage["number"], damage["offset"], damage["error"], damage["records"],
                             offset - damage["offset"], True)
                damage = None
            yield packet
            number, offset = number + 1, offset + RECORD_PREFIX.size + len(data)
        if damage is not None:
            yield Damage(damage["number"], damage["offset"], damage["error"], damage["records"],
                         self._size() - damage["offset"], False)

    def _coder_state(self) -> CoderState | None:
        """The coder state a version 2 or 3 stream starts from (None: the metadata names no FSQ levels)."""
        levels = self.meta.get(LEVELS_META)
        return CoderState.empty(levels) if levels else None

    def _check_model(self, header: PacketHeader) -> None:
        """A verified packet's header is for this file's model (PacketError otherwise)."""
        if header.model_id != self.model_id:
            raise PacketError(f"packet is for model {header.model_id.hex()}, the file header says model "
                              f"{self.model_id.hex()}")

    def _unpack(self, data: bytes, state: CoderState | None) -> tuple[TokenPacket, CoderState | None]:
        """One packet, screened (`screen`) and unpacked; a version 2 or 3 packet from the stream's coder state
        `state`, which is returned advanced (unchanged for version 1)."""
        if self.screen is not None:
            self.screen(data)
        if _is_coded(data):
            if state is None:
                raise PacketError(f"version {packet_version(data)} packet, but the file's metadata has no "
                                  f"{LEVELS_META!r} to decode it with")
            return TokenPacket.unpack_any(data, state, expect_model_id=self.model_id)
        return TokenPacket.unpack(data, expect_model_id=self.model_id), state

    def _framed(self, prefix: bytes, where: str) -> bytes:
        """The packet bytes of the record whose length prefix was just read (the file positioned after it)."""
        if len(prefix) < RECORD_PREFIX.size:
            raise PacketError(f"truncated .ltk file {where}: length prefix needs {RECORD_PREFIX.size} "
                              f"bytes, got {len(prefix)}")
        (size,) = RECORD_PREFIX.unpack(prefix)
        if not MIN_RECORD_BYTES <= size <= self.max_packet_bytes:  # checked before allocating `size` bytes
            raise PacketError(f"corrupt .ltk file {where}: length prefix {size} out of range "
                              f"{MIN_RECORD_BYTES}..{self.max_packet_bytes}")
        data = self._file.read(size)
        if len(data) < size:
            raise PacketError(f"truncated .ltk file {where}: packet needs {size} bytes, got {len(data)}")
        return data

    def _next_record(self, start: int) -> int | None:
        """Offset of the first intact record at or after `start` (length prefix in range, then a packet
        of this file's model that passes its CRC), or None. A record is tried only where a packet could
        begin: the file's model id at offset 6 of a version 1 or 2 packet or 1 of a version 3 keyframe or
        end-of-stream packet, or a version 3 non-keyframe's first byte 0xf0 (whose CRC covers the model id)."""
        marks = ((self.model_id, _MODEL_OFFSETS), (bytes((MARKER_V3,)), _MARKER_OFFSETS))
        offsets = _MODEL_OFFSETS + _MARKER_OFFSETS
        first, later, overlap = min(offsets), max(offsets), MODEL_ID_SIZE - 1
        pos = start + RECORD_PREFIX.size + first  # the first place a record at `start` may have a mark
        pending: list[int] = []  # candidates a mark in the next chunk may still precede
        while True:
            self._file.seek(pos)
            chunk = self._file.read(_SCAN_CHUNK + overlap)
            for mark, at_offsets in marks:
                i = chunk.find(mark)
                while 0 <= i < _SCAN_CHUNK:  # every mark starting in [pos, pos + _SCAN_CHUNK), each found once
                    pending += [at for off in at_offsets if (at := pos + i - RECORD_PREFIX.size - off) >= start]
                    i = chunk.find(mark, i + 1)
            last = len(chunk) < _SCAN_CHUNK + overlap
            # the marks of the next chunk give records from here on: try in file order only those before
            limit = pos + _SCAN_CHUNK - RECORD_PREFIX.size - later
            pending.sort()
            while pending and (last or pending[0] < limit):
                at = pending.pop(0)
                if self._intact_at(at):
                    return at
            if last:
                return None
            pos += _SCAN_CHUNK

    def _intact_at(self, at: int) -> bool:
        self._file.seek(at)
        try:
            data = self._framed(self._file.read(RECORD_PREFIX.size), "")
            return verify_packet(data, model_id=self.model_id).model_id == self.model_id
        except PacketError:
            return False

    def _size(self) -> int:
        return self._file.seek(0, os.SEEK_END)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> LtkReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def read_ltk(path: str | os.PathLike[str],
             tolerant: bool = True) -> tuple[dict[str, Any], list[TokenPacket], PacketError | None]:
    """Read a whole ``.ltk`` file.

    Args:
        path: the file.
        tolerant: on damage after the header, return the packets read so far and the error instead of
            raising. A damaged file header always raises.

    Returns:
        ``(meta, packets, error)``; ``error`` is None when the file was read to its end.

    Raises:
        PacketError: the file header is damaged, or (``tolerant=False``) any packet is.
    """
    packets: list[TokenPacket] = []
    with LtkReader(path) as reader:
        try:
            for packet in reader:
                packets.append(packet)
        except PacketError as e:
            if not tolerant:
                raise
            return reader.meta, packets, e
        return reader.meta, packets, None
