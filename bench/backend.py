"""The plaintext backend every peer forwards to: echo, sink or source, chosen by the first byte.

    python -m bench.backend [--port 0] [--seconds 3600]

Prints `{"port": N}` on stdout once listening, then serves until SIGTERM or `--seconds` elapse.

Per connection, a tiny protocol (all lengths 8-byte big-endian):
* `S` + N: sink — read N bytes, then answer the 8 bytes `b"SINKDONE"`; back to command state.
* `D` + N: source — send N bytes; back to command state.
* anything else: echo everything from then on, that first byte included (a PeSIT CONNECT, which
  starts with a length byte 0x00, is simply echoed).

uvloop, a `BufferedProtocol` reading into one 256 KiB buffer, writes under flow control: the
backend costs a small fraction of the proxy (its CPU is measured beside the proxy's).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys

_BUFFER = bytearray(256 * 1024)
_VIEW = memoryview(_BUFFER)
_SOURCE = b"\xa5" * (1024 * 1024)
SINK_DONE = b"SINKDONE"


class Backend(asyncio.BufferedProtocol):
    __slots__ = ("header", "mode", "paused", "remaining", "to_send", "transport")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.mode = "command"
        self.header = bytearray()
        self.remaining = 0
        self.to_send = 0
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        return _VIEW

    def buffer_updated(self, nbytes: int) -> None:
        data = _VIEW[:nbytes]
        while data:
            if self.mode == "echo":
                self.transport.write(bytes(data))  # type: ignore[union-attr]
                return
            if self.mode == "sink":
                take = min(self.remaining, len(data))
                self.remaining -= take
                data = data[take:]
                if self.remaining == 0:
                    self.transport.write(SINK_DONE)  # type: ignore[union-attr]
                    self.mode = "command"
                continue
            if self.mode == "source":  # the client may not send while we source; ignore it
                return
            # command state
            if not self.header and data[0] not in b"SD":
                self.mode = "echo"
                continue
            need = 9 - len(self.header)
            self.header += data[:need]
            data = data[need:]
            if len(self.header) < 9:
                return
            kind, length = self.header[0:1], int.from_bytes(self.header[1:9], "big")
            self.header.clear()
            if kind == b"S":
                self.mode, self.remaining = "sink", length
                if length == 0:
                    self.transport.write(SINK_DONE)  # type: ignore[union-attr]
                    self.mode = "command"
            else:
                self.mode, self.to_send = "source", length
                self._pump()

    def _pump(self) -> None:
        transport = self.transport
        assert transport is not None
        while self.to_send > 0 and not self.paused and not transport.is_closing():
            chunk = _SOURCE if self.to_send >= len(_SOURCE) else _SOURCE[: self.to_send]
            self.to_send -= len(chunk)
            transport.write(chunk)
        if self.to_send == 0 and self.mode == "source":
            self.mode = "command"

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.mode == "source":
            self._pump()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None  # type: ignore[assignment]


async def serve(port: int, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Backend, "127.0.0.1", port, backlog=4096, reuse_address=True)
    print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    server.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=3600.0, help="stop by itself after this long")
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args.port, args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
