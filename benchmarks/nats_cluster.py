"""A real three-node NATS cluster for tests and benchmarks: JetStream on, an MQTT listener on every node, streams and
consumers replicated three times, all on loopback ports. `kill(i)` SIGKILLs a node (what a crashed
machine looks like), `start(i)` brings it back with its store.

Why NATS: its MQTT gateway keeps sessions, subscriptions and QoS 1 messages in JetStream streams,
which the cluster replicates (RAFT), so a client that loses its node resumes its persistent session
on another one. The Debian package `nats-server` (2.9) is enough; see docs/BENCHMARKS.md for the
failover times it gives.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from .localbroker import free_port

__all__ = ["INSTALL_HINT", "NatsCluster", "find_nats_server"]

INSTALL_HINT = "nats-server is not installed: apt-get install nats-server (the cluster tests need a real cluster)"
READY_TIMEOUT_S = 30.0  # three nodes must elect a JetStream metadata leader: a few seconds on a loaded machine


def find_nats_server() -> str | None:
    return shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin:/usr/local/sbin")


class NatsCluster:
    """`size` nats-server nodes named n1..nN in `workdir`, each with client, route, MQTT and monitoring ports."""

    def __init__(self, binary: str, workdir: Path, size: int = 3, host: str = "127.0.0.1") -> None:
        self.binary = binary
        self.workdir = workdir
        self.host = host
        self.size = size
        self.client_ports = [free_port(host) for _ in range(size)]
        self.route_ports = [free_port(host) for _ in range(size)]
        self.mqtt_ports = [free_port(host) for _ in range(size)]
        self.http_ports = [free_port(host) for _ in range(size)]
        self._procs: list[subprocess.Popen[bytes] | None] = [None] * size

    @property
    def urls(self) -> list[str]:
        """The MQTT URL of every node, in node order."""
        return [f"mqtt://{self.host}:{p}" for p in self.mqtt_ports]

    def running(self, i: int) -> bool:
        proc = self._procs[i]
        return proc is not None and proc.poll() is None

    def config(self, i: int) -> str:
        routes = ", ".join(f"nats-route://{self.host}:{p}" for p in self.route_ports)
        store = self.workdir / f"n{i + 1}" / "jetstream"
        return "\n".join([
            f"server_name: n{i + 1}",
            f"listen: {self.host}:{self.client_ports[i]}",
            f"http: {self.host}:{self.http_ports[i]}",
            f'jetstream {{ store_dir: "{store}" }}',
            f"cluster {{ name: livetok, listen: {self.host}:{self.route_ports[i]}, routes: [{routes}] }}",
            # sessions, subscriptions and QoS 1 messages live in JetStream streams and consumers: three
            # replicas each, so any one node can die without losing them
            f"mqtt {{ listen: {self.host}:{self.mqtt_ports[i]}, stream_replicas: 3, consumer_replicas: 3 }}",
        ]) + "\n"

    def start(self, i: int | None = None) -> None:
        """Start node `i` (all nodes when None) and wait until every running node is healthy."""
        for j in range(self.size) if i is None else [i]:
            if self.running(j):
                continue
            node = self.workdir / f"n{j + 1}"
            node.mkdir(parents=True, exist_ok=True)
            conf = node / "nats.conf"
            conf.write_text(self.config(j), encoding="utf-8")
            with (node / "nats.log").open("ab") as log:
                self._procs[j] = subprocess.Popen([self.binary, "-c", str(conf)], stdin=subprocess.DEVNULL,
                                                  stdout=log, stderr=subprocess.STDOUT)
        self.wait_ready()

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Every running node answers /healthz (JetStream included) and accepts on its MQTT port."""
        deadline = time.monotonic() + timeout_s
        for j in range(self.size):
            if self._procs[j] is None:
                continue
            while True:
                proc = self._procs[j]
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"nats-server n{j + 1} exited with status {proc.returncode}:\n"
                                       f"{self.log_tail(j)}")
                if self._healthy(j):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nats-server n{j + 1} not healthy within {timeout_s:g} s:\n{self.log_tail(j)}")
                time.sleep(0.1)

    def _healthy(self, i: int) -> bool:
        """/healthz answers before the cluster has formed: also require that this node sees a JetStream
        metadata leader (the MQTT gateway cannot create sessions without one)."""
        base = f"http://{self.host}:{self.http_ports[i]}"
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=1) as r:
                if r.status != 200:
                    return False
            with urllib.request.urlopen(f"{base}/jsz", timeout=1) as r:
                meta = json.load(r).get("meta_cluster") or {}
            if not meta.get("leader"):
                return False
            with socket.create_connection((self.host, self.mqtt_ports[i]), timeout=0.5):
                return True
        except (OSError, ValueError):
            return False

    def kill(self, i: int) -> None:
        """SIGKILL node `i`: no goodbye to its clients or its peers, as when a machine dies."""
        proc, self._procs[i] = self._procs[i], None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()

    def stop(self) -> None:
        for i in range(self.size):
            proc, self._procs[i] = self._procs[i], None
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def log_tail(self, i: int, lines: int = 20) -> str:
        try:
            text = (self.workdir / f"n{i + 1}" / "nats.log").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __repr__(self) -> str:
        return f"NatsCluster({self.urls}, running={[self.running(i) for i in range(self.size)]})"
