"""The wire format: the one place livetok makes bytes (numpy + stdlib only; spec in docs/PACKET.md)."""

from __future__ import annotations

from .bitpack import MAX_BITS, pack_uints, packed_size, unpack_uints
from .errors import PacketError
from .ltkfile import (
    FILE_HEADER_SIZE,
    FILE_MAGIC,
    FILE_VERSION,
    MAX_META_BYTES,
    REQUIRED_META,
    LtkReader,
    LtkWriter,
    read_ltk,
)
from .maskcode import (
    MAX_POSITIONS,
    MaskMode,
    decode_mask,
    encode_mask,
    encode_mask_as,
    encoded_mask_sizes,
    index_width,
)
from .packet import (
    CRC_SIZE,
    HEADER_SIZE,
    MAGIC,
    MAX_PACKET_BYTES,
    MAX_SIDE,
    MIN_PACKET_BYTES,
    MODEL_ID_SIZE,
    VERSION,
    PacketHeader,
    TokenPacket,
    peek_header,
    verify_packet,
)

__all__ = [
    "CRC_SIZE",
    "FILE_HEADER_SIZE",
    "FILE_MAGIC",
    "FILE_VERSION",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_BITS",
    "MAX_META_BYTES",
    "MAX_PACKET_BYTES",
    "MAX_POSITIONS",
    "MAX_SIDE",
    "MIN_PACKET_BYTES",
    "MODEL_ID_SIZE",
    "REQUIRED_META",
    "VERSION",
    "LtkReader",
    "LtkWriter",
    "MaskMode",
    "PacketError",
    "PacketHeader",
    "TokenPacket",
    "decode_mask",
    "encode_mask",
    "encode_mask_as",
    "encoded_mask_sizes",
    "index_width",
    "pack_uints",
    "packed_size",
    "peek_header",
    "read_ltk",
    "unpack_uints",
    "verify_packet",
]
