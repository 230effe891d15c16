"""Command line: the only place with exit codes and signal handlers.

Exit codes: 0 success (explain: accepted); 1 runtime failure (port in use …); 2 bad configuration
or bad input; 3 explain: rejected.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import logs
from .errors import ConfigError, Issue

if TYPE_CHECKING:
    from .admin import AdminServer

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_CONFIG = 2


class _VersionAction(argparse.Action):
    """`--version`: one component per line (argparse's own action would re-wrap them into one paragraph)."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from .tls.bindings import versions

        print("\n".join(versions().lines()))
        parser.exit(EXIT_OK)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sidecar", description="Mutual-TLS reverse proxy for legacy managed-file-transfer servers."
    )
    parser.add_argument(
        "--version", action=_VersionAction, help="show the versions of sidecar, its TLS library and Python, and exit"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the proxy until SIGTERM/SIGINT")
    run.add_argument("-c", "--config", required=True, type=Path, help="configuration file (YAML)")

    check = commands.add_parser("check", help="validate a configuration and everything it names, without binding")
    check.add_argument("-c", "--config", required=True, type=Path)

    explain = commands.add_parser("explain", help="show the decision for a client certificate, without network")
    explain.add_argument("-c", "--config", required=True, type=Path)
    explain.add_argument("--listener", required=True, help="listener id")
    explain.add_argument("--cert", required=True, type=Path, help="the client certificate (PEM or DER, chain allowed)")
    explain.add_argument("--cipher", help="negotiated cipher suite (code or name); default: the profile's first")
    explain.add_argument("--partner", help="NRPART the client presents (PeSIT PI 3; identify: pesit listeners)")
    explain.add_argument("--password", help="the password the client presents (PeSIT PI 5), if any")
    explain.add_argument("--peer", help="client address (for host_verify and user classes)", default=None)
    explain.add_argument("--at", help="evaluate at this local time (ISO 8601); default: now")
    explain.add_argument("--plaintext", action="store_true", help="explain a plaintext (non-TLS) session")

    reload = commands.add_parser("reload", help="ask a running sidecar to reload its configuration (POST /reload)")
    reload.add_argument("-c", "--config", required=True, type=Path, help="the configuration the sidecar runs with")
    reload.add_argument("--admin", metavar="URL", help="admin endpoint (default: the config's admin.listen)")
    reload.add_argument("--token-file", type=Path, help="bearer token file (default: the config's admin.token_file)")

    cft = commands.add_parser("import-cft", help="convert Transfer CFT CFTUTIL/PKIUTIL commands to a configuration")
    cft.add_argument("files", nargs="+", type=Path, metavar="FILE", help="CFTEXT/PKIEXT exports, cftinit files")
    cft.add_argument("-o", "--output", type=Path, metavar="OUT", help="write the configuration here (default: stdout)")
    cft.add_argument("--backend", metavar="HOST:PORT", help="the plaintext service behind every listener")

    demo = commands.add_parser("demo", help="showcase: throwaway PKI, echo backend, proxy, admin and sample clients")
    demo.add_argument("--once", action="store_true", help="exit after the table: 0 only if every outcome was expected")
    demo.add_argument("--dir", type=Path, help="write the PKI, config and rule file here and keep them")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["_worker"]:  # a worker process started by `run` with workers > 1: not for people
        from .supervisor import worker_main

        return worker_main(arguments[1:])
    args = _parser().parse_args(arguments)
    if args.command == "check":
        return _check(args.config)
    if args.command == "run":
        return _run(args.config)
    if args.command == "explain":
        from .explain import explain_command

        return explain_command(args)
    if args.command == "reload":
        return _reload(args.config, args.admin, args.token_file)
    if args.command == "import-cft":
        from .cftimport.command import import_cft_command

        return import_cft_command(args)
    if args.command == "demo":
        from .demo import demo_command

        return demo_command(args.dir, once=args.once)
    return EXIT_CONFIG


def _print_issues(error: ConfigError) -> None:
    for issue in error.issues:
        print(f"error: {issue}", file=sys.stderr)
    _print_warnings(error.warnings)


def _print_warnings(warnings: Sequence[Issue]) -> None:
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)


def _bindings_refusal() -> str | None:
    """The line to refuse to start with when the TLS engine's private bindings are not all there."""
    from .tls.bindings import missing_bindings, refusal, versions

    missing = missing_bindings()
    return refusal(missing, versions()) if missing else None


def _check(config_path: Path) -> int:
    """Every problem in one pass (errors and warnings, one line each); exit 2 on any error.

    Warnings never change the exit status.
    """
    from .snapshot import load_snapshot

    refused = _bindings_refusal()
    if refused is not None:
        print(f"error: {refused}", file=sys.stderr)
        return EXIT_RUNTIME
    try:
        snapshot = load_snapshot(config_path)
    except ConfigError as exc:
        _print_issues(exc)
        warned = f", {len(exc.warnings)} warning(s)" if exc.warnings else ""
        print(f"{config_path}: {len(exc.issues)} problem(s){warned}", file=sys.stderr)
        return EXIT_CONFIG
    _print_warnings(snapshot.warnings)
    config = snapshot.config
    print(
        f"{config_path}: ok — {len(snapshot.listeners)} listener(s), {len(config.profiles)} profile(s), "
        f"{len(config.partners)} partner(s), {len(config.outbound)} outbound"
    )
    return EXIT_OK


def _no_tickets_unless_wanted(config_path: Path) -> None:
    """Stop TLS 1.3 session tickets process-wide when no profile wants them (see no-tickets.cnf).

    Must run before the TLS library is first used: OpenSSL reads its configuration file once. An
    operator's own OPENSSL_CONF always wins.
    """
    if "OPENSSL_CONF" in os.environ:
        return
    from .config import load_config

    try:
        config = load_config(config_path)
    except ConfigError:
        return  # reported in full by load_snapshot
    if not any(profile.session_tickets for profile in config.profiles):
        os.environ["OPENSSL_CONF"] = str(Path(__file__).with_name("tls") / "no-tickets.cnf")


def _run(config_path: Path) -> int:
    _no_tickets_unless_wanted(config_path)  # before the first use of the TLS library, the check below included
    from .snapshot import load_snapshot

    logs.configure()
    refused = _bindings_refusal()
    if refused is not None:
        logs.event("start_failed", logging.ERROR, component="tls", error=refused)
        return EXIT_RUNTIME
    try:
        snapshot = load_snapshot(config_path)
    except ConfigError as exc:
        for issue in exc.issues:
            logs.event("config_error", logging.ERROR, path=issue.where, error=issue.message, line=issue.line or None,
                       msg_id=issue.msg_id, msg=issue.message if issue.msg_id else None)  # fmt: skip
        logs.config_warnings(exc.warnings)
        return EXIT_CONFIG
    logs.configure(snapshot.config.logging.format, snapshot.config.logging.level)
    logs.config_warnings(snapshot.warnings)

    import uvloop

    from .workers import resolve_workers

    workers = resolve_workers(snapshot.config.workers)
    if workers > 1:
        from . import supervisor

        # Absolute, not resolved: relative paths in it stay relative to the folder it was named in.
        return uvloop.run(supervisor.serve(config_path.absolute(), snapshot, workers))
    return uvloop.run(_serve(config_path, snapshot))


async def _serve(config_path: Path, snapshot: object) -> int:
    from .admin import start_admin
    from .notify import Notifier
    from .runtime import Runtime
    from .snapshot import Snapshot

    assert isinstance(snapshot, Snapshot)
    runtime = Runtime(config_path, snapshot)
    notifier = Notifier.from_environment(os.environ)  # systemd Type=notify; inert without $NOTIFY_SOCKET
    runtime.around_reload = notifier.reloading
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    reloads: set[asyncio.Task[object]] = set()

    def request_reload() -> None:
        if not runtime.ready and not runtime.draining:
            logs.event("reload_ignored", logging.WARNING, reason="not started yet")
            return
        task: asyncio.Task[object] = loop.create_task(runtime.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    # Handlers before anything binds: whoever reads the `ready` line may signal at once, and the
    # default action of SIGHUP is to terminate.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_requested.set)
    loop.add_signal_handler(signal.SIGHUP, request_reload)
    admin_config = snapshot.config.admin
    admin: AdminServer | None = None
    try:
        # Admin first: its real address belongs in the `ready` line that runtime.start() logs.
        if admin_config is not None:
            try:
                admin = await start_admin(runtime, admin_config)
            except OSError as exc:
                logs.event("start_failed", logging.ERROR, component="admin", address=str(admin_config.listen),
                           error=f"{exc.strerror or exc}")  # fmt: skip
                return EXIT_RUNTIME
            except ConfigError as exc:  # the token file changed between loading and starting
                for issue in exc.issues:
                    logs.event("config_error", logging.ERROR, path=issue.where, error=issue.message)
                return EXIT_CONFIG
        try:
            await runtime.start()
        except OSError as exc:
            logs.event("start_failed", logging.ERROR, error=f"{exc.strerror or exc}")
            return EXIT_RUNTIME
        notifier.ready()  # after the `ready` line that runtime.start() logged
        await stop_requested.wait()
        # A second SIGTERM/SIGINT during the drain gets the default action: stop now.
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        notifier.stopping()
        await runtime.stop()
        return EXIT_OK
    finally:
        notifier.close()
        # After the drain, not before: /readyz answers 503 while connections finish.
        if admin is not None:
            await admin.cleanup()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)


def _reload(config_path: Path, admin_url: str | None, token_file: Path | None) -> int:
    """POST /reload to a running sidecar: 0 reloaded, 2 refused (errors printed), 1 unreachable."""
    import json
    import urllib.error
    import urllib.request

    try:
        url, token = _admin_target(config_path, admin_url, token_file)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"{url}/reload", data=b"", headers=headers, method="POST")
    # No proxy: the admin endpoint is local or on a management network, never behind http_proxy.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=60) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        with exc:
            try:
                body = json.load(exc)
            except ValueError:
                body = {}
        if exc.code == 422:
            for error in body.get("errors", []):
                print(f"error: {error}", file=sys.stderr)
            print(f"{config_path}: reload refused, the running configuration is unchanged", file=sys.stderr)
            return EXIT_CONFIG
        print(f"error: {url}/reload answered {exc.code} {body.get('error') or exc.reason}", file=sys.stderr)
        return EXIT_RUNTIME
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        print(f"error: cannot reach the admin endpoint at {url}: {reason}", file=sys.stderr)
        return EXIT_RUNTIME
    print(f"reloaded: generation {body.get('generation')}")
    return EXIT_OK


def _admin_target(config_path: Path, admin_url: str | None, token_file: Path | None) -> tuple[str, str | None]:
    """The admin base URL and bearer token for `reload`, read leniently from the config file.

    Only the `admin` section is read, and not validated: the point of `reload` is often a config
    with mistakes elsewhere, which the running sidecar will then report, each with its path.
    """
    from .errors import os_reason
    from .yamlsource import YamlRefused, read_yaml

    admin: dict[str, object] = {}
    problem: str | None = None
    try:
        document = read_yaml(config_path.read_text(encoding="utf-8"), config_path.name).data
    except OSError as exc:
        problem = f"cannot read {config_path}: {os_reason(exc)}"
    except UnicodeDecodeError:
        problem = f"cannot read {config_path}: not UTF-8 text"
    except YamlRefused as refused:
        problem = str(refused.issue)
    else:
        section = document.get("admin") if isinstance(document, dict) else None
        if isinstance(section, dict):
            admin = section
        elif admin_url is None:
            problem = f"{config_path}: no admin section; give the endpoint with --admin URL"
    if admin_url is None and problem is not None:
        raise ValueError(problem)

    token: str | None = None
    configured = admin.get("token_file")
    if token_file is None and isinstance(configured, str) and configured:
        token_file = Path(configured) if Path(configured).is_absolute() else config_path.parent / configured
    if token_file is not None:
        path = token_file
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"admin.token_file: cannot read {path}: {exc.strerror or exc}") from exc

    if admin_url is not None:
        url = admin_url if "://" in admin_url else f"http://{admin_url}"
        return url.rstrip("/"), token
    listen = str(admin.get("listen") or "127.0.0.1:9901")
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise ValueError(f"admin.listen: {listen!r} is not an address")
    # A wildcard bind is reached through loopback from the same host.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return (f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"), token
