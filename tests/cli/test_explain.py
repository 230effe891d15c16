"""`sidecar explain` as a real subprocess: exit codes and the checks it prints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from sidecar.testing.pki import issue

from ..support.env import Pki, base_config

SIDECAR = [sys.executable, "-m", "sidecar"]


def _setup(pki: Pki, tmp_path: Path, rules: str | None = None, **profile: object) -> Path:
    config = base_config(pki, 9)
    config["profiles"][0].update(profile)
    if rules is not None:
        (tmp_path / "sslauth.txt").write_text(rules)
        config["listeners"][0]["sslauth"] = "sslauth.txt"
    path = tmp_path / "sidecar.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _explain(config: Path, cert: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SIDECAR, "explain", "-c", str(config), "--listener", "PESITSSL", "--cert", str(cert), *extra],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_accepted_certificate(pki: Pki, tmp_path: Path) -> None:
    config = _setup(pki, tmp_path, "ACCEPT /OU=Paris /O=ACME /USER=PARUSER\nREVOKE\n", dnuser="O=ACME/OU=Paris")
    result = _explain(config, pki.directory / "client.pem")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "subject    /C=US/ST=NY/L=New York/O=ACME/OU=Paris/CN=PARIS" in out
    assert "chain      verified against ROOTCA" in out
    assert "dnuser" in out and "PASS" in out
    assert "[sslauth.txt:1]" in out
    assert "user       PARUSER" in out
    assert "until      " in out and "(client certificate notAfter;" in out
    assert out.strip().endswith("decision   ACCEPT")


def test_refused_by_sslauth_names_the_rule(pki: Pki, tmp_path: Path) -> None:
    config = _setup(pki, tmp_path, "# partners\nACCEPT /OU=Lyon\nREVOKE\n")
    result = _explain(config, pki.directory / "client.pem")
    assert result.returncode == 3
    assert "decision   REJECT (sslauth at sslauth.txt:3)" in result.stdout


def test_date_window_uses_at(pki: Pki, tmp_path: Path) -> None:
    config = _setup(pki, tmp_path, "ACCEPT /CN=PARIS /SDATE=20300101\nREVOKE\n")
    assert _explain(config, pki.directory / "client.pem", "--at", "2026-06-01T12:00").returncode == 3
    # The certificate itself must still be valid at --at, so stay within its validity.
    config = _setup(pki, tmp_path, "ACCEPT /CN=PARIS /EDATE=20991231\nREVOKE\n")
    assert _explain(config, pki.directory / "client.pem").returncode == 0


def test_untrusted_certificate_is_explained(pki: Pki, tmp_path: Path) -> None:
    result = _explain(_setup(pki, tmp_path), pki.directory / "stranger.pem")
    assert result.returncode == 3
    assert "chain      NOT verified" in result.stdout
    assert "decision   REJECT (verify" in result.stdout


def test_cipher_outside_the_list_is_refused(pki: Pki, tmp_path: Path) -> None:
    config = _setup(pki, tmp_path, ciphlist=[4865, 49195])
    result = _explain(config, pki.directory / "client.pem", "--cipher", "TLS_AES_256_GCM_SHA384")
    assert result.returncode == 3
    assert "ciphlist" in result.stdout and "4866" in result.stdout


def test_bad_input_exits_2(pki: Pki, tmp_path: Path) -> None:
    config = _setup(pki, tmp_path)
    assert _explain(config, tmp_path / "missing.pem").returncode == 2
    assert _explain(config, pki.directory / "client.pem", "--at", "yesterday").returncode == 2
    assert _explain(config, pki.directory / "client.pem", "--cipher", "1234").returncode == 2
    other = issue(pki.root, "/CN=x")
    other.write(tmp_path, "other")
    bad = subprocess.run([*SIDECAR, "explain", "-c", str(config), "--listener", "NOPE", "--cert",
                          str(tmp_path / "other.pem")], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode == 2 and "unknown listener" in bad.stderr


def test_partner_checks_are_explained(pki: Pki, tmp_path: Path) -> None:
    config = base_config(pki, 9, identify="pesit")
    config["profiles"].append({"id": "SSLPARIS", "direct": "server", "dnuser": "OU=Lyon"})
    config["partners"] = [{"id": "PARIS", "nrpart": "PARIS", "ssl": "SSLPARIS"}, {"id": "NICE", "ssl": "GONE"}]
    path = tmp_path / "sidecar.yaml"
    path.write_text(yaml.safe_dump(config))
    refused = _explain(path, pki.directory / "client.pem", "--partner", "PARIS")
    assert refused.returncode == 3
    assert "partner    PARIS (partners[0])" in refused.stdout
    assert "partner-dnuser" in refused.stdout
    assert "CFTT48E _ Server Session rejected reason=DNUSER <PART=PARIS SSL=SSLPARIS>" in refused.stdout
    assert "REJECT (dnuser at profiles[1].dnuser)" in refused.stdout
    warned = _explain(path, pki.directory / "client.pem", "--partner", "NICE")
    assert warned.returncode == 0
    assert (
        "CFTT47W _ No SSL security profile for additional checks <PART=NICE SSLID=GONE DIRECT=SERVER>" in warned.stdout
    )
    unknown = _explain(path, pki.directory / "client.pem", "--partner", "NOBODY")
    assert unknown.returncode == 3 and "unknown_partner" in unknown.stdout


def test_encryption_class_is_explained(pki: Pki, tmp_path: Path) -> None:
    config = base_config(pki, 9, plaintext="allow")
    config["user_classes"] = [{"name": "Partners", "user": "PAR*"}]
    config["encryption"] = [{"class": "Partners", "encryption": "required"}]
    path = tmp_path / "sidecar.yaml"
    path.write_text(yaml.safe_dump(config))
    tls = _explain(path, pki.directory / "client.pem")
    assert tls.returncode == 0 and "class Partners; required (encryption[0])" in tls.stdout
    # A plaintext session has no certificate: without a partner it has no user, hence no class.
    plain = _explain(path, pki.directory / "client.pem", "--plaintext")
    assert plain.returncode == 0 and "user - -> class -; optional" in plain.stdout
    config["listeners"][0]["identify"] = "pesit"
    config["partners"] = [{"id": "PARIS"}]
    path.write_text(yaml.safe_dump(config))
    plain = _explain(path, pki.directory / "client.pem", "--plaintext", "--partner", "PARIS")
    assert plain.returncode == 3 and "encryption_required" in plain.stdout
    assert "pesit      RCONNECT with diagnostic 304" in plain.stdout


def test_pesit_listener_without_partner_is_not_an_acceptance(pki: Pki, tmp_path: Path) -> None:
    config = base_config(pki, 9, identify="pesit")
    config["partners"] = [{"id": "PARIS", "nrpassw": "secret"}]
    path = tmp_path / "sidecar.yaml"
    path.write_text(yaml.safe_dump(config))
    pending = _explain(path, pki.directory / "client.pem")
    assert pending.returncode == 4, pending.stdout
    assert "partner    not evaluated" in pending.stdout and "NOT EVALUATED" in pending.stdout
    assert "ACCEPT" not in pending.stdout
    # The password is checked as the proxy checks PI 5: missing or wrong -> RCONNECT 301.
    no_password = _explain(path, pki.directory / "client.pem", "--partner", "PARIS")
    assert no_password.returncode == 3 and "bad_password" in no_password.stdout
    assert "CFTH22E NPART=PARIS rejected DIAGI=403" in no_password.stdout
    assert "pesit      RCONNECT with diagnostic 301" in no_password.stdout
    right = _explain(path, pki.directory / "client.pem", "--partner", "PARIS", "--password", "secret")
    assert right.returncode == 0 and right.stdout.strip().endswith("decision   ACCEPT")
    unknown = _explain(path, pki.directory / "client.pem", "--partner", "NOBODY")
    assert unknown.returncode == 3 and "CFTT15E NPART Not found <NPART=NOBODY>" in unknown.stdout


def test_partner_option_needs_a_pesit_listener(pki: Pki, tmp_path: Path) -> None:
    result = _explain(_setup(pki, tmp_path), pki.directory / "client.pem", "--partner", "PARIS")
    assert result.returncode == 2 and "identify: none" in result.stderr
