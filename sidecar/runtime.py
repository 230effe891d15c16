"""Runtime: owns the lifecycle — bind, serve, reload (build-then-swap), drain, stop.

It keeps a reference to every connection task, so nothing is garbage-collected mid-flight and a
stop can drain them. Signals are not handled here (cli does that) so tests can drive a Runtime
directly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from . import logs
from .config import Address
from .errors import ConfigError, Issue
from .proxy.inbound import Connection, InboundListener
from .snapshot import ListenerPlan, Snapshot, load_snapshot
from .stats import Stats


class Runtime:
    def __init__(self, config_path: str | Path, snapshot: Snapshot) -> None:
        self.config_path = Path(config_path)
        self.snapshot = snapshot
        self.stats = Stats()
        self.draining = False
        self.ready = False
        self.bound: dict[str, str] = {}  # listener id -> real bound address
        self.bound_plans: dict[str, ListenerPlan] = {}  # the plan each server was bound with
        self.connections: dict[int, Connection] = {}
        self._listeners: dict[str, InboundListener] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self.admin_address: str | None = None

    # ---- start ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind every listener; raises OSError (port in use …) after closing what was bound."""
        try:
            for listener_id, plan in self.snapshot.listeners.items():
                await self._bind(listener_id, plan)
        except OSError:
            await self._close_servers()
            raise
        self.ready = True
        logs.event(
            "ready",
            listeners=dict(self.bound),
            outbound={},
            admin=self.admin_address,
            generation=self.snapshot.generation,
        )

    async def _bind(self, listener_id: str, plan: ListenerPlan) -> None:
        address = plan.listener.listen
        assert address is not None
        inbound = InboundListener(self, listener_id)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            inbound.make_leg, address.host, address.port, backlog=1024, reuse_address=True
        )
        inbound.server = server
        self._listeners[listener_id] = inbound
        self.bound_plans[listener_id] = plan
        self.bound[listener_id] = _bound_address(server, address)

    # ---- connections ---------------------------------------------------------------------------
    def spawn(self, coroutine: Coroutine[Any, Any, None], conn: Connection) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        self.connections[conn.id] = conn

        def finished(done: asyncio.Task[None]) -> None:
            self._tasks.discard(done)
            self.connections.pop(conn.id, None)

        task.add_done_callback(finished)

    # ---- reload --------------------------------------------------------------------------------
    async def reload(self) -> tuple[int, list[Issue]]:
        """Build a complete new snapshot and swap it in; on any problem change nothing.

        Returns (generation, issues): issues empty on success.
        """
        async with self._reload_lock:
            generation = self.snapshot.generation + 1
            try:
                snapshot = load_snapshot(self.config_path, generation)
            except ConfigError as exc:
                self.stats.reloads["refused"] += 1
                logs.event("reload_refused", logging.ERROR, errors=[str(issue) for issue in exc.issues])
                return self.snapshot.generation, list(exc.issues)
            issues = await self._apply_listener_changes(snapshot)
            if issues:
                self.stats.reloads["refused"] += 1
                logs.event("reload_refused", logging.ERROR, errors=[str(issue) for issue in issues])
                return self.snapshot.generation, issues
            self.snapshot = snapshot
            self.stats.reloads["ok"] += 1
            logs.event("reloaded", generation=generation, listeners=dict(self.bound))
            return generation, []

    async def _apply_listener_changes(self, snapshot: Snapshot) -> list[Issue]:
        """Bind added/moved listeners first (a failure then changes nothing), then close removed ones."""
        old = self.bound_plans
        new = snapshot.listeners
        to_bind = [
            listener_id
            for listener_id, plan in new.items()
            if listener_id not in old or old[listener_id].listener.listen != plan.listener.listen
        ]
        to_close = [listener_id for listener_id in old if listener_id not in new or listener_id in to_bind]
        fresh: dict[str, tuple[InboundListener, str]] = {}
        loop = asyncio.get_running_loop()
        for listener_id in to_bind:
            plan = new[listener_id]
            address = plan.listener.listen
            assert address is not None
            inbound = InboundListener(self, listener_id)
            try:
                server = await loop.create_server(
                    inbound.make_leg, address.host, address.port, backlog=1024, reuse_address=True
                )
            except OSError as exc:
                for created, _ in fresh.values():
                    assert created.server is not None
                    created.server.close()
                return [Issue(f"{plan.listener.path}.listen", f"cannot bind {address}: {exc.strerror or exc}")]
            inbound.server = server
            fresh[listener_id] = (inbound, _bound_address(server, address))
        for listener_id in to_close:
            if listener_id in fresh or listener_id not in new:
                closing = self._listeners.pop(listener_id, None)
                if closing is not None and closing.server is not None:
                    closing.server.close()  # live connections keep running under their snapshot
                self.bound.pop(listener_id, None)
                self.bound_plans.pop(listener_id, None)
        for listener_id, (inbound, bound) in fresh.items():
            self._listeners[listener_id] = inbound
            self.bound[listener_id] = bound
        for listener_id, plan in new.items():
            if listener_id in self._listeners:
                self.bound_plans[listener_id] = plan
        return []

    # ---- stop ----------------------------------------------------------------------------------
    async def stop(self, drain_timeout: float | None = None) -> None:
        """Stop accepting, let live connections finish within the drain timeout, then close them."""
        if self.draining:
            await self._stopped.wait()
            return
        self.draining = True
        self.ready = False
        await self._close_servers()
        timeout = self.snapshot.config.limits.drain_timeout if drain_timeout is None else drain_timeout
        pending = set(self._tasks)
        logs.event("draining", connections=len(pending), timeout_s=timeout)
        if pending:
            _, still_running = await asyncio.wait(pending, timeout=timeout)
            for task in still_running:
                task.cancel()
            if still_running:
                await asyncio.wait(still_running, timeout=5)
        logs.event("stopped")
        self._stopped.set()

    async def _close_servers(self) -> None:
        servers = [inbound.server for inbound in self._listeners.values() if inbound.server is not None]
        for server in servers:
            server.close()
        for server in servers:
            # Server.wait_closed also waits for accepted connections in recent Pythons; we track those.
            await asyncio.wait([asyncio.ensure_future(server.wait_closed())], timeout=0.5)
        self._listeners.clear()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()


def _bound_address(server: asyncio.Server, configured: Address) -> str:
    sockets = server.sockets
    if not sockets:
        return str(configured)
    host, port = sockets[0].getsockname()[:2]
    return str(Address(host, port))
