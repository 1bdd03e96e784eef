"""Optional dependencies (the `robotics` extra: foxglove-sdk, mcap, eclipse-zenoh), imported when a command
needs them, never at import time: the core install runs without them and says in one line what to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import StreamError

ROBOTICS_HINT = "pip install 'livetok[robotics]'"


def require(module: str, package: str, what: str) -> ModuleType:
    """Import `module` (of the PyPI package `package`) for `what`, or raise StreamError in one line."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise StreamError(f"{what} needs the {package} package ({e}): {ROBOTICS_HINT}") from None
