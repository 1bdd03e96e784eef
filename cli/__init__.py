"""The `livetok` command line: parses arguments and calls the library, nothing else. One module per
command group (files: demo/encode/decode/eval; live: publish/receive; webrtc; bench; export; train;
robotics: the MCAP and robot-transport side of those), assembled in app.py.

`--json` prints one JSON object on stdout; everything meant for people goes to stderr. Errors are
one line (`livetok: error: ...`) and exit code 2, never a traceback.
"""

from .app import get_parser, main

__all__ = ["get_parser", "main"]
