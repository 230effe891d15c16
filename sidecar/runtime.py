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
from .proxy.outbound import OutboundListener
from .snapshot import ListenerPlan, OutboundPlan, Snapshot, load_snapshot
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
        self._outbound_listeners: dict[str, OutboundListener] = {}
        self.bound_outbound: dict[str, OutboundPlan] = {}
        self.bound_outbound_addresses: dict[str, str] = {}
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
            for outbound_id, outbound_plan in self.snapshot.outbound.items():
                await self._bind_outbound(outbound_id, outbound_plan)
        except OSError:
            await self._close_servers()
            raise
        self.ready = True
        logs.event(
            "ready",
            listeners=dict(self.bound),
            outbound=dict(self.bound_outbound_addresses),
            admin=self.admin_address,
            generation=self.snapshot.generation,
        )

    async def _bind_outbound(self, outbound_id: str, plan: OutboundPlan) -> None:
        # Outbound listeners keep the address they were started with; a reload changes their
        # profile and partner for new connections (the plan is looked up per accept).
        address = plan.outbound.listen
        listener = OutboundListener(self, outbound_id)
        server = await asyncio.get_running_loop().create_server(
            listener.make_leg, address.host, address.port, backlog=1024, reuse_address=True
        )
        listener.server = server
        self._outbound_listeners[outbound_id] = listener
        self.bound_outbound[outbound_id] = plan
        self.bound_outbound_addresses[outbound_id] = _bound_address(server, address)

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
            if self.draining:
                return self._refuse([Issue("", "shutting down: reload refused")])
            generation = self.snapshot.generation + 1
            try:
                # Off the event loop: reading keys, CRLs and rule files and building TLS contexts
                # would otherwise stall every relay for as long as it takes.
                snapshot = await asyncio.to_thread(load_snapshot, self.config_path, generation)
            except ConfigError as exc:
                return self._refuse(list(exc.issues))
            except Exception as exc:  # a bug while building must not leave the old config half-replaced
                return self._refuse([Issue("", f"internal error while loading: {type(exc).__name__}: {exc}")])
            if self.draining:  # stop() began while the snapshot was being built
                return self._refuse([Issue("", "shutting down: reload refused")])
            issues, fresh = await self._apply_listener_changes(snapshot)
            if issues:
                return self._refuse(issues)
            admin_changed = snapshot.config.admin != self.snapshot.config.admin
            self.snapshot = snapshot
            # Fresh listeners accept only now, so their first connection already sees this snapshot.
            for server in fresh:
                if self.draining:  # stop() closed every server while we yielded
                    break
                await server.start_serving()
            self.stats.reloads["ok"] += 1
            if admin_changed:
                logs.event(
                    "admin_unchanged", logging.WARNING,
                    msg="admin.listen and admin.token_file are read at start only: restart to apply the change",
                )  # fmt: skip
            logs.event("reloaded", generation=generation, listeners=dict(self.bound))
            return generation, []

    def _refuse(self, issues: list[Issue]) -> tuple[int, list[Issue]]:
        self.stats.reloads["refused"] += 1
        logs.event("reload_refused", logging.ERROR, errors=[str(issue) for issue in issues])
        return self.snapshot.generation, issues

    async def _apply_listener_changes(self, snapshot: Snapshot) -> tuple[list[Issue], list[asyncio.Server]]:
        """Bind added/moved listeners first (a failure then changes nothing), then close removed ones.

        New servers are bound but not yet accepting: the caller starts them once `snapshot` is the
        current one. A moved listener whose new address conflicts with its old one (same port, from
        a wildcard to a specific host) cannot be bound while the old one listens: the reload is then
        refused rather than leaving a gap with no listener.
        """
        # Only listeners actually serving count as "old": bound_plans also keeps the plans of
        # removed listeners, for connections their closed server had already accepted.
        old = {listener_id: plan for listener_id, plan in self.bound_plans.items() if listener_id in self._listeners}
        new = snapshot.listeners
        to_bind = [
            listener_id
            for listener_id, plan in new.items()
            if listener_id not in old or old[listener_id].listener.listen != plan.listener.listen
        ]
        to_close = [listener_id for listener_id in old if listener_id not in new or listener_id in to_bind]
        fresh: dict[str, tuple[InboundListener, str]] = {}
        loop = asyncio.get_running_loop()

        def discard_fresh() -> None:
            for created, _ in fresh.values():
                assert created.server is not None
                created.server.close()

        for listener_id in to_bind:
            plan = new[listener_id]
            address = plan.listener.listen
            assert address is not None
            inbound = InboundListener(self, listener_id)
            try:
                server = await loop.create_server(
                    inbound.make_leg,
                    address.host,
                    address.port,
                    backlog=1024,
                    reuse_address=True,
                    start_serving=False,
                )
            except OSError as exc:
                discard_fresh()
                return [Issue(f"{plan.listener.path}.listen", f"cannot bind {address}: {exc.strerror or exc}")], []
            inbound.server = server
            fresh[listener_id] = (inbound, _bound_address(server, address))
        if self.draining:  # stop() closed the servers while we were binding: do not resurrect any
            discard_fresh()
            return [Issue("", "shutting down: reload refused")], []
        # From here on nothing awaits: the bookkeeping below and the caller's swap are one step.
        for listener_id in to_close:
            closing = self._listeners.pop(listener_id, None)
            if closing is not None and closing.server is not None:
                closing.server.close()  # live connections keep running under their snapshot
            self.bound.pop(listener_id, None)
        for listener_id, (inbound, bound) in fresh.items():
            self._listeners[listener_id] = inbound
            self.bound[listener_id] = bound
        for listener_id, plan in new.items():
            if listener_id in self._listeners:
                self.bound_plans[listener_id] = plan
        servers = [inbound.server for inbound, _ in fresh.values() if inbound.server is not None]
        return [], servers

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
        servers += [out.server for out in self._outbound_listeners.values() if out.server is not None]
        self._outbound_listeners.clear()
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
