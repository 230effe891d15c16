"""Command line: the only place with exit codes and signal handlers.

Exit codes: 0 success (explain: accepted); 1 runtime failure (port in use …); 2 bad configuration
or bad input; 3 explain: rejected.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__, logs
from .errors import ConfigError

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_CONFIG = 2
EXIT_REJECTED = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sidecar", description="Mutual-TLS reverse proxy for legacy managed-file-transfer servers."
    )
    parser.add_argument("--version", action="version", version=f"sidecar {__version__}")
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
    explain.add_argument("--partner", help="NRPART the client presents (PeSIT PI 3)")
    explain.add_argument("--peer", help="client address (for host_verify and user classes)", default=None)
    explain.add_argument("--at", help="evaluate at this local time (ISO 8601); default: now")
    explain.add_argument("--plaintext", action="store_true", help="explain a plaintext (non-TLS) session")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        return _check(args.config)
    if args.command == "run":
        return _run(args.config)
    if args.command == "explain":
        from .explain import explain_command

        return explain_command(args)
    return EXIT_CONFIG


def _print_issues(error: ConfigError) -> None:
    for issue in error.issues:
        print(f"error: {issue}", file=sys.stderr)


def _check(config_path: Path) -> int:
    from .snapshot import load_snapshot

    try:
        snapshot = load_snapshot(config_path)
    except ConfigError as exc:
        _print_issues(exc)
        print(f"{config_path}: {len(exc.issues)} problem(s)", file=sys.stderr)
        return EXIT_CONFIG
    config = snapshot.config
    print(
        f"{config_path}: ok — {len(snapshot.listeners)} listener(s), {len(config.profiles)} profile(s), "
        f"{len(config.partners)} partner(s), {len(config.outbound)} outbound"
    )
    return EXIT_OK


def _run(config_path: Path) -> int:
    from .snapshot import load_snapshot

    logs.configure()
    try:
        snapshot = load_snapshot(config_path)
    except ConfigError as exc:
        for issue in exc.issues:
            logs.event("config_error", logging.ERROR, path=issue.where, error=issue.message,
                       msg_id=issue.msg_id, msg=issue.message if issue.msg_id else None)  # fmt: skip
        return EXIT_CONFIG
    logs.configure(snapshot.config.logging.format, snapshot.config.logging.level)

    import uvloop

    return uvloop.run(_serve(config_path, snapshot))


async def _serve(config_path: Path, snapshot: object) -> int:
    from .runtime import Runtime
    from .snapshot import Snapshot

    assert isinstance(snapshot, Snapshot)
    runtime = Runtime(config_path, snapshot)
    try:
        await runtime.start()
    except OSError as exc:
        logs.event("start_failed", logging.ERROR, error=f"{exc.strerror or exc}")
        return EXIT_RUNTIME

    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    reloads: set[asyncio.Task[object]] = set()

    def request_reload() -> None:
        task: asyncio.Task[object] = loop.create_task(runtime.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_requested.set)
    loop.add_signal_handler(signal.SIGHUP, request_reload)
    await stop_requested.wait()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.remove_signal_handler(signum)
    await runtime.stop()
    return EXIT_OK
