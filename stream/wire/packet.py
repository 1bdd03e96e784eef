"""TokenPacket: one frame's kept token indices as versioned, CRC-checked bytes (layout: docs/PACKET.md).

MQTT, WebRTC and ``.ltk`` files all carry exactly these bytes.
"""

from __future__ import annotations

import operator
import struct
import zlib
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from .bitpack import MAX_BITS, pack_uints, packed_size, unpack_uints
from .errors import PacketError
from .maskcode import MAX_POSITIONS, MaskMode, decode_mask, encode_mask, index_width

__all__ = [
    "CRC_SIZE",
    "FLAG_END_OF_STREAM",
    "FLAG_KEYFRAME",
    "HEADER",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_PACKET_BYTES",
    "MAX_SIDE",
    "MIN_PACKET_BYTES",
    "MODEL_ID_SIZE",
    "VERSION",
    "PacketHeader",
    "TokenPacket",
    "peek_header",
    "verify_packet",
]

MAGIC = b"LTKP"
VERSION = 1
# magic, version, flags, model_id, frame_index, timestamp_us, width, height, grid_h, grid_w,
# bits_per_index, mask mode, k, mask byte length, token byte length
HEADER = struct.Struct("<4sBB8sIQHHHHBBIII")
HEADER_SIZE = HEADER.size  # 48
CRC_SIZE = 4
MIN_PACKET_BYTES = HEADER_SIZE + CRC_SIZE
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
    """The fixed 48-byte header of a packet, readable without decoding the tokens.

    Attributes mirror the header fields of docs/PACKET.md; ``mask_bytes`` and ``token_bytes`` are the
    stored section lengths.
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
    def packet_size(self) -> int:
        """Total packet length in bytes that this header announces (header + sections + CRC)."""
        return HEADER_SIZE + self.mask_bytes + self.token_bytes + CRC_SIZE


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


def _validate_header(h: PacketHeader) -> None:
    if h.flags & ~_KNOWN_FLAGS:
        raise PacketError(f"reserved flag bits set: flags=0x{h.flags:02x} "
                          f"(only 0x{_KNOWN_FLAGS:02x} are defined)")
    _check_geometry(h.width, h.height, h.grid_h, h.grid_w, h.bits_per_index, h.end_of_stream, PacketError)
    n = h.n
    if h.k > n:
        raise PacketError(f"k={h.k} exceeds the {n} positions of the {h.grid_h}x{h.grid_w} grid")
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
    if mode == MaskMode.RLE and h.mask_bytes > (3 * n + 7) // 8:  # gamma codes: <= 3 bits per position
        raise PacketError(f"mask byte length {h.mask_bytes} is too large for an RLE mask of {n} positions")


def _as_bytes(data: Any) -> bytes:
    try:
        return bytes(memoryview(data))
    except TypeError:
        raise PacketError(f"expected a bytes-like packet, got {type(data).__name__}") from None


def _parse_header(data: bytes) -> PacketHeader:
    """Unpack the header after checking size, magic and version; no semantic checks."""
    if len(data) < HEADER_SIZE:
        raise PacketError(f"truncated: need {HEADER_SIZE} bytes for the header, got {len(data)}")
    (magic, version, flags, model_id, frame_index, timestamp_us, width, height, grid_h, grid_w, bits,
     mode, k, mask_bytes, token_bytes) = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise PacketError(f"bad magic {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise PacketError(f"unsupported packet version {version} (this build supports version {VERSION})")
    return PacketHeader(version, flags, model_id, frame_index, timestamp_us, width, height, grid_h, grid_w,
                        bits, mode, k, mask_bytes, token_bytes)


def peek_header(data: bytes) -> PacketHeader:
    """Read and validate a packet header without the CRC check or decoding tokens.

    Enough for routers and receivers that only need the frame index, flags or model id; ``data`` may
    be just the first :data:`HEADER_SIZE` bytes.

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


def _verify(data: bytes) -> PacketHeader:
    if len(data) > MAX_PACKET_BYTES:
        raise PacketError(f"packet of {len(data)} bytes exceeds the limit of {MAX_PACKET_BYTES}")
    h = _parse_header(data)
    size = h.packet_size
    if size > MAX_PACKET_BYTES:
        raise PacketError(f"header announces a packet of {size} bytes, over the limit of {MAX_PACKET_BYTES}")
    if len(data) < size:
        raise PacketError(f"truncated: header announces {size} bytes ({HEADER_SIZE} header + {h.mask_bytes} "
                          f"mask + {h.token_bytes} token + {CRC_SIZE} CRC), got {len(data)}")
    if len(data) > size:
        raise PacketError(f"{len(data) - size} trailing bytes after the CRC (header announces {size} bytes)")
    stored = int.from_bytes(data[-CRC_SIZE:], "little")
    computed = zlib.crc32(data[:-CRC_SIZE]) & 0xFFFFFFFF
    if stored != computed:
        raise PacketError(f"CRC mismatch: stored 0x{stored:08x}, computed 0x{computed:08x}")
    _validate_header(h)
    return h


def verify_packet(data: bytes) -> PacketHeader:
    """Check a whole packet (header, lengths, CRC) without decoding mask or tokens.

    For relays that forward bytes: cheaper than :meth:`TokenPacket.unpack`, and rejects every
    transmission error the CRC catches.

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
        if expect_model_id is not None and h.model_id != expect_model_id:
            raise PacketError(f"packet is for model {h.model_id.hex()}, this receiver runs model "
                              f"{expect_model_id.hex()}")
        mask_end = HEADER_SIZE + h.mask_bytes
        mask = decode_mask(h.mask_mode, raw[HEADER_SIZE:mask_end], h.n)
        kept = int(mask.sum())
        if kept != h.k:
            raise PacketError(f"mask keeps {kept} positions but the header says k={h.k}")
        indices = unpack_uints(raw[mask_end:mask_end + h.token_bytes], h.k, h.bits_per_index)
        return cls(h.model_id, h.frame_index, h.timestamp_us, h.keyframe, h.end_of_stream, h.width,
                   h.height, h.grid_h, h.grid_w, h.bits_per_index, mask, indices)
