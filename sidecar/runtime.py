"""Runtime: owns the lifecycle — bind, serve, reload (build-then-swap), drain, stop.

It keeps a reference to every connection task, so nothing is garbage-collected mid-flight and a
stop can drain them. Signals are not handled here (cli does that) so tests can drive a Runtime
directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from . import logs
from .config import Address
from .errors import ConfigError, Issue
from .live import LivePolicy
from .outcome import CloseReason, Outcome
from .probes import BackendProbes
from .proxy.connection import Connection
from .proxy.inbound import InboundListener
from .proxy.outbound import OutboundListener
from .snapshot import ListenerPlan, OutboundPlan, Snapshot, load_snapshot
from .stats import Stats
from .watch import Watcher

Kind = Literal["listener", "outbound"]
ServerKey = tuple[Kind, str]  # ("listener", "PESITSSL"), ("outbound", "TOPARIS")
Plan = ListenerPlan | OutboundPlan


@dataclass(slots=True)
class BoundServer:
    """One listening socket: an inbound listener or an outbound (client mode) entry."""

    listen: Address  # as configured
    address: str  # as bound (port 0 -> the port the kernel chose)
    entry: InboundListener | OutboundListener
    server: asyncio.Server


def _servers_wanted(snapshot: Snapshot) -> dict[ServerKey, tuple[Address, Plan]]:
    """Every socket a snapshot asks for, inbound and outbound alike."""
    wanted: dict[ServerKey, tuple[Address, Plan]] = {}
    for listener_id, plan in snapshot.listeners.items():
        assert plan.listener.listen is not None  # only listeners that bind have a plan
        wanted[("listener", listener_id)] = (plan.listener.listen, plan)
    for outbound_id, outbound_plan in snapshot.outbound.items():
        wanted[("outbound", outbound_id)] = (outbound_plan.outbound.listen, outbound_plan)
    return wanted


def _config_path(plan: Plan) -> str:
    return plan.listener.path if isinstance(plan, ListenerPlan) else plan.outbound.path


class Runtime:
    """Satisfies `proxy.connection.ConnectionHost`: listeners see only `snapshot`, `stats`,
    `draining`, `opened`/`closed` and `spawn`."""

    ready_event = "ready"  # a worker process (workers > 1) says `worker_ready`: the supervisor says `ready`
    logs_config_warnings = True  # after each reload; a worker leaves that to the supervisor

    def __init__(self, config_path: str | Path, snapshot: Snapshot) -> None:
        self.config_path = Path(config_path)
        self.snapshot = snapshot
        self.stats = Stats()
        self.draining = False
        self.ready = False
        self.servers: dict[ServerKey, BoundServer] = {}
        self.connections: dict[int, Connection] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # connections' tasks (most of a connection's life has none)
        self._all_closed: asyncio.Event | None = None  # set by `closed` when a drain has nothing left
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop `start` runs on
        self._stopped = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self.admin_address: str | None = None
        self.probes = BackendProbes()
        # Wraps every reload; `sidecar run` sets it to tell systemd (notify.Notifier.reloading).
        self.around_reload: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext
        self.live = LivePolicy(self)  # judges live sessions again (SPEC §8.3)
        self.watcher = Watcher(lambda: self.snapshot.config, self.reload, self.config_path)  # `reload.watch`

    @property
    def bound(self) -> dict[str, str]:
        """Listener id -> real bound address."""
        return {key: bound.address for (kind, key), bound in self.servers.items() if kind == "listener"}

    @property
    def bound_outbound(self) -> dict[str, str]:
        """Outbound entry id -> real bound address."""
        return {key: bound.address for (kind, key), bound in self.servers.items() if kind == "outbound"}

    # ---- start ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind every listener and outbound entry; raises OSError (port in use …) after closing what was bound."""
        # Kept for spawn(): asyncio.get_running_loop() costs a getpid() system call on Python 3.11.
        self._loop = asyncio.get_running_loop()
        try:
            for key, (address, plan) in _servers_wanted(self.snapshot).items():
                self.servers[key] = await self._bind(address, plan, start_serving=True)
        except OSError:
            await self._close_servers()
            raise
        self.probes.apply(self.snapshot)
        self.ready = True
        if self.snapshot.config.reload.watch:
            self.watcher.start()
        logs.event(
            self.ready_event,
            listeners=self.bound,
            outbound=self.bound_outbound,
            admin=self.admin_address,
            generation=self.snapshot.generation,
        )

    async def _bind(self, address: Address, plan: Plan, *, start_serving: bool) -> BoundServer:
        entry: InboundListener | OutboundListener = (
            InboundListener(self, plan.listener.id, plan)
            if isinstance(plan, ListenerPlan)
            else OutboundListener(self, plan.outbound.id, plan)
        )
        server = await asyncio.get_running_loop().create_server(
            entry.make_leg, address.host, address.port, backlog=1024, reuse_address=True, start_serving=start_serving
        )
        return BoundServer(address, _bound_address(server, address), entry, server)

    def backend_reachable(self, listener_id: str) -> bool:
        return self.probes.reachable(listener_id)

    # ---- connections ---------------------------------------------------------------------------
    def opened(self, conn: Connection) -> None:
        self.connections[conn.id] = conn
        self.live.attach(conn)

    def closed(self, conn: Connection) -> None:
        self.connections.pop(conn.id, None)
        self.live.detach(conn)
        if not self.connections and self._all_closed is not None:
            self._all_closed.set()

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        loop = self._loop or asyncio.get_running_loop()
        task = loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- reload --------------------------------------------------------------------------------
    async def reload(self) -> tuple[int, list[Issue]]:
        """Reload (see `_reload_now`) inside `around_reload`: the one place every reload passes, SIGHUP or POST."""
        with self.around_reload():
            return await self._reload_now()

    async def _reload_now(self) -> tuple[int, list[Issue]]:
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
                snapshot = await asyncio.to_thread(self._load, generation)
            except ConfigError as exc:
                if self.logs_config_warnings:
                    logs.config_warnings(exc.warnings)
                return self._refuse(list(exc.issues))
            except Exception as exc:  # a bug while building must not leave the old config half-replaced
                return self._refuse([Issue("", f"internal error while loading: {type(exc).__name__}: {exc}")])
            if self.draining:  # stop() began while the snapshot was being built
                return self._refuse([Issue("", "shutting down: reload refused")])
            issues, fresh = await self._apply_server_changes(snapshot)
            if issues:
                return self._refuse(issues)
            admin_changed = snapshot.config.admin != self.snapshot.config.admin
            old, self.snapshot = self.snapshot, snapshot
            self.probes.apply(snapshot)
            # Fresh listeners accept only now, so their first connection already sees this snapshot.
            for server in fresh:
                if self.draining:  # stop() closed every server while we yielded
                    break
                await server.start_serving()
            self.stats.reloads["ok"] += 1
            # Live sessions are judged again by the new configuration (`live_recheck`), in slices.
            recheck = await self.live.recheck(old, snapshot)
            if snapshot.config.reload.watch and not self.draining:
                self.watcher.start()  # turned on by this reload (a running watcher reads the new settings)
            if admin_changed:
                logs.event(
                    "admin_unchanged", logging.WARNING,
                    msg="the admin section is read at start only: restart to apply the change",
                )  # fmt: skip
            logs.event("reloaded", generation=generation, listeners=self.bound, outbound=self.bound_outbound,
                       live_rechecked=recheck.rechecked, live_revoked=recheck.revoked)  # fmt: skip
            if self.logs_config_warnings:
                logs.config_warnings(snapshot.warnings)
            return generation, []

    def _load(self, generation: int) -> Snapshot:
        """The new configuration of a reload (a worker process takes the one its supervisor prepared)."""
        return load_snapshot(self.config_path, generation)

    def _refuse(self, issues: list[Issue]) -> tuple[int, list[Issue]]:
        self.stats.reloads["refused"] += 1
        logs.event("reload_refused", logging.ERROR, errors=[str(issue) for issue in issues])
        return self.snapshot.generation, issues

    async def _apply_server_changes(self, snapshot: Snapshot) -> tuple[list[Issue], list[asyncio.Server]]:
        """Bind added and moved sockets first (a failure then changes nothing), then close removed ones.

        Listeners and outbound entries alike. New servers are bound but not yet accepting: the caller
        starts them once `snapshot` is the current one. A moved entry whose new address conflicts with
        its old one (same port, from a wildcard to a specific host) cannot be bound while the old one
        listens: the reload is then refused rather than leaving a gap with nothing listening. Entries
        that stay where they are get the new plan; connections already accepted keep theirs.
        """
        wanted = _servers_wanted(snapshot)
        to_bind = [key for key, (address, _) in wanted.items() if key not in self.servers or
                   self.servers[key].listen != address]  # fmt: skip
        to_close = [key for key in self.servers if key not in wanted or key in to_bind]
        fresh: dict[ServerKey, BoundServer] = {}

        def discard_fresh() -> None:
            for created in fresh.values():
                created.server.close()

        for key in to_bind:
            address, plan = wanted[key]
            try:
                fresh[key] = await self._bind(address, plan, start_serving=False)
            except OSError as exc:
                discard_fresh()
                return [Issue(f"{_config_path(plan)}.listen", f"cannot bind {address}: {exc.strerror or exc}")], []
        if self.draining:  # stop() closed the servers while we were binding: do not resurrect any
            discard_fresh()
            return [Issue("", "shutting down: reload refused")], []
        # From here on nothing awaits: the bookkeeping below and the caller's swap are one step.
        for key in to_close:
            self.servers.pop(key).server.close()  # live connections keep running under their snapshot
        for key, (_, plan) in wanted.items():
            if key in self.servers:
                self.servers[key].entry.plan = plan  # type: ignore[assignment]  # same kind by the key
        self.servers.update(fresh)
        return [], [bound.server for bound in fresh.values()]

    # ---- stop ----------------------------------------------------------------------------------
    async def stop(self, drain_timeout: float | None = None) -> None:
        """Stop accepting, let live connections finish within the drain timeout, then close them."""
        if self.draining:
            await self._stopped.wait()
            return
        self.draining = True
        self.ready = False
        await self.watcher.stop()
        await self._close_servers()
        await self.probes.stop()
        timeout = self.snapshot.config.limits.drain_timeout if drain_timeout is None else drain_timeout
        logs.event("draining", connections=len(self.connections), timeout_s=timeout)
        if not await self._wait_all_closed(timeout):
            for conn in list(self.connections.values()):
                conn.shut_down()  # its sockets go; their callbacks end it, as any other end
            for task in list(self._tasks):
                task.cancel()
            if not await self._wait_all_closed(5):
                for conn in list(self.connections.values()):
                    conn.finish(Outcome("closed", CloseReason.SHUTDOWN))  # its socket never reported its end
        logs.event("stopped")
        self._stopped.set()

    async def _wait_all_closed(self, timeout: float) -> bool:
        """Wait until no connection is open (tasks included), at most `timeout` seconds."""
        self._all_closed = asyncio.Event()
        if self.connections:
            try:
                await asyncio.wait_for(self._all_closed.wait(), timeout)
            except TimeoutError:
                return False
        if self._tasks:  # a task takes its last steps just after its connection finished
            await asyncio.wait(set(self._tasks), timeout=timeout)
        return True

    async def _close_servers(self) -> None:
        servers = [bound.server for bound in self.servers.values()]
        self.servers.clear()
        for server in servers:
            server.close()
        for server in servers:
            # Server.wait_closed also waits for accepted connections in recent Pythons; we track those.
            await asyncio.wait([asyncio.ensure_future(server.wait_closed())], timeout=0.5)


def _bound_address(server: asyncio.Server, configured: Address) -> str:
    sockets = server.sockets
    if not sockets:
        return str(configured)
    host, port = sockets[0].getsockname()[:2]
    return str(Address(host, port))
