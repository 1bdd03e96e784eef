"""The one error type of the wire format: bad bytes raise PacketError, never anything else."""

from __future__ import annotations

__all__ = ["PacketError"]


class PacketError(ValueError):
    """Bytes that are not a valid livetok packet or ``.ltk`` file.

    A subclass of ``ValueError`` so callers that already guard against bad input keep working; the
    message always names the offending value and, where there is one, the expected value.
    """
