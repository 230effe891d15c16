"""DNUSER, DNISSUER, KEYEXT, CRL and SSLAUTH on real handshakes: each refused or accepted as expected,
and nothing reaches the backend when refused."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from sidecar.testing.echo import EchoBackend
from sidecar.testing.pki import issue, make_ca, make_crl

from ..conftest import LogCapture
from ..support.env import Pki, Sidecar, base_config, tls_exchange


async def _outcome(workdir: Path, config: dict[str, Any], pki: Pki, cert: Any, stem: str) -> bytes | None:
    async with Sidecar(workdir, config) as sidecar:
        return await tls_exchange(sidecar.port(), pki.client_context(cert, stem=stem))


def _rules(workdir: Path, text: str) -> str:
    (workdir / "sslauth.txt").write_text(text)
    return "sslauth.txt"


@pytest.mark.parametrize(
    ("rules", "accepted", "rule"),
    [
        ("ACCEPT /OU=Paris/O=ACME\nREVOKE\n", True, "sslauth.txt:1"),
        ("* partners\nREVOKE /CN=PARIS\nACCEPT\n", False, "sslauth.txt:2"),
        ("ACCEPT /OU=Lyon/O=ACME revoke\n", False, "sslauth.txt:1"),
        ("ACCEPT /CN=PAR*, /L=New York,\n   /ST=NY /EDATE=20000101\nREVOKE\n", False, "sslauth.txt:1"),
        ("ACCEPT /CN=PAR*, /L=New York, /ST=NY /SDATE=20000101 /USER=PARUSER\nREVOKE\n", True, "sslauth.txt:1"),
    ],
    ids=["accept", "revoke", "final-revoke", "date-window-over", "date-window-open"],
)
async def test_sslauth_rules_decide(
    rules: str, accepted: bool, rule: str, pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    config = base_config(pki, backend.port, sslauth=_rules(workdir, rules))
    answer = await _outcome(workdir, config, pki, pki.client, "sslauth")
    close = captured_logs.of("close")[0]
    if accepted:
        assert answer == b"x"
        assert close["decision"] == "accept"
    else:
        assert answer is None
        assert backend.connections == []
        assert (close["decision"], close["reason"], close["rule"]) == ("reject", "sslauth", rule)
    if "USER=" in rules:
        assert close["user"] == "PARUSER"


async def test_sslauth_revokes_by_serial(
    pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    revoked = issue(pki.root, "/C=FR/O=ACME/CN=REVOKED", serial=0x123456)
    config = base_config(pki, backend.port, sslauth=_rules(workdir, "REVOKE /SN=987654 REVOKE /SN=12:34:56 ACCEPT\n"))
    assert await _outcome(workdir, config, pki, revoked, "serial") is None
    assert captured_logs.of("close")[0]["rule"] == "sslauth.txt:1"
    assert captured_logs.of("close")[0]["serial"] == "123456"


@pytest.mark.parametrize(
    ("key", "pattern", "accepted"),
    [
        ("dnuser", "O=ACME/OU=Paris", True),
        ("dnuser", "C=US, O=Nobody", True),
        ("dnuser", '("O=ACME" AND ! "OU=Paris")', False),
        ("dnuser", "OU=Lyon", False),
        ("dnissuer", "CN=ACME Root CA", True),
        ("dnissuer", "CN=Other Root", False),
    ],
)
async def test_dn_patterns(
    key: str, pattern: str, accepted: bool, pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    config = base_config(pki, backend.port)
    config["profiles"][0][key] = pattern
    answer = await _outcome(workdir, config, pki, pki.client, "dn")
    assert (answer == b"x") is accepted
    if not accepted:
        close = captured_logs.of("close")[0]
        assert close["reason"] == key
        assert close["rule"] == f"profiles[0].{key}"
        assert backend.connections == []


async def test_dnissuer_checks_the_direct_issuer_not_the_root(
    pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    intermediate = make_ca("/C=FR/O=ACME/CN=ACME Partners CA", issuer=pki.root)
    partner = issue(intermediate, "/C=FR/O=ACME/OU=Partners/CN=LYON")
    config = base_config(pki, backend.port)
    config["profiles"][0]["dnissuer"] = ["CN=ACME Partners CA"]
    assert await _outcome(workdir, config, pki, partner, "inter") == b"x"
    assert await _outcome(workdir, config, pki, pki.client, "direct") is None
    assert captured_logs.of("close")[1]["reason"] == "dnissuer"


async def test_depth_limits_the_chain(pki: Pki, backend: EchoBackend, workdir: Path) -> None:
    intermediate = make_ca("/C=FR/O=ACME/CN=ACME Sub CA", issuer=pki.root)
    partner = issue(intermediate, "/C=FR/O=ACME/CN=DEEP")
    config = base_config(pki, backend.port)
    config["profiles"][0]["depth"] = 0
    assert await _outcome(workdir, config, pki, pki.client, "d0") is None  # depth 0: self-signed only
    config["profiles"][0]["depth"] = 1
    assert await _outcome(workdir, config, pki, partner, "d1") == b"x"


async def test_crl_revokes(pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture) -> None:
    revoked = issue(pki.root, "/C=FR/O=ACME/CN=GONE", serial=4242)
    (workdir / "partners.crl").write_bytes(make_crl(pki.root, [4242]))
    config = base_config(pki, backend.port)
    config["profiles"][0]["crl"] = ["partners.crl"]
    assert await _outcome(workdir, config, pki, revoked, "gone") is None
    assert await _outcome(workdir, config, pki, pki.client, "fine") == b"x"
    assert captured_logs.of("close")[0]["reason"] == "revoked"


async def test_keyext_verify_refuses_a_certificate_without_client_auth(
    pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    server_only = issue(pki.root, "/C=FR/O=ACME/CN=SERVERONLY", client=False, server=True)
    config = base_config(pki, backend.port)
    config["profiles"][0]["keyext"] = "verify"
    assert await _outcome(workdir, config, pki, server_only, "ku") is None
    assert captured_logs.of("close")[0]["reason"] == "keyext"
    assert await _outcome(workdir, config, pki, pki.client, "ku-ok") == b"x"


async def test_expired_certificate_refused_under_required(pki: Pki, backend: EchoBackend, workdir: Path) -> None:
    expired = issue(pki.root, "/C=FR/O=ACME/CN=OLD", days=(-30, -1))
    assert await _outcome(workdir, base_config(pki, backend.port), pki, expired, "old") is None
    assert dt.datetime.now(dt.UTC) > expired.cert.not_valid_after_utc
