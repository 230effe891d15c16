"""Client mode: plaintext in, TLS out to a partner (a real TLS server on loopback)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest

from sidecar import pesit
from sidecar.testing.pki import Issued, issue

from ..conftest import LogCapture
from ..support.env import Pki, Sidecar, base_config
from ..support.pesit_backend import PesitBackend


class TlsPartner:
    """A partner's TLS server (stdlib ssl, system OpenSSL): echoes, records the client certificate."""

    def __init__(self, pki: Pki, cert: Issued, *, require_client_cert: bool = True, ciphers: str | None = None) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert_path, key_path = cert.write(pki.directory, "partner-server")
        self.context.load_cert_chain(cert_path, key_path)
        self.context.load_verify_locations(cadata=pki.root.cert_pem().decode())
        if require_client_cert:
            self.context.verify_mode = ssl.CERT_REQUIRED
        if ciphers:
            self.context.maximum_version = ssl.TLSVersion.TLSv1_2
            self.context.set_ciphers(ciphers)
        self.client_subjects: list[Any] = []
        self.ciphers: list[str] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tls = writer.get_extra_info("ssl_object")
        self.client_subjects.append(tls.getpeercert().get("subject") if tls.getpeercert() else None)
        self.ciphers.append(tls.cipher()[0])
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def outbound_config(pki: Pki, port: int, hosts: list[str] | None = None, **client: Any) -> dict[str, Any]:
    config = base_config(pki, 9)
    config["listeners"] = []
    config["pki"]["CLICERT"] = {"cert": str(pki.directory / "client.pem"), "key": str(pki.directory / "client.key")}
    config["profiles"].append({"id": "SSLCLI", "direct": "client", "usercid": "CLICERT", "rootcid": ["ROOTCA"],
                               "verify": "required", **client})  # fmt: skip
    config["partners"] = [{"id": "PARIS", "host": hosts or ["127.0.0.1"], "sap": port, "ssl": "SSLCLI"}]
    config["outbound"] = [{"id": "TOPARIS", "listen": "127.0.0.1:0", "partner": "PARIS"}]
    return config


async def _through(sidecar: Sidecar, payload: bytes, expect: int | None = None, outbound: str = "TOPARIS") -> bytes:
    assert sidecar.runtime is not None
    port = int(sidecar.runtime.bound_outbound[outbound].rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = bytearray()
    try:
        writer.write(payload)
        await writer.drain()
        while len(received) < (len(payload) if expect is None else expect):
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            if not chunk:
                break
            received.extend(chunk)
    except ConnectionResetError:
        pass  # a refused session may close the local side with unread data: the kernel sends a reset
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return bytes(received)


@pytest.fixture
def partner_cert(pki: Pki) -> Issued:
    return issue(pki.root, "/C=FR/O=ACME/OU=Transfer/CN=paris.example", server=True, client=False, san="localhost")


async def test_mutual_auth_and_integrity(
    pki: Pki, partner_cert: Issued, workdir: Path, captured_logs: LogCapture
) -> None:
    partner = TlsPartner(pki, partner_cert)
    port = await partner.start()
    sidecar = Sidecar(workdir, outbound_config(pki, port))
    await sidecar.start()
    payload = bytes(range(256)) * 4096
    try:
        assert await _through(sidecar, payload) == payload
    finally:
        await sidecar.stop()
        await partner.stop()
    assert partner.client_subjects[0] is not None  # our usercid was presented
    assert captured_logs.of("ready")[0]["outbound"]["TOPARIS"].startswith("127.0.0.1:")
    close = captured_logs.of("close")[0]
    assert (close["direction"], close["decision"], close["verified"]) == ("out", "accept", True)
    assert close["subject"] == "/C=FR/O=ACME/OU=Transfer/CN=paris.example"


async def test_untrusted_server_refused_under_required_accepted_under_none(
    pki: Pki, workdir: Path, captured_logs: LogCapture
) -> None:
    stranger_server = issue(pki.other_root, "/C=XX/O=Elsewhere/CN=rogue", server=True, client=False)
    partner = TlsPartner(pki, stranger_server, require_client_cert=False)
    port = await partner.start()
    try:
        strict = Sidecar(workdir, outbound_config(pki, port))
        await strict.start()
        try:
            assert await _through(strict, b"secret") == b""
        finally:
            await strict.stop()
        lax = Sidecar(workdir, outbound_config(pki, port, verify="none"))
        await lax.start()
        try:
            assert await _through(lax, b"hello") == b"hello"
        finally:
            await lax.stop()
    finally:
        await partner.stop()
    closes = captured_logs.of("close")
    assert closes[0]["reason"] == "handshake_verify"
    assert closes[1]["decision"] == "accept"
    assert captured_logs.of("server_not_verified")[0]["verify"] == "none"


async def test_dnuser_checks_the_server_certificate(
    pki: Pki, partner_cert: Issued, workdir: Path, captured_logs: LogCapture
) -> None:
    partner = TlsPartner(pki, partner_cert)
    port = await partner.start()
    sidecar = Sidecar(workdir, outbound_config(pki, port, dnuser="OU=Lyon"))
    await sidecar.start()
    try:
        assert await _through(sidecar, b"x") == b""
    finally:
        await sidecar.stop()
        await partner.stop()
    assert captured_logs.of("close")[0]["reason"] == "dnuser"


async def test_ciphlist_order_decides_against_a_server_without_preference(
    pki: Pki, partner_cert: Issued, workdir: Path, captured_logs: LogCapture
) -> None:
    partner = TlsPartner(pki, partner_cert, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384")
    partner.context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    port = await partner.start()
    sidecar = Sidecar(workdir, outbound_config(pki, port, ciphlist=[49196, 49195]))
    await sidecar.start()
    try:
        assert await _through(sidecar, b"x") == b"x"
    finally:
        await sidecar.stop()
        await partner.stop()
    assert partner.ciphers == ["ECDHE-ECDSA-AES256-GCM-SHA384"]


async def test_first_host_down_second_host_used(pki: Pki, partner_cert: Issued, workdir: Path) -> None:
    partner = TlsPartner(pki, partner_cert)
    port = await partner.start()
    # 127.0.0.2 is loopback too but nothing listens there: the dial is refused at once.
    sidecar = Sidecar(workdir, outbound_config(pki, port, hosts=["127.0.0.2", "127.0.0.1"]))
    await sidecar.start()
    try:
        assert await _through(sidecar, b"second") == b"second"
    finally:
        await sidecar.stop()
        await partner.stop()


async def test_client_profile_missing_is_a_config_error(pki: Pki, workdir: Path) -> None:
    config = outbound_config(pki, 9)
    config["partners"][0]["ssl"] = "NOPE"
    with pytest.raises(Exception, match="CFTT47W _ Cannot find SSL security profil"):
        await Sidecar(workdir, config).start()


async def test_chained_outbound_then_inbound_with_pesit_identification(
    pki: Pki, workdir: Path, captured_logs: LogCapture
) -> None:
    backend = PesitBackend()
    backend_port = await backend.start()
    inbound_config = base_config(pki, backend_port, identify="pesit")
    inbound_config["partners"] = [{"id": "PARIS", "nrpart": "PARIS"}]
    (workdir / "in").mkdir()
    (workdir / "out").mkdir()
    inbound = Sidecar(workdir / "in", inbound_config)
    await inbound.start()
    outbound = Sidecar(workdir / "out", outbound_config(pki, inbound.port()))
    await outbound.start()
    connect = pesit.frame(pesit.encode_connect("PARIS", "SERVER"), True)
    aconnect = pesit.frame(pesit.encode_aconnect(5, 1), True)
    try:
        assert await _through(outbound, connect + b"data", len(aconnect) + 4) == aconnect + b"data"
    finally:
        await outbound.stop()
        await inbound.stop()
        await backend.stop()
    assert bytes(backend.received[0]) == connect + b"data"
    partners = [c.get("partner") for c in captured_logs.of("close")]
    assert partners.count("PARIS") == 2


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


async def test_reload_adds_moves_and_removes_outbound_entries(
    pki: Pki, partner_cert: Issued, workdir: Path, captured_logs: LogCapture
) -> None:
    partner = TlsPartner(pki, partner_cert)
    port = await partner.start()
    config = outbound_config(pki, port)
    sidecar = Sidecar(workdir, config)
    runtime = await sidecar.start()
    try:
        first = int(runtime.bound_outbound["TOPARIS"].rsplit(":", 1)[1])
        # Added: bound by the reload and serving at once.
        config["outbound"].append({"id": "TOLYON", "listen": "127.0.0.1:0", "partner": "PARIS"})
        sidecar.write(config)
        assert await runtime.reload() == (2, [])
        assert await _through(sidecar, b"lyon", outbound="TOLYON") == b"lyon"
        assert captured_logs.of("reloaded")[-1]["outbound"] == runtime.bound_outbound
        # Moved: the new port serves, the old one is closed.
        moved = _free_port()
        config["outbound"][0]["listen"] = f"127.0.0.1:{moved}"
        sidecar.write(config)
        assert await runtime.reload() == (3, [])
        assert runtime.bound_outbound["TOPARIS"] == f"127.0.0.1:{moved}"
        assert await _refused(first)
        assert await _through(sidecar, b"paris") == b"paris"
        # Removed: its socket is closed, the other entry still serves.
        lyon = int(runtime.bound_outbound["TOLYON"].rsplit(":", 1)[1])
        config["outbound"].pop()
        sidecar.write(config)
        assert await runtime.reload() == (4, [])
        assert set(runtime.bound_outbound) == {"TOPARIS"}
        assert await _refused(lyon)
        assert await _through(sidecar, b"still") == b"still"
    finally:
        await sidecar.stop()
        await partner.stop()


async def test_an_outbound_entry_that_cannot_bind_refuses_the_reload(
    pki: Pki, partner_cert: Issued, workdir: Path
) -> None:
    config = outbound_config(pki, 9)
    sidecar = Sidecar(workdir, config)
    runtime = await sidecar.start()
    try:
        before = dict(runtime.bound_outbound)
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            config["outbound"][0]["listen"] = f"127.0.0.1:{taken.getsockname()[1]}"
            sidecar.write(config)
            generation, issues = await runtime.reload()
        assert generation == 1 and str(issues[0]).startswith("outbound[0].listen: cannot bind")
        assert runtime.bound_outbound == before and runtime.snapshot.generation == 1
        assert not await _refused(int(before["TOPARIS"].rsplit(":", 1)[1]))
    finally:
        await sidecar.stop()


async def test_outbound_honours_max_connections(
    pki: Pki, partner_cert: Issued, workdir: Path, captured_logs: LogCapture
) -> None:
    partner = TlsPartner(pki, partner_cert)
    config = outbound_config(pki, await partner.start())
    config["limits"]["max_connections"] = 1
    sidecar = Sidecar(workdir, config)
    runtime = await sidecar.start()
    port = int(runtime.bound_outbound["TOPARIS"].rsplit(":", 1)[1])
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"held")
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"held"  # the first one is relayed
        over = await _through(sidecar, b"x")
        assert over == b""
        writer.close()
    finally:
        await sidecar.stop()
        await partner.stop()
    refused = [c for c in captured_logs.of("close") if c["reason"] == "max_connections"]
    assert refused and refused[0]["outbound"] == "TOPARIS" and refused[0]["direction"] == "out"
    counters = runtime.stats.outbound_entry("TOPARIS")
    assert counters.errors["max_connections"] == 1 and counters.closed["max_connections"] == 1


@pytest.mark.parametrize("tls13", [True, False])
async def test_enforced_refuses_a_server_that_asks_for_no_client_certificate(
    tls13: bool, pki: Pki, partner_cert: Issued, workdir: Path, captured_logs: LogCapture
) -> None:
    # CFT VERIFY=ENFORCED: a server that does not request our certificate is refused; one that
    # requests it is accepted (the OpenSSL client notes whether a CertificateRequest arrived).
    lax = TlsPartner(pki, partner_cert, require_client_cert=False)
    strict = TlsPartner(pki, partner_cert)
    for partner in (lax, strict):
        if not tls13:
            partner.context.maximum_version = ssl.TLSVersion.TLSv1_2
    lax_port, strict_port = await lax.start(), await strict.start()
    try:
        for port, expected in ((lax_port, b""), (strict_port, b"asked")):
            sidecar = Sidecar(workdir, outbound_config(pki, port, verify="enforced"))
            await sidecar.start()
            try:
                assert await _through(sidecar, b"asked") == expected
            finally:
                await sidecar.stop()
    finally:
        await lax.stop()
        await strict.stop()
    closes = captured_logs.of("close")
    assert closes[0]["decision"] == "reject"
    assert closes[0]["reason"] == "verify"
    assert "did not request a client certificate" in closes[0]["detail"]
    assert closes[1]["decision"] == "accept"
