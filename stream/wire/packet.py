"""TokenPacket: one frame's kept token indices as versioned, CRC-checked bytes (layout: docs/PACKET.md).

MQTT, WebRTC and ``.ltk`` files all carry exactly these bytes. Version 1 (``pack``/``unpack``) stores the
mask and fixed-width indices and decodes on its own; version 2 (``pack_v2``/``unpack_v2``) entropy-codes
them (entropy.py) and decodes only with the stream's :class:`CoderState`, which it returns updated;
version 3 (``pack_v3``/``unpack_v3``) is version 2's payload behind a header that leaves out what the
stream does not change (the model id, the geometry, the frame index but its low byte, the absolute
timestamp): the coder state supplies them, and the CRC covers the model id all the same.
"""

from __future__ import annotations

import operator
import struct
import zlib
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from .bitpack import MAX_BITS, pack_uints, packed_size, unpack_uints
from .entropy import CoderState, decode_frame, encode_frame
from .errors import PacketError
from .maskcode import MAX_POSITIONS, MaskMode, decode_mask, encode_mask, index_width
from .varint import read_uvarint, uvarint, uvarint_size

__all__ = [
    "CRC_SIZE",
    "FLAG_END_OF_STREAM",
    "FLAG_KEYFRAME",
    "HEADER",
    "HEADER_SIZE",
    "HEADER_V2_FIELDS",
    "HEADER_V2_GEOMETRY",
    "HEADER_V2_MAX_SIZE",
    "HEADER_V2_MIN_SIZE",
    "HEADER_V2_PREFIX",
    "HEADER_V3_MAX_SIZE",
    "HEADER_V3_MIN_SIZE",
    "MAGIC",
    "MARKER_V3",
    "MAX_PACKET_BYTES",
    "MAX_SIDE",
    "MIN_PACKET_BYTES",
    "MIN_PACKET_BYTES_V2",
    "MIN_PACKET_BYTES_V3",
    "MODEL_ID_SIZE",
    "VERSION",
    "VERSIONS",
    "VERSION_V2",
    "VERSION_V3",
    "PacketHeader",
    "TokenPacket",
    "extend_frame_index",
    "max_payload_bytes",
    "pack_header_v2",
    "pack_header_v3",
    "packet_version",
    "peek_header",
    "verify_packet",
]

MAGIC = b"LTKP"
VERSION = 1  # the fixed-length layout of pack()/unpack()
VERSION_V2 = 2  # the entropy-coded layout of pack_v2()/unpack_v2()
VERSION_V3 = 3  # version 2's payload behind the trimmed header of pack_v3()/unpack_v3()
VERSIONS = (VERSION, VERSION_V2, VERSION_V3)
# magic, version, flags, model_id, frame_index, timestamp_us, width, height, grid_h, grid_w,
# bits_per_index, mask mode, k, mask byte length, token byte length
HEADER = struct.Struct("<4sBB8sIQHHHHBBIII")
HEADER_SIZE = HEADER.size  # 48
# version 2: the first 14 bytes as version 1 (magic, version, flags, model_id), then unsigned LEB128 varints
# (varint.py), each no wider than its field: frame_index, timestamp_us, k, and on keyframes and end-of-stream
# packets only the geometry (a non-keyframe's is its keyframe's, which the coder state keeps). No payload
# length: every transport frames the packet, so P = packet length - header - CRC. A 256x192 non-keyframe's
# header is 20 bytes from a file, 25 from a camera, where fixed-width fields took 43
HEADER_V2_PREFIX = struct.Struct("<4sBB8s")
HEADER_V2_FIELDS: tuple[tuple[str, int], ...] = (("frame_index", 32), ("timestamp_us", 64), ("k", 32))
HEADER_V2_GEOMETRY: tuple[tuple[str, int], ...] = (
    ("width", 16), ("height", 16), ("grid_h", 16), ("grid_w", 16), ("bits_per_index", 8),
)
HEADER_V2_MIN_SIZE = HEADER_V2_PREFIX.size + len(HEADER_V2_FIELDS)  # 17: a non-keyframe, every varint one byte
HEADER_V2_MAX_SIZE = HEADER_V2_PREFIX.size + sum(
    uvarint_size(b) for _, b in HEADER_V2_FIELDS + HEADER_V2_GEOMETRY)  # 48: a keyframe, every varint its longest
# version 3 (docs/PACKET.md §7): no magic. The first byte is MARKER_V3 | flags (0xf0..0xf3; 'L' = 0x4c begins
# versions 1 and 2). A keyframe or end-of-stream packet then carries the model id and the varints of version
# 2, geometry included; any other packet only the frame index's low byte (u8), the timestamp as the µs since
# the stream's previous packet (a varint, mod 2**64) and k: the coder state holds the rest. The CRC covers
# the stream's model id before the packet's bytes. A 256x192 non-keyframe's header is 6 or 7 bytes, from a
# file or a camera (20 to 22 and 25 to 27 in version 2)
MARKER_V3 = 0xF0
_FLAGS_V3 = 0x0F  # the first byte's low nibble: the flags (bits 2 and 3 reserved)
HEADER_V3_DELTA: tuple[tuple[str, int], ...] = (("timestamp_delta_us", 64), ("k", 32))
HEADER_V3_MIN_SIZE = 4  # a non-keyframe: first byte, frame index low byte, two one-byte varints
HEADER_V3_MAX_SIZE = 1 + 8 + sum(uvarint_size(b) for _, b in HEADER_V2_FIELDS + HEADER_V2_GEOMETRY)  # 43
CRC_SIZE = 4
MIN_PACKET_BYTES = HEADER_SIZE + CRC_SIZE  # 52: a version 1 end-of-stream packet with an empty grid
MIN_PACKET_BYTES_V2 = HEADER_V2_MIN_SIZE + CRC_SIZE  # 21: the least a version 2 packet can be
MIN_PACKET_BYTES_V3 = HEADER_V3_MIN_SIZE + CRC_SIZE  # 8: the least a version 3 packet can be
MAX_PACKET_BYTES = 16 * 1024 * 1024
MAX_SIDE = 16384
MODEL_ID_SIZE = 8
FLAG_KEYFRAME = 0x01
FLAG_END_OF_STREAM = 0x02
_KNOWN_FLAGS = FLAG_KEYFRAME | FLAG_END_OF_STREAM

_ScalarT = TypeVar("_ScalarT", bound=np.generic)


# --- the header ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PacketHeader:
    """The header of a packet (48 bytes in version 1, 17 to 48 in version 2), readable without decoding.

    Attributes mirror the header fields of docs/PACKET.md; ``mask_bytes`` and ``token_bytes`` are the
    stored section lengths of version 1. Version 2 has one entropy-coded section of ``payload_bytes``,
    which the header does not store: :func:`verify_packet` (a whole packet) derives it from the packet's
    length, :func:`peek_header` (maybe a header alone) leaves it 0. There ``mask_mode`` is -1,
    ``mask_bytes = token_bytes = 0``, and ``header_bytes`` is the header's length (its fields are varints).

    ``has_geometry`` is False for a version 2 or 3 non-keyframe read without its stream's coder state: such
    a packet does not carry its frame size, grid and index width (they are its keyframe's, which the coder
    state keeps), so ``width``, ``height``, ``grid_h``, ``grid_w`` and ``bits_per_index`` are 0.

    ``relative`` is True for a version 3 non-keyframe read without its stream's coder state. Such a packet
    carries only the low byte of its frame index and its timestamp as a difference, so ``frame_index`` is
    then that byte (0..255; :func:`extend_frame_index` finds the index near an expected one) and
    ``timestamp_us`` the µs since the stream's previous packet; ``model_id`` is the one its CRC was
    verified with (:func:`verify_packet`), or empty (:func:`peek_header`: not checked). With the coder
    state (``verify_packet(data, state=...)``, ``unpack_v3``) every field is the packet's own.
    """

    version: int
    flags: int
    model_id: bytes
    frame_index: int
    timestamp_us: int
    width: int
    height: int
    grid_h: int
    grid_w: int
    bits_per_index: int
    mask_mode: int
    k: int
    mask_bytes: int
    token_bytes: int
    payload_bytes: int = 0
    header_bytes: int = HEADER_SIZE
    has_geometry: bool = True
    relative: bool = False

    @property
    def keyframe(self) -> bool:
        return bool(self.flags & FLAG_KEYFRAME)

    @property
    def end_of_stream(self) -> bool:
        return bool(self.flags & FLAG_END_OF_STREAM)

    @property
    def n(self) -> int:
        """Number of grid positions ``grid_h * grid_w``."""
        return self.grid_h * self.grid_w

    @property
    def header_size(self) -> int:
        return self.header_bytes

    @property
    def packet_size(self) -> int:
        """Total packet length in bytes (header + sections + CRC): announced by a version 1 header; for
        versions 2 and 3 the verified packet's length (from :func:`peek_header`, header and CRC only)."""
        return self.header_size + self.mask_bytes + self.token_bytes + self.payload_bytes + CRC_SIZE


def _check_geometry(width: int, height: int, grid_h: int, grid_w: int, bits: int, eos: bool,
                    exc: type[ValueError]) -> None:
    """Limits shared by the constructor (ValueError) and the parser (PacketError)."""
    if not (0 <= width <= MAX_SIDE and 0 <= height <= MAX_SIDE):
        raise exc(f"frame size {width}x{height} out of range (each side 0..{MAX_SIDE})")
    n = grid_h * grid_w
    if n > MAX_POSITIONS:
        raise exc(f"grid {grid_h}x{grid_w} has {n} positions, the limit is {MAX_POSITIONS}")
    if n == 0 and not eos:
        raise exc(f"grid {grid_h}x{grid_w} is empty; only an end-of-stream packet may have no positions")
    if n and (width == 0 or height == 0):
        raise exc(f"frame size {width}x{height} is empty but the grid has {n} positions")
    if not 1 <= bits <= MAX_BITS:
        raise exc(f"bits_per_index {bits} out of range 1..{MAX_BITS}")


def max_payload_bytes(n: int, k: int, bits_per_index: int) -> int:
    """Upper bound on a version 2 payload: every coded symbol (N mask bits, at most ``bits_per_index``
    digits per kept token) costs at most 24 bits, plus 8 bytes of coder flush."""
    return 3 * (n + bits_per_index * k) + 8


def _check_keyframe_tokens(keyframe: bool, k: int, exc: type[ValueError]) -> None:
    """A keyframe carries tokens: a frame without any repeats the previous frame (a skip), and a keyframe's
    decoder starts afresh, with no frame to repeat."""
    if keyframe and k == 0:
        raise exc("a keyframe must carry tokens, got k=0 (a frame without tokens repeats the previous frame, "
                  "and a keyframe starts from none)")


def _validate_header(h: PacketHeader) -> None:
    _check_flags(h.flags)
    _check_keyframe_tokens(h.keyframe, h.k, PacketError)
    if not h.has_geometry:
        return  # a version 2 or 3 non-keyframe without its coder state: k and P are checked with the state's grid
    _check_geometry(h.width, h.height, h.grid_h, h.grid_w, h.bits_per_index, h.end_of_stream, PacketError)
    n = h.n
    if h.k > n:
        raise PacketError(f"k={h.k} exceeds the {n} positions of the {h.grid_h}x{h.grid_w} grid")
    if h.version in (VERSION_V2, VERSION_V3):
        limit = max_payload_bytes(n, h.k, h.bits_per_index) if n else 0
        if h.payload_bytes > limit:
            raise PacketError(f"payload byte length {h.payload_bytes} is too large for N={n}, k={h.k} at "
                              f"{h.bits_per_index} bits per index (at most {limit})")
        return
    try:
        mode = MaskMode(h.mask_mode)
    except ValueError:
        known = ", ".join(f"{m.value}={m.name}" for m in MaskMode)
        raise PacketError(f"unknown mask mode {h.mask_mode} (known: {known})") from None
    expect_tokens = packed_size(h.k, h.bits_per_index)
    if h.token_bytes != expect_tokens:
        raise PacketError(f"token byte length {h.token_bytes} disagrees with k={h.k} at {h.bits_per_index} "
                          f"bits per index (expected {expect_tokens})")
    fixed = {MaskMode.ALL: 0, MaskMode.NONE: 0, MaskMode.BITMAP: (n + 7) // 8,
             MaskMode.INDEX: packed_size(h.k, index_width(n)) if n else 0}
    if mode in fixed and h.mask_bytes != fixed[mode]:
        raise PacketError(f"mask byte length {h.mask_bytes} disagrees with mode {mode.name} for N={n}, "
                          f"k={h.k} (expected {fixed[mode]})")
    # the encoder's choice (section 2), as far as the header shows it: refused here, before a byte of
    # a (possibly 16 MB) mask is read; decode_mask checks the rest once the mask is known
    if mode == MaskMode.ALL and h.k != n:
        raise PacketError(f"mask mode ALL needs k = N = {n}, got k={h.k}")
    if mode == MaskMode.NONE and not (h.k == 0 < n):
        raise PacketError(f"mask mode NONE needs k = 0 and N > 0, got k={h.k}, N={n}" + (" (use ALL)" if not n else ""))
    if mode > MaskMode.NONE and not 0 < h.k < n:
        raise PacketError(f"mask mode {mode.name} is not used for k={h.k} of N={n} "
                          f"(the encoder sends {'NONE' if h.k == 0 else 'ALL'}, 0 bytes)")
    if mode in (MaskMode.RLE, MaskMode.INDEX) and h.mask_bytes >= (n + 7) // 8:
        raise PacketError(f"mask byte length {h.mask_bytes} for mode {mode.name} is not smaller than the "
                          f"{(n + 7) // 8}-byte BITMAP of N={n} (a mask is sent in its smallest mode)")


def _as_bytes(data: Any) -> bytes:
    try:
        return bytes(memoryview(data))
    except TypeError:
        raise PacketError(f"expected a bytes-like packet, got {type(data).__name__}") from None


def _check_flags(flags: int) -> None:
    if flags & ~_KNOWN_FLAGS:
        raise PacketError(f"reserved flag bits set: flags=0x{flags:02x} (only 0x{_KNOWN_FLAGS:02x} are defined)")


def packet_version(data: bytes) -> int:
    """The version a packet's first bytes announce: 3 for a first byte 0xf0..0xff (0xf4 and up are refused
    later, as reserved flags), 2 for ``b"LTKP"`` and a version byte 2, 1 for anything else (whose header
    checks then refuse what is not version 1). Reads at most 5 bytes and checks nothing."""
    if data[:1] and data[0] & 0xF0 == MARKER_V3:
        return VERSION_V3
    if len(data) > 4 and data[:4] == MAGIC and data[4] == VERSION_V2:
        return VERSION_V2
    return VERSION


def _parse_header(data: bytes) -> PacketHeader:
    """Unpack the header after checking size, magic and version; no semantic checks."""
    version = packet_version(data)
    if version == VERSION_V3:
        return _parse_header_v3(data)
    if version == VERSION_V2:
        if len(data) < HEADER_V2_MIN_SIZE:
            raise PacketError(f"truncated: need at least {HEADER_V2_MIN_SIZE} bytes for a version 2 header, "
                              f"got {len(data)}")
        _, version, flags, model_id = HEADER_V2_PREFIX.unpack_from(data)
        _check_flags(flags)  # the flags say which fields follow: checked before any is read
        # the geometry is there exactly when flag bit 0 or 1 is set
        has_geometry = bool(flags & (FLAG_KEYFRAME | FLAG_END_OF_STREAM))
        pos, values = HEADER_V2_PREFIX.size, []
        for name, bits in HEADER_V2_FIELDS + (HEADER_V2_GEOMETRY if has_geometry else ()):
            value, pos = read_uvarint(data, pos, bits, name)
            values.append(value)
        frame_index, timestamp_us, k, *geometry = values
        width, height, grid_h, grid_w, bits = geometry or (0, 0, 0, 0, 0)
        return PacketHeader(version, flags, model_id, frame_index, timestamp_us, width, height, grid_h, grid_w,
                            bits, -1, k, 0, 0, 0, pos, has_geometry)
    if len(data) < HEADER_SIZE:
        raise PacketError(f"truncated: need {HEADER_SIZE} bytes for the header, got {len(data)}")
    (magic, version, flags, model_id, frame_index, timestamp_us, width, height, grid_h, grid_w, bits,
     mode, k, mask_bytes, token_bytes) = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise PacketError(f"bad magic {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise PacketError(f"unsupported packet version {version} (this build supports versions 1 and 2 after "
                          f"{MAGIC!r}, and version 3, whose first byte is 0xf0..0xf3)")
    return PacketHeader(version, flags, model_id, frame_index, timestamp_us, width, height, grid_h, grid_w,
                        bits, mode, k, mask_bytes, token_bytes)


def _parse_header_v3(data: bytes) -> PacketHeader:
    """A version 3 header (docs/PACKET.md §7.1): the flags, then the fields they say are there."""
    if len(data) < HEADER_V3_MIN_SIZE:
        raise PacketError(f"truncated: need at least {HEADER_V3_MIN_SIZE} bytes for a version 3 header, "
                          f"got {len(data)}")
    flags = data[0] & _FLAGS_V3
    _check_flags(flags)  # the flags say which fields follow: checked before any is read
    if flags & (FLAG_KEYFRAME | FLAG_END_OF_STREAM):
        if len(data) < 1 + MODEL_ID_SIZE:
            raise PacketError(f"truncated: the version 3 header ends inside its model_id field (got {len(data)} "
                              f"bytes)")
        pos, values = 1 + MODEL_ID_SIZE, []
        for name, bits in HEADER_V2_FIELDS + HEADER_V2_GEOMETRY:
            value, pos = read_uvarint(data, pos, bits, name, VERSION_V3)
            values.append(value)
        frame_index, timestamp_us, k, width, height, grid_h, grid_w, bits = values
        return PacketHeader(VERSION_V3, flags, data[1:1 + MODEL_ID_SIZE], frame_index, timestamp_us, width, height,
                            grid_h, grid_w, bits, -1, k, 0, 0, 0, pos, True)
    pos, values = 2, []
    for name, bits in HEADER_V3_DELTA:
        value, pos = read_uvarint(data, pos, bits, name, VERSION_V3)
        values.append(value)
    delta, k = values
    return PacketHeader(VERSION_V3, flags, b"", data[1], delta, 0, 0, 0, 0, 0, -1, k, 0, 0, 0, pos, False, True)


def peek_header(data: bytes) -> PacketHeader:
    """Read and validate a packet header without the CRC check or decoding tokens.

    Enough for routers and receivers that only need the frame index, flags or model id; ``data`` may
    be just the first :data:`HEADER_SIZE` bytes (for versions 2 and 3, their header: at most
    :data:`HEADER_V2_MAX_SIZE` and :data:`HEADER_V3_MAX_SIZE` bytes, ``header_size`` after parsing). Every
    version is read; ``version`` tells which. A version 2 or 3 header's ``payload_bytes`` is 0 here (the
    header does not store it: :func:`verify_packet` derives it from a whole packet), and a non-keyframe's
    geometry is absent (``has_geometry`` False). A version 3 non-keyframe's header is ``relative`` (see
    :class:`PacketHeader`): its frame index is the low byte, its timestamp the difference from the
    stream's previous packet and its model id empty (the packet does not carry it).

    Args:
        data: a packet, or at least its header.

    Returns:
        The parsed header.

    Raises:
        PacketError: truncated header, bad magic or version, reserved flags, fields out of range.
    """
    h = _parse_header(_as_bytes(data))
    _validate_header(h)
    return h


def _crc_v3(key: bytes, body: bytes) -> int:
    """A version 3 packet's CRC: ``zlib.crc32`` of the stream's model id, then of every byte before the CRC."""
    return zlib.crc32(body, zlib.crc32(key)) & 0xFFFFFFFF


def _verify(data: bytes, state: CoderState | None = None, model_id: bytes | None = None) -> PacketHeader:
    """Lengths, CRC and header fields of a whole packet. With ``state``, a version 2 non-keyframe takes
    the state's geometry (refused, before the CRC is computed, when the state has none) and its ``k``
    and payload length are checked against it; a version 3 non-keyframe takes the state's model id for
    its CRC, then its frame index (refused unless the low byte is the next one's), timestamp and geometry.
    Without ``state``, a version 3 non-keyframe's CRC is computed over ``model_id`` (refused when None)."""
    if len(data) > MAX_PACKET_BYTES:
        raise PacketError(f"packet of {len(data)} bytes exceeds the limit of {MAX_PACKET_BYTES}")
    h = _parse_header(data)
    if h.version in (VERSION_V2, VERSION_V3):
        # no length field: the transport frames the packet, and the payload is what header and CRC leave
        if len(data) < h.header_size + CRC_SIZE:
            raise PacketError(f"truncated: a version {h.version} packet needs its {h.header_size}-byte header and "
                              f"a {CRC_SIZE}-byte CRC, got {len(data)} bytes")
        h = replace(h, payload_bytes=len(data) - h.header_size - CRC_SIZE)
        if h.version == VERSION_V2 and state is not None and not h.has_geometry:
            h = _geometry_from_state(h, state)
    else:
        size = h.packet_size
        if size > MAX_PACKET_BYTES:
            raise PacketError(f"header announces a packet of {size} bytes, over the limit of {MAX_PACKET_BYTES}")
        if len(data) < size:
            raise PacketError(f"truncated: header announces {size} bytes ({h.header_size} header + "
                              f"{h.mask_bytes} mask + {h.token_bytes} token + {CRC_SIZE} CRC), got {len(data)}")
        if len(data) > size:
            raise PacketError(f"{len(data) - size} trailing bytes after the CRC (header announces {size} bytes)")
    stored = int.from_bytes(data[-CRC_SIZE:], "little")
    if h.version == VERSION_V3:
        if h.relative:  # the CRC covers the stream's model id, which this packet does not carry
            if state is not None:
                key = _started_v3(state).model_id
                assert key is not None  # _started_v3 checked it
            elif model_id is not None:
                key = model_id
            else:
                raise PacketError("a version 3 non-keyframe's CRC covers its stream's model id, which the packet "
                                  "does not carry: check it with the stream's model id or coder state")
        else:
            key = h.model_id
        computed = _crc_v3(key, data[:-CRC_SIZE])
        if stored != computed:
            why = ("corrupt, truncated (a version 3 packet carries no length), or not this stream's (the CRC "
                   "covers the model id of the stream's keyframe: a packet fed to another model's stream or coder "
                   "state fails here)" if h.relative else
                   "corrupt, or truncated (a version 3 packet carries no length)")
            raise PacketError(f"CRC mismatch: stored 0x{stored:08x}, computed 0x{computed:08x} over model "
                              f"{key.hex()} and the packet: {why}")
        if h.relative:
            h = replace(h, model_id=key)
            if state is not None:
                h = _follow_state(h, state)
    else:
        computed = zlib.crc32(data[:-CRC_SIZE]) & 0xFFFFFFFF
        if stored != computed:
            # a version 2 packet has no length to check first: one cut short fails here
            why = ": corrupt, or truncated (a version 2 packet carries no length)" if h.version == VERSION_V2 else ""
            raise PacketError(f"CRC mismatch: stored 0x{stored:08x}, computed 0x{computed:08x}{why}")
    _validate_header(h)
    return h


def _geometry_from_state(h: PacketHeader, state: CoderState) -> PacketHeader:
    """A version 2 non-keyframe's header with the geometry it does not carry: its coder state's, which
    came from the stream's keyframe (and passed a receiver's checks there)."""
    if state.grid is None:
        raise PacketError(f"non-keyframe {h.frame_index} cannot be decoded before the stream's first keyframe (the "
                          f"coder state is empty): join at a keyframe")
    if state.frame_size is None or state.bits_per_index is None:
        raise PacketError("the coder state holds no frame size or index width (it was not started by a keyframe "
                          "packet), and a version 2 non-keyframe does not carry them")
    (width, height), (grid_h, grid_w) = state.frame_size, state.grid
    return replace(h, width=width, height=height, grid_h=grid_h, grid_w=grid_w, bits_per_index=state.bits_per_index,
                   has_geometry=True)


def _started_v3(state: CoderState) -> CoderState:
    """``state``, refused unless a keyframe packet started it: a version 3 non-keyframe needs its model id,
    frame index, timestamp and geometry (checked before the CRC, which needs the model id)."""
    if not isinstance(state, CoderState):
        raise ValueError(f"state must be a CoderState, got {type(state).__name__}")
    if state.grid is None:
        raise PacketError("a non-keyframe cannot be decoded before the stream's first keyframe (the coder state is "
                          "empty): join at a keyframe")
    if (state.model_id is None or state.frame_index is None or state.timestamp_us is None
            or state.frame_size is None or state.bits_per_index is None):
        raise PacketError("the coder state holds no model id, frame index, timestamp or geometry (it was not "
                          "started by a keyframe packet), and a version 3 non-keyframe does not carry them")
    return state


def _follow_state(h: PacketHeader, state: CoderState) -> PacketHeader:
    """A relative (version 3 non-keyframe) header completed from the coder state of the packet before it:
    the next frame index, whose low byte it must carry (another means a packet was lost or reordered),
    the timestamp the difference leads to, and the state's geometry."""
    assert state.frame_index is not None and state.timestamp_us is not None and state.frame_size is not None
    assert state.bits_per_index is not None  # all checked by _started_v3
    last = state.frame_index
    index = (last + 1) & 0xFFFFFFFF
    if h.frame_index != index & 0xFF:
        raise PacketError(f"a non-keyframe whose frame index ends in byte 0x{h.frame_index:02x} does not follow "
                          f"frame {last}, the last one this coder state decoded (frame {index} ends in "
                          f"0x{index & 0xFF:02x}): a packet is missing or out of order; decode in order, and after "
                          f"a loss wait for, or request, a keyframe")
    (width, height), grid = state.frame_size, state.grid
    assert grid is not None
    return replace(h, frame_index=index, timestamp_us=(state.timestamp_us + h.timestamp_us) % (1 << 64),
                   width=width, height=height, grid_h=grid[0], grid_w=grid[1],
                   bits_per_index=state.bits_per_index, has_geometry=True, relative=False)


def extend_frame_index(low: int, near: int) -> int:
    """The frame index whose low byte is ``low`` nearest to ``near``: from ``near - 128`` to ``near + 127``,
    as RTP extends its sequence numbers (moved by 256 where that range leaves the u32 indices 0..2**32-1).

    A receiver that orders packets before decoding them (a jitter buffer) reads a relative header's
    ``frame_index`` (the low byte) with the index it expects next: packets up to 127 ahead (a gap: lost or
    late ones) and 128 behind (late or repeated ones) come out right. Further off (a gap of 128 packets or
    more), the index is wrong by a multiple of 256 (docs/PACKET.md §7.3 says what a receiver does then).
    """
    if not 0 <= low <= 0xFF:
        raise ValueError(f"low must be a byte (0..255), got {low}")
    index = near + ((low - near + 128) & 0xFF) - 128
    return index + 256 if index < 0 else index - 256 if index > 0xFFFFFFFF else index


def verify_packet(data: bytes, model_id: bytes | None = None, state: CoderState | None = None) -> PacketHeader:
    """Check a whole packet (header, lengths, CRC) without decoding mask or tokens.

    For relays that forward bytes: cheaper than :meth:`TokenPacket.unpack`, and rejects every
    transmission error the CRC catches. A version 2 or 3 non-keyframe's ``k`` and payload length are
    bounded only with its coder state (:meth:`TokenPacket.unpack_v2`): here ``has_geometry`` is False.

    A version 3 non-keyframe does not carry its model id, but its CRC covers it: it is verified with
    ``model_id`` (the stream's, which a relay or recorder knows from the stream's description) or with
    ``state``'s, and refused without either. Its header comes back ``relative`` (see
    :class:`PacketHeader`, whose ``model_id`` is then the one it was verified with), or complete with
    ``state`` (whose last frame it must follow).

    Args:
        data: one complete packet.
        model_id: the stream's 8-byte model id, for a version 3 non-keyframe's CRC (other packets carry
            theirs; their callers compare it).
        state: the stream's coder state before this packet, to complete a version 2 or 3 non-keyframe's
            header from it.

    Returns:
        The parsed header.

    Raises:
        PacketError: anything :meth:`TokenPacket.unpack` rejects before decoding the sections.
    """
    if model_id is not None and (not isinstance(model_id, bytes) or len(model_id) != MODEL_ID_SIZE):
        raise ValueError(f"model_id must be {MODEL_ID_SIZE} bytes, got {model_id!r}")
    return _verify(_as_bytes(data), state, model_id)


# --- the packet ---------------------------------------------------------------------------------------------


def _read_only(arr: NDArray[_ScalarT]) -> NDArray[_ScalarT]:
    arr.setflags(write=False)  # the dataclass is frozen; its arrays should be too
    return arr


def _int_field(name: str, value: Any, bits: int) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be an int, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an int, got {type(value).__name__}") from None
    if not 0 <= v < 1 << bits:
        raise ValueError(f"{name}={v} out of range 0..{(1 << bits) - 1} (u{bits})")
    return v


@dataclass(frozen=True, eq=False)
class TokenPacket:
    """One frame's tokens: which grid positions were kept and their codebook indices.

    Attributes:
        model_id: 8 bytes identifying model config + weights; receivers refuse other models.
        frame_index: frame counter, u32.
        timestamp_us: capture timestamp in microseconds, u64.
        keyframe: True when the decoder can start from this packet.
        end_of_stream: True on the last packet of a stream (which may carry no positions at all).
        width: frame width in pixels before padding, 0..16384 (>= 1 when the grid is not empty).
        height: frame height in pixels before padding, same range.
        grid_h: latent grid rows, u16.
        grid_w: latent grid columns, u16; ``N = grid_h * grid_w <= 2**22``.
        bits_per_index: width of each token index, 1..32.
        mask: bool array of shape ``(N,)`` in raster order, True = position kept.
        indices: token indices of the kept positions in raster order, shape ``(k,)``, each
            ``< 2**bits_per_index``; stored as read-only uint32.
    """

    model_id: bytes
    frame_index: int
    timestamp_us: int
    keyframe: bool
    end_of_stream: bool
    width: int
    height: int
    grid_h: int
    grid_w: int
    bits_per_index: int
    mask: NDArray[np.bool_]
    indices: NDArray[np.integer[Any]]  # any integer dtype in, uint32 once constructed

    def __post_init__(self) -> None:
        put = object.__setattr__  # frozen: normalise fields in place once, here
        model_id = self.model_id
        if not isinstance(model_id, (bytes, bytearray, memoryview)) or len(bytes(model_id)) != MODEL_ID_SIZE:
            raise ValueError(f"model_id must be {MODEL_ID_SIZE} bytes, got {model_id!r}")
        put(self, "model_id", bytes(model_id))
        for name, bits in (("frame_index", 32), ("timestamp_us", 64), ("width", 16), ("height", 16),
                           ("grid_h", 16), ("grid_w", 16), ("bits_per_index", 8)):
            put(self, name, _int_field(name, getattr(self, name), bits))
        for name in ("keyframe", "end_of_stream"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
            put(self, name, bool(getattr(self, name)))
        _check_geometry(self.width, self.height, self.grid_h, self.grid_w, self.bits_per_index,
                        self.end_of_stream, ValueError)
        n = self.n
        mask = np.asarray(self.mask)
        if mask.dtype != np.bool_ or mask.shape != (n,):
            raise ValueError(f"mask must be bool of shape ({n},) for a {self.grid_h}x{self.grid_w} grid, "
                             f"got {mask.dtype} {mask.shape}")
        k = int(mask.sum())
        _check_keyframe_tokens(self.keyframe, k, ValueError)  # so neither pack() nor pack_v2() can make one
        idx = np.asarray(self.indices)
        if idx.shape != (k,):
            raise ValueError(f"indices must have shape ({k},) (one per kept position), got {idx.shape}")
        if idx.dtype.kind not in "ui" and not (idx.size == 0 and idx.dtype.kind == "f"):
            raise ValueError(f"indices must be unsigned integers, got dtype {idx.dtype}")
        if k:
            lo, hi = int(idx.min()), int(idx.max())
            if lo < 0 or hi >= 1 << self.bits_per_index:
                bad = lo if lo < 0 else hi
                raise ValueError(f"token index {bad} out of range 0..{(1 << self.bits_per_index) - 1} "
                                 f"for {self.bits_per_index} bits per index")
        put(self, "mask", _read_only(mask.copy()))
        put(self, "indices", _read_only(idx.astype(np.uint32)))

    # --- derived values ---------------------------------------------------------------------------------

    @property
    def n(self) -> int:
        """Number of grid positions ``grid_h * grid_w``."""
        return self.grid_h * self.grid_w

    @property
    def k(self) -> int:
        """Number of kept positions, ``mask.sum() == len(indices)``."""
        return int(self.indices.shape[0])

    @property
    def model_id_hex(self) -> str:
        return self.model_id.hex()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TokenPacket):
            return NotImplemented
        scalars = ("model_id", "frame_index", "timestamp_us", "keyframe", "end_of_stream", "width",
                   "height", "grid_h", "grid_w", "bits_per_index")
        return (all(getattr(self, f) == getattr(other, f) for f in scalars)
                and np.array_equal(self.mask, other.mask) and np.array_equal(self.indices, other.indices))

    __hash__ = None  # type: ignore[assignment]  # equal packets hold equal arrays; arrays are unhashable

    # --- bytes --------------------------------------------------------------------------------------------

    def pack(self) -> bytes:
        """Serialise to wire bytes: header, mask section, token section, CRC32.

        Returns:
            ``HEADER_SIZE + len(mask) + ceil(k * bits_per_index / 8) + 4`` bytes.

        Raises:
            ValueError: the packet would exceed :data:`MAX_PACKET_BYTES`.
        """
        mode, mask_data = encode_mask(self.mask)
        token_data = pack_uints(self.indices, self.bits_per_index)
        size = HEADER_SIZE + len(mask_data) + len(token_data) + CRC_SIZE
        if size > MAX_PACKET_BYTES:
            raise ValueError(f"packet would be {size} bytes, over the limit of {MAX_PACKET_BYTES}")
        flags = (FLAG_KEYFRAME if self.keyframe else 0) | (FLAG_END_OF_STREAM if self.end_of_stream else 0)
        head = HEADER.pack(MAGIC, VERSION, flags, self.model_id, self.frame_index, self.timestamp_us,
                           self.width, self.height, self.grid_h, self.grid_w, self.bits_per_index, mode,
                           self.k, len(mask_data), len(token_data))
        body = head + mask_data + token_data
        return body + (zlib.crc32(body) & 0xFFFFFFFF).to_bytes(CRC_SIZE, "little")

    @classmethod
    def unpack(cls, data: bytes, expect_model_id: bytes | None = None) -> TokenPacket:
        """Parse and fully validate wire bytes.

        Args:
            data: exactly one packet (``bytes``, ``bytearray`` or ``memoryview``).
            expect_model_id: when given (8 bytes), packets for any other model are refused.

        Returns:
            The packet.

        Raises:
            PacketError: for every defect of ``data``, with a message naming the bad and expected values;
                no other exception escapes for bad bytes.
            ValueError: ``expect_model_id`` is not 8 bytes (a caller bug, not bad data).
        """
        if expect_model_id is not None and (not isinstance(expect_model_id, bytes)
                                            or len(expect_model_id) != MODEL_ID_SIZE):
            raise ValueError(f"expect_model_id must be {MODEL_ID_SIZE} bytes, got {expect_model_id!r}")
        raw = _as_bytes(data)
        try:
            return cls._unpack(raw, expect_model_id)
        except PacketError:
            raise
        except (ValueError, TypeError, IndexError, KeyError, ArithmeticError, struct.error) as e:
            # the checks above should leave nothing for here; this keeps "only PacketError" true anyway
            raise PacketError(f"malformed packet: {type(e).__name__}: {e}") from e

    @classmethod
    def _unpack(cls, raw: bytes, expect_model_id: bytes | None) -> TokenPacket:
        if packet_version(raw) == VERSION_V3:  # refused unverified: a non-keyframe's CRC needs its stream's state
            raise PacketError("packet version 3 is entropy-coded and decodes only with its stream's coder state: "
                              "use TokenPacket.unpack_v3(data, state) (TokenPacket.unpack reads version 1)")
        h = _verify(raw)
        _check_model(h, expect_model_id)
        if h.version == VERSION_V2:
            raise PacketError("packet version 2 is entropy-coded and decodes only with its stream's coder state: "
                              "use TokenPacket.unpack_v2(data, state) (TokenPacket.unpack reads version 1)")
        mask_end = HEADER_SIZE + h.mask_bytes
        mask = decode_mask(h.mask_mode, raw[HEADER_SIZE:mask_end], h.n)
        kept = int(mask.sum())
        if kept != h.k:
            raise PacketError(f"mask keeps {kept} positions but the header says k={h.k}")
        indices = unpack_uints(raw[mask_end:mask_end + h.token_bytes], h.k, h.bits_per_index)
        return cls(h.model_id, h.frame_index, h.timestamp_us, h.keyframe, h.end_of_stream, h.width,
                   h.height, h.grid_h, h.grid_w, h.bits_per_index, mask, indices)

    # --- versions 2 and 3: entropy-coded ----------------------------------------------------------------

    def pack_v2(self, state: CoderState) -> tuple[bytes, CoderState]:
        """Serialise as a version 2 packet: header, entropy-coded mask and tokens, CRC32.

        Args:
            state: the stream's coder state before this packet (``CoderState.empty(levels)`` at start;
                a keyframe resets it). Its FSQ levels must fit ``bits_per_index``.

        Returns:
            ``(bytes, new_state)``. An end-of-stream packet with an empty grid codes nothing and returns
            ``state`` unchanged.

        Raises:
            ValueError: the state cannot code this packet (non-keyframe before the first keyframe, or with
                another frame size, grid or index width than its keyframe's, which it does not carry; levels
                that do not fit ``bits_per_index``; an index outside the codebook), or the packet would
                exceed :data:`MAX_PACKET_BYTES`.
        """
        payload, new_state = self._code(state, VERSION_V2)
        flags = (FLAG_KEYFRAME if self.keyframe else 0) | (FLAG_END_OF_STREAM if self.end_of_stream else 0)
        geometry = ((self.width, self.height, self.grid_h, self.grid_w, self.bits_per_index)
                    if self.keyframe or self.end_of_stream else None)
        head = pack_header_v2(flags, self.model_id, self.frame_index, self.timestamp_us, self.k, geometry)
        body = _sized(head + payload)
        return body + (zlib.crc32(body) & 0xFFFFFFFF).to_bytes(CRC_SIZE, "little"), new_state

    def pack_v3(self, state: CoderState) -> tuple[bytes, CoderState]:
        """Serialise as a version 3 packet (docs/PACKET.md §7): version 2's payload behind a trimmed header.

        A keyframe or end-of-stream packet's header carries the model id, frame index, timestamp, ``k`` and
        geometry; any other packet's only the frame index's low byte, the timestamp's difference from the
        state's (the previous packet's) and ``k``. The CRC covers the model id before the packet's bytes.

        Args:
            state: the stream's coder state before this packet, as for :meth:`pack_v2`. A non-keyframe
                needs one a keyframe packet (version 2 or 3) started: it takes the model id, frame index
                and timestamp from it.

        Returns:
            ``(bytes, new_state)``, as :meth:`pack_v2`.

        Raises:
            ValueError: as :meth:`pack_v2`; also a non-keyframe for another model than the state's keyframe,
                or after a state no keyframe packet started.
        """
        payload, new_state = self._code(state, VERSION_V3)
        flags = (FLAG_KEYFRAME if self.keyframe else 0) | (FLAG_END_OF_STREAM if self.end_of_stream else 0)
        if flags:
            head = pack_header_v3(flags, self.model_id, self.frame_index, self.timestamp_us, self.k,
                                  (self.width, self.height, self.grid_h, self.grid_w, self.bits_per_index))
        else:
            assert state.timestamp_us is not None  # _code checked that a keyframe packet started the state
            head = pack_header_v3(0, self.model_id, self.frame_index & 0xFF,
                                  (self.timestamp_us - state.timestamp_us) % (1 << 64), self.k)
        body = _sized(head + payload)
        return body + _crc_v3(self.model_id, body).to_bytes(CRC_SIZE, "little"), new_state

    def pack_as(self, version: int, state: CoderState) -> tuple[bytes, CoderState]:
        """Serialise as packet version ``version`` (1, 2 or 3): ``(bytes, new_state)``, the state unchanged
        by version 1 (:meth:`pack`), which codes nothing with it."""
        if version == VERSION_V3:
            return self.pack_v3(state)
        if version == VERSION_V2:
            return self.pack_v2(state)
        if version == VERSION:
            return self.pack(), state
        raise ValueError(f"unknown packet version {version!r}; choose one of {VERSIONS}")

    def _code(self, state: CoderState, version: int) -> tuple[bytes, CoderState]:
        """The entropy-coded payload of version 2 or 3 and the state after it (checks of ``pack_v2``)."""
        _check_levels_fit(state, self.bits_per_index, ValueError)
        if self.n == 0:
            return b"", state
        _check_follows(state, self.frame_index, self.keyframe, ValueError)
        if not self.keyframe:
            _check_keeps_geometry(state, self.width, self.height, self.bits_per_index, ValueError)
            if version == VERSION_V3:
                _check_keeps_model(state, self.model_id, self.end_of_stream, ValueError)
        payload, new_state = encode_frame(state, self.mask, self.indices, (self.grid_h, self.grid_w), self.keyframe)
        return payload, _after(new_state, state, self.model_id, self.frame_index, self.timestamp_us, self.keyframe,
                               (self.width, self.height), self.bits_per_index)

    @classmethod
    def unpack_v2(cls, data: bytes, state: CoderState,
                  expect_model_id: bytes | None = None) -> tuple[TokenPacket, CoderState]:
        """Parse, validate and decode a version 2 packet with the stream's coder state.

        Args:
            data: exactly one version 2 packet.
            state: the stream's coder state before this packet.
            expect_model_id: when given (8 bytes), packets for any other model are refused.

        Returns:
            ``(packet, new_state)``; on any error the caller's ``state`` is untouched (it is immutable).

        Raises:
            PacketError: every defect of ``data`` (as :meth:`unpack`, plus a payload that is not exactly
                what the encoder makes), a packet of another version, or a packet this state cannot decode
                (a non-keyframe before the first keyframe, or one that does not follow the state's last
                frame: request a keyframe). A non-keyframe carries no geometry: it decodes on the state's.
            ValueError: ``expect_model_id`` is not 8 bytes, or ``state`` is not a CoderState.
        """
        return cls._unpack_checked(data, state, expect_model_id, VERSION_V2)

    @classmethod
    def unpack_v3(cls, data: bytes, state: CoderState,
                  expect_model_id: bytes | None = None) -> tuple[TokenPacket, CoderState]:
        """Parse, validate and decode a version 3 packet with the stream's coder state (docs/PACKET.md §7).

        A non-keyframe takes its model id, frame index, timestamp and geometry from ``state``: its CRC is
        computed over the state's model id (another model's stream, or another stream's state, fails it)
        and its frame index's low byte must be the next one's (another means a lost packet: request a
        keyframe).

        Args, returns and raises: as :meth:`unpack_v2`.
        """
        return cls._unpack_checked(data, state, expect_model_id, VERSION_V3)

    @classmethod
    def _unpack_checked(cls, data: bytes, state: CoderState, expect_model_id: bytes | None,
                        version: int) -> tuple[TokenPacket, CoderState]:
        if expect_model_id is not None and (not isinstance(expect_model_id, bytes)
                                            or len(expect_model_id) != MODEL_ID_SIZE):
            raise ValueError(f"expect_model_id must be {MODEL_ID_SIZE} bytes, got {expect_model_id!r}")
        if not isinstance(state, CoderState):
            raise ValueError(f"state must be a CoderState, got {type(state).__name__}")
        raw = _as_bytes(data)
        try:
            return cls._unpack_coded(raw, state, expect_model_id, version)
        except PacketError:
            raise
        except (ValueError, TypeError, IndexError, KeyError, ArithmeticError, struct.error) as e:
            raise PacketError(f"malformed packet: {type(e).__name__}: {e}") from e

    @classmethod
    def _unpack_coded(cls, raw: bytes, state: CoderState, expect_model_id: bytes | None,
                      version: int) -> tuple[TokenPacket, CoderState]:
        found = packet_version(raw)
        if found == VERSION:
            raise PacketError("packet version 1 is not entropy-coded: use TokenPacket.unpack")
        if found != version:
            raise PacketError(f"packet version {found} is not version {version}: use TokenPacket.unpack_v{found} "
                              f"(TokenPacket.unpack_any reads every version)")
        # a non-keyframe takes the state's geometry (none: refused before the CRC); in version 3 also its model
        # id (for the CRC), frame index and timestamp
        h = _verify(raw, state)
        _check_model(h, expect_model_id)
        _check_levels_fit(state, h.bits_per_index, PacketError)
        if h.n == 0:
            mask, indices, new_state = np.zeros(0, bool), np.zeros(0, np.uint32), state
        else:
            _check_follows(state, h.frame_index, h.keyframe, PacketError)
            if not h.keyframe:  # an end-of-stream non-keyframe carries its geometry: it must be the state's
                _check_keeps_geometry(state, h.width, h.height, h.bits_per_index, PacketError)
                if version == VERSION_V3:
                    _check_keeps_model(state, h.model_id, h.end_of_stream, PacketError)
            payload = raw[h.header_size:h.header_size + h.payload_bytes]
            mask, indices, new_state = decode_frame(state, payload, (h.grid_h, h.grid_w), h.k, h.keyframe)
            new_state = _after(new_state, state, h.model_id, h.frame_index, h.timestamp_us, h.keyframe,
                               (h.width, h.height), h.bits_per_index)
        packet = cls(h.model_id, h.frame_index, h.timestamp_us, h.keyframe, h.end_of_stream, h.width,
                     h.height, h.grid_h, h.grid_w, h.bits_per_index, mask, indices)
        return packet, new_state

    @classmethod
    def unpack_any(cls, data: bytes, state: CoderState,
                   expect_model_id: bytes | None = None) -> tuple[TokenPacket, CoderState]:
        """Any version, by its first bytes: version 3 through :meth:`unpack_v3`, version 2 through
        :meth:`unpack_v2`; version 1 through :meth:`unpack`, returning ``state`` unchanged (a stream must
        not switch from version 1 to 2 or 3 between keyframes; 2 and 3 share the state and may alternate)."""
        if not isinstance(state, CoderState):
            raise ValueError(f"state must be a CoderState, got {type(state).__name__}")
        raw = _as_bytes(data)
        version = packet_version(raw)
        if version == VERSION:
            return cls.unpack(raw, expect_model_id), state
        return cls._unpack_checked(raw, state, expect_model_id, version)


def _sized(body: bytes) -> bytes:
    size = len(body) + CRC_SIZE
    if size > MAX_PACKET_BYTES:
        raise ValueError(f"packet would be {size} bytes, over the limit of {MAX_PACKET_BYTES}")
    return body


def _after(coded: CoderState, before: CoderState, model_id: bytes, frame_index: int, timestamp_us: int,
           keyframe: bool, frame_size: tuple[int, int], bits: int) -> CoderState:
    """The state after a version 2 or 3 packet: the coder's (``coded``) with what the packet layer keeps.
    A keyframe sets the model id; a non-keyframe keeps its keyframe's (version 3 checks it is its own)."""
    return replace(coded, frame_index=frame_index, frame_size=frame_size, bits_per_index=bits,
                   model_id=model_id if keyframe else before.model_id, timestamp_us=timestamp_us)


def pack_header_v2(flags: int, model_id: bytes, frame_index: int, timestamp_us: int, k: int,
                   geometry: tuple[int, int, int, int, int] | None = None) -> bytes:
    """A version 2 header: the 14-byte prefix, then frame_index, timestamp_us and k as varints, then
    ``geometry`` (width, height, grid_h, grid_w, bits_per_index) as varints when given (docs/PACKET.md §6.1).

    A reader expects the geometry exactly when ``flags`` has bit 0 or 1 set; that, like every limit but
    the fields' widths (:data:`HEADER_V2_FIELDS`, :data:`HEADER_V2_GEOMETRY`), is the caller's to keep
    (tests and the fuzzer write headers that break it)."""
    fields = HEADER_V2_FIELDS + (HEADER_V2_GEOMETRY if geometry is not None else ())
    values = (frame_index, timestamp_us, k, *(geometry or ()))
    _check_widths(fields, values)
    return HEADER_V2_PREFIX.pack(MAGIC, VERSION_V2, flags, model_id) + b"".join(map(uvarint, values))


def pack_header_v3(flags: int, model_id: bytes, frame_index: int, timestamp_us: int, k: int,
                   geometry: tuple[int, int, int, int, int] | None = None) -> bytes:
    """A version 3 header (docs/PACKET.md §7.1). With ``geometry`` (a keyframe or end-of-stream packet):
    the first byte ``0xf0 | flags``, ``model_id``, then frame_index, timestamp_us, k and the geometry as
    varints. Without (any other packet): the first byte, ``frame_index`` as one byte (the index's low
    byte), then ``timestamp_us`` (here the difference from the previous packet's) and k as varints;
    ``model_id`` is not written.

    A reader expects the long form exactly when ``flags`` has bit 0 or 1 set; that is the caller's to keep,
    with every limit but the fields' widths (tests and the fuzzer write headers that break them)."""
    if not 0 <= flags <= _FLAGS_V3:
        raise ValueError(f"flags = {flags} does not fit the first byte's 4 bits")
    if geometry is None:
        if not 0 <= frame_index <= 0xFF:
            raise ValueError(f"frame_index = {frame_index} is not a low byte (0..255)")
        _check_widths(HEADER_V3_DELTA, (timestamp_us, k))
        return bytes((MARKER_V3 | flags, frame_index)) + uvarint(timestamp_us) + uvarint(k)
    if len(model_id) != MODEL_ID_SIZE:
        raise ValueError(f"model_id must be {MODEL_ID_SIZE} bytes, got {model_id!r}")
    values = (frame_index, timestamp_us, k, *geometry)
    _check_widths(HEADER_V2_FIELDS + HEADER_V2_GEOMETRY, values)
    return bytes((MARKER_V3 | flags,)) + model_id + b"".join(map(uvarint, values))


def _check_widths(fields: tuple[tuple[str, int], ...], values: tuple[int, ...]) -> None:
    for (name, bits), value in zip(fields, values, strict=True):
        if not 0 <= value < 1 << bits:
            raise ValueError(f"{name} = {value} does not fit {bits} bits")


def _check_model(h: PacketHeader, expect_model_id: bytes | None) -> None:
    """Refuse a header of another model than ``expect_model_id``. A version 3 non-keyframe's header read
    without its stream's model id or state (:func:`peek_header`) has none to compare (``model_id`` empty):
    its CRC compares it where the packet is verified or decoded."""
    if expect_model_id is not None and h.model_id and h.model_id != expect_model_id:
        raise PacketError(f"packet is for model {h.model_id.hex()}, this receiver runs model "
                          f"{expect_model_id.hex()}")


def _check_follows(state: CoderState, frame_index: int, keyframe: bool, exc: type[ValueError]) -> None:
    """A non-keyframe must be the frame right after the state's last one: the coder state needs every
    packet since the keyframe, and a gap would otherwise decode to wrong tokens, or fail, at random."""
    last = state.frame_index
    if not keyframe and last is not None and frame_index != (last + 1) & 0xFFFFFFFF:
        raise exc(f"frame {frame_index} does not follow frame {last}, the last one this coder state decoded: "
                  f"a packet is missing or out of order; decode in order, and after a loss request a keyframe")


def _check_keeps_geometry(state: CoderState, width: int, height: int, bits: int, exc: type[ValueError]) -> None:
    """A version 2 non-keyframe has its keyframe's frame size and index width: it does not carry them, the
    coder state does (the grid is the entropy coder's own check). Nothing to compare before a keyframe:
    the coder refuses the packet then."""
    if state.grid is None:
        return
    if state.frame_size != (width, height) or state.bits_per_index != bits:
        have = ("none (it was not started by a keyframe packet)" if state.frame_size is None else
                f"{state.frame_size[0]}x{state.frame_size[1]} at {state.bits_per_index} bits per index")
        raise exc(f"a non-keyframe of a {width}x{height} frame at {bits} bits per index cannot follow the coder "
                  f"state's frames, {have}: frame size and index width change only at a keyframe")


def _check_keeps_model(state: CoderState, model_id: bytes, eos: bool, exc: type[ValueError]) -> None:
    """A version 3 non-keyframe is its keyframe's model's: it does not carry the model id (the state's,
    which its CRC covers), so a sender may not change the model between keyframes. Only an end-of-stream
    packet that carries a frame (and its model id) can show another one here."""
    if state.model_id is not None and model_id != state.model_id:
        what = "an end-of-stream non-keyframe" if eos else "a non-keyframe"
        raise exc(f"{what} of model {model_id.hex()} cannot follow the coder state's frames of model "
                  f"{state.model_id.hex()}: the model changes only at a keyframe")
    if state.model_id is None and state.grid is not None and not eos:
        raise exc("the coder state holds no model id, frame index or timestamp (it was not started by a keyframe "
                  "packet), and a version 3 non-keyframe does not carry them")


def _check_levels_fit(state: CoderState, bits: int, exc: type[ValueError]) -> None:
    if not isinstance(state, CoderState):
        raise ValueError(f"state must be a CoderState, got {type(state).__name__}")
    size = 1
    for lv in state.levels:
        size *= lv
    if size > 1 << bits:
        raise exc(f"the coder state's FSQ levels {state.levels} ({size} codes) do not fit the packet's "
                  f"{bits} bits per index")
