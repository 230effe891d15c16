"""Any text as a configuration, any bytes as a PEM, key, CRL or SSLAUTH file: a value or our own error.

Bounded time is part of the property: each example must finish well inside the deadline, aliases,
duplicate keys and long scalars included.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.config import Config, read_config_text
from sidecar.errors import MAX_LINE, Issue, RuleFileError
from sidecar.pki import PemProblem, _load_key, load_certificates, load_crl
from sidecar.policy.sslauth import load_sslauth
from sidecar.testing.pki import make_ca

SOURCE = Path("/nonexistent/sidecar.yaml")
_CA = make_ca("/CN=Property CA")
_CERT_PEM = _CA.cert_pem()
_KEY_PEM = _CA.key_pem()
_CRL_PEM = (
    x509.CertificateRevocationListBuilder()
    .issuer_name(_CA.cert.subject)
    .last_update(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    .next_update(dt.datetime(2027, 1, 1, tzinfo=dt.UTC))
    .sign(_CA.key, hashes.SHA256())
    .public_bytes(serialization.Encoding.PEM)
)

# YAML made of pieces that matter: keys of the schema, anchors and aliases, flow collections,
# repeated keys, long scalars, indentation.
_yaml_pieces = st.sampled_from(
    ["listeners:", "profiles:", "pki:", "limits:", "outbound:", "id:", "listen:", "verify:", "verify:",
     "- ", "  ", "    ", "\n", "\n  ", "\n- ", ": ", "[", "]", "{", "}", ", ", "&a ", "&b ", "*a", "*b", "<<: ",
     "127.0.0.1:0", "required", "none", "SSLSRV", "'", '"', "#", "---", "!!str ", "!!python/none ", "~", "0x1F",
     "x" * 70_000, "y" * 500]
)  # fmt: skip
yaml_texts = st.lists(_yaml_pieces | st.text(max_size=5), max_size=40).map("".join)


def _check_issues(issues: list[Issue] | tuple[Issue, ...]) -> None:
    assert issues
    for issue in issues:
        assert issue.message
        assert len(str(issue)) <= MAX_LINE and "\n" not in str(issue)


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(yaml_texts)
def test_any_yaml_text_is_a_config_or_our_issues(text: str) -> None:
    config, issues = read_config_text(text, SOURCE)
    if issues:
        _check_issues(issues)
    else:
        assert isinstance(config, Config)


@settings(max_examples=100, deadline=2000)
@given(st.integers(2, 12), st.integers(2, 12))
def test_alias_fan_out_of_any_shape_is_bounded(width: int, levels: int) -> None:
    text = "a0: &a0 [" + ",".join(["x"] * width) + "]\n"
    for level in range(1, levels):
        text += f"a{level}: &a{level} [" + ",".join([f"*a{level - 1}"] * width) + "]\n"
    _, issues = read_config_text(text, SOURCE)
    _check_issues(issues)  # an unknown key at least; an alias bomb when it expands too far


_pem_pieces = st.sampled_from(
    [_CERT_PEM, _CERT_PEM[:100], _CERT_PEM[-60:], _KEY_PEM, _CRL_PEM, b"-----BEGIN CERTIFICATE-----\n",
     b"-----END CERTIFICATE-----\n", b"-----BEGIN X509 CRL-----\n", b"-----END X509 CRL-----\n", b"\n", b"garbage",
     b"MIIB", b"\x00\xff", b"\x30\x82\x01\x00"]
)  # fmt: skip
pem_bytes = st.lists(_pem_pieces | st.binary(max_size=20), max_size=8).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(pem_bytes)
def test_any_bytes_are_certificates_or_our_problem(data: bytes) -> None:
    try:
        certs = load_certificates(data)
    except PemProblem as exc:
        assert str(exc) and len(str(exc)) < MAX_LINE
    else:
        assert certs and all(isinstance(cert, x509.Certificate) for cert in certs)


@settings(max_examples=300, deadline=None)
@given(pem_bytes)
def test_any_bytes_are_a_crl_or_our_problem(data: bytes) -> None:
    try:
        crl = load_crl(data)
    except PemProblem as exc:
        assert str(exc) and len(str(exc)) < MAX_LINE
    else:
        assert isinstance(crl, x509.CertificateRevocationList)


@settings(max_examples=150, deadline=None)
@given(pem_bytes, st.none() | st.binary(max_size=12))
def test_any_bytes_are_a_key_or_our_issue(data: bytes, password: bytes | None) -> None:
    with tempfile.TemporaryDirectory() as folder:
        key_path = Path(folder) / "k.key"
        key_path.write_bytes(data)
        password_path = None
        if password is not None:
            password_path = Path(folder) / "password"
            password_path.write_bytes(password)
        issues: list[Issue] = []
        key = _load_key(key_path, password_path, "pki.X", issues)
    assert (key is None) == bool(issues)
    if issues:
        _check_issues(issues)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300) | pem_bytes)
def test_any_bytes_are_an_sslauth_file_or_our_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "sslauth.txt"
        path.write_bytes(data)
        try:
            load_sslauth(path, "sslauth.txt")
        except RuleFileError as exc:
            assert exc.problems
            assert all(len(str(problem)) <= MAX_LINE for problem in exc.problems)
