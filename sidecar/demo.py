"""`sidecar demo`: the embedded default a newcomer runs first (SPEC §2).

Everything runs in this process on one uvloop loop: a throwaway PKI, a plaintext echo backend
standing in for the transfer service, the proxy (Runtime) and the admin endpoint on free loopback
ports, and a handful of showcase clients built on the stdlib `ssl` module — an independent TLS
implementation, so what the table shows is what a real partner would see.

Each client's outcome is what came back on its socket (its echo: accepted; anything else: rejected);
the reason and rule come from the proxy's own `close` log event for that connection, matched by the
client's local port. The proxy's JSON log goes to a file in the demo folder so the table stays
readable. Nothing is written outside a temporary folder unless `--dir` names one.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import shlex
import shutil
import signal
import socket
import ssl
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from cryptography import x509

from . import logs
from .errors import ConfigError
from .testing.echo import EchoBackend
from .testing.pki import issue, make_ca, make_crl

EXIT_OK = 0
EXIT_FAILED = 1  # an outcome differed from its expectation, or the demo could not start
EXIT_CONFIG = 2

LISTENER = "DEMO"
CONFIG_NAME = "config.yaml"
SSLAUTH_NAME = "sslauth.txt"
LOG_NAME = "sidecar.log"
PARTNERS_CA_DN = "CN=ACME Partners CA"
# A TLS 1.2 suite that this build can negotiate but the demo profile does not list.
REFUSED_CIPHER = "ECDHE-ECDSA-CHACHA20-POLY1305"
CLIENT_TIMEOUT = 5.0


def serial_colons(cert: x509.Certificate) -> str:
    text = format(cert.serial_number, "X")
    text = text.zfill(len(text) + len(text) % 2)
    return ":".join(text[i : i + 2] for i in range(0, len(text), 2))


# ---- showcase clients ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Showcase:
    label: str
    story: str
    cert_stem: str  # client-<stem>.pem / .key in the demo folder
    expected: str  # "accepted" | "rejected"
    expected_reason: str  # the `reason` of the proxy's close event
    ciphers: str | None = None  # offer only this TLS 1.2 suite string


SHOWCASE: tuple[Showcase, ...] = (
    Showcase(
        label="PARIS",
        story="the partner as it should be: issued by ACME Partners CA",
        cert_stem="paris",
        expected="accepted",
        expected_reason="eof",  # accepted, relayed, then closed by the client
    ),
    Showcase(
        label="revoked-by-serial",
        story="an older PARIS certificate, REVOKE /SN=… in sslauth.txt",
        cert_stem="paris-old",
        expected="rejected",
        expected_reason="sslauth",
    ),
    Showcase(
        label="revoked-by-crl",
        story="a PARIS certificate listed in partners.crl",
        cert_stem="paris-crl",
        expected="rejected",
        expected_reason="revoked",
    ),
    Showcase(
        label="date-window-over",
        story="LYON: its ACCEPT in sslauth.txt ended yesterday (/EDATE)",
        cert_stem="lyon",
        expected="rejected",
        expected_reason="sslauth",
    ),
    Showcase(
        label="wrong-issuer",
        story=f"a PARIS certificate issued by the root CA, not by '{PARTNERS_CA_DN}' (dnissuer)",
        cert_stem="paris-root",
        expected="rejected",
        expected_reason="dnissuer",
    ),
    Showcase(
        label="untrusted-ca",
        story="a PARIS certificate from a CA the profile does not trust",
        cert_stem="untrusted",
        expected="rejected",
        expected_reason="handshake_verify",
    ),
    Showcase(
        label="cipher-refused",
        story=f"PARIS offering only {REFUSED_CIPHER} (TLS 1.2), which ciphlist does not list",
        cert_stem="paris",
        expected="rejected",
        expected_reason="handshake_protocol",  # no shared cipher: the handshake itself fails
        ciphers=REFUSED_CIPHER,
    ),
)


@dataclass
class DemoFiles:
    directory: Path

    @property
    def config(self) -> Path:
        return self.directory / CONFIG_NAME

    @property
    def root_ca(self) -> Path:
        return self.directory / "root-ca.pem"

    def client(self, stem: str) -> tuple[Path, Path]:
        return self.directory / f"client-{stem}.pem", self.directory / f"client-{stem}.key"


def write_pki(directory: Path) -> DemoFiles:
    """Every certificate, key, CRL and the SSLAUTH file the demo configuration names."""
    files = DemoFiles(directory)
    root = make_ca("/C=FR/O=ACME/CN=ACME Root CA")
    partners = make_ca(f"/C=FR/O=ACME/{PARTNERS_CA_DN}", issuer=root, path_length=0)
    stranger_ca = make_ca("/C=XX/O=Elsewhere/CN=Elsewhere CA")
    directory.joinpath("root-ca.pem").write_bytes(root.cert_pem())
    directory.joinpath("partners-ca.pem").write_bytes(partners.cert_pem())
    # Also a client usage: the same certificate serves as usercid of an outbound (client) profile.
    issue(root, "/C=FR/O=ACME/CN=localhost", server=True, ip="127.0.0.1", days=(-1, 90)).write(directory, "server")

    paris_dn = "/C=FR/O=ACME/OU=Paris/CN=PARIS"
    clients = {
        "paris": issue(partners, paris_dn),
        "paris-old": issue(partners, paris_dn),
        "paris-crl": issue(partners, paris_dn),
        "lyon": issue(partners, "/C=FR/O=ACME/OU=Lyon/CN=LYON"),
        "paris-root": issue(root, paris_dn),
        "untrusted": issue(stranger_ca, paris_dn),
    }
    for stem, issued in clients.items():
        issued.write(directory, f"client-{stem}")
    crl = make_crl(partners, [clients["paris-crl"].cert.serial_number], next_update_days=90)  # past pki_warn_days
    directory.joinpath("partners.crl").write_bytes(crl)
    revoked_serial = serial_colons(clients["paris-old"].cert)
    yesterday = (dt.date.today() - dt.timedelta(days=1)).strftime("%Y%m%d")
    directory.joinpath(SSLAUTH_NAME).write_text(
        "* SSLAUTH rules of the demo listener (TIBCO Platform Server syntax), evaluated in order.\n"
        "* An older PARIS certificate, revoked by its serial number:\n"
        f"REVOKE /SN={revoked_serial}\n"
        "* LYON was admitted until yesterday:\n"
        f"ACCEPT /O=ACME /CN=LYON /EDATE={yesterday}\n"
        "* ACME Paris; /USER becomes the session's user id:\n"
        "ACCEPT /O=ACME /OU=Paris /USER=paris\n",
        encoding="utf-8",
    )
    return files


def config_text(backend_port: int) -> str:
    return f"""\
# Written by `sidecar demo`. Paths are relative to this file's folder.
# Ports 0 let the system choose: `sidecar run` logs the real ones in its `ready` line.
# The backend is the demo's built-in echo service, which exists only while `sidecar demo` runs:
# point it at your transfer server to use this file with `sidecar run`.
pki:
  ROOTCA: {{cert: root-ca.pem}}
  PARTNERSCA: {{cert: partners-ca.pem}}
  SRVCERT: {{cert: server.pem, key: server.key}}

profiles:
  - id: SSLSRV
    direct: server
    usercid: SRVCERT
    rootcid: [ROOTCA, PARTNERSCA]   # PARTNERSCA also signs partners.crl
    verify: required
    ciphlist: [4865, 4866, 49195, 49196]   # TLS 1.3 AES-GCM, then ECDHE-ECDSA AES-GCM (TLS 1.2)
    version: {{min: tls1.2, max: tls1.3}}
    dnissuer: ['{PARTNERS_CA_DN}']   # trusted is not enough: partners come from the partners CA
    crl: [partners.crl]
  - id: SSLPARIS                    # additional checks for partner PARIS
    direct: server
    verify: required
    ciphlist: [4865, 4866, 49195, 49196]
    dnuser: ['("OU=Paris" AND "CN=PARIS")']

listeners:
  - id: {LISTENER}
    listen: 127.0.0.1:0
    ssl: SSLSRV
    backend: 127.0.0.1:{backend_port}
    sslauth: {SSLAUTH_NAME}
    identify: certificate           # the partner is the one whose nrpart is the certificate's CN

partners:
  - id: PARIS
    nrpart: PARIS
    ssl: SSLPARIS
    prot: [{LISTENER}]

admin:
  listen: 127.0.0.1:0

limits: {{handshake_timeout: 5, connect_timeout: 2, drain_timeout: 2}}

logging: {{format: json, level: info}}
"""


# ---- watching the proxy's decisions -------------------------------------------------------------
class CloseEvents(logging.Handler):
    """Collects the proxy's `close` events by peer address ("127.0.0.1:PORT")."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        self.events: dict[str, dict[str, Any]] = {}
        self._waiting: dict[str, asyncio.Event] = {}

    def expect(self, peer: str) -> asyncio.Event:
        return self._waiting.setdefault(peer, asyncio.Event())

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "fields", None)
        if not isinstance(fields, dict) or fields.get("event") != "close":
            return
        peer = str(fields.get("peer"))
        self.events[peer] = dict(fields)
        waiting = self._waiting.get(peer)
        if waiting is not None:
            # Log records may come from any thread; the event belongs to the loop.
            self.loop.call_soon_threadsafe(waiting.set)


@dataclass
class Outcome:
    showcase: Showcase
    outcome: str
    reason: str
    rule: str
    detail: str
    sent: int  # bytes the client sent

    @property
    def matched(self) -> bool:
        return self.outcome == self.showcase.expected and self.reason == self.showcase.expected_reason


def client_context(files: DemoFiles, showcase: Showcase) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(files.root_ca))
    cert, key = files.client(showcase.cert_stem)
    context.load_cert_chain(cert, key)
    if showcase.ciphers is not None:
        context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(showcase.ciphers)
    return context


async def attempt(port: int, context: ssl.SSLContext, payload: bytes, events: CloseEvents) -> tuple[bool, str]:
    """Connect from a known local port, send `payload`, wait for its echo and the proxy's verdict.

    Returns (echoed, peer). Under TLS 1.3 a client refused after the handshake sees a finished
    handshake and then an alert or EOF: anything but the echo counts as refused.
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.bind(("127.0.0.1", 0))
    peer = f"127.0.0.1:{sock.getsockname()[1]}"
    decided = events.expect(peer)
    echoed = False
    try:
        async with asyncio.timeout(CLIENT_TIMEOUT):
            await loop.sock_connect(sock, ("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(sock=sock, ssl=context, server_hostname="localhost")
            try:
                writer.write(payload)
                await writer.drain()
                received = bytearray()
                while len(received) < len(payload) and (chunk := await reader.read(65536)):
                    received.extend(chunk)
                echoed = bytes(received) == payload
            finally:
                writer.close()
                with contextlib.suppress(ssl.SSLError, ConnectionError, OSError):
                    await writer.wait_closed()
    except (ssl.SSLError, ConnectionError, OSError, TimeoutError):
        sock.close()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(decided.wait(), CLIENT_TIMEOUT)
    return echoed, peer


async def drive(files: DemoFiles, port: int, events: CloseEvents) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for showcase in SHOWCASE:
        payload = f"hello from {showcase.label}\n".encode()
        echoed, peer = await attempt(port, client_context(files, showcase), payload, events)
        close = events.events.get(peer, {})
        outcomes.append(
            Outcome(
                showcase,
                "accepted" if echoed else "rejected",
                str(close.get("reason") or "-"),
                str(close.get("rule") or "-"),
                _detail(close) if close else "no close event from the proxy",
                len(payload),
            )
        )
    return outcomes


def _detail(close: dict[str, Any]) -> str:
    if close.get("decision") == "accept":
        parts = [f"partner {close['partner']}" if close.get("partner") else None,
                 f"user {close['user']}" if close.get("user") else None,
                 close.get("tls_version"), close.get("cipher"),
                 f"{close.get('bytes_up', 0)} bytes up, {close.get('bytes_down', 0)} down"]  # fmt: skip
        return ", ".join(str(part) for part in parts if part)
    if close.get("verify_error"):  # a refused certificate: which one, and why it did not verify
        return f"{close.get('subject')} issued by {close.get('issuer')}: {close['verify_error']}"
    return str(close.get("detail") or "")


# ---- output -------------------------------------------------------------------------------------
def sidecar_command(argv0: str | None = None, search_path: str | None = None) -> str:
    """What to type to run this same sidecar again, for the commands the demo prints.

    `sidecar` only when that name, looked up on PATH, is the program running now; otherwise its
    full path (a virtualenv's bin folder is often not on PATH), or `<python> -m sidecar` when it
    was started that way.
    """
    argv0 = sys.argv[0] if argv0 is None else argv0
    if not argv0 or argv0 == "-c" or Path(argv0).name == "__main__.py":
        return f"{shlex.quote(sys.executable)} -m sidecar"
    located = argv0 if os.sep in argv0 else shutil.which(argv0, path=search_path)
    running = Path(located or argv0).absolute()
    on_path = shutil.which("sidecar", path=search_path)
    if on_path is not None and Path(on_path).resolve() == running.resolve():
        return "sidecar"
    return shlex.quote(str(running))


def table(outcomes: list[Outcome]) -> str:
    """One row per client; a row whose outcome or reason was not the expected one starts with `!`."""
    header = ("client", "expected", "outcome", "reason", "rule")
    rows = [(o.showcase.label, o.showcase.expected, o.outcome, o.reason, o.rule) for o in outcomes]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(mark: str, row: tuple[str, ...]) -> str:
        return mark + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()

    separator = line("  ", tuple("-" * width for width in widths))
    body = [line("  " if o.matched else "! ", row) for o, row in zip(outcomes, rows, strict=True)]
    return "\n".join([line("  ", header), separator, *body])


def report(outcomes: list[Outcome], echo: EchoBackend, files: DemoFiles, kept: bool) -> str:
    width = max(len(s.label) for s in SHOWCASE)
    lines = ["Showcase clients (stdlib ssl, each sends one line and waits for its echo):"]
    lines += [f"  {s.label.ljust(width)}  {s.story}" for s in SHOWCASE]
    lines += ["", table(outcomes), "", "Why:"]
    lines += [f"  {o.showcase.label.ljust(width)}  {o.detail}" for o in outcomes]
    for o in outcomes:
        if not o.matched:
            lines.append(
                f"! {o.showcase.label}: expected {o.showcase.expected} ({o.showcase.expected_reason}), "
                f"got {o.outcome} ({o.reason})"
            )
    matched = sum(o.matched for o in outcomes)
    accepted = [o for o in outcomes if o.outcome == "accepted"]
    backend = f"Backend (plaintext echo): {len(echo.connections)} connection(s), {echo.received} bytes received"
    if len(echo.connections) == len(accepted) and echo.received == sum(o.sent for o in accepted):
        backend += ": the accepted clients' bytes, nothing from a rejected one."
    lines += [
        "",
        backend,
        f"{matched}/{len(outcomes)} outcomes as expected.",
        f"Proxy log (JSON lines): {files.directory / LOG_NAME}"
        + ("" if kept else " (removed at exit; keep it with --dir)"),
    ]
    return "\n".join(lines)


# ---- the command --------------------------------------------------------------------------------
def demo_command(directory: Path | None, *, once: bool) -> int:
    import uvloop

    if directory is not None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"error: cannot create {directory}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_CONFIG
        return uvloop.run(_demo(directory.resolve(), once=once, kept=True))
    with tempfile.TemporaryDirectory(prefix="sidecar-demo-") as temporary:
        return uvloop.run(_demo(Path(temporary), once=once, kept=False))


async def _demo(directory: Path, *, once: bool, kept: bool) -> int:
    from .admin import AdminServer, start_admin
    from .runtime import Runtime
    from .snapshot import load_snapshot

    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_requested.set)
    echo = EchoBackend()
    log_stream: IO[str] | None = None
    saved_handlers, saved_level = list(logs.LOGGER.handlers), logs.LOGGER.level
    runtime: Runtime | None = None
    admin: AdminServer | None = None
    try:
        backend_port = await echo.start()
        try:
            files = write_pki(directory)
            files.config.write_text(config_text(backend_port), encoding="utf-8")
            log_stream = (directory / LOG_NAME).open("w", encoding="utf-8")
        except OSError as exc:
            print(f"error: cannot write the demo files in {directory}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_CONFIG
        try:
            snapshot = load_snapshot(files.config)
        except ConfigError as exc:  # a bug in this module: say what and where
            for issue in exc.issues:
                print(f"error: {issue}", file=sys.stderr)
            return EXIT_CONFIG
        logs.configure(snapshot.config.logging.format, snapshot.config.logging.level, stream=log_stream)
        events = CloseEvents(loop)
        logs.LOGGER.addHandler(events)
        runtime = Runtime(files.config, snapshot)
        assert snapshot.config.admin is not None
        try:
            admin = await start_admin(runtime, snapshot.config.admin)
            await runtime.start()
        except OSError as exc:
            print(f"error: cannot start: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_FAILED
        port = int(runtime.bound[LISTENER].rsplit(":", 1)[1])
        print(f"sidecar demo — files in {directory}" + ("" if kept else " (temporary)"))
        print(f"Proxy (TLS) on {runtime.bound[LISTENER]} -> backend 127.0.0.1:{backend_port}\n", flush=True)

        driving = asyncio.ensure_future(drive(files, port, events))
        stopping = asyncio.ensure_future(stop_requested.wait())
        await asyncio.wait({driving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not driving.done():
            driving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await driving
            print("interrupted", file=sys.stderr)
            return EXIT_FAILED
        outcomes = driving.result()
        print(report(outcomes, echo, files, kept))
        admin_url = f"http://{admin.address}"
        print(f"Admin: {admin_url}/stats  {admin_url}/metrics  {admin_url}/connections", flush=True)
        status = EXIT_OK if all(o.matched for o in outcomes) else EXIT_FAILED
        if not once:
            # Printed to be pasted: quoted paths, and the sidecar that runs now even if not on PATH.
            paths = (*files.client("paris"), files.root_ca, files.config)
            cert, key, root_ca, config = (shlex.quote(str(path)) for path in paths)
            print(
                "\nTry it yourself:\n"
                f"  openssl s_client -connect {runtime.bound[LISTENER]} -CAfile {root_ca} -cert {cert} -key {key}\n"
                f"  {sidecar_command()} explain -c {config} --listener {LISTENER} --cert {cert}\n"
                "Serving until Ctrl-C.",
                flush=True,
            )
            await stopping
        stopping.cancel()
        return status
    finally:
        if runtime is not None:
            await runtime.stop(drain_timeout=1)
        if admin is not None:
            await admin.cleanup()
        await echo.stop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        logs.LOGGER.handlers[:] = saved_handlers
        logs.LOGGER.setLevel(saved_level)
        if log_stream is not None:
            log_stream.close()


__all__ = ["SHOWCASE", "demo_command", "sidecar_command", "write_pki"]
