"""A plaintext echo backend standing in for the transfer service: echoes every byte and keeps what
each connection sent, so a test (or the demo's table) can check what reached the backend."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable


class EchoBackend:
    def __init__(self, on_data: Callable[[bytes], bytes] | None = None) -> None:
        self.connections: list[bytearray] = []  # what each connection sent, in arrival order
        self.server: asyncio.Server | None = None
        self.on_data = on_data  # transforms what is echoed (default: the bytes as received)
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.port

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    @property
    def received(self) -> int:
        return sum(len(data) for data in self.connections)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received = bytearray()
        self.connections.append(received)
        self._writers.add(writer)
        try:
            while data := await reader.read(65536):
                received.extend(data)
                writer.write(self.on_data(data) if self.on_data else data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def stop(self) -> None:
        if self.server is None:
            return
        self.server.close()
        for writer in list(self._writers):
            writer.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.server.wait_closed(), 2)
