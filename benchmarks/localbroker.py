"""The one mosquitto launcher, for tests and benchmarks: a foreground process on a free loopback port.

`Broker` is the process itself (config, optional persistence that survives `stop()`/`start()` on the
same port, a log file); the `mosquitto` fixture in tests/conftest.py and bench broker_restart use it.
`LocalBroker` is a throwaway one for a `with` block (benchmarks and demos, no persistence).
"""

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

__all__ = ["INSTALL_HINT", "Broker", "LocalBroker", "find_mosquitto", "free_port"]

INSTALL_HINT = "mosquitto is not installed: apt-get install mosquitto (the broker tests need a real broker)"
READY_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 5.0


def find_mosquitto() -> str | None:
    """The mosquitto binary; Debian puts it in /usr/sbin, which a non-root PATH often lacks."""
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Broker:
    """One mosquitto on `host:port` whose config, log and (with `persistence`) database live in `workdir`."""

    def __init__(self, binary: str, workdir: Path, host: str = "127.0.0.1", port: int | None = None,
                 persistence: bool = True) -> None:
        self.binary = binary
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.workdir = workdir
        self.persistence = persistence
        self.data_dir = workdir / "data"
        self.conf_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def config(self) -> str:
        lines = [f"listener {self.port} {self.host}", "allow_anonymous true"]
        if self.persistence:
            lines += [
                # sessions (clean_session=False), their subscriptions and queued QoS>0 messages and
                # retained messages are written to data_dir on SIGTERM (and every second, in case of
                # a kill) and reloaded at start: what makes a restarted broker keep them
                "persistence true",
                f"persistence_location {self.data_dir}/",  # the slash: mosquitto 1.x appends the file name as is
                "persistence_file mosquitto.db",
                "autosave_interval 1",
                "autosave_on_changes false",
            ]
        else:
            lines.append("persistence false")
        lines += [
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # as root mosquitto drops to user 'mosquitto', which can neither traverse pytest's 0700
            # temp folders nor write the database there; 'root' means "do not drop" (no effect otherwise)
            lines.append("user root")
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        """Start (or restart, on the same port and database) and wait until the port accepts."""
        if self.running:
            raise RuntimeError(f"mosquitto already running on {self.host}:{self.port}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self.config(), encoding="utf-8")
        # a file, not a pipe: nobody reads the log while the broker runs, and a full pipe would block it
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [self.binary, "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self._proc.poll() is not None:
                rc = self._proc.returncode
                self._proc = None
                raise RuntimeError(f"mosquitto exited with status {rc} at start:\n{self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"mosquitto did not accept connections on {self.host}:{self.port} within "
                        f"{READY_TIMEOUT_S:g} s:\n{self.log_tail()}"
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM (mosquitto saves its database on the way out), wait, kill if it hangs."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __repr__(self) -> str:
        return f"Broker({self.url}, running={self.running})"


class LocalBroker:
    """`with LocalBroker() as url:` runs mosquitto on 127.0.0.1, without persistence, until the block ends."""

    def __init__(self) -> None:
        binary = find_mosquitto()
        if binary is None:
            raise StreamError("mosquitto is not installed (apt-get install mosquitto), or pass --broker URL")
        self._dir = tempfile.TemporaryDirectory(prefix="livetok-broker-")
        self._broker = Broker(binary, Path(self._dir.name), persistence=False)
        self.port = self._broker.port

    @property
    def url(self) -> str:
        return self._broker.url

    def __enter__(self) -> str:
        try:
            self._broker.start()
        except RuntimeError as e:
            self._dir.cleanup()
            raise StreamError(str(e)) from e
        return self.url

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self._broker.stop()
        self._dir.cleanup()
