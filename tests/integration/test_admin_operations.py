"""What operators and their tools read from the admin endpoint (SPEC §8.2): probes without the token,
build information, certificate and CRL expiry. Real HTTP, parsed with prometheus-client's parser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from prometheus_client.parser import text_string_to_metric_families

from sidecar.config import load_config
from sidecar.errors import ConfigError
from sidecar.testing.echo import EchoBackend
from sidecar.testing.pki import issue, make_ca, make_crl
from sidecar.tls.bindings import versions

from ..support.env import Pki, Sidecar
from .test_admin import TOKEN, admin_config, running

Samples = dict[str, list[tuple[dict[str, str], float]]]


def _samples(text: str) -> Samples:
    """Every sample by metric name: [(labels, value), …]."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


async def _scrape(workdir: Path, config: dict[str, Any]) -> Samples:
    """Start a sidecar with `config`, read /metrics once, stop it."""
    async with running(workdir, config) as (sidecar, session), session.get(sidecar.url("/metrics")) as response:
        assert response.status == 200
        return _samples(await response.text())


# ---- admin.health_without_token ---------------------------------------------------------------------

PROBES = [("GET", "/healthz"), ("GET", "/readyz"), ("HEAD", "/healthz"), ("HEAD", "/readyz")]
GUARDED = [("GET", "/stats"), ("GET", "/metrics"), ("GET", "/connections"), ("POST", "/reload"),
           ("GET", "/nope"), ("POST", "/healthz"), ("GET", "/healthz/"), ("GET", "/HEALTHZ")]  # fmt: skip


@pytest.mark.parametrize("open_probes", [False, True])
async def test_health_without_token_opens_the_probes_only(
    open_probes: bool, pki: Pki, backend: EchoBackend, workdir: Path
) -> None:
    (workdir / "token").write_text(TOKEN)
    config = admin_config(pki, backend.port)
    config["admin"].update(token_file="token", health_without_token=open_probes)
    async with running(workdir, config) as (sidecar, session):
        for method, route in PROBES:
            async with session.request(method, sidecar.url(route)) as response:
                assert response.status == (200 if open_probes else 401), (method, route)
        for method, route in GUARDED:
            async with session.request(method, sidecar.url(route)) as response:
                assert response.status == 401, (method, route)
        # With the token, everything answers as usual.
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        for method, route in [*PROBES, ("GET", "/stats"), ("GET", "/metrics")]:
            async with session.request(method, sidecar.url(route), headers=bearer) as response:
                assert response.status == 200, (method, route)
        assert sidecar.runtime is not None and sidecar.runtime.snapshot.generation == 1  # no reload slipped through


async def test_health_without_token_defaults_to_false(pki: Pki, backend: EchoBackend, workdir: Path) -> None:
    (workdir / "token").write_text(TOKEN)
    config = admin_config(pki, backend.port)
    config["admin"]["token_file"] = "token"
    async with running(workdir, config) as (sidecar, session):
        assert sidecar.runtime is not None and sidecar.runtime.snapshot.config.admin is not None
        assert sidecar.runtime.snapshot.config.admin.health_without_token is False
        async with session.get(sidecar.url("/healthz")) as response:
            assert response.status == 401


async def test_health_without_token_must_be_a_boolean(pki: Pki, backend: EchoBackend, workdir: Path) -> None:
    config = admin_config(pki, backend.port)
    config["admin"]["health_without_token"] = "yes please"
    sidecar = Sidecar(workdir, config)
    with pytest.raises(ConfigError) as refused:
        load_config(sidecar.config_path)
    assert any(issue.where == "admin.health_without_token" for issue in refused.value.issues)


# ---- build information ------------------------------------------------------------------------------


async def test_build_info_names_the_version_the_tls_library_and_python(
    pki: Pki, backend: EchoBackend, workdir: Path
) -> None:
    samples = await _scrape(workdir, admin_config(pki, backend.port))
    installed = versions()
    assert samples["sidecar_build_info"] == [
        ({"version": installed.sidecar, "openssl": installed.openssl, "python": installed.python}, 1.0)
    ]


# ---- certificate and CRL expiry ---------------------------------------------------------------------


def _not_after(path: Path) -> float:
    certs = x509.load_pem_x509_certificates(path.read_bytes())
    return min(cert.not_valid_after_utc for cert in certs).timestamp()


def _next_update(path: Path) -> float:
    next_update = x509.load_pem_x509_crl(path.read_bytes()).next_update_utc
    assert next_update is not None
    return next_update.timestamp()


async def test_expiry_of_every_configured_certificate_and_crl(pki: Pki, backend: EchoBackend, workdir: Path) -> None:
    # A chain file whose first certificate outlives the second: the series is the earliest of the two.
    intermediate = make_ca("/C=FR/O=ACME/CN=ACME Issuing CA", issuer=pki.root)  # 365 days
    leaf = issue(intermediate, "/C=FR/O=ACME/CN=gateway", days=(-1, 400), server=True)
    chain = workdir / "chain.pem"
    chain.write_bytes(leaf.cert_pem() + intermediate.cert.public_bytes(serialization.Encoding.PEM))
    (workdir / "partners.crl").write_bytes(make_crl(pki.root, [0x1234]))
    elsewhere = workdir.parent / f"{workdir.name}-crl" / "root.crl"
    elsewhere.parent.mkdir(exist_ok=True)
    elsewhere.write_bytes(make_crl(pki.root, []))

    config = admin_config(pki, backend.port)
    config["pki"]["CHAIN"] = {"cert": str(chain)}
    config["profiles"][0]["crl"] = ["partners.crl", str(elsewhere)]
    samples = await _scrape(workdir, config)

    expiry = {labels["pki_id"]: value for labels, value in samples["sidecar_certificate_expiry_timestamp_seconds"]}
    assert expiry == {
        "ROOTCA": _not_after(pki.directory / "root.pem"),
        "SRVCERT": _not_after(pki.directory / "server.pem"),
        "CHAIN": intermediate.cert.not_valid_after_utc.timestamp(),
    }
    assert expiry["CHAIN"] < leaf.cert.not_valid_after_utc.timestamp()

    crls = {labels["file"]: value for labels, value in samples["sidecar_crl_next_update_timestamp_seconds"]}
    next_update = {
        path: x509.load_pem_x509_crl(path.read_bytes()).next_update_utc
        for path in (workdir / "partners.crl", elsewhere)
    }
    # The file as configured: relative to the configuration's folder, or the absolute path given.
    assert crls == {
        "partners.crl": next_update[workdir / "partners.crl"].timestamp(),  # type: ignore[union-attr]
        str(elsewhere): next_update[elsewhere].timestamp(),  # type: ignore[union-attr]
    }


async def test_no_crl_series_without_crls(pki: Pki, backend: EchoBackend, workdir: Path) -> None:
    samples = await _scrape(workdir, admin_config(pki, backend.port))
    assert "sidecar_crl_next_update_timestamp_seconds" not in samples
    assert {labels["pki_id"] for labels, _ in samples["sidecar_certificate_expiry_timestamp_seconds"]} == {
        "ROOTCA",
        "SRVCERT",
    }
