"""The suite runs in a loopback-only network namespace (conftest.pytest_configure) where it can:
only `lo` is visible, to this thread, to threads started now and to child processes."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

import pytest

from tests.conftest import _NETNS


def test_only_loopback_is_visible() -> None:
    if _NETNS.get("why") is not None:
        pytest.skip(f"tests use the host's network: {_NETNS['why']}")
    assert [n for _, n in socket.if_nameindex()] == ["lo"]
    seen: list[list[str]] = []
    t = threading.Thread(target=lambda: seen.append([n for _, n in socket.if_nameindex()]))
    t.start()
    t.join()
    assert seen == [["lo"]]
    child = subprocess.run([sys.executable, "-c", "import socket; print([n for _, n in socket.if_nameindex()])"],
                           capture_output=True, text=True, check=True)
    assert child.stdout.strip() == "['lo']"
    with socket.socket() as srv:  # and loopback itself works
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        with socket.create_connection(srv.getsockname(), timeout=5):
            conn, _ = srv.accept()
            conn.close()
