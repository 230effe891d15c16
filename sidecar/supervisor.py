"""`workers: N` (N > 1): one supervisor process and N worker processes sharing the listening sockets.

Theory of operation
-------------------
The supervisor validates the configuration (it has already been loaded whole by `sidecar run`),
binds every listening socket **once** and starts N workers (`python -m sidecar _worker …`) that
inherit those sockets (`pass_fds`) and run the ordinary `Runtime` on them. The kernel hands each
accepted connection to one of the workers blocked in accept on the shared socket.

Why inherited sockets rather than one SO_REUSEPORT socket per worker: a SO_REUSEPORT socket owns its
own accept queue, and when its worker dies every connection waiting in that queue is reset. A shared
socket has one queue that outlives any worker (the supervisor holds it too): a worker killed with
`kill -9` loses only the connections it had accepted; the others are accepted by the other workers.
The price is that the kernel does not spread connections evenly across workers (a busy worker takes
fewer), which for TLS handshakes measured here is a small imbalance (bench/README.md).

Why fresh processes (exec) rather than fork: a worker is exactly the one-process sidecar (same
memory per connection, no asyncio loop or TLS state copied from a parent, nothing shared by
accident), and the supervisor stays small.

The local channel: each worker serves its ordinary admin application (no token) on a Unix socket in
a private folder (mode 0700) made by the supervisor. The supervisor's admin endpoint asks every
worker at request time and sums (`sidecar.workers`): /stats and /metrics summed series by series,
/connections concatenated with each worker's index. This was chosen over prometheus-client's
multiprocess mode, which covers only Prometheus metrics (not /stats or /connections), needs metric
objects written to shared files on the hot path instead of the plain counters read at scrape time,
and cannot express gauges such as `active` without per-gauge modes.

Reload is two-phase, so it applies to every worker or to none: the supervisor loads and validates
the new configuration; every worker then builds it (`POST /prepare`: files read, TLS contexts
built, nothing swapped); only when all succeeded are they told to swap (`POST /reload`, which takes
the prepared snapshot); otherwise every worker discards what it prepared and the reload is refused
with each worker's errors. Listening sockets belong to the supervisor: a reload that adds or moves
one has the supervisor bind it first (a failure refuses the reload, nothing changed), hand it to
every worker over a second private Unix socket (SCM_RIGHTS), and only then prepare and swap; the
old socket of a moved or removed entry is closed once every worker has switched. A worker started
later inherits the current set. Watch mode (`reload: {watch: true}`) runs in the supervisor and
calls this same reload; the workers do not watch.

A worker that exits while the supervisor is not draining is replaced after a back-off (0.5 s,
doubling up to 30 s; back to 0.5 s once a worker has run for 30 s). SIGTERM/SIGINT: the supervisor
closes its copy of the sockets and sends SIGTERM to every worker, each of which drains as one
process does. A worker whose supervisor disappears (its stdin pipe closes) drains and exits too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

from . import logs
from .admin import PROBE_ROUTES, _bearer, _json_errors, make_admin_app, read_token
from .config import Address
from .errors import ConfigError, Issue
from .notify import Notifier
from .runtime import Plan, Runtime, ServerKey, _config_path, _servers_wanted
from .snapshot import ListenerPlan, Snapshot, load_snapshot
from .watch import Watcher
from .workers import list_connections, merge_metrics, merge_stats

EXIT_OK, EXIT_RUNTIME, EXIT_CONFIG = 0, 1, 2
START_TIMEOUT = 30.0
BACKOFF_FIRST, BACKOFF_MAX, HEALTHY_AFTER = 0.5, 30.0, 30.0
CHANNEL_TIMEOUT = 10.0


# ---- the supervisor -------------------------------------------------------------------------------
@dataclass(slots=True)
class Worker:
    index: int
    channel: Path  # its admin application on a Unix socket
    handover: Path  # where it receives listening sockets that a reload adds or moves
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0
    ready: bool = False
    restarts: int = 0
    failures: int = 0  # exits in a row without a healthy run: the back-off exponent


@dataclass(slots=True)
class Supervisor:
    config_path: Path
    snapshot: Snapshot
    count: int
    sockets: dict[ServerKey, socket.socket] = field(default_factory=dict)
    bound: dict[ServerKey, str] = field(default_factory=dict)
    workers: list[Worker] = field(default_factory=list)
    draining: bool = False
    ready: bool = False
    started: float = field(default_factory=time.monotonic)
    reloads: dict[str, int] = field(default_factory=lambda: {"ok": 0, "refused": 0})
    admin_address: str | None = None
    notifier: Notifier = field(default_factory=lambda: Notifier(None))
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _folder: tempfile.TemporaryDirectory[str] | None = None
    _watchers: set[asyncio.Task[None]] = field(default_factory=set)
    # Watch mode (`reload.watch`) runs here, not in the workers: a change reloads every worker or none.
    watcher: Watcher | None = None

    def addresses(self, kind: str) -> dict[str, str]:
        """Entry id -> bound address, for listeners or outbound entries."""
        return {key: address for (entry_kind, key), address in self.bound.items() if entry_kind == kind}

    # ---- start ---------------------------------------------------------------------------------
    def bind(self) -> None:
        """Bind every listening socket once (raises OSError after closing what was bound)."""
        try:
            for key, (address, _) in _servers_wanted(self.snapshot).items():
                sock = _listen(address)
                self.sockets[key] = sock
                host, port = sock.getsockname()[:2]
                self.bound[key] = str(Address(str(host), int(port)))
        except OSError:
            self.close_sockets()
            raise

    async def start(self) -> int:
        """Start every worker and wait until each is ready; EXIT_OK, or the exit status to end with."""
        self._folder = _private_folder()
        if self._folder is None:
            logs.event("start_failed", logging.ERROR, component="workers",
                       error="no writable folder for the workers' private sockets: set TMPDIR to one"
                             " (a read-only root file system needs a tmpfs or emptyDir there)")  # fmt: skip
            return EXIT_RUNTIME
        folder = Path(self._folder.name)
        self.workers = [
            Worker(i, folder / f"worker-{i}.sock", folder / f"worker-{i}.sockets") for i in range(self.count)
        ]
        async with self._lock:
            results = await asyncio.gather(*(self._spawn(worker) for worker in self.workers))
        failed = [code for code in results if code is not None]
        if failed:
            return EXIT_CONFIG if EXIT_CONFIG in failed else EXIT_RUNTIME
        for worker in self.workers:
            task = asyncio.get_running_loop().create_task(self._watch(worker))
            self._watchers.add(task)
            task.add_done_callback(self._watchers.discard)
        self.ready = True
        self.watcher = Watcher(lambda: self.snapshot.config, self.reload, self.config_path)
        if self.snapshot.config.reload.watch:
            self.watcher.start()
        logs.event(
            "ready",
            listeners=self.addresses("listener"),
            outbound=self.addresses("outbound"),
            admin=self.admin_address,
            generation=self.snapshot.generation,
            workers=self.count,
        )
        return EXIT_OK

    async def _spawn(self, worker: Worker) -> int | None:
        """Start one worker and wait for it to be ready: None, or the exit status it died with."""
        fds = {f"{kind}:{key}": sock.fileno() for (kind, key), sock in self.sockets.items()}
        for path in (worker.channel, worker.handover):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}  # systemd hears the supervisor only
        worker.ready = False
        worker.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sidecar", "_worker",
            "--config", str(self.config_path),
            "--index", str(worker.index),
            "--generation", str(self.snapshot.generation),
            "--channel", str(worker.channel),
            "--handover", str(worker.handover),
            "--sockets", json.dumps(fds),
            stdin=asyncio.subprocess.PIPE, pass_fds=tuple(fds.values()), env=env,
        )  # fmt: skip
        worker.started = time.monotonic()
        deadline = worker.started + START_TIMEOUT
        while time.monotonic() < deadline:
            if worker.process.returncode is not None:
                return worker.process.returncode or EXIT_RUNTIME
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                status, _ = await self._ask(worker, "GET", "/readyz", timeout=1.0)
                if status == 200:
                    worker.ready = True
                    return None
            await asyncio.sleep(0.05)
        logs.event("worker_start_failed", logging.ERROR, worker=worker.index, error="not ready in time")
        worker.process.kill()
        await worker.process.wait()
        return EXIT_RUNTIME

    async def _watch(self, worker: Worker) -> None:
        """Replace the worker whenever it exits, with back-off, until the supervisor drains."""
        while True:
            assert worker.process is not None
            code = await worker.process.wait()
            worker.ready = False
            if worker.process.stdin is not None:
                worker.process.stdin.close()  # the pipe whose end tells a worker its supervisor is gone
            if self.draining:
                return
            ran = time.monotonic() - worker.started
            worker.failures = 0 if ran >= HEALTHY_AFTER else worker.failures + 1
            delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** max(0, worker.failures - 1))
            logs.event("worker_exited", logging.ERROR, worker=worker.index, pid=worker.process.pid,
                       exit_status=code, ran_s=round(ran, 3), restart_in_s=delay)  # fmt: skip
            await asyncio.sleep(delay)
            if self.draining:
                return
            async with self._lock:
                if self.draining:
                    return
                worker.restarts += 1
                failed = await self._spawn(worker)
            if failed is None:
                logs.event("worker_started", worker=worker.index, pid=worker.process.pid,
                           generation=self.snapshot.generation)  # fmt: skip

    # ---- the local channel ---------------------------------------------------------------------
    async def _ask(
        self, worker: Worker, method: str, path: str, *, payload: Any = None, timeout: float = CHANNEL_TIMEOUT
    ) -> tuple[int, Any]:
        connector = aiohttp.UnixConnector(path=str(worker.channel))
        async with (
            aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.request(method, f"http://worker{path}", json=payload) as response,
        ):
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, await response.text()

    async def _ask_all(self, method: str, path: str, payload: Any = None) -> list[tuple[Worker, int, Any]]:
        """Ask every ready worker; a worker that cannot answer is left out (it is being replaced)."""
        live = [worker for worker in self.workers if worker.ready]

        async def one(worker: Worker) -> tuple[Worker, int, Any] | None:
            try:
                status, body = await self._ask(worker, method, path, payload=payload)
            except (aiohttp.ClientError, OSError, TimeoutError):
                return None
            return worker, status, body

        return [answer for answer in await asyncio.gather(*(one(w) for w in live)) if answer is not None]

    # ---- reload --------------------------------------------------------------------------------
    async def reload(self) -> tuple[int, list[Issue]]:
        with self.notifier.reloading():
            return await self._reload_now()

    async def _reload_now(self) -> tuple[int, list[Issue]]:
        async with self._lock:
            if self.draining:
                return self._refuse([Issue("", "shutting down: reload refused")])
            generation = self.snapshot.generation + 1
            try:
                snapshot = await asyncio.to_thread(load_snapshot, self.config_path, generation)
            except ConfigError as exc:
                logs.config_warnings(exc.warnings)
                return self._refuse(list(exc.issues))
            fresh, issues = self._bind_changes(snapshot)
            if issues:
                return self._refuse(issues)
            workers = [worker for worker in self.workers if worker.ready]
            if fresh:
                issues = await self._hand_over(workers, fresh)
            if not issues:
                prepared = await self._ask_all("POST", "/prepare", {"generation": generation})
                issues = [Issue(f"worker {w.index}", str(error)) for w, status, body in prepared if status != 200
                          for error in (body.get("errors", [body]) if isinstance(body, dict) else [body])]  # fmt: skip
                missing = {w.index for w in workers} - {w.index for w, _, _ in prepared}
                issues += [Issue(f"worker {index}", "did not answer") for index in sorted(missing)]
            if issues:
                await self._ask_all("POST", "/discard")  # also closes the sockets handed over
                for sock in fresh.values():
                    sock.close()
                return self._refuse(issues)
            committed = await self._ask_all("POST", "/reload")
            failed = [Issue(f"worker {w.index}", str(body)) for w, status, body in committed if status != 200]
            if failed:  # only when a worker began draining in between: it is leaving anyway
                for sock in fresh.values():
                    sock.close()
                return self._refuse(failed)
            self._swap_sockets(snapshot, fresh)
            at_start_only = [
                name
                for name, before, after in (
                    ("workers", self.snapshot.config.workers, snapshot.config.workers),
                    ("admin", self.snapshot.config.admin, snapshot.config.admin),
                )
                if before != after
            ]
            self.snapshot = snapshot
            self.reloads["ok"] += 1
            if snapshot.config.reload.watch and self.watcher is not None:
                self.watcher.start()  # turned on by this reload (a running watcher reads the new settings)
            if at_start_only:
                logs.event("admin_unchanged", logging.WARNING, sections=at_start_only,
                           msg="read at start only: restart to apply the change")  # fmt: skip
            logs.event("reloaded", generation=generation, workers=len(committed), listeners=self.addresses("listener"),
                       outbound=self.addresses("outbound"))  # fmt: skip
            logs.config_warnings(snapshot.warnings)  # once, here: the workers do not repeat them
            return generation, []

    def _bind_changes(self, snapshot: Snapshot) -> tuple[dict[ServerKey, socket.socket], list[Issue]]:
        """Bind the sockets a new configuration adds or moves; on a failure close them and say why.

        As with one process, a moved entry whose new address conflicts with its old one cannot be
        bound while the old one listens: the reload is refused rather than leaving a gap.
        """
        before = {key: address for key, (address, _) in _servers_wanted(self.snapshot).items()}
        fresh: dict[ServerKey, socket.socket] = {}
        for key, (address, plan) in _servers_wanted(snapshot).items():
            if before.get(key) == address:
                continue
            try:
                fresh[key] = _listen(address)
            except OSError as exc:
                for sock in fresh.values():
                    sock.close()
                return {}, [Issue(f"{_config_path(plan)}.listen", f"cannot bind {address}: {exc.strerror or exc}")]
        return fresh, []

    async def _hand_over(self, workers: list[Worker], fresh: dict[ServerKey, socket.socket]) -> list[Issue]:
        """Pass the new sockets to every worker (SCM_RIGHTS over its hand-over socket)."""
        keys = [f"{kind}:{key}" for kind, key in fresh]
        fds = [sock.fileno() for sock in fresh.values()]

        async def one(worker: Worker) -> Issue | None:
            try:
                await asyncio.to_thread(_send_sockets, worker.handover, keys, fds)
            except OSError as exc:
                return Issue(f"worker {worker.index}", f"cannot hand over the new sockets: {exc.strerror or exc}")
            return None

        return [issue for issue in await asyncio.gather(*(one(w) for w in workers)) if issue is not None]

    def _swap_sockets(self, snapshot: Snapshot, fresh: dict[ServerKey, socket.socket]) -> None:
        """After every worker switched: ours for replacements, the old ones of moved and removed entries closed."""
        wanted = _servers_wanted(snapshot)
        for key in [key for key in self.sockets if key not in wanted or key in fresh]:
            self.sockets.pop(key).close()
            self.bound.pop(key, None)
        for key, sock in fresh.items():
            self.sockets[key] = sock
            host, port = sock.getsockname()[:2]
            self.bound[key] = str(Address(str(host), int(port)))

    def _refuse(self, issues: list[Issue]) -> tuple[int, list[Issue]]:
        self.reloads["refused"] += 1
        logs.event("reload_refused", logging.ERROR, errors=[str(issue) for issue in issues])
        return self.snapshot.generation, issues

    # ---- stop ----------------------------------------------------------------------------------
    def close_sockets(self) -> None:
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()

    async def stop(self) -> None:
        """Drain every worker: close our copy of the sockets, SIGTERM each, wait for them to exit."""
        self.draining = True
        self.ready = False
        if self.watcher is not None:
            await self.watcher.stop()
        self.close_sockets()
        processes = [w.process for w in self.workers if w.process is not None and w.process.returncode is None]
        logs.event("draining", workers=len(processes))
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        grace = self.snapshot.config.limits.drain_timeout + 10
        if processes:
            _, late = await asyncio.wait([asyncio.ensure_future(p.wait()) for p in processes], timeout=grace)
            for process in processes:
                if process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            if late:
                await asyncio.wait(late, timeout=5)
        for task in list(self._watchers):
            task.cancel()
        if self._folder is not None:
            self._folder.cleanup()
        logs.event("stopped")


def _private_folder() -> tempfile.TemporaryDirectory[str] | None:
    """A folder only this user can enter (0700), for the workers' Unix sockets.

    $TMPDIR (else the system's), then /tmp, then /dev/shm, which stays writable in containers with a
    read-only root; a folder whose path is too long for a Unix socket address is passed over.
    """
    for parent in (None, "/tmp", "/dev/shm"):
        try:
            folder = tempfile.TemporaryDirectory(prefix="sidecar-workers-", dir=parent)
        except OSError:
            continue
        if len(os.fsencode(folder.name)) <= _FOLDER_LENGTH_MAX:
            return folder
        folder.cleanup()
    return None


# A Unix socket address holds 107 bytes of path (Linux); the longest name inside is "worker-255.sockets".
_FOLDER_LENGTH_MAX = 107 - len("/worker-255.sockets")


def _listen(address: Address) -> socket.socket:
    family, kind, proto, _, sockaddr = socket.getaddrinfo(
        address.host or None, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as asyncio's create_server does
        sock.bind(sockaddr)
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock


def _send_sockets(path: Path, keys: list[str], fds: list[int]) -> None:
    """Blocking (run in a thread): send the descriptors with their keys, wait for the worker's "ok"."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as channel:
        channel.settimeout(CHANNEL_TIMEOUT)
        channel.connect(str(path))
        socket.send_fds(channel, [json.dumps(keys).encode()], fds)
        if channel.recv(16) != b"ok":
            raise OSError("the worker did not take them")


# ---- the supervisor's admin endpoint ----------------------------------------------------------------
SUPERVISOR: web.AppKey[Supervisor] = web.AppKey("supervisor")
OWN_PROCESS: web.AppKey[CollectorRegistry] = web.AppKey("own_process")


class _Collected:
    """A collector over metric families computed for one scrape."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


def make_supervisor_app(supervisor: Supervisor, *, token: str | None, health_without_token: bool) -> web.Application:
    middlewares: list[Middleware] = [_json_errors]
    if token is not None:
        middlewares.append(_bearer(token, PROBE_ROUTES if health_without_token else frozenset()))
    app = web.Application(middlewares=middlewares)
    app[SUPERVISOR] = supervisor
    app[OWN_PROCESS] = CollectorRegistry()
    ProcessCollector(namespace="sidecar", registry=app[OWN_PROCESS])
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/stats", _stats)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/connections", _connections)
    app.router.add_post("/reload", _reload)
    return app


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    supervisor = request.app[SUPERVISOR]
    serving = sum(1 for worker in supervisor.workers if worker.ready)
    if supervisor.ready and not supervisor.draining and serving:
        return web.json_response({"status": "ready", "workers": serving})
    return web.json_response({"status": "draining" if supervisor.draining else "starting"}, status=503)


async def _stats(request: web.Request) -> web.Response:
    supervisor = request.app[SUPERVISOR]
    answers = [body for _, status, body in await supervisor._ask_all("GET", "/stats") if status == 200]
    own = {
        "uptime_s": round(time.monotonic() - supervisor.started, 3),
        "generation": supervisor.snapshot.generation,
        "reloads": dict(supervisor.reloads),
        "workers": {
            "configured": supervisor.count,
            "serving": len(answers),
            "restarts": sum(worker.restarts for worker in supervisor.workers),
            "processes": [
                {
                    "worker": worker.index,
                    "pid": worker.process.pid if worker.process is not None else None,
                    "serving": worker.ready,
                    "restarts": worker.restarts,
                }
                for worker in supervisor.workers
            ],
        },
    }
    return web.json_response(merge_stats(answers, own))


async def _metrics(request: web.Request) -> web.Response:
    supervisor = request.app[SUPERVISOR]
    texts = [body for _, status, body in await supervisor._ask_all("GET", "/metrics") if status == 200]
    # The supervisor's own CPU, memory and descriptors join the workers' in the sidecar_process_* sums.
    families = merge_metrics([*texts, generate_latest(request.app[OWN_PROCESS]).decode()])
    families = [family for family in families if family.name != "sidecar_reloads"]
    reloads = CounterMetricFamily("sidecar_reloads", "Configuration reloads by result.", labels=["result"])
    for result in ("ok", "refused"):
        reloads.add_metric([result], supervisor.reloads[result])
    workers = GaugeMetricFamily("sidecar_workers", "Worker processes: configured and serving.", labels=["state"])
    workers.add_metric(["configured"], supervisor.count)
    workers.add_metric(["serving"], len(texts))
    restarts = CounterMetricFamily("sidecar_worker_restarts", "Worker processes replaced after they exited.")
    restarts.add_metric([], sum(worker.restarts for worker in supervisor.workers))
    registry = CollectorRegistry()
    registry.register(_Collected([*families, reloads, workers, restarts]))
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return web.Response(body=encoder(registry), headers={"Content-Type": content_type})


async def _connections(request: web.Request) -> web.Response:
    supervisor = request.app[SUPERVISOR]
    answers = {w.index: body for w, status, body in await supervisor._ask_all("GET", "/connections") if status == 200}
    return web.json_response(list_connections([answers.get(i, []) for i in range(supervisor.count)]))


async def _reload(request: web.Request) -> web.Response:
    supervisor = request.app[SUPERVISOR]
    generation, issues = await asyncio.shield(supervisor.reload())
    if issues:
        return web.json_response({"errors": [str(issue) for issue in issues]}, status=422)
    return web.json_response({"generation": generation})


# ---- `sidecar run` with workers > 1 ---------------------------------------------------------------
async def serve(config_path: Path, snapshot: Snapshot, count: int) -> int:
    supervisor = Supervisor(config_path, snapshot, count, notifier=Notifier.from_environment(os.environ))
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    reloads: set[asyncio.Task[tuple[int, list[Issue]]]] = set()

    def request_reload() -> None:
        if not supervisor.ready:
            logs.event("reload_ignored", logging.WARNING, reason="not started yet")
            return
        task = loop.create_task(supervisor.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_requested.set)
    loop.add_signal_handler(signal.SIGHUP, request_reload)
    runner: web.AppRunner | None = None
    try:
        admin_config = snapshot.config.admin
        if admin_config is not None:
            try:
                token = read_token(admin_config)
            except ConfigError as exc:
                for issue in exc.issues:
                    logs.event("config_error", logging.ERROR, path=issue.where, error=issue.message)
                return EXIT_CONFIG
            app = make_supervisor_app(supervisor, token=token, health_without_token=admin_config.health_without_token)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
            await runner.setup()
            try:
                await web.TCPSite(
                    runner, admin_config.listen.host, admin_config.listen.port, reuse_address=True
                ).start()
            except OSError as exc:
                logs.event("start_failed", logging.ERROR, component="admin", address=str(admin_config.listen),
                           error=f"{exc.strerror or exc}")  # fmt: skip
                return EXIT_RUNTIME
            host, port = runner.addresses[0][:2]
            supervisor.admin_address = str(Address(str(host), int(port)))
        try:
            supervisor.bind()
        except OSError as exc:
            logs.event("start_failed", logging.ERROR, error=f"{exc.strerror or exc}")
            return EXIT_RUNTIME
        status = await supervisor.start()
        if status != EXIT_OK:
            logs.event("start_failed", logging.ERROR, error="a worker process did not start", exit_status=status)
            await supervisor.stop()
            return status
        supervisor.notifier.ready()
        await stop_requested.wait()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        supervisor.notifier.stopping()
        await supervisor.stop()
        return EXIT_OK
    finally:
        supervisor.close_sockets()
        supervisor.notifier.close()
        if runner is not None:
            await runner.cleanup()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)


# ---- a worker process -------------------------------------------------------------------------------
class WorkerRuntime(Runtime):
    """The one-process Runtime on sockets inherited from the supervisor, reloading what it prepared."""

    ready_event = "worker_ready"
    logs_config_warnings = False  # the supervisor logs them once for every worker

    def __init__(self, config_path: Path, snapshot: Snapshot, inherited: dict[str, int]) -> None:
        super().__init__(config_path, snapshot)
        self.inherited = inherited
        self.prepared: Snapshot | None = None
        self.watcher = _SupervisorWatches(lambda: self.snapshot.config, self.reload)

    async def _bind(self, address: Address, plan: Plan, *, start_serving: bool) -> Any:
        from .proxy.inbound import InboundListener
        from .proxy.outbound import OutboundListener
        from .runtime import BoundServer

        key = f"listener:{plan.listener.id}" if isinstance(plan, ListenerPlan) else f"outbound:{plan.outbound.id}"
        fd = self.inherited.pop(key, None)
        if fd is None:  # the supervisor refuses reloads that change sockets: this is a bug if reached
            raise OSError(f"no socket from the supervisor for {key}")
        entry: InboundListener | OutboundListener = (
            InboundListener(self, plan.listener.id, plan)
            if isinstance(plan, ListenerPlan)
            else OutboundListener(self, plan.outbound.id, plan)
        )
        sock = socket.socket(fileno=fd)
        server = await asyncio.get_running_loop().create_server(
            entry.make_leg, sock=sock, backlog=1024, start_serving=start_serving
        )
        host, port = sock.getsockname()[:2]
        return BoundServer(address, str(Address(str(host), int(port))), entry, server)

    def take_socket(self, key: str, fd: int) -> None:
        previous = self.inherited.pop(key, None)
        if previous is not None:
            os.close(previous)
        self.inherited[key] = fd

    def close_unused_sockets(self) -> None:
        """Sockets handed over for a reload that did not happen, or that it did not use."""
        for fd in self.inherited.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.inherited.clear()

    async def _reload_now(self) -> tuple[int, list[Issue]]:
        try:
            return await super()._reload_now()
        finally:
            self.close_unused_sockets()

    def _load(self, generation: int) -> Snapshot:
        prepared, self.prepared = self.prepared, None
        if prepared is None or prepared.generation != generation:
            raise ConfigError([Issue("", "no configuration prepared by the supervisor for this reload")])
        return prepared


class _SupervisorWatches(Watcher):
    """A worker does not watch files: its supervisor does, and reloads every worker or none."""

    def start(self) -> None:
        pass


RUNTIME: web.AppKey[WorkerRuntime] = web.AppKey("worker_runtime")


async def _prepare(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    generation = int((await request.json())["generation"])
    try:
        runtime.prepared = await asyncio.to_thread(load_snapshot, runtime.config_path, generation)
    except ConfigError as exc:
        return web.json_response({"errors": [str(issue) for issue in exc.issues]}, status=422)
    return web.json_response({"generation": generation})


async def _discard(request: web.Request) -> web.Response:
    request.app[RUNTIME].prepared = None
    request.app[RUNTIME].close_unused_sockets()
    return web.json_response({})


def worker_main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="sidecar _worker")
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--index", required=True, type=int)
    parser.add_argument("--generation", required=True, type=int)
    parser.add_argument("--channel", required=True, type=Path)
    parser.add_argument("--handover", required=True, type=Path)
    parser.add_argument("--sockets", required=True)
    args = parser.parse_args(argv)
    logs.configure()
    logs.set_process_fields(worker=args.index)
    try:
        snapshot = load_snapshot(args.config, args.generation)
    except ConfigError as exc:
        for issue in exc.issues:
            logs.event("config_error", logging.ERROR, path=issue.where, error=issue.message)
        return EXIT_CONFIG
    logs.configure(snapshot.config.logging.format, snapshot.config.logging.level)
    import uvloop

    return uvloop.run(_worker(args.config, snapshot, json.loads(args.sockets), args.channel, args.handover))


async def _receive_sockets(runtime: WorkerRuntime, path: Path) -> None:
    """Take the listening sockets a reload adds or moves, handed over by the supervisor (SCM_RIGHTS)."""
    loop = asyncio.get_running_loop()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
        listener.listen(4)
        listener.setblocking(False)
        while True:
            channel, _ = await loop.sock_accept(listener)
            with channel:
                channel.settimeout(CHANNEL_TIMEOUT)
                try:
                    message, fds, _, _ = await asyncio.to_thread(socket.recv_fds, channel, 65536, 256)
                    keys = json.loads(message)
                except (OSError, ValueError) as exc:
                    logs.event("handover_failed", logging.ERROR, error=str(exc))
                    continue
                for key, fd in zip(keys, fds, strict=False):
                    runtime.take_socket(str(key), fd)
                for fd in fds[len(keys) :]:
                    os.close(fd)
                with contextlib.suppress(OSError):
                    await loop.sock_sendall(channel, b"ok")
    finally:
        listener.close()


async def _worker(
    config_path: Path, snapshot: Snapshot, inherited: dict[str, int], channel: Path, handover: Path
) -> int:
    runtime = WorkerRuntime(config_path, snapshot, inherited)
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_requested.set)
    # Reloads come from the supervisor (all workers or none); a stray SIGHUP must not reload one alone.
    loop.add_signal_handler(signal.SIGHUP, lambda: logs.event("reload_ignored", reason="reloads go to the supervisor"))

    def supervisor_gone() -> None:
        if not os.read(0, 4096):
            loop.remove_reader(0)
            logs.event("supervisor_gone", logging.ERROR)
            stop_requested.set()

    loop.add_reader(0, supervisor_gone)
    receiving = loop.create_task(_receive_sockets(runtime, handover))
    app = make_admin_app(runtime)
    app[RUNTIME] = runtime
    app.router.add_post("/prepare", _prepare)
    app.router.add_post("/discard", _discard)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.UnixSite(runner, str(channel)).start()
        try:
            await runtime.start()
        except OSError as exc:
            logs.event("start_failed", logging.ERROR, error=f"{exc.strerror or exc}")
            return EXIT_RUNTIME
        await stop_requested.wait()
        await runtime.stop()
        return EXIT_OK
    finally:
        loop.remove_reader(0)
        receiving.cancel()
        await asyncio.wait([receiving], timeout=1)
        runtime.close_unused_sockets()
        await runner.cleanup()
