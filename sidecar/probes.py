"""Backend probes (`listeners[].backend_check`): a TCP connect to each probed backend every N seconds.

What they learn feeds readiness (`/readyz` answers 503 while a probed backend is down), `/stats`
(`backend_up` per listener) and the inbound path: while a backend is known down, a partner is
answered at once (PeSIT: RCONNECT 302) instead of waiting for a dial that will fail. A probe opens
and closes a connection and sends nothing, like a load balancer's TCP check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from . import logs
from .config import Address
from .snapshot import Snapshot

Target = tuple[Address, float, float]  # backend, seconds between probes, connect timeout


class BackendProbes:
    def __init__(self) -> None:
        self.up: dict[str, bool | None] = {}  # listener id -> last result; None until the first probe ends
        self._tasks: dict[str, tuple[Target, asyncio.Task[None]]] = {}

    def apply(self, snapshot: Snapshot) -> None:
        """Probe what `snapshot` asks for: start new probes, restart changed ones, stop removed ones."""
        wanted: dict[str, Target] = {}
        for listener_id, plan in snapshot.listeners.items():
            listener = plan.listener
            if listener.backend_check > 0 and listener.backend is not None:
                wanted[listener_id] = (listener.backend, listener.backend_check, snapshot.config.limits.connect_timeout)
        for listener_id, (target, task) in list(self._tasks.items()):
            if wanted.get(listener_id) != target:
                task.cancel()
                del self._tasks[listener_id]
                self.up.pop(listener_id, None)
        loop = asyncio.get_running_loop()
        for listener_id, target in wanted.items():
            if listener_id not in self._tasks:
                self.up[listener_id] = None
                self._tasks[listener_id] = (target, loop.create_task(self._probe(listener_id, target)))

    def reachable(self, listener_id: str) -> bool:
        """False only when the last probe of this listener's backend failed."""
        return self.up.get(listener_id) is not False

    def down(self) -> list[str]:
        """Listeners whose backend is down or not probed yet: the process is not ready for them."""
        return sorted(listener_id for listener_id, up in self.up.items() if not up)

    async def stop(self) -> None:
        tasks = [task for _, task in self._tasks.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _probe(self, listener_id: str, target: Target) -> None:
        address, interval, timeout = target
        loop = asyncio.get_running_loop()
        while True:
            error: str | None = None
            try:
                async with asyncio.timeout(timeout):
                    transport, _ = await loop.create_connection(asyncio.Protocol, address.host, address.port)
                transport.close()
            except TimeoutError:
                error = "timeout"
            except OSError as exc:
                error = exc.strerror or str(exc)
            before = self.up.get(listener_id)
            self.up[listener_id] = error is None
            if error is None and before is not True:
                logs.event("backend_up", listener=listener_id, backend=str(address))
            elif error is not None and before is not False:
                logs.event("backend_down", logging.WARNING, listener=listener_id, backend=str(address), error=error)
            await asyncio.sleep(interval)
