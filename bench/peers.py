"""The three peers — sidecar, HAProxy, stunnel — configured alike, started and stopped by PID.

Same for every peer: the certificate and key (ECDSA P-256), the trusted root, mutual TLS required
(verify the client's chain, refuse a client without a certificate), TLS 1.2 and 1.3 allowed, the
same plaintext backend, no per-connection log line, no connection limit below 12,000.

Session tickets ("tickets off" rows), as far as each peer can switch them off:
* sidecar: `session_tickets: false` (its default) = SSL_OP_NO_TICKET + session cache off.
* HAProxy: `no-tls-tickets` on the bind line + `tune.ssl.cachesize 0` (no session cache).
* stunnel: `options = NO_TICKET` + `sessionResume = no`.
What each peer then really sends is *measured* (`tickets_probe`: NewSessionTicket messages seen by
a stdlib client) and recorded with the results. OPENSSL_CONF `NumTickets = 0` is not used: none
of the peers is configured through it, so the rows compare each peer's own switch.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import procstat

REPO = Path(__file__).resolve().parent.parent


class SidecarSource:
    """Where the measured sidecar is imported from: the working tree, or an export of one commit."""

    path: Path = REPO
    revision: str = "worktree"


def export_sidecar(revision: str, destination: Path) -> None:
    """`git archive <revision> -- sidecar` into `destination` (the repository itself is not touched).

    Other engineers edit the working tree while the benchmark runs: measuring a commit keeps every
    repetition on the same code. `revision == "worktree"` measures the working tree as it is.
    """
    if revision == "worktree":
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--", "sidecar")
        SidecarSource.path, SidecarSource.revision = (
            REPO,
            f"worktree on {head}{' (uncommitted changes)' if dirty else ''}",
        )
        return
    import io
    import tarfile

    commit = _git("rev-parse", "--verify", f"{revision}^{{commit}}")
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", commit, "--", "sidecar"], capture_output=True, check=True
    ).stdout
    destination.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(destination, filter="data")
    SidecarSource.path, SidecarSource.revision = destination, f"commit {commit[:10]}"


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False).stdout.strip()


MAX_CONNECTIONS = 12000
ALL_CPUS = set(range(os.cpu_count() or 1))
# Each proxied connection holds two descriptors (client + backend): a single-process proxy can hold
# at most (RLIMIT_NOFILE - a few) / 2 connections. The hard limit cannot be raised without
# CAP_SYS_RESOURCE (not granted in some containers), so HAProxy's maxconn is derived from it.
FD_HARD_LIMIT = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
HAPROXY_MAXCONN = min(MAX_CONNECTIONS * 3, (FD_HARD_LIMIT - 40) // 2) if FD_HARD_LIMIT > 0 else MAX_CONNECTIONS * 3

# The full-policy scenario: `identify: pesit` with a partner table (CFTPART) of PARTNERS entries, the
# client's PARIS among them; the load client sends a framed PeSIT CONNECT as its first message and
# the backend echoes it. "none" measures the certificate checks alone.
POLICY_IDENTIFY = "pesit"
SSLAUTH_STATEMENTS = 1000
PARTNERS = 1000


# "default": each peer as shipped (sidecar: `session_tickets: false` is its default).
# "native-off": each peer's own switch (see the module docstring); probed, not benchmarked.
# "off": the own switch plus OPENSSL_CONF `NumTickets = 0` (system_default), which is what it
#        takes for HAProxy 2.6 and sidecar to send no TLS 1.3 ticket at all (measured by the probe).
TICKET_MODES = ("default", "native-off", "off")


def write_openssl_conf(directory: Path) -> Path:
    path = directory / "openssl-no-tickets.cnf"
    path.write_text(
        "openssl_conf = openssl_init\n"
        "[openssl_init]\n"
        "ssl_conf = ssl_sect\n"
        "[ssl_sect]\n"
        "system_default = system_default_sect\n"
        "[system_default_sect]\n"
        "NumTickets = 0\n"
    )
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _preexec(cpus: set[int] | None) -> Any:
    def setup() -> None:
        # Always set: children inherit the orchestrator's own pinning (it sits on the load CPU).
        os.sched_setaffinity(0, cpus or ALL_CPUS)
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        want = 65536 if hard == resource.RLIM_INFINITY else max(hard, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
        except (ValueError, OSError):  # no CAP_SYS_RESOURCE: the hard limit is the ceiling
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    return setup


def stop_pid(pid: int, process: subprocess.Popen[bytes] | None = None, grace: float = 5.0) -> None:
    """SIGTERM the process and every descendant (each by its PID), SIGKILL what is left after `grace`."""
    pids = procstat.tree(pid)
    for each in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(each, signal.SIGTERM)
    deadline = time.monotonic() + grace
    if process is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
    for each in pids:
        while time.monotonic() < deadline and os.path.exists(f"/proc/{each}") and _alive(each):
            time.sleep(0.05)
        if _alive(each):
            with contextlib.suppress(ProcessLookupError):
                os.kill(each, signal.SIGKILL)
    if process is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=2)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with status {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"not listening on {port} after {timeout}s")


class Peer:
    name = "peer"

    def __init__(self, workdir: Path, pki: Path, backend_port: int, *, tickets: str, policy: bool = False) -> None:
        assert tickets in TICKET_MODES, tickets
        self.workdir = workdir
        self.pki = pki
        self.backend_port = backend_port
        self.tickets = tickets
        self.policy = policy
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{self.label}.log"

    @property
    def label(self) -> str:
        return f"{self.name}{'-policy' if self.policy else ''}-{self.tickets}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def command(self) -> list[str]:
        raise NotImplementedError

    def write_config(self) -> None:
        raise NotImplementedError

    def cwd(self) -> Path:
        return REPO

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("OPENSSL_CONF", None)
        if self.tickets == "off":
            env["OPENSSL_CONF"] = str(write_openssl_conf(self.workdir))
        return env

    @property
    def native_off(self) -> bool:
        """The peer's own "no session tickets" switch is on."""
        return self.tickets in ("native-off", "off")

    def start(self, cpus: set[int] | None) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.write_config()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.cwd(),
                env=self.env(),
                preexec_fn=_preexec(cpus),
            )
        try:
            wait_port(self.port, self.process)
        except RuntimeError as exc:
            self.stop()
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.label}: {exc}\n{tail}") from None

    def stop(self) -> None:
        if self.process is not None:
            stop_pid(self.process.pid, self.process)
            self.process = None

    @staticmethod
    def version() -> str:
        return ""


class Sidecar(Peer):
    name = "sidecar"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "sidecar", "run", "-c", str(self.workdir / f"{self.label}.yaml")]

    def cwd(self) -> Path:
        return SidecarSource.path

    def env(self) -> dict[str, str]:
        env = super().env()
        env["PYTHONPATH"] = str(SidecarSource.path)
        return env

    def config(self) -> dict[str, Any]:
        profile: dict[str, Any] = {
            "id": "SSLSRV",
            "direct": "server",
            "usercid": "SRVCERT",
            "rootcid": ["ROOTCA"],
            "verify": "required",
            "version": {"min": "tls1.2", "max": "tls1.3"},
            # sidecar's default is already `false`; "default" leaves the key out.
            **({"session_tickets": False} if self.native_off else {}),
        }
        listener: dict[str, Any] = {
            "id": "PESITSSL",
            "listen": f"127.0.0.1:{self.port}",
            "ssl": "SSLSRV",
            "backend": f"127.0.0.1:{self.backend_port}",
        }
        config: dict[str, Any] = {
            "pki": {
                "ROOTCA": {"cert": str(self.pki / "root.pem")},
                "SRVCERT": {"cert": str(self.pki / "server.pem"), "key": str(self.pki / "server.key")},
            },
            "profiles": [profile],
            "listeners": [listener],
            "limits": {"max_connections": MAX_CONNECTIONS, "handshake_timeout": 10, "idle_timeout": 600},
            # `ready` and the per-connection `close` lines are INFO: no per-connection log line, as
            # for the other peers (readiness is checked by connecting instead).
            "logging": {"format": "json", "level": "warning"},
        }
        if self.policy:
            # DNUSER: nine alternatives that miss, then the one that matches (evaluated in order).
            profile["dnuser"] = [f'("O=ACME" AND "OU=Branch{i:02d}")' for i in range(9)] + [
                '("O=ACME" AND "OU=Paris" AND ! "CN=REVOKED")'
            ]
            profile["dnissuer"] = ["CN=Other Root", "O=ACME/CN=ACME Root CA"]
            listener["sslauth"] = str(write_sslauth(self.workdir / "sslauth.txt"))
            if POLICY_IDENTIFY == "pesit":
                listener["identify"] = "pesit"
                config["partners"] = [{"id": f"PART{i:04d}"} for i in range(PARTNERS - 1)] + [
                    {"id": "PARIS", "nrpart": "PARIS"}
                ]
        return config

    def write_config(self) -> None:
        import yaml

        (self.workdir / f"{self.label}.yaml").write_text(yaml.safe_dump(self.config(), sort_keys=False))

    @staticmethod
    def version() -> str:
        import OpenSSL
        from OpenSSL import SSL

        openssl = SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()
        return (
            f"sidecar {SidecarSource.revision} (Python {sys.version.split()[0]}, "
            f"pyOpenSSL {OpenSSL.__version__}, {openssl}, uvloop)"
        )


def write_sslauth(path: Path, statements: int = SSLAUTH_STATEMENTS) -> Path:
    """`statements` statements; the client (CN=PARIS, OU=Paris, O=ACME) is matched by the one before last.

    First hit decides, so every connection walks the whole list: 998 ACCEPTs for other partners,
    the client's ACCEPT, then a catch-all REVOKE.
    """
    lines = ["* bench: SSLAUTH file, client matched near the end"]
    for i in range(statements - 2):
        if i % 10 == 9:
            lines.append(f"REVOKE /SN={0x100000 + i:x}")
        else:
            lines.append(f"ACCEPT /CN=PARTNER{i:04d}/OU=Branch{i % 50:02d}/O=ACME /USER=p{i:04d}")
    lines.append("ACCEPT /CN=PARIS/OU=Paris/O=ACME /USER=paris")
    lines.append("REVOKE /CN=*")
    path.write_text("\n".join(lines) + "\n")
    return path


class HAProxy(Peer):
    name = "haproxy"

    def command(self) -> list[str]:
        return ["haproxy", "-f", str(self.workdir / f"{self.label}.cfg"), "-db"]

    def write_config(self) -> None:
        tickets = " no-tls-tickets" if self.native_off else ""
        cache = "    tune.ssl.cachesize 0\n" if self.native_off else ""
        text = (
            "global\n"
            f"    maxconn {HAPROXY_MAXCONN}\n"
            f"{cache}"
            "    ssl-server-verify none\n"
            "defaults\n"
            "    mode tcp\n"
            "    timeout connect 5s\n"
            "    timeout client 600s\n"
            "    timeout server 600s\n"
            "    timeout client-fin 10s\n"
            "frontend bench\n"
            f"    maxconn {HAPROXY_MAXCONN}\n"
            f"    bind 127.0.0.1:{self.port} ssl crt {self.pki / 'server-bundle.pem'} "
            f"ca-file {self.pki / 'root.pem'} verify required ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.3{tickets}\n"
            "    default_backend plain\n"
            "backend plain\n"
            f"    server s1 127.0.0.1:{self.backend_port} maxconn {HAPROXY_MAXCONN}\n"
        )
        (self.workdir / f"{self.label}.cfg").write_text(text)

    @staticmethod
    def version() -> str:
        out = subprocess.run(["haproxy", "-vv"], capture_output=True, text=True, check=False).stdout
        first = out.splitlines()[0] if out else "haproxy ?"
        running = next((line.strip() for line in out.splitlines() if "Running on OpenSSL" in line), "")
        return f"{first} ({running})" if running else first


class Stunnel(Peer):
    name = "stunnel"

    def command(self) -> list[str]:
        return ["stunnel", str(self.workdir / f"{self.label}.conf")]

    def write_config(self) -> None:
        tickets = "options = NO_TICKET\nsessionResume = no\n" if self.native_off else ""
        text = (
            "foreground = yes\n"
            "pid =\n"
            "debug = 4\n"  # warning: no per-connection notice lines
            f"output = {self.log_path}\n"
            "[bench]\n"
            f"accept = 127.0.0.1:{self.port}\n"
            f"connect = 127.0.0.1:{self.backend_port}\n"
            f"cert = {self.pki / 'server.pem'}\n"
            f"key = {self.pki / 'server.key'}\n"
            f"CAfile = {self.pki / 'root.pem'}\n"
            "verifyChain = yes\n"
            "requireCert = yes\n"
            "sslVersionMin = TLSv1.2\n"
            "sslVersionMax = TLSv1.3\n"
            "TIMEOUTidle = 600\n"
            "socket = l:TCP_NODELAY=1\n"
            "socket = r:TCP_NODELAY=1\n"
            f"{tickets}"
        )
        (self.workdir / f"{self.label}.conf").write_text(text)

    @staticmethod
    def version() -> str:
        out = subprocess.run(["stunnel", "-version"], capture_output=True, text=True, check=False)
        lines = (out.stdout + out.stderr).splitlines()
        wanted = [line.strip() for line in lines if line.startswith("stunnel ") or "OpenSSL" in line]
        return "; ".join(wanted[:3])


class Bare(Peer):
    """The floor: a bare relay on sidecar's own TLS engine (bench/bare.py), no policy, no log.

    Like `sidecar run`, it never sends a session ticket: OPENSSL_CONF `NumTickets = 0` in every
    mode, OP_NO_TICKET and no session cache in its context. The "policy" configuration changes
    nothing in it (it has no policy); only the load's first message differs, as for sidecar.
    """

    name = "bare"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "bench.bare", "--port", str(self.port), "--backend-port",
                str(self.backend_port), "--pki", str(self.pki)]  # fmt: skip

    def write_config(self) -> None:
        pass

    def env(self) -> dict[str, str]:
        env = super().env()
        env["OPENSSL_CONF"] = str(write_openssl_conf(self.workdir))
        env["PYTHONPATH"] = str(REPO)
        return env

    @staticmethod
    def version() -> str:
        import OpenSSL
        from OpenSSL import SSL

        openssl = SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()
        return f"bench.bare (Python {sys.version.split()[0]}, pyOpenSSL {OpenSSL.__version__}, {openssl}, uvloop)"


PEERS: dict[str, type[Peer]] = {"haproxy": HAProxy, "sidecar": Sidecar, "stunnel": Stunnel, "bare": Bare}


def ensure_installed() -> dict[str, str]:
    """Install stunnel4 and haproxy from Debian if missing (root only); return their paths."""
    missing = [pkg for pkg, binary in (("stunnel4", "stunnel"), ("haproxy", "haproxy")) if not shutil.which(binary)]
    if missing:
        if os.geteuid() != 0:
            raise RuntimeError(f"missing {', '.join(missing)}: run as root or `apt-get install -y {' '.join(missing)}`")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True, env=env, timeout=600)
    return {binary: shutil.which(binary) or "?" for binary in ("stunnel", "haproxy")}


def tickets_probe(port: int, pki: Path, tls: str) -> dict[str, Any]:
    """NewSessionTicket messages a stdlib (system OpenSSL) client receives on one full handshake + echo."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(pki / "root.pem"))
    ctx.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
    version = ssl.TLSVersion.TLSv1_3 if tls == "1.3" else ssl.TLSVersion.TLSv1_2
    ctx.minimum_version = ctx.maximum_version = version
    seen = {"tickets": 0}

    def on_message(conn: Any, direction: str, _v: Any, content_type: Any, msg_type: Any, _d: Any) -> None:
        if direction == "read" and msg_type == ssl._TLSMessageType.NEWSESSION_TICKET:  # type: ignore[attr-defined]
            seen["tickets"] += 1

    ctx._msg_callback = on_message  # type: ignore[attr-defined]
    result: dict[str, Any] = {}
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost") as tls_sock,
        ):
            tls_sock.sendall(b"x")
            data = tls_sock.recv(16)
            time.sleep(0.05)
            tls_sock.setblocking(False)
            with contextlib.suppress(ssl.SSLWantReadError, BlockingIOError):
                tls_sock.recv(16)  # late tickets
            result = {
                "echo_ok": data == b"x",
                "version": tls_sock.version(),
                "cipher": tls_sock.cipher()[0] if tls_sock.cipher() else None,
                "tickets": seen["tickets"],
            }
    except (OSError, ssl.SSLError) as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"}
    return result


if __name__ == "__main__":  # tiny manual check: python -m bench.peers haproxy
    print(json.dumps({name: cls.version() for name, cls in PEERS.items()}, indent=1))
