"""Unsigned LEB128 varints for the version 2 and 3 packet headers (docs/PACKET.md §6.1, §7).

Seven bits per byte, least significant group first, bit 7 set on every byte but the last — the varint
of protobuf, WebAssembly and DWARF. Written here (twenty lines) rather than imported: the parser must
refuse what the writer never makes (an over-long or non-minimal encoding, a value over the field's
width) so that every header has exactly one byte string, and no small library does that checking.
"""

from __future__ import annotations

from .errors import PacketError

__all__ = ["read_uvarint", "uvarint", "uvarint_size"]


def uvarint(value: int) -> bytes:
    """The minimal LEB128 bytes of ``value`` (>= 0)."""
    if value < 0:
        raise ValueError(f"a varint holds values >= 0, got {value}")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def uvarint_size(bits: int) -> int:
    """Most bytes a varint of a ``bits``-bit field can take."""
    return (bits + 6) // 7


def read_uvarint(data: bytes, pos: int, bits: int, name: str, version: int = 2) -> tuple[int, int]:
    """Read the varint of field ``name`` (a ``bits``-bit unsigned integer) at ``pos`` of a version ``version``
    header.

    Returns:
        ``(value, position after it)``.

    Raises:
        PacketError: the data ends inside the varint, it is longer than the field allows or not
            minimal (a last byte of 0 after others), or its value needs more than ``bits`` bits.
    """
    value = shift = 0
    for i in range(uvarint_size(bits)):
        if pos + i >= len(data):
            raise PacketError(f"truncated: the version {version} header ends inside its {name} field "
                              f"(got {len(data)} bytes)")
        byte = data[pos + i]
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise PacketError(f"header field {name} is not minimally encoded (a varint may not end in "
                                  f"a zero byte)")
            if value >> bits:
                raise PacketError(f"header field {name} = {value} does not fit {bits} bits")
            return value, pos + i + 1
    raise PacketError(f"header field {name} is a varint longer than {uvarint_size(bits)} bytes")
