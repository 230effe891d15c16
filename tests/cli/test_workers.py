"""`workers: 2`: a supervisor and two worker processes on shared sockets, as real processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..support.env import Pki, base_config

SIDECAR = [sys.executable, "-m", "sidecar"]


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


class Fleet:
    """`sidecar run` with workers: 2; its log lines read from a file (a pipe could fill up and block it)."""

    def __init__(self, directory: Path, config: dict[str, Any], env: dict[str, str] | None = None) -> None:
        self.path = directory / "sidecar.yaml"
        self.log = directory / "sidecar.log"
        self.write(config)
        with self.log.open("w") as log:
            self.process = subprocess.Popen([*SIDECAR, "run", "-c", str(self.path)], stderr=log, env=env)
        try:
            self.ready = self.wait_for(lambda e: e.get("event") == "ready")
        except AssertionError:
            self.stop()  # its workers follow it (they see their supervisor go)
            raise
        self.port = int(self.ready["listeners"]["PESITSSL"].rsplit(":", 1)[1])
        self.admin = f"http://{self.ready['admin']}"

    def write(self, config: dict[str, Any]) -> None:
        self.path.write_text(yaml.safe_dump(config, sort_keys=False))

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]

    def wait_for(self, match: Any, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events():
                if match(event):
                    return event
            if self.process.poll() is not None:
                raise AssertionError(f"sidecar exited {self.process.returncode}:\n{self.log.read_text()}")
            time.sleep(0.05)
        raise AssertionError(f"no such line:\n{self.log.read_text()}")

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.admin + path, timeout=10) as response:
            body = response.read().decode()
        return json.loads(body) if path != "/metrics" else body

    def post(self, path: str) -> tuple[int, Any]:
        request = urllib.request.Request(self.admin + path, data=b"", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.loads(exc.read())

    def worker_pids(self) -> list[int]:
        """The supervisor's live children (zombies excluded), from /proc."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == self.process.pid and fields[0] != "Z":
                pids.append(int(entry.name))
        return sorted(pids)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=40)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def fleet_config(pki: Pki, echo_port: int) -> dict[str, Any]:
    config = base_config(pki, echo_port)
    config["workers"] = 2
    config["admin"] = {"listen": "127.0.0.1:0"}
    config["limits"]["drain_timeout"] = 10
    config["logging"] = {"format": "json", "level": "info"}
    return config


def _exchange(port: int, context: ssl.SSLContext, payload: bytes = b"ping") -> bytes:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(payload)
        return tls.recv(len(payload))


def test_connections_spread_over_both_workers_and_the_admin_sums_them(
    pki: Pki, fleet_config: dict[str, Any], tmp_path: Path
) -> None:
    fleet = Fleet(tmp_path, fleet_config)
    context = pki.client_context(pki.client)
    held: list[ssl.SSLSocket] = []
    try:
        assert fleet.ready["workers"] == 2
        assert len(fleet.worker_pids()) == 2
        for _ in range(40):  # held open, so that /connections lists them all
            tls = context.wrap_socket(socket.create_connection(("127.0.0.1", fleet.port), timeout=10),
                                      server_hostname="localhost")  # fmt: skip
            tls.sendall(b"x")
            assert tls.recv(1) == b"x"
            held.append(tls)
        listed = fleet.get("/connections")
        assert len(listed) == 40
        by_worker = {index: sum(1 for conn in listed if conn["worker"] == index) for index in (0, 1)}
        assert by_worker[0] > 0 and by_worker[1] > 0, by_worker
        stats = fleet.get("/stats")
        assert stats["listeners"]["PESITSSL"]["accepted"] == 40
        assert stats["listeners"]["PESITSSL"]["active"] == 40
        assert stats["workers"]["configured"] == 2 and stats["workers"]["serving"] == 2
        assert sorted(p["pid"] for p in stats["workers"]["processes"]) == fleet.worker_pids()
        metrics = fleet.get("/metrics")
        assert 'sidecar_connections_accepted_total{listener="PESITSSL"} 40.0' in metrics
        assert 'sidecar_workers{state="serving"} 2.0' in metrics
        assert "sidecar_config_generation 1.0" in metrics
        assert "sidecar_process_resident_memory_bytes" in metrics  # supervisor and workers, summed
    finally:
        for tls in held:
            tls.close()
        assert fleet.stop() == 0
    closes = [event for event in fleet.events() if event.get("event") == "close"]
    assert len(closes) == 40 and {event["worker"] for event in closes} == {0, 1}


def test_a_killed_worker_is_replaced_while_the_other_serves(
    pki: Pki, fleet_config: dict[str, Any], tmp_path: Path
) -> None:
    fleet = Fleet(tmp_path, fleet_config)
    context = pki.client_context(pki.client)
    try:
        victim = fleet.worker_pids()[0]
        served = 0
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        # Every connection from the kill on is served: by the other worker, then by both again.
        while time.monotonic() - killed_at < 4:
            assert _exchange(fleet.port, context) == b"ping"
            served += 1
        fleet.wait_for(lambda e: e.get("event") == "worker_started", timeout=10)
        replaced = fleet.worker_pids()
        assert len(replaced) == 2 and victim not in replaced
        assert served > 10
        exited = fleet.wait_for(lambda e: e.get("event") == "worker_exited")
        assert exited["exit_status"] == -signal.SIGKILL
        assert fleet.get("/stats")["workers"]["restarts"] == 1
    finally:
        assert fleet.stop() == 0


def test_reload_reaches_every_worker_or_none(pki: Pki, fleet_config: dict[str, Any], tmp_path: Path) -> None:
    fleet = Fleet(tmp_path, fleet_config)
    context = pki.client_context(pki.client)
    try:
        (tmp_path / "rules.txt").write_text("REVOKE /CN=PARIS\n")
        fleet_config["listeners"][0]["sslauth"] = "rules.txt"
        fleet_config["pki_warn_days"] = 3000  # every certificate now "ends soon": warnings
        fleet.write(fleet_config)
        assert fleet.post("/reload") == (200, {"generation": 2})
        reloaded = {e["worker"] for e in fleet.events() if e.get("event") == "reloaded" and "worker" in e}
        assert reloaded == {0, 1}
        # The new configuration's warnings are logged once, by the supervisor, not once per worker.
        warnings = [e for e in fleet.events() if e.get("event") == "config_warning"]
        assert warnings and all("worker" not in e for e in warnings)
        assert len(warnings) == len({e["warning"] for e in warnings})
        refused = 0
        for _ in range(20):
            try:
                refused += _exchange(fleet.port, context) == b""
            except (ssl.SSLError, ConnectionError):
                refused += 1
        assert refused == 20  # whichever worker took it
        # A bad configuration reaches no worker.
        (tmp_path / "rules.txt").write_text("ACCEPT /cn=lowercase\n")
        status, body = fleet.post("/reload")
        assert status == 422 and any("rules.txt:1" in error for error in body["errors"])
        # A new listening socket that cannot be bound: refused before any worker hears of it.
        (tmp_path / "rules.txt").write_text("REVOKE /CN=PARIS\n")
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            fleet_config["listeners"].append({**fleet_config["listeners"][0], "id": "MORE",
                                              "listen": f"127.0.0.1:{port}"})  # fmt: skip
            fleet.write(fleet_config)
            status, body = fleet.post("/reload")
        assert status == 422
        assert body["errors"][0].startswith(f"listeners[1].listen: cannot bind 127.0.0.1:{port}:")
        stats = fleet.get("/stats")
        assert stats["generation"] == 2 and stats["reloads"] == {"ok": 1, "refused": 2}
    finally:
        assert fleet.stop() == 0


def test_sigterm_drains_every_worker(pki: Pki, fleet_config: dict[str, Any], tmp_path: Path) -> None:
    fleet = Fleet(tmp_path, fleet_config)
    context = pki.client_context(pki.client)
    held = []
    for _ in range(6):
        tls = context.wrap_socket(socket.create_connection(("127.0.0.1", fleet.port), timeout=10),
                                  server_hostname="localhost")  # fmt: skip
        tls.sendall(b"a")
        assert tls.recv(1) == b"a"
        held.append(tls)
    fleet.process.send_signal(signal.SIGTERM)
    fleet.wait_for(lambda e: e.get("event") == "draining" and "worker" not in e)
    time.sleep(0.5)
    for tls in held:  # live sessions go on during the drain
        tls.sendall(b"b")
        assert tls.recv(1) == b"b"
        tls.close()
    assert fleet.process.wait(timeout=30) == 0
    stopped = {e.get("worker") for e in fleet.events() if e.get("event") == "stopped"}
    assert stopped == {0, 1, None}
    closes = [e for e in fleet.events() if e.get("event") == "close"]
    assert len(closes) == 6 and all(e["reason"] == "eof" for e in closes)


def test_a_reload_adds_moves_and_removes_listening_sockets(
    pki: Pki, fleet_config: dict[str, Any], tmp_path: Path
) -> None:
    fleet = Fleet(tmp_path, fleet_config)
    context = pki.client_context(pki.client)
    try:
        # Added: bound by the supervisor, handed over to both workers, served by both.
        fleet_config["listeners"].append({**fleet_config["listeners"][0], "id": "MORE"})
        fleet.write(fleet_config)
        assert fleet.post("/reload") == (200, {"generation": 2})
        reloaded = fleet.wait_for(lambda e: e.get("event") == "reloaded" and "worker" not in e)
        more = int(reloaded["listeners"]["MORE"].rsplit(":", 1)[1])
        for _ in range(30):
            assert _exchange(more, context) == b"ping"
        served_by = {e["worker"] for e in fleet.events() if e.get("event") == "close" and e["listener"] == "MORE"}
        assert served_by == {0, 1}
        # Moved: the new address serves, the old one is closed once every worker has switched.
        with socket.socket() as probe:  # a free port to move to ("127.0.0.1:0" again would be no move)
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        fleet_config["listeners"][1]["listen"] = f"127.0.0.1:{free}"
        fleet.write(fleet_config)
        assert fleet.post("/reload") == (200, {"generation": 3})
        assert _exchange(free, context) == b"ping"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", more), timeout=5).close()
        # Removed: nothing listens there any more; the first listener still serves.
        del fleet_config["listeners"][1]
        fleet.write(fleet_config)
        assert fleet.post("/reload") == (200, {"generation": 4})
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", free), timeout=5).close()
        assert _exchange(fleet.port, context) == b"ping"
    finally:
        assert fleet.stop() == 0


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_workers_leave_when_the_supervisor_is_killed(pki: Pki, fleet_config: dict[str, Any], tmp_path: Path) -> None:
    # A TMPDIR too long for Unix socket addresses: the workers' private sockets go elsewhere.
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    fleet = Fleet(tmp_path, fleet_config, env={**os.environ, "TMPDIR": str(deep)})
    workers = fleet.worker_pids()
    assert len(workers) == 2
    fleet.process.kill()
    fleet.process.wait()
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)
    gone = [e for e in fleet.events() if e.get("event") == "supervisor_gone"]
    assert {e["worker"] for e in gone} == {0, 1}


def test_auto_runs_one_worker_per_usable_cpu_with_outbound_entries_too(tmp_path: Path) -> None:
    from sidecar.workers import usable_cpus

    from .test_packaging import EXAMPLE, write_demo_pki

    if usable_cpus() < 2:
        pytest.skip("auto means one process here: nothing to supervise")
    write_demo_pki(tmp_path / "demo-pki")
    config = yaml.safe_load(EXAMPLE.read_text())
    config["listeners"][0]["listen"] = "127.0.0.1:0"
    for entry in config["outbound"]:
        entry["listen"] = "127.0.0.1:0"
    config["admin"]["listen"] = "127.0.0.1:0"
    config["workers"] = "auto"
    config["limits"]["drain_timeout"] = 5
    fleet = Fleet(tmp_path, config)  # next to demo-pki/, which the example names relatively
    try:
        assert fleet.ready["workers"] == usable_cpus()
        assert len(fleet.worker_pids()) == usable_cpus()
        for address in fleet.ready["outbound"].values():  # outbound entries are shared sockets too
            host, port = address.rsplit(":", 1)
            socket.create_connection((host, int(port)), timeout=5).close()
    finally:
        assert fleet.stop() == 0


def test_a_taken_port_ends_the_supervisor_with_status_1(fleet_config: dict[str, Any], tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        fleet_config["listeners"][0]["listen"] = f"127.0.0.1:{taken.getsockname()[1]}"
        path = tmp_path / "sidecar.yaml"
        path.write_text(yaml.safe_dump(fleet_config))
        result = subprocess.run([*SIDECAR, "run", "-c", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert [e["event"] for e in events if e["event"] in ("start_failed", "ready")] == ["start_failed"]


def test_connections_waiting_in_the_accept_queue_survive_a_killed_worker(
    pki: Pki, fleet_config: dict[str, Any], tmp_path: Path
) -> None:
    fleet = Fleet(tmp_path, fleet_config)
    context = pki.client_context(pki.client)
    victim, survivor = fleet.worker_pids()
    results: list[bytes | Exception] = []

    def client() -> None:
        try:
            results.append(_exchange(fleet.port, context))
        except (OSError, ssl.SSLError) as exc:
            results.append(exc)

    try:
        for pid in (victim, survivor):  # nobody accepts: the connections wait in the shared queue
            os.kill(pid, signal.SIGSTOP)
        clients = [threading.Thread(target=client) for _ in range(10)]
        for thread in clients:
            thread.start()
        time.sleep(0.5)
        os.kill(victim, signal.SIGKILL)
        os.kill(survivor, signal.SIGCONT)
        for thread in clients:
            thread.join(30)
        assert results == [b"ping"] * 10
    finally:
        for pid in (victim, survivor):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        assert fleet.stop() == 0


def test_watch_mode_reloads_every_worker_from_the_supervisor(
    pki: Pki, fleet_config: dict[str, Any], tmp_path: Path
) -> None:
    (tmp_path / "rules.txt").write_text("ACCEPT /CN=PARIS\n")
    fleet_config["listeners"][0]["sslauth"] = "rules.txt"
    fleet_config["reload"] = {"watch": True, "interval": 0.3}
    fleet = Fleet(tmp_path, fleet_config)
    try:
        (tmp_path / "rules.txt").write_text("REVOKE /CN=PARIS\n")
        fleet.wait_for(lambda e: e.get("event") == "reloaded" and "worker" not in e, timeout=20)
        events = fleet.events()
        assert {e["worker"] for e in events if e.get("event") == "reloaded" and "worker" in e} == {0, 1}
        assert not [e for e in events if e.get("event") in ("reload_refused", "watching") and "worker" in e]
        assert fleet.get("/stats")["generation"] == 2
    finally:
        assert fleet.stop() == 0
