"""A PeSIT-speaking plaintext backend for tests."""

from __future__ import annotations

import asyncio

from sidecar import pesit


class PesitBackend:
    """Answers ACK0 to a LOGON and ACONNECT to a CONNECT, then echoes; records every byte received."""

    def __init__(self, refuse_logon: bool = False, logon_delay: float = 0.0) -> None:
        self.received: list[bytearray] = []
        self.refuse_logon = refuse_logon
        self.logon_delay = logon_delay  # seconds before the answer to a LOGON (a slow backend)
        self.ended: list[bytearray] = []  # of `received`, the connections the other side has closed
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received = bytearray()
        self.received.append(received)
        try:
            head = await reader.readexactly(4)
            received.extend(head)
            if head[:2] == b"\x00\x18" and head[2] == 0xD7:  # framed LOGON ("P" in EBCDIC)
                received.extend(await reader.readexactly(22))
                await asyncio.sleep(self.logon_delay)
                writer.write(pesit.frame(pesit.NAK0 if self.refuse_logon else pesit.ACK0, True))
                if self.refuse_logon:
                    return
                head = await reader.readexactly(4)
                received.extend(head)
            framed = head[:2] == head[2:4]  # NSDU length prefix followed by the same FPDU length
            length = int.from_bytes(head[:2], "big")
            # Framed: the NSDU length counts what follows the prefix; unframed: the FPDU length counts itself.
            received.extend(await reader.readexactly(length - 2 if framed else length - 4))
            writer.write(pesit.frame(pesit.encode_aconnect(5, 1), framed))
            while data := await reader.read(65536):
                received.extend(data)
                writer.write(data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.ended.append(received)
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
