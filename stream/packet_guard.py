"""Checks a parsed packet against the decoder that will run it, before any tensor is allocated.

The parser (`wire/`) bounds every size field by what the *format* allows (a 16384x16384 frame, a
2048x2048 grid). That is still a 3-gigabyte decode for a 52-byte packet with an empty mask, and a
packet's CRC only protects against noise, not against a sender that lies. So a receiver also checks
that the packet is one its model could have made (bits per index, codebook, grid = frame size / stride)
and that the frame fits the receiver's own size limit; anything else is a `PacketError`, dropped like
any bad packet.
"""

from __future__ import annotations

from dataclasses import dataclass

from .wire import PacketError, PacketHeader, TokenPacket

__all__ = ["DEFAULT_LIMITS", "ReceiverLimits", "check_packet_fits"]


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
            v2 payload is decoded: its decoding cost follows the grid the header announces).
        bits_per_index: the model's index width; a packet with another width came from another model.
        codebook_size: the model's number of codes; larger indices are not codes of this model.
        stride: pixels per latent position; the grid must be ceil(size / stride) on each axis.
        limits: the receiver's frame size limit.

    Raises:
        PacketError: one line naming the field, its value and the allowed one.
    """
    if packet.end_of_stream and packet.n == 0:
        return  # the bare end-of-stream marker decodes to nothing
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
