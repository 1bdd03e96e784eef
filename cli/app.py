"""The `livetok` parser, assembled from the command groups, and `main`: parse, run the command, and turn
the errors a user can cause into one line and an exit status."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import bench, export, files, live, train, webrtc
from .options import sender_config
from .output import EXIT_ERROR

# in this order in `livetok --help`
COMMAND_GROUPS = (files, live, bench, webrtc, export, train)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("livetok")
    except PackageNotFoundError:
        return "unknown"


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="livetok", description="Streaming adaptive discrete video tokenizer.")
    p.add_argument("-v", "--verbose", action="store_true", help="log more (to stderr)")
    p.add_argument("--version", action="version", version=f"livetok {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(sub)
    _mark_subparsers(p)
    return p


def _mark_subparsers(p: argparse.ArgumentParser) -> None:
    """Set `_subparser` on every (nested) subcommand's parser to itself: the deepest one parsed wins."""
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sp in action.choices.values():
                sp.set_defaults(_subparser=sp)
                _mark_subparsers(sp)


def main(argv: Sequence[str] | None = None) -> int:
    from livetok.engine.threads import sleep_idle_threads

    sleep_idle_threads()  # before any command imports torch: OpenMP reads it when it loads
    parser = get_parser()
    a, extra = parser.parse_known_args(argv)
    a.argv = list(sys.argv[1:] if argv is None else argv)  # `receive --workers` starts W copies of it
    if extra:
        # argparse would blame the top-level parser and print its usage; the subcommand's is the useful one
        getattr(a, "_subparser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format="%(name)s: %(message)s")
    if not getattr(a, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    if not a.verbose:
        _quiet_native_logs()
    from livetok.engine.errors import TokenizerError
    from livetok.stream.errors import StreamError
    from livetok.stream.wire import PacketError

    try:
        if hasattr(a, "rate"):
            sender_config(a)  # bad sender values are refused here, before a command imports torch and loads a model
        _check_viewing(a)
        return int(a.func(a))
    except KeyboardInterrupt:
        print("livetok: interrupted", file=sys.stderr)
        return 130
    except (TokenizerError, PacketError, StreamError, ValueError) as e:
        print(f"livetok: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as e:
        print(f"livetok: error: {_os_error(e)}", file=sys.stderr)
        return EXIT_ERROR


def _check_viewing(a: argparse.Namespace) -> None:
    """`receive` / `webrtc recv`: --show (no window: SHOW_UNSUPPORTED) and `--out -` (the video on stdout,
    for one stream, without --json, which prints there too) are refused in one line before a model loads."""
    if getattr(a, "show", False):
        from livetok.stream.live import SHOW_UNSUPPORTED

        raise ValueError(SHOW_UNSUPPORTED)
    if getattr(a, "out", None) != "-" or a.command not in ("receive", "webrtc"):
        return
    if getattr(a, "json", False):
        raise ValueError("--out - writes the video to stdout, where --json would print too: drop one")
    if getattr(a, "stream", None) == "+" or getattr(a, "workers", 1) > 1:
        raise ValueError("--out - carries one stream: receive one --stream, not '+' (or write one file per "
                         "stream with --out FILE.mp4)")


def _os_error(e: OSError) -> str:
    """An OSError in words, naming the file: "no such file: x.ltk", not "[Errno 2] No such file or ..."."""
    if e.errno is None:
        return str(e)
    cause = _OS_CAUSES.get(e.errno) or (e.strerror or str(e)).lower()
    if e.filename is None:
        return cause
    path = Path(os.fsdecode(e.filename))
    if e.errno == errno.ENOENT and not path.parent.exists():
        return f"no such folder: {path.parent}"  # writing into a folder that is not there
    return f"{cause}: {path}" + (f" -> {os.fsdecode(e.filename2)}" if e.filename2 is not None else "")


_OS_CAUSES = {
    errno.ENOENT: "no such file", errno.EACCES: "permission denied", errno.EPERM: "not permitted",
    errno.EISDIR: "is a folder, not a file", errno.ENOTDIR: "not a folder", errno.ENOSPC: "no space left on the disk",
    errno.EROFS: "read-only file system", errno.EEXIST: "already exists",
}


def _quiet_native_logs() -> None:
    """Silence OpenCV's and FFmpeg's own log lines ("moov atom not found", "[ WARN:0@0.264] global
    cap_v4l.cpp ..."): they go to the C stderr beside our one-line errors, which already say what went
    wrong. `-v` keeps them; variables the user set win."""
    os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")  # read when cv2 is imported
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET: read when OpenCV's FFmpeg backend starts
    if "cv2" in sys.modules:  # imported already (a program that embeds the CLI, the tests)
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    if "av" in sys.modules:  # PyAV (the MP4 writer) logs nothing unless asked; keep it so
        import av.logging

        av.logging.set_level(None)
