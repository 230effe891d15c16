"""The admin endpoint (SPEC §5): health, readiness, stats, Prometheus metrics, live connections, reload.

A factory over one Runtime: everything the handlers need hangs off the Application under typed
`AppKey`s, so two runtimes in one process (tests) never share state. Metrics live in a registry
owned by the app; a custom collector reads `runtime.stats` at scrape time, so the proxy's hot path
only bumps plain integers and never touches prometheus-client.

Every metric label comes from a closed set: listener, partner and outbound ids from the
configuration, rejection reasons and failure kinds from the code. Nothing a peer sends (DN, serial,
address) ever becomes a label, so a scan cannot blow up the number of series.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

from .config import Address
from .config import Admin as AdminConfig
from .errors import ConfigError, Issue
from .runtime import Runtime
from .snapshot import Snapshot, _read_token
from .stats import Counters
from .tls.bindings import versions

RUNTIME = web.AppKey("runtime", Runtime)
REGISTRY = web.AppKey("registry", CollectorRegistry)
# Reloads run as their own tasks (see `reload`); the app keeps them referenced until they finish.
RELOADS: web.AppKey[set[asyncio.Task[tuple[int, list[Issue]]]]] = web.AppKey("reloads")


# ---- metrics ------------------------------------------------------------------------------------
class RuntimeCollector:
    """Turns the runtime's plain counters into metric families, once per scrape."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.versions = versions()  # what runs does not change while it runs

    def collect(self) -> Iterable[Metric]:
        runtime = self.runtime
        stats = runtime.stats
        snapshot = runtime.snapshot
        sections = counters_now(runtime)
        yield from _counter_families("", "listener", sections["listeners"])
        durations = HistogramMetricFamily(
            "sidecar_handshake_duration_seconds",
            "Time from accept to the end of the TLS handshake, per listener (completed handshakes).",
            labels=["listener"],
        )
        for listener_id, counters in sections["listeners"].items():
            histogram = counters.handshake_seconds
            durations.add_metric([listener_id], histogram.cumulative(), histogram.total)
        yield durations
        yield from _counter_families("partner_", "partner", sections["partners"])
        yield from _counter_families("outbound_", "outbound", sections["outbound"])

        generation = GaugeMetricFamily("sidecar_config_generation", "Generation of the configuration in use.")
        generation.add_metric([], snapshot.generation)
        yield generation
        uptime = GaugeMetricFamily("sidecar_uptime_seconds", "Seconds since the runtime started.")
        uptime.add_metric([], stats.uptime)
        yield uptime
        ready = GaugeMetricFamily("sidecar_ready", "1 when every listener is bound and the process is not draining.")
        ready.add_metric([], 1 if runtime.ready and not runtime.draining else 0)
        yield ready
        reloads = CounterMetricFamily("sidecar_reloads", "Configuration reloads by result.", labels=["result"])
        for result in ("ok", "refused"):
            reloads.add_metric([result], stats.reloads[result])
        yield reloads
        build = GaugeMetricFamily(
            "sidecar_build_info",
            "Always 1: the sidecar version, the OpenSSL that terminates TLS, and Python.",
            labels=["version", "openssl", "python"],
        )
        build.add_metric([self.versions.sidecar, self.versions.openssl, self.versions.python], 1)
        yield build
        yield from _expiry_families(snapshot)


def _expiry_families(snapshot: Snapshot) -> Iterator[Metric]:
    """When the configured certificates and CRLs run out: what operators alert on, weeks ahead.

    One series per pki id and per configured CRL file: both sets come from the configuration.
    """
    expiry = GaugeMetricFamily(
        "sidecar_certificate_expiry_timestamp_seconds",
        "notAfter of the certificates a pki id names, as a Unix time; for a chain (or a file of several"
        " CAs) the earliest notAfter among them.",
        labels=["pki_id"],
    )
    for pki_id, certs in sorted(snapshot.pki_certs.items()):
        if certs:
            expiry.add_metric([pki_id], min(cert.not_valid_after_utc for cert in certs).timestamp())
    yield expiry
    crl = GaugeMetricFamily(
        "sidecar_crl_next_update_timestamp_seconds",
        "nextUpdate of each configured CRL file, as a Unix time (no series for a CRL without nextUpdate).",
        labels=["file"],
    )
    for file, next_update in sorted(snapshot.crl_next_update.items()):
        if next_update is not None:
            crl.add_metric([file], next_update.timestamp())
    yield crl


def counters_now(runtime: Runtime) -> dict[str, dict[str, Counters]]:
    """The counters of every listener, partner and outbound entry as they are at this instant.

    Every configured id has an entry, zero when it has seen no traffic yet: series that exist from
    the first scrape make `rate()` and absent-alerts behave. The bytes of sessions still relaying
    are added (read from the live connections here, so the data path only counts its own legs).
    The live stats are never modified by reading: entries are copies where they differ.
    """
    stats = runtime.stats
    snapshot = runtime.snapshot
    live: dict[int, tuple[int, int]] = {}  # id(Counters) -> bytes (up, down) of its live sessions
    for conn in runtime.connections.values():
        if conn.finished:
            continue
        up, down = conn.transferred()
        if up or down:
            for counters in (conn.counters, conn.partner_counters):
                if counters is not None:
                    before = live.get(id(counters), (0, 0))
                    live[id(counters)] = (before[0] + up, before[1] + down)

    def section(entries: dict[str, Counters], configured: Iterable[str]) -> dict[str, Counters]:
        merged = {key: Counters() for key in configured}
        for key, counters in entries.items():
            up, down = live.get(id(counters), (0, 0))
            merged[key] = (
                replace(counters, bytes_up=counters.bytes_up + up, bytes_down=counters.bytes_down + down)
                if up or down
                else counters
            )
        return dict(sorted(merged.items()))

    return {
        "listeners": section(stats.listeners, snapshot.listeners),
        "partners": section(stats.partners, [partner.id for partner in snapshot.config.partners]),
        "outbound": section(stats.outbound, [entry.id for entry in snapshot.config.outbound]),
    }


def _counter_families(prefix: str, label: str, entries: dict[str, Counters]) -> Iterator[Metric]:
    name = f"sidecar_{prefix}"
    accepted = CounterMetricFamily(
        f"{name}connections_accepted", f"Connections that reached their destination, per {label}.", labels=[label]
    )
    active = GaugeMetricFamily(f"{name}connections_active", f"Connections open right now, per {label}.", labels=[label])
    rejected = CounterMetricFamily(
        f"{name}connections_rejected",
        f"Connections refused by policy, per {label} and reason.",
        labels=[label, "reason"],
    )
    handshakes = CounterMetricFamily(
        f"{name}handshake_failures", f"Failed TLS handshakes, per {label} and kind.", labels=[label, "kind"]
    )
    errors = CounterMetricFamily(
        f"{name}connection_errors", f"Connections ended by an error, per {label} and kind.", labels=[label, "kind"]
    )
    closed = CounterMetricFamily(
        f"{name}connections_closed",
        f"Connections ended, per {label} and reason: the `reason` of their close log line.",
        labels=[label, "reason"],
    )
    unverified = CounterMetricFamily(
        f"{name}unverified_sessions",
        f"Sessions that went on without a verified client certificate (verify: optional), per {label}.",
        labels=[label],
    )
    transferred = CounterMetricFamily(
        f"{name}bytes",
        f"Plaintext bytes read from clients (up) and written to them (down), per {label}.",
        labels=[label, "direction"],
    )
    for key, counters in sorted(entries.items()):
        accepted.add_metric([key], counters.accepted)
        active.add_metric([key], counters.active)
        unverified.add_metric([key], counters.unverified)
        transferred.add_metric([key, "up"], counters.bytes_up)
        transferred.add_metric([key, "down"], counters.bytes_down)
        for reason, count in sorted(counters.rejected.items()):
            rejected.add_metric([key, reason], count)
        for kind, count in sorted(counters.handshake_failures.items()):
            handshakes.add_metric([key, kind], count)
        for kind, count in sorted(counters.errors.items()):
            errors.add_metric([key, kind], count)
        for reason, count in sorted(counters.closed.items()):
            closed.add_metric([key, reason], count)
    yield from (accepted, active, rejected, handshakes, errors, closed, unverified, transferred)


def make_registry(runtime: Runtime) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(RuntimeCollector(runtime))
    # Process CPU, memory and file descriptors under the same prefix (Linux /proc; empty elsewhere).
    ProcessCollector(namespace="sidecar", registry=registry)
    return registry


# ---- the application ----------------------------------------------------------------------------
# What `admin.health_without_token: true` opens to requests without the token: the probes, read-only.
PROBE_ROUTES = frozenset({("GET", "/healthz"), ("HEAD", "/healthz"), ("GET", "/readyz"), ("HEAD", "/readyz")})


def make_admin_app(
    runtime: Runtime, *, token: str | None = None, health_without_token: bool = False
) -> web.Application:
    """The admin Application for one runtime; with `token`, every request must carry it as a Bearer.

    With `health_without_token`, the probes (`GET /healthz`, `GET /readyz`) answer without it, so a
    Kubernetes `httpGet` probe, which cannot read a token file, can reach them; every other route
    still needs the token.
    """
    middlewares: list[Middleware] = [_json_errors]
    if token is not None:
        middlewares.append(_bearer(token, PROBE_ROUTES if health_without_token else frozenset()))
    app = web.Application(middlewares=middlewares)
    app[RUNTIME] = runtime
    app[REGISTRY] = make_registry(runtime)
    app[RELOADS] = set()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/stats", stats)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/connections", connections)
    app.router.add_post("/reload", reload)
    return app


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp answers 404/405 in plain text; this API answers JSON everywhere, keeping status and headers."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {
            key: value for key, value in exc.headers.items() if key.lower() not in ("content-type", "content-length")
        }
        return web.json_response({"error": exc.reason}, status=exc.status, headers=headers)


def _bearer(token: str, open_routes: frozenset[tuple[str, str]]) -> Middleware:
    expected = token.encode()

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (request.method, request.path) in open_routes:
            return await handler(request)
        # Checked before routing has any visible effect: without the token, even a 404 or 405 is a 401.
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        # Compared as bytes: compare_digest refuses non-ASCII str, and a header may hold anything.
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode("utf-8", "replace"), expected
        ):
            return web.json_response(
                {"error": "unauthorized"}, status=401, headers={"WWW-Authenticate": 'Bearer realm="sidecar"'}
            )
        return await handler(request)

    return require_token


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    if runtime.draining or not runtime.ready:
        return web.json_response({"status": "draining" if runtime.draining else "starting"}, status=503)
    down = runtime.probes.down()
    if down:  # a backend probed down (or not probed yet): this process cannot serve those listeners
        return web.json_response({"status": "backend_down", "listeners": down}, status=503)
    return web.json_response({"status": "ready"})


async def stats(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    counters = runtime.stats
    sections = {
        name: {key: value.as_dict() for key, value in entries.items()}
        for name, entries in counters_now(runtime).items()
    }
    for listener_id, up in runtime.probes.up.items():  # listeners with backend_check only
        if listener_id in sections["listeners"]:
            sections["listeners"][listener_id]["backend_up"] = up
    return web.json_response(
        {
            "uptime_s": round(counters.uptime, 3),
            "generation": runtime.snapshot.generation,
            **sections,
            "reloads": {"ok": counters.reloads["ok"], "refused": counters.reloads["refused"]},
        }
    )


async def metrics(request: web.Request) -> web.Response:
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encoder(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": content_type})


async def connections(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    return web.json_response([conn.describe() for _, conn in sorted(runtime.connections.items())])


async def reload(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    # A client that hangs up must not cancel a reload halfway (listeners bound, snapshot not swapped):
    # the reload runs as its own task and the request only waits for it.
    task = asyncio.get_running_loop().create_task(runtime.reload())
    tasks = request.app[RELOADS]
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    generation, issues = await asyncio.shield(task)
    if issues:
        return web.json_response({"errors": [str(issue) for issue in issues]}, status=422)
    return web.json_response({"generation": generation})


# ---- serving ------------------------------------------------------------------------------------
@dataclass(slots=True)
class AdminServer:
    runner: web.AppRunner
    address: str  # the real bound address, "host:port"

    async def cleanup(self) -> None:
        """Stop listening and close idle keep-alive connections; in-flight requests get a short grace."""
        await self.runner.cleanup()


def read_token(admin_config: AdminConfig) -> str | None:
    """The bearer token, read again at start (the snapshot validated the file, but it may have changed)."""
    if admin_config.token_file is None:
        return None
    issues: list[Issue] = []
    token = _read_token(admin_config.token_file, issues)
    if issues:
        raise ConfigError(issues)
    return token


async def start_admin(runtime: Runtime, admin_config: AdminConfig) -> AdminServer:
    """Bind the admin endpoint and record its real address on the runtime (for the `ready` line).

    Raises OSError when the address cannot be bound, ConfigError when the token file went bad.
    """
    token = read_token(admin_config)
    # access_log=None: one line per health probe would drown the connection log; the admin API
    # is observed through its own effects (reload events).
    app = make_admin_app(runtime, token=token, health_without_token=admin_config.health_without_token)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    listen = admin_config.listen
    try:
        site = web.TCPSite(runner, listen.host, listen.port, reuse_address=True)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    sockname = runner.addresses[0] if runner.addresses else (listen.host, listen.port)
    address = str(Address(str(sockname[0]), int(sockname[1])))
    runtime.admin_address = address
    return AdminServer(runner, address)


__all__ = [
    "PROBE_ROUTES",
    "AdminServer",
    "RuntimeCollector",
    "make_admin_app",
    "make_registry",
    "read_token",
    "start_admin",
]
