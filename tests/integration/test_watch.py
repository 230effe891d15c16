"""Watch mode (SPEC §8.3): the process reloads by itself when its files change, and keeps serving a good
configuration when the new one is broken."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from sidecar.testing.echo import EchoBackend
from sidecar.testing.pki import Issued, issue, make_crl

from ..conftest import LogCapture
from ..support.env import Pki, tls_exchange
from .test_admin import admin_config, eventually, running
from .test_live_policy import Session
from .test_reload import _der, _peer_certificate

WATCH = {"watch": True, "interval": 0.3}


def _publish(secret: Path, version: str, server: Issued) -> None:
    """What the kubelet does for a Secret volume: a new timestamped directory, then `..data` swapped to it."""
    directory = secret / f"..2026_12_07_{version}"
    directory.mkdir()
    server.write(directory, "tls")
    os.rename(directory / "tls.pem", directory / "tls.crt")
    staged = secret / "..data_tmp"
    staged.symlink_to(directory.name)
    os.rename(staged, secret / "..data")  # atomic: readers see the old target or the new one


def _secret_volume(workdir: Path, server: Issued) -> Path:
    secret = workdir / "secret"
    secret.mkdir()
    _publish(secret, "a", server)
    for name in ("tls.crt", "tls.key"):
        (secret / name).symlink_to(f"..data/{name}")
    return secret


async def _wait_generation(sidecar: Any, generation: int, timeout: float = 10) -> None:
    await eventually(lambda: sidecar.runtime.snapshot.generation == generation, timeout)


async def test_a_secret_volume_symlink_swap_is_picked_up(
    pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    secret = _secret_volume(workdir, pki.server)
    config = admin_config(pki, backend.port)
    config["pki"]["SRVCERT"] = {"cert": "secret/tls.crt", "key": "secret/tls.key"}
    config["reload"] = WATCH
    async with running(workdir, config) as (sidecar, _):
        context = pki.client_context(pki.client)
        assert await _peer_certificate(sidecar.port(), context) == _der(pki.server)
        renewed = issue(pki.root, "/C=FR/O=ACME/CN=localhost", server=True, client=False)
        _publish(secret, "b", renewed)  # cert-manager renewed the certificate
        await _wait_generation(sidecar, 2)
        assert await _peer_certificate(sidecar.port(), context) == _der(renewed)
        changed = captured_logs.of("files_changed")
        assert changed and {str(workdir / "secret/tls.crt"), str(workdir / "secret/tls.key")} <= set(
            changed[-1]["files"]  # type: ignore[arg-type]
        )
        # Nothing changed since: no further reload.
        await asyncio.sleep(1.0)
        assert sidecar.runtime is not None and sidecar.runtime.snapshot.generation == 2


async def test_a_crl_updated_in_place_revokes_the_live_session_it_lists(
    pki: Pki, backend: EchoBackend, workdir: Path
) -> None:
    crl = workdir / "partners.crl"
    crl.write_bytes(make_crl(pki.root, []))
    config = admin_config(pki, backend.port)
    config["profiles"][0]["crl"] = ["partners.crl"]
    config["reload"] = WATCH
    async with running(workdir, config) as (sidecar, _):
        session = await Session.open(sidecar.port(), pki.client_context(pki.client))
        try:
            assert await session.echo(b"listed soon") == b"listed soon"
            with crl.open("r+b") as file:  # the cron job rewrites the file itself, same inode
                file.truncate(0)
                file.write(make_crl(pki.root, [pki.client.cert.serial_number]))
            await session.wait_closed_by_proxy(timeout=10)
        finally:
            await session.close()
        assert sidecar.runtime is not None
        assert sidecar.runtime.snapshot.generation == 2
        await eventually(lambda: not sidecar.runtime.connections)  # type: ignore[union-attr]
        assert sidecar.runtime.stats.listener("PESITSSL").rejected == {"revoked_live": 1}


async def test_a_broken_file_is_refused_and_the_old_configuration_keeps_serving(
    pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    rules = workdir / "sslauth.txt"
    rules.write_text("ACCEPT /CN=PARIS\n")
    config = admin_config(pki, backend.port, sslauth="sslauth.txt")
    config["reload"] = WATCH
    async with running(workdir, config) as (sidecar, _):
        assert sidecar.runtime is not None
        context = pki.client_context(pki.client)
        rules.write_text("ACCEPT /CN=PARIS\nREVOKE /cn=lowercase\n")
        await eventually(lambda: sidecar.runtime.stats.reloads["refused"] == 1, 10)  # type: ignore[union-attr]
        [refused] = captured_logs.of("reload_refused")
        assert any("sslauth.txt:2" in error for error in refused["errors"])  # type: ignore[union-attr]
        assert sidecar.runtime.snapshot.generation == 1
        assert await tls_exchange(sidecar.port(), context, b"still served") == b"still served"
        # Not retried while nothing changes; the repaired file is picked up.
        await asyncio.sleep(1.0)
        assert sidecar.runtime.stats.reloads == {"refused": 1}
        rules.write_text("REVOKE /CN=PARIS\n")
        await _wait_generation(sidecar, 2)
        assert await tls_exchange(sidecar.port(), context, b"revoked now") is None


async def test_watch_mode_turned_on_by_a_reload_and_off_again(pki: Pki, backend: EchoBackend, workdir: Path) -> None:
    config = admin_config(pki, backend.port)
    async with running(workdir, config) as (sidecar, _):
        assert sidecar.runtime is not None
        assert not sidecar.runtime.watcher.running
        config["reload"] = WATCH
        sidecar.write(config)
        await sidecar.runtime.reload()
        assert sidecar.runtime.watcher.running
        config["reload"] = {"watch": False}
        sidecar.write(config)  # the watcher itself reloads this change, then stops
        await eventually(lambda: not sidecar.runtime.watcher.running, 10)  # type: ignore[union-attr]
        assert sidecar.runtime.snapshot.generation == 3


async def test_a_configmap_swap_of_the_configuration_file_is_picked_up_even_if_the_old_version_stays(
    pki: Pki, backend: EchoBackend, workdir: Path
) -> None:
    """The file given with -c is a symlink through `..data`; the old version's directory is kept."""
    import yaml

    from sidecar.runtime import Runtime
    from sidecar.snapshot import load_snapshot

    volume = workdir / "configmap"
    volume.mkdir()
    config = admin_config(pki, backend.port)
    del config["admin"]
    config["reload"] = WATCH
    for version, sslauth in (("v1", "ACCEPT /CN=PARIS\n"), ("v2", "REVOKE /CN=PARIS\n")):
        (volume / version).mkdir()
        (volume / version / "sslauth.txt").write_text(sslauth)
        config["listeners"][0]["sslauth"] = str(volume / version / "sslauth.txt")
        (volume / version / "sidecar.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (volume / "..data").symlink_to("v1")
    (volume / "sidecar.yaml").symlink_to("..data/sidecar.yaml")
    runtime = Runtime(volume / "sidecar.yaml", load_snapshot(volume / "sidecar.yaml"))
    await runtime.start()
    try:
        port = int(runtime.bound["PESITSSL"].rsplit(":", 1)[1])
        context = pki.client_context(pki.client)
        assert await tls_exchange(port, context, b"v1") == b"v1"
        staged = volume / "..data_tmp"
        staged.symlink_to("v2")
        os.rename(staged, volume / "..data")
        await eventually(lambda: runtime.snapshot.generation == 2, 10)
        assert await tls_exchange(port, context, b"v2") is None
    finally:
        await runtime.stop(drain_timeout=1)


def test_sidecar_run_watches_reloads_and_stops_cleanly(pki: Pki, tmp_path: Path) -> None:
    """The real process: watch mode starts with `run`, a changed file reloads it, SIGTERM ends it (exit 0)."""
    import signal

    import yaml

    from .test_reload import Process, _peer_certificate_sync, _threaded_echo_backend

    with _threaded_echo_backend() as backend_port:
        config = admin_config(pki, backend_port)
        pki.server.write(tmp_path, "server")
        config["pki"]["SRVCERT"] = {"cert": "server.pem", "key": "server.key"}
        config["reload"] = WATCH
        config_path = tmp_path / "sidecar.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        process = Process(config_path)
        try:
            ready = process.wait_for("ready")
            assert process.wait_for("watching")["files"] == 4  # sidecar.yaml, root.pem, server.pem, server.key
            renewed = issue(pki.root, "/C=FR/O=ACME/CN=localhost", server=True, client=False)
            renewed.write(tmp_path, "server")  # in place, as a cron job or an operator would
            assert process.wait_for("reloaded")["generation"] == 2
            context = pki.client_context(pki.client)
            assert _peer_certificate_sync(ready["listeners"]["PESITSSL"], context) == _der(renewed)
            process.popen.send_signal(signal.SIGTERM)
            assert process.popen.wait(timeout=20) == 0
            process.wait_for("stopped")
        finally:
            process.close()
