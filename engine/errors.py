"""Engine exceptions: one family, precise messages."""

from __future__ import annotations


class TokenizerError(ValueError):
    """Bad input to the tokenizer (wrong shape or range, no keyframe yet, mismatched weights...)."""
