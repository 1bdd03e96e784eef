"""Checks a parsed packet against the decoder that will run it, before any tensor is allocated.

The parser (`wire/`) bounds every size field by what the *format* allows (a 16384x16384 frame, a
2048x2048 grid). That is still a 3-gigabyte decode for a 52-byte packet with an empty mask, and a
packet's CRC only protects against noise, not against a sender that lies. So a receiver also checks
that the packet is one its model could have made (bits per index, codebook, grid = frame size / stride)
and that the frame fits the receiver's own size limit; anything else is a `PacketError`, dropped like
any bad packet. Before even that, a packet longer than the largest its model sends for a frame within
the limit (`largest_packet`) is refused unparsed: 180 kB for version 1 at 4K, where the format allows
16 MB.
"""

from __future__ import annotations

from dataclasses import dataclass

from .wire import CRC_SIZE, HEADER_SIZE, MAX_PACKET_BYTES, PacketError, PacketHeader, TokenPacket, packed_size
from .wire.maskcode import MAX_POSITIONS
from .wire.packet import (
    HEADER_V2_MAX_SIZE,
    HEADER_V3_MAX_SIZE,
    VERSION_V2,
    VERSION_V3,
    max_payload_bytes,
    packet_version,
)

__all__ = ["DEFAULT_LIMITS", "ReceiverLimits", "check_packet_fits", "check_packet_size", "largest_packet"]


@dataclass(frozen=True)
class ReceiverLimits:
    """The largest frame a receiver decodes (default: 4K UHD either way round, 8.3 Mpx).

    Args:
        max_side: the longest side in pixels.
        max_pixels: width * height.
    """

    max_side: int = 3840
    max_pixels: int = 3840 * 2160

    def __post_init__(self) -> None:
        if self.max_side < 1 or self.max_pixels < 1:
            raise ValueError(f"receiver limits must be positive, got max_side={self.max_side}, "
                             f"max_pixels={self.max_pixels}")


DEFAULT_LIMITS = ReceiverLimits()


def check_packet_fits(packet: TokenPacket | PacketHeader, *, bits_per_index: int, codebook_size: int,
                      stride: int, limits: ReceiverLimits = DEFAULT_LIMITS) -> None:
    """Refuse a packet this decoder cannot (or should not) decode.

    Args:
        packet: a packet that passed `TokenPacket.unpack`, or a verified header alone (checked before a
            v2 or v3 payload is decoded: its decoding cost follows the grid the header announces). A v2 or
            v3 non-keyframe's header has no geometry (`has_geometry` False) and passes: it decodes on its
            coder state's grid, which its keyframe's header passed here before the state was started
            (`unpack_v2` / `unpack_v3` refuse it, before the CRC, when no keyframe started the state).
        bits_per_index: the model's index width; a packet with another width came from another model.
        codebook_size: the model's number of codes; larger indices are not codes of this model.
        stride: pixels per latent position; the grid must be ceil(size / stride) on each axis.
        limits: the receiver's frame size limit.

    Raises:
        PacketError: one line naming the field, its value and the allowed one.
    """
    if packet.end_of_stream and packet.n == 0:
        return  # the bare end-of-stream marker decodes to nothing
    if isinstance(packet, PacketHeader) and not packet.has_geometry:
        return  # a v2 or v3 non-keyframe: its geometry and so its cost are its keyframe's, checked with that
    w, h = packet.width, packet.height
    if max(w, h) > limits.max_side or w * h > limits.max_pixels:
        raise PacketError(f"frame {w}x{h} is over this receiver's limit ({limits.max_side} pixels a side, "
                          f"{limits.max_pixels} pixels in all)")
    grid = (-(-h // stride), -(-w // stride))
    if (packet.grid_h, packet.grid_w) != grid:
        raise PacketError(f"grid {packet.grid_h}x{packet.grid_w} does not match a {w}x{h} frame at stride {stride} "
                          f"(expected {grid[0]}x{grid[1]})")
    if packet.bits_per_index != bits_per_index:
        raise PacketError(f"{packet.bits_per_index} bits per index, this model uses {bits_per_index}")
    if isinstance(packet, TokenPacket) and packet.k and int(packet.indices.max()) >= codebook_size:
        raise PacketError(f"token index {int(packet.indices.max())} is not a code of this model "
                          f"(codebook of {codebook_size})")


def largest_packet(version: int, *, bits_per_index: int, stride: int, limits: ReceiverLimits = DEFAULT_LIMITS) -> int:
    """The most bytes a packet of ``version`` can have when a model of ``bits_per_index`` and ``stride``
    sends a frame within ``limits`` (at most the format's 16 MiB).

    The grid of a ``w x h`` frame has ``ceil(w/s) * ceil(h/s) <= w*h/s**2 + (w+h)/s + 1`` positions. A
    version 1 packet holds a mask smaller than its BITMAP (or none) and ``B`` bits per position; a
    version 2 or 3 payload is at most ``max_payload_bytes`` (every position kept).
    """
    n = min(MAX_POSITIONS, limits.max_pixels // stride**2 + 2 * -(-limits.max_side // stride) + 1)
    if version in (VERSION_V2, VERSION_V3):
        head = HEADER_V2_MAX_SIZE if version == VERSION_V2 else HEADER_V3_MAX_SIZE
        size = head + max_payload_bytes(n, n, bits_per_index) + CRC_SIZE
    else:
        size = HEADER_SIZE + (n + 7) // 8 + packed_size(n, bits_per_index) + CRC_SIZE
    return min(size, MAX_PACKET_BYTES)


def check_packet_size(data: bytes, *, bits_per_index: int, stride: int,
                      limits: ReceiverLimits = DEFAULT_LIMITS) -> None:
    """Refuse, before parsing anything, bytes longer than the largest packet of their version (bytes 0
    and 4: `packet_version`) this model sends (`largest_packet`): no CRC over megabytes, no copy, no decoding.

    Raises:
        PacketError: one line with the length, the limit and where the limit comes from.
    """
    version = packet_version(data)
    limit = largest_packet(version, bits_per_index=bits_per_index, stride=stride, limits=limits)
    if len(data) > limit:
        raise PacketError(f"packet of {len(data)} bytes is over this receiver's limit of {limit} for version "
                          f"{version} (the largest its model sends for a frame of at most "
                          f"{limits.max_side} pixels a side, {limits.max_pixels} in all)")
