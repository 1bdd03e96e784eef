"""A loopback TCP relay between a client and a real server whose server->client direction can be
held: bytes queue up while held and flow again on release. With the broker's acks held, an MQTT
publish times out on a connection that still stands, the case a broker restart produces."""

from __future__ import annotations

import asyncio
import contextlib


class TcpRelay:
    """Relay 127.0.0.1:<port> to (host, target_port). Use inside a running event loop."""

    def __init__(self, host: str, target_port: int) -> None:
        self.host = host
        self.target_port = target_port
        self.port = 0
        self._released = asyncio.Event()
        self._released.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> TcpRelay:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await t

    def hold(self) -> None:
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    async def _serve(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        s_reader, s_writer = await asyncio.open_connection(self.host, self.target_port)
        up = asyncio.create_task(self._pump(c_reader, s_writer, holdable=False))
        down = asyncio.create_task(self._pump(s_reader, c_writer, holdable=True))
        self._tasks |= {up, down}

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, holdable: bool) -> None:
        try:
            while data := await reader.read(65536):
                if holdable:
                    await self._released.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
