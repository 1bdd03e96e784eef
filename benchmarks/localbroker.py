"""A throwaway local mosquitto for benchmarks and demos (foreground process, free loopback port)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from livetok.stream.errors import StreamError


class LocalBroker:
    """`with LocalBroker() as url:` runs mosquitto on 127.0.0.1 until the block ends."""

    def __init__(self) -> None:
        self.binary = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
        if self.binary is None:
            raise StreamError("mosquitto is not installed (apt-get install mosquitto), or pass --broker URL")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self._dir = tempfile.TemporaryDirectory(prefix="livetok-broker-")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def __enter__(self) -> str:
        conf = Path(self._dir.name) / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence false"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            lines.append("user root")  # do not drop privileges: the temp dir is root's
        conf.write_text("\n".join(lines) + "\n")
        with (Path(self._dir.name) / "mosquitto.log").open("wb") as log:  # the child keeps its own descriptor
            self._proc = subprocess.Popen([str(self.binary), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self.url
            except OSError:
                if self._proc.poll() is not None:
                    break
                time.sleep(0.05)
        self.__exit__(None, None, None)
        raise StreamError(f"mosquitto did not start on port {self.port}")

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._proc = None
        self._dir.cleanup()
