"""TokenPacket: one frame's kept token indices as versioned, CRC-checked bytes (layout: docs/PACKET.md).

MQTT, WebRTC and ``.ltk`` files all carry exactly these bytes. Version 1 (``pack``/``unpack``) stores the
mask and fixed-width indices and decodes on its own; version 2 (``pack_v2``/``unpack_v2``) entropy-codes
them (entropy.py) and decodes only with the stream's :class:`CoderState`, which it returns updated.
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
    "MAGIC",
    "MAX_PACKET_BYTES",
    "MAX_SIDE",
    "MIN_PACKET_BYTES",
    "MIN_PACKET_BYTES_V2",
    "MODEL_ID_SIZE",
    "VERSION",
    "VERSIONS",
    "VERSION_V2",
    "PacketHeader",
    "TokenPacket",
    "max_payload_bytes",
    "pack_header_v2",
    "peek_header",
    "verify_packet",
]

MAGIC = b"LTKP"
VERSION = 1  # the fixed-length layout of pack()/unpack()
VERSION_V2 = 2  # the entropy-coded layout of pack_v2()/unpack_v2()
VERSIONS = (VERSION, VERSION_V2)
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
CRC_SIZE = 4
MIN_PACKET_BYTES = HEADER_SIZE + CRC_SIZE  # 52: a version 1 end-of-stream packet with an empty grid
MIN_PACKET_BYTES_V2 = HEADER_V2_MIN_SIZE + CRC_SIZE  # 21: the least a version 2 packet can be
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

    ``has_geometry`` is False for a version 2 non-keyframe read without its stream's coder state: such a
    packet does not carry its frame size, grid and index width (they are its keyframe's, which the coder
    state keeps), so ``width``, ``height``, ``grid_h``, ``grid_w`` and ``bits_per_index`` are 0.
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
        version 2 the verified packet's length (from :func:`peek_header`, header and CRC only)."""
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
        return  # a version 2 non-keyframe without its coder state: k and P are checked with the state's grid
    _check_geometry(h.width, h.height, h.grid_h, h.grid_w, h.bits_per_index, h.end_of_stream, PacketError)
    n = h.n
    if h.k > n:
        raise PacketError(f"k={h.k} exceeds the {n} positions of the {h.grid_h}x{h.grid_w} grid")
    if h.version == VERSION_V2:
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


def _parse_header(data: bytes) -> PacketHeader:
    """Unpack the header after checking size, magic and version; no semantic checks."""
    if len(data) > 4 and data[:4] == MAGIC and data[4] == VERSION_V2:
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
        raise PacketError(f"unsupported packet version {version} (this build supports versions "
                          f"{VERSION} and {VERSION_V2})")
    return PacketHeader(version, flags, model_id, frame_index, timestamp_us, width, height, grid_h, grid_w,
                        bits, mode, k, mask_bytes, token_bytes)


def peek_header(data: bytes) -> PacketHeader:
    """Read and validate a packet header without the CRC check or decoding tokens.

    Enough for routers and receivers that only need the frame index, flags or model id; ``data`` may
    be just the first :data:`HEADER_SIZE` bytes (for version 2, its header: at most
    :data:`HEADER_V2_MAX_SIZE` bytes, ``header_size`` after parsing). Both versions
    are read; ``version`` tells which. A version 2 header's ``payload_bytes`` is 0 here (the header does
    not store it: :func:`verify_packet` derives it from a whole packet), and a version 2 non-keyframe's
    geometry is absent (``has_geometry`` False).

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


def _verify(data: bytes, state: CoderState | None = None) -> PacketHeader:
    """Lengths, CRC and header fields of a whole packet. With ``state``, a version 2 non-keyframe takes
    the state's geometry (refused, before the CRC is computed, when the state has none) and its ``k``
    and payload length are checked against it."""
    if len(data) > MAX_PACKET_BYTES:
        raise PacketError(f"packet of {len(data)} bytes exceeds the limit of {MAX_PACKET_BYTES}")
    h = _parse_header(data)
    if h.version == VERSION_V2:
        # no length field: the transport frames the packet, and the payload is what header and CRC leave
        if len(data) < h.header_size + CRC_SIZE:
            raise PacketError(f"truncated: a version 2 packet needs its {h.header_size}-byte header and a "
                              f"{CRC_SIZE}-byte CRC, got {len(data)} bytes")
        h = replace(h, payload_bytes=len(data) - h.header_size - CRC_SIZE)
        if state is not None and not h.has_geometry:
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


def verify_packet(data: bytes) -> PacketHeader:
    """Check a whole packet (header, lengths, CRC) without decoding mask or tokens.

    For relays that forward bytes: cheaper than :meth:`TokenPacket.unpack`, and rejects every
    transmission error the CRC catches. A version 2 non-keyframe's ``k`` and payload length are
    bounded only with its coder state (:meth:`TokenPacket.unpack_v2`): here ``has_geometry`` is False.

    Args:
        data: one complete packet.

    Returns:
        The parsed header.

    Raises:
        PacketError: anything :meth:`TokenPacket.unpack` rejects before decoding the sections.
    """
    return _verify(_as_bytes(data))


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

    # --- version 2: entropy-coded -------------------------------------------------------------------------

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
        _check_levels_fit(state, self.bits_per_index, ValueError)
        if self.n == 0:
            payload, new_state = b"", state
        else:
            _check_follows(state, self.frame_index, self.keyframe, ValueError)
            if not self.keyframe:
                _check_keeps_geometry(state, self.width, self.height, self.bits_per_index, ValueError)
            payload, new_state = encode_frame(state, self.mask, self.indices, (self.grid_h, self.grid_w),
                                              self.keyframe)
            new_state = replace(new_state, frame_index=self.frame_index, frame_size=(self.width, self.height),
                                bits_per_index=self.bits_per_index)
        flags = (FLAG_KEYFRAME if self.keyframe else 0) | (FLAG_END_OF_STREAM if self.end_of_stream else 0)
        geometry = ((self.width, self.height, self.grid_h, self.grid_w, self.bits_per_index)
                    if self.keyframe or self.end_of_stream else None)
        head = pack_header_v2(flags, self.model_id, self.frame_index, self.timestamp_us, self.k, geometry)
        size = len(head) + len(payload) + CRC_SIZE
        if size > MAX_PACKET_BYTES:
            raise ValueError(f"packet would be {size} bytes, over the limit of {MAX_PACKET_BYTES}")
        body = head + payload
        return body + (zlib.crc32(body) & 0xFFFFFFFF).to_bytes(CRC_SIZE, "little"), new_state

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
                what the encoder makes), a version 1 packet, or a packet this state cannot decode (a
                non-keyframe before the first keyframe, or one that does not follow the state's last frame:
                request a keyframe). A non-keyframe carries no geometry: it decodes on the state's.
            ValueError: ``expect_model_id`` is not 8 bytes, or ``state`` is not a CoderState.
        """
        if expect_model_id is not None and (not isinstance(expect_model_id, bytes)
                                            or len(expect_model_id) != MODEL_ID_SIZE):
            raise ValueError(f"expect_model_id must be {MODEL_ID_SIZE} bytes, got {expect_model_id!r}")
        if not isinstance(state, CoderState):
            raise ValueError(f"state must be a CoderState, got {type(state).__name__}")
        raw = _as_bytes(data)
        try:
            return cls._unpack_v2(raw, state, expect_model_id)
        except PacketError:
            raise
        except (ValueError, TypeError, IndexError, KeyError, ArithmeticError, struct.error) as e:
            raise PacketError(f"malformed packet: {type(e).__name__}: {e}") from e

    @classmethod
    def _unpack_v2(cls, raw: bytes, state: CoderState,
                   expect_model_id: bytes | None) -> tuple[TokenPacket, CoderState]:
        h = _verify(raw, state)  # a non-keyframe takes the state's geometry (none: refused before the CRC)
        _check_model(h, expect_model_id)
        if h.version != VERSION_V2:
            raise PacketError(f"packet version {h.version} is not entropy-coded: use TokenPacket.unpack")
        _check_levels_fit(state, h.bits_per_index, PacketError)
        if h.n == 0:
            mask, indices, new_state = np.zeros(0, bool), np.zeros(0, np.uint32), state
        else:
            _check_follows(state, h.frame_index, h.keyframe, PacketError)
            if not h.keyframe:  # an end-of-stream non-keyframe carries its geometry: it must be the state's
                _check_keeps_geometry(state, h.width, h.height, h.bits_per_index, PacketError)
            payload = raw[h.header_size:h.header_size + h.payload_bytes]
            mask, indices, new_state = decode_frame(state, payload, (h.grid_h, h.grid_w), h.k, h.keyframe)
            new_state = replace(new_state, frame_index=h.frame_index, frame_size=(h.width, h.height),
                                bits_per_index=h.bits_per_index)
        packet = cls(h.model_id, h.frame_index, h.timestamp_us, h.keyframe, h.end_of_stream, h.width,
                     h.height, h.grid_h, h.grid_w, h.bits_per_index, mask, indices)
        return packet, new_state

    @classmethod
    def unpack_any(cls, data: bytes, state: CoderState,
                   expect_model_id: bytes | None = None) -> tuple[TokenPacket, CoderState]:
        """Either version: version 2 through :meth:`unpack_v2`; version 1 through :meth:`unpack`, returning
        ``state`` unchanged (a stream must not switch versions between keyframes)."""
        if not isinstance(state, CoderState):
            raise ValueError(f"state must be a CoderState, got {type(state).__name__}")
        raw = _as_bytes(data)
        if len(raw) > 4 and raw[:4] == MAGIC and raw[4] == VERSION_V2:
            return cls.unpack_v2(raw, state, expect_model_id)
        return cls.unpack(raw, expect_model_id), state


def pack_header_v2(flags: int, model_id: bytes, frame_index: int, timestamp_us: int, k: int,
                   geometry: tuple[int, int, int, int, int] | None = None) -> bytes:
    """A version 2 header: the 14-byte prefix, then frame_index, timestamp_us and k as varints, then
    ``geometry`` (width, height, grid_h, grid_w, bits_per_index) as varints when given (docs/PACKET.md §6.1).

    A reader expects the geometry exactly when ``flags`` has bit 0 or 1 set; that, like every limit but
    the fields' widths (:data:`HEADER_V2_FIELDS`, :data:`HEADER_V2_GEOMETRY`), is the caller's to keep
    (tests and the fuzzer write headers that break it)."""
    fields = HEADER_V2_FIELDS + (HEADER_V2_GEOMETRY if geometry is not None else ())
    values = (frame_index, timestamp_us, k, *(geometry or ()))
    for (name, bits), value in zip(fields, values, strict=True):
        if not 0 <= value < 1 << bits:
            raise ValueError(f"{name} = {value} does not fit {bits} bits")
    return HEADER_V2_PREFIX.pack(MAGIC, VERSION_V2, flags, model_id) + b"".join(map(uvarint, values))


def _check_model(h: PacketHeader, expect_model_id: bytes | None) -> None:
    if expect_model_id is not None and h.model_id != expect_model_id:
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


def _check_levels_fit(state: CoderState, bits: int, exc: type[ValueError]) -> None:
    if not isinstance(state, CoderState):
        raise ValueError(f"state must be a CoderState, got {type(state).__name__}")
    size = 1
    for lv in state.levels:
        size *= lv
    if size > 1 << bits:
        raise exc(f"the coder state's FSQ levels {state.levels} ({size} codes) do not fit the packet's "
                  f"{bits} bits per index")
