"""The wire format: the one place livetok makes bytes (numpy + stdlib, and constriction for the entropy-coded
version 2; spec in docs/PACKET.md)."""

from __future__ import annotations

from .bitpack import MAX_BITS, pack_uints, packed_size, unpack_uints
from .entropy import CoderState, decode_frame, encode_frame, token_bits
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
    HEADER_V2_SIZE,
    MAGIC,
    MAX_PACKET_BYTES,
    MAX_SIDE,
    MIN_PACKET_BYTES,
    MIN_PACKET_BYTES_V2,
    MODEL_ID_SIZE,
    VERSION,
    VERSION_V2,
    VERSIONS,
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
    "HEADER_V2_SIZE",
    "MAGIC",
    "MAX_BITS",
    "MAX_META_BYTES",
    "MAX_PACKET_BYTES",
    "MAX_POSITIONS",
    "MAX_SIDE",
    "MIN_PACKET_BYTES",
    "MIN_PACKET_BYTES_V2",
    "MODEL_ID_SIZE",
    "REQUIRED_META",
    "VERSION",
    "VERSIONS",
    "VERSION_V2",
    "CoderState",
    "LtkReader",
    "LtkWriter",
    "MaskMode",
    "PacketError",
    "PacketHeader",
    "TokenPacket",
    "decode_frame",
    "decode_mask",
    "encode_frame",
    "encode_mask",
    "encode_mask_as",
    "encoded_mask_sizes",
    "index_width",
    "pack_uints",
    "packed_size",
    "peek_header",
    "read_ltk",
    "token_bits",
    "unpack_uints",
    "verify_packet",
]
