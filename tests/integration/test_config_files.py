"""What a configuration names, read for real from disk: certificates, keys, CRLs, rule files, lifetimes.

No sockets: `load_snapshot` on files written here, as `check`, `run` and reload call it.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sidecar.errors import MAX_LINE, ConfigError
from sidecar.snapshot import Snapshot, load_snapshot
from sidecar.testing.pki import Issued, issue, make_ca, name

from ..support.env import Pki, base_config

NOW = dt.datetime.now(dt.UTC)


def _load(workdir: Path, config: dict[str, Any]) -> Snapshot:
    path = workdir / "sidecar.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return load_snapshot(path)


def _errors(workdir: Path, config: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        _load(workdir, config)
    lines = [str(issue) for issue in caught.value.issues]
    assert all(len(line) <= MAX_LINE for line in lines)
    assert not any("Errno" in line or "InvalidData" in line or "ParseError" in line for line in lines), lines
    return lines


def _one(lines: list[str], start: str) -> str:
    found = [line for line in lines if line.startswith(start)]
    assert len(found) == 1, (start, lines)
    return found[0]


# ---- certificates and keys in operator words -------------------------------------------------


def test_a_missing_file_says_so_without_errno(pki: Pki, workdir: Path) -> None:
    config = base_config(pki, 9)
    config["pki"]["SRVCERT"]["cert"] = str(workdir / "nowhere.pem")
    assert "nowhere.pem: no such file (line 5)" in _one(_errors(workdir, config), "pki.SRVCERT.cert")


def test_a_ca_file_with_a_valid_certificate_followed_by_garbage_is_refused(pki: Pki, workdir: Path) -> None:
    ca = workdir / "ca.pem"
    ca.write_bytes(pki.root.cert_pem() + b"this is not base64 !!!\n")
    config = base_config(pki, 9)
    config["pki"]["ROOTCA"]["cert"] = str(ca)
    line = _one(_errors(workdir, config), "pki.ROOTCA.cert")
    assert "unexpected text after the last certificate (line" in line


def test_a_truncated_pem_and_a_damaged_one(pki: Pki, workdir: Path) -> None:
    pem = pki.root.cert_pem()
    truncated, damaged = workdir / "truncated.pem", workdir / "damaged.pem"
    truncated.write_bytes(pem[: len(pem) // 2])
    damaged.write_bytes(pem.replace(pem.splitlines()[3], b"!" * len(pem.splitlines()[3])))
    config = base_config(pki, 9)
    config["pki"]["ROOTCA"]["cert"] = str(truncated)
    config["pki"]["OTHER"] = {"cert": str(damaged)}
    lines = _errors(workdir, config)
    assert "a BEGIN line without its END" in _one(lines, "pki.ROOTCA.cert")
    assert "the certificate at line 1 is damaged" in _one(lines, "pki.OTHER.cert")


def test_not_a_certificate_at_all(pki: Pki, workdir: Path) -> None:
    junk = workdir / "junk.bin"
    junk.write_bytes(bytes(range(256)))
    config = base_config(pki, 9)
    config["pki"]["ROOTCA"]["cert"] = str(junk)
    assert "junk.bin: not a PEM or DER certificate" in _one(_errors(workdir, config), "pki.ROOTCA.cert")


def test_an_encrypted_key_without_a_password_file_names_the_setting(pki: Pki, workdir: Path) -> None:
    encrypted = workdir / "encrypted.key"
    encrypted.write_bytes(
        pki.server.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    config = base_config(pki, 9)
    config["pki"]["SRVCERT"]["key"] = str(encrypted)
    line = _one(_errors(workdir, config), "pki.SRVCERT.key")
    assert "encrypted.key: the key is encrypted: set key_password_file" in line
    (workdir / "wrong").write_text("not the password\n")
    config["pki"]["SRVCERT"]["key_password_file"] = str(workdir / "wrong")
    assert "wrong password?" in _one(_errors(workdir, config), "pki.SRVCERT.key")
    (workdir / "right").write_text("secret\n")
    config["pki"]["SRVCERT"]["key_password_file"] = str(workdir / "right")
    assert _load(workdir, config).listeners["PESITSSL"].profile is not None


def test_a_key_that_does_not_match_its_certificate(pki: Pki, workdir: Path) -> None:
    config = base_config(pki, 9)
    config["pki"]["SRVCERT"]["key"] = str(pki.directory / "client.key")
    lines = _errors(workdir, config)
    assert "does not match the certificate" in _one(lines, "pki.SRVCERT.key")
    assert len(lines) == 1  # no follow-on error on the profile that uses it


def test_garbage_after_a_key_block(pki: Pki, workdir: Path) -> None:
    key = workdir / "server.key"
    key.write_bytes(pki.server.key_pem() + b"trailing\n")
    config = base_config(pki, 9)
    config["pki"]["SRVCERT"]["key"] = str(key)
    assert "unexpected text after the last key" in _one(_errors(workdir, config), "pki.SRVCERT.key")


# ---- lifetimes ----------------------------------------------------------------------------------


def _with_server(pki: Pki, workdir: Path, server: Issued) -> dict[str, Any]:
    cert, key = server.write(workdir, "short-lived")
    config = base_config(pki, 9)
    config["pki"]["SRVCERT"] = {"cert": str(cert), "key": str(key)}
    return config


def test_an_expired_own_certificate_is_an_error(pki: Pki, workdir: Path) -> None:
    expired = issue(pki.root, "/CN=localhost", server=True, days=(-400, -35))
    line = _one(_errors(workdir, _with_server(pki, workdir, expired)), "pki.SRVCERT")
    assert line.startswith(f"pki.SRVCERT: expired on {(NOW - dt.timedelta(days=35)).date().isoformat()}")


def test_a_certificate_ending_within_pki_warn_days_is_a_warning(pki: Pki, workdir: Path) -> None:
    soon = issue(pki.root, "/CN=localhost", server=True, days=(-10, 27))
    snapshot = _load(workdir, _with_server(pki, workdir, soon))
    end = soon.cert.not_valid_after_utc.date().isoformat()
    assert [str(w) for w in snapshot.warnings] == [f"pki.SRVCERT: expires {end} (in 26 days) (line 4)"]
    config = _with_server(pki, workdir, soon)
    config["pki_warn_days"] = 10
    assert _load(workdir, config).warnings == ()


def test_an_expired_ca_is_an_error(pki: Pki, workdir: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    old = (
        x509.CertificateBuilder()
        .subject_name(name("/CN=Old CA"))
        .issuer_name(name("/CN=Old CA"))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - dt.timedelta(days=900))
        .not_valid_after(NOW - dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    bundle = workdir / "bundle.pem"
    bundle.write_bytes(pki.root.cert_pem() + old.public_bytes(serialization.Encoding.PEM))
    config = base_config(pki, 9)
    config["pki"]["ROOTCA"]["cert"] = str(bundle)
    assert "certificate 2 of 2 (/CN=Old CA): expired on" in _one(_errors(workdir, config), "pki.ROOTCA")


def _crl(ca: Issued, next_update: dt.datetime) -> bytes:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(next_update - dt.timedelta(days=60))
        .next_update(next_update)
    )
    return builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def test_a_crl_past_its_next_update_is_an_error_and_one_due_soon_a_warning(pki: Pki, workdir: Path) -> None:
    (workdir / "old.crl").write_bytes(_crl(pki.root, NOW - dt.timedelta(days=2)))
    (workdir / "soon.crl").write_bytes(_crl(pki.root, NOW + dt.timedelta(days=5, hours=1)))
    config = base_config(pki, 9)
    config["profiles"][0]["crl"] = [str(workdir / "soon.crl"), str(workdir / "old.crl")]
    with pytest.raises(ConfigError) as caught:
        _load(workdir, config)
    assert [str(issue).split(": ")[0] for issue in caught.value.issues] == ["profiles[0].crl[1]"]
    assert "out of date since" in caught.value.issues[0].message
    assert [w.where for w in caught.value.warnings] == ["profiles[0].crl[0]"]
    assert "next update due" in caught.value.warnings[0].message and "(in 5 days)" in caught.value.warnings[0].message


# ---- warnings about what cannot work or anyone can claim ------------------------------------------


def test_an_ec_key_with_only_rsa_suites_is_warned(pki: Pki, workdir: Path) -> None:
    config = base_config(pki, 9)
    config["profiles"][0]["ciphlist"] = [49199, 4865]  # ECDHE-RSA and a TLS 1.3 suite; the key is EC
    (warning,) = _load(workdir, config).warnings
    assert str(warning).startswith(
        "profiles[0].ciphlist: no TLS 1.2 suite listed can be used with the EC key of pki.SRVCERT "
        "(they need an RSA certificate): every TLS 1.2 handshake will fail"
    )
    config["profiles"][0]["ciphlist"] = [49199, 49195]
    assert _load(workdir, config).warnings == ()
    # A client profile's key is not what the suites name: no warning there.
    config["profiles"][0]["ciphlist"] = [49199, 4865]
    config["profiles"].append({"id": "SSLSRV", "direct": "client", "usercid": "SRVCERT", "ciphlist": [49199]})
    config["partners"] = [{"id": "PARIS", "ssl": "SSLSRV", "host": ["127.0.0.1"], "sap": 9}]
    config["outbound"] = [{"id": "OUT", "listen": "127.0.0.1:0", "partner": "PARIS"}]
    assert [w.where for w in _load(workdir, config).warnings] == ["profiles[0].ciphlist"]


def test_an_rsa_key_with_only_ecdsa_suites_is_warned(pki: Pki, workdir: Path) -> None:
    rsa_ca = make_ca("/CN=RSA test CA")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("/CN=localhost"))
        .issuer_name(rsa_ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=300))
        .sign(rsa_ca.key, hashes.SHA256())
    )
    (workdir / "rsa.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (workdir / "rsa.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    config = base_config(pki, 9)
    config["pki"]["SRVCERT"] = {"cert": str(workdir / "rsa.pem"), "key": str(workdir / "rsa.key")}
    config["profiles"][0]["ciphlist"] = [49195]
    config["profiles"][0]["version"] = {"min": "tls1.2", "max": "tls1.2"}
    (warning,) = _load(workdir, config).warnings
    assert "with the RSA key of pki.SRVCERT (they need an EC certificate)" in str(warning)
    assert str(warning).endswith("no handshake can succeed (no TLS 1.3 either) (line 14)")


def test_a_partner_anyone_can_claim_is_warned(pki: Pki, workdir: Path) -> None:
    config = base_config(pki, 9, identify="pesit")
    config["partners"] = [
        {"id": "OPEN"},
        {"id": "LOCKED", "nrpassw": "secret"},
        {"id": "TIED", "ssl": "SSLSRV"},
        {"id": "ELSEWHERE", "prot": ["OTHER"]},
    ]
    config["listeners"].append({"id": "OTHER", "ssl": "SSLSRV"})  # requester-only: binds nothing
    warnings = [str(w) for w in _load(workdir, config).warnings]
    assert warnings == [
        "partners[0]: OPEN can be claimed on PESITSSL by any client that sends that name "
        "(no nrpassw and no server profile in ssl) (line 31)"
    ]
    config["listeners"][0]["identify"] = "certificate"
    assert _load(workdir, config).warnings == ()


# ---- everything in one pass -----------------------------------------------------------------------


def test_one_pass_reports_structure_files_ciphers_dn_and_every_sslauth_line(pki: Pki, workdir: Path) -> None:
    (workdir / "rules.txt").write_text("ACCEPT /cn=a\nACCEPT /CN=ok\nREVOKE /XYZ=1\nACCEPT /O=Bank Accept Ltd\n")
    config = base_config(pki, 9, sslauth="rules.txt")
    config["profiles"][0]["ciphlist"] = [49195, 1234]
    config["profiles"][0]["dnuser"] = ["O=ACME", '("a" AND', "CN=x", '("b" OR']
    config["profiles"][0]["colour"] = "blue"
    config["pki"]["EXTRA"] = {"cert": str(workdir / "missing.pem")}
    config["limits"]["idle_timeout"] = 0
    lines = _errors(workdir, config)
    for start in (
        "profiles[0].colour: unknown key",
        "limits.idle_timeout: must be a positive number",
        "pki.EXTRA.cert: cannot read",
        "profiles[0].ciphlist[1]: unknown cipher suite 1234",
        "profiles[0].dnuser[1]: ",
        "profiles[0].dnuser[3]: ",
        "listeners[0].sslauth: rules.txt:1: parameters must be uppercase: /cn",
        "listeners[0].sslauth: rules.txt:3: unknown parameter /XYZ",
        "listeners[0].sslauth: rules.txt:4: /O=Bank Accept: a value cannot contain the word ACCEPT",
    ):
        _one(lines, start)
    assert len(lines) == 9, lines


def test_endless_files_are_refused_not_read_forever(pki: Pki, workdir: Path) -> None:
    # /dev/zero has no size: each file the configuration names is read up to a bound, then refused.
    config = base_config(pki, 9, sslauth="/dev/zero")
    config["pki"]["EXTRA"] = {"cert": "/dev/zero"}
    config["admin"] = {"listen": "127.0.0.1:0", "token_file": "/dev/zero"}
    config["partners"] = [{"id": "PARIS", "nrpassw_file": "/dev/zero"}]
    lines = _errors(workdir, config)
    assert "/dev/zero: larger than 16 MB, not a PKI file" in _one(lines, "pki.EXTRA.cert")
    assert "larger than 16 MB: not an SSLAUTH file" in _one(lines, "listeners[0].sslauth")
    assert "/dev/zero: not a token file" in _one(lines, "admin.token_file")
    assert "/dev/zero: not a password file" in _one(lines, "partners[0].nrpassw_file")
    with pytest.raises(ConfigError) as caught:
        load_snapshot("/dev/zero")
    assert "the file is larger than 2,097,152 bytes; a configuration is at most 2,097,152" in str(caught.value)


def test_relative_paths_are_relative_to_the_folder_the_configuration_is_named_in(pki: Pki, tmp_path: Path) -> None:
    """A Kubernetes ConfigMap: mount/config.yaml -> ..data/config.yaml -> ..2026_01_01/config.yaml.

    The files a relative path names are beside the name the process was given (the mount), not in
    the timestamped folder the links point at today.
    """
    mount = tmp_path / "mount"
    version = mount / "..2026_12_07_00_00_00.000000001"
    version.mkdir(parents=True)
    (mount / "..data").symlink_to(version.name)
    (mount / "pki").mkdir()  # another volume mounted inside, not part of the ConfigMap
    for file_name in ("root.pem", "server.pem", "server.key"):
        (mount / "pki" / file_name).write_bytes((pki.directory / file_name).read_bytes())
    config = base_config(pki, 9)
    config["pki"] = {"ROOTCA": {"cert": "pki/root.pem"}, "SRVCERT": {"cert": "pki/server.pem", "key": "pki/server.key"}}
    (version / "config.yaml").write_text(yaml.safe_dump(config))
    (mount / "config.yaml").symlink_to("..data/config.yaml")
    snapshot = load_snapshot(mount / "config.yaml")
    assert snapshot.config.source == mount / "config.yaml"
    assert snapshot.pki_certs["ROOTCA"]
