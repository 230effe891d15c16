"""TlsEndpoint over memory BIOs against the stdlib `ssl` module (the system OpenSSL: another build).

No sockets here on purpose: the engine knows none, and these tests pin what the relay relies on —
how decrypted records come out of `read`, and what `facts` says about the peer.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar.snapshot import load_snapshot
from sidecar.testing.pki import Issued, issue, make_ca
from sidecar.tls.engine import READ_CHUNK, TlsEndpoint
from sidecar.tls.peer import PeerCert, TlsFacts

from ..support.env import Pki, base_config

TLS_RECORD_PLAINTEXT_MAX = 16 * 1024


def _server_context(pki: Pki, directory: Path, **profile: Any) -> Any:
    config = base_config(pki, 9)
    config["profiles"][0].update(profile)
    path = directory / "sidecar.yaml"
    path.write_text(yaml.safe_dump(config))
    compiled = load_snapshot(path).server_profile("SSLSRV")
    assert compiled is not None
    return compiled.context


class Pair:
    """Our server endpoint and a stdlib client, joined by hand: every byte moved is visible."""

    def __init__(self, pki: Pki, context: Any, client: Issued | None, directory: Path, stem: str = "c") -> None:
        client_context = pki.client_context(client, stem=stem)
        self.to_client, self.to_server = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.client = client_context.wrap_bio(self.to_client, self.to_server, server_hostname="localhost")
        self.server = TlsEndpoint(context, server_side=True)

    def handshake(self) -> TlsFacts:
        for _ in range(10):
            try:
                self.client.do_handshake()
                client_done = True
            except ssl.SSLWantReadError:
                client_done = False
            self.server.receive(self.to_server.read())
            if self.server.do_handshake() and client_done:
                self.to_client.write(self.server.take_output())
                return self.server.facts()
            self.to_client.write(self.server.take_output())
        raise AssertionError("the handshake did not finish")

    def client_sends(self, *messages: bytes) -> None:
        """Each `write` becomes its own TLS records; all of them arrive in one network read."""
        for message in messages:
            self.client.write(message)
        self.server.receive(self.to_server.read())


@pytest.fixture
def context(pki: Pki, tmp_path: Path) -> Any:
    return _server_context(pki, tmp_path)


def test_records_of_one_network_read_come_out_as_one_chunk(pki: Pki, tmp_path: Path, context: Any) -> None:
    pair = Pair(pki, context, pki.client, tmp_path)
    pair.handshake()
    messages = [bytes([i]) * 10_000 for i in range(3)]
    pair.client_sends(*messages)
    result = pair.server.read()
    assert result.chunks == [b"".join(messages)]  # three records, one send() to the backend
    assert not result.eof


def test_plaintext_larger_than_the_buffer_comes_out_whole_in_buffer_sized_chunks(
    pki: Pki, tmp_path: Path, context: Any
) -> None:
    pair = Pair(pki, context, pki.client, tmp_path)
    pair.handshake()
    payload = bytes(range(256)) * (READ_CHUNK * 5 // 2 // 256)  # two and a half buffers, many records
    pair.client_sends(payload)
    chunks = pair.server.read().chunks
    assert b"".join(chunks) == payload
    assert [len(chunk) for chunk in chunks] == [READ_CHUNK, READ_CHUNK, READ_CHUNK // 2]


def test_large_results_stay_intact_after_later_reads(pki: Pki, tmp_path: Path, context: Any) -> None:
    """Large results are handed over without a copy: a later read must never write into them."""
    pair = Pair(pki, context, pki.client, tmp_path)
    pair.handshake()
    first_payload, second_payload = b"A" * (READ_CHUNK + 1000), b"B" * (READ_CHUNK + 1000)
    pair.client_sends(first_payload)
    first = pair.server.read().chunks
    pair.client_sends(second_payload)
    second = pair.server.read().chunks
    pair.server.encrypt(b"C" * READ_CHUNK)
    assert b"".join(first) == first_payload
    assert b"".join(second) == second_payload


def test_data_then_close_notify_in_one_read(pki: Pki, tmp_path: Path, context: Any) -> None:
    pair = Pair(pki, context, pki.client, tmp_path)
    pair.handshake()
    pair.client.write(b"last words")
    with pytest.raises(ssl.SSLWantReadError):
        pair.client.unwrap()  # sends close_notify, then waits for ours
    pair.server.receive(pair.to_server.read())
    result = pair.server.read()
    assert result.chunks == [b"last words"]
    assert result.eof


def test_each_read_starts_afresh_in_the_buffer(pki: Pki, tmp_path: Path, context: Any) -> None:
    pair = Pair(pki, context, pki.client, tmp_path)
    pair.handshake()
    pair.client_sends(b"x")
    assert pair.server.read().chunks == [b"x"]
    pair.client_sends(b"y" * TLS_RECORD_PLAINTEXT_MAX)
    assert pair.server.read().chunks == [b"y" * TLS_RECORD_PLAINTEXT_MAX]
    assert pair.server.read().chunks == []


def test_handshake_buffers_are_released_and_the_session_goes_on(pki: Pki, tmp_path: Path, context: Any) -> None:
    pair = Pair(pki, context, pki.client, tmp_path)
    pair.handshake()
    before = (pair.server._into, pair.server._from)
    pair.server.release_handshake_buffers()
    assert (pair.server._into, pair.server._from) != before  # fresh, small BIOs
    pair.client_sends(b"after")
    assert pair.server.read().chunks == [b"after"]
    pair.to_client.write(pair.server.encrypt(b"back"))
    assert pair.client.read(100) == b"back"


def test_handshake_buffers_are_kept_while_ciphertext_waits(pki: Pki, tmp_path: Path, context: Any) -> None:
    pair = Pair(pki, context, pki.client, tmp_path)
    pair.handshake()
    pair.client_sends(b"not read yet")
    before = (pair.server._into, pair.server._from)
    pair.server.release_handshake_buffers()
    assert (pair.server._into, pair.server._from) == before  # nothing is dropped
    assert pair.server.read().chunks == [b"not read yet"]


def test_facts_of_a_verified_client(pki: Pki, tmp_path: Path, context: Any) -> None:
    facts = Pair(pki, context, pki.client, tmp_path).handshake()
    assert facts.verified
    assert facts.chain_length == 2  # the client's certificate and the root
    assert facts.peer is not None
    assert facts.peer.subject == "/C=US/ST=NY/L=New York/O=ACME/OU=Paris/CN=PARIS"
    assert facts.peer.issuer == "/C=FR/O=ACME/CN=ACME Root CA"
    assert facts.peer.serial == pki.client.cert.serial_number
    assert facts.peer == PeerCert.from_x509(pki.client.cert)


def test_an_intermediate_counts_in_the_chain(pki: Pki, tmp_path: Path, context: Any) -> None:
    intermediate = make_ca("/C=FR/O=ACME/CN=ACME Issuing CA", issuer=pki.root)
    leaf = issue(intermediate, "/C=US/O=ACME/OU=Lyon/CN=LYON")
    assert leaf.chain == (intermediate.cert,)  # sent along: the server trusts only the root
    facts = Pair(pki, context, leaf, tmp_path, stem="lyon").handshake()
    assert facts.verified
    assert facts.chain_length == 3
    assert facts.peer is not None and facts.peer.issuer == "/C=FR/O=ACME/CN=ACME Issuing CA"


def test_the_same_certificate_is_parsed_once_and_another_one_on_its_own(pki: Pki, tmp_path: Path, context: Any) -> None:
    first = Pair(pki, context, pki.client, tmp_path).handshake()
    again = Pair(pki, context, pki.client, tmp_path).handshake()
    assert again.peer is first.peer  # served from the cache: the same immutable value

    other = issue(pki.root, "/C=US/ST=NY/L=New York/O=ACME/OU=Paris/CN=PARIS")  # same subject, new certificate
    third = Pair(pki, context, other, tmp_path, stem="other").handshake()
    assert third.peer is not None and first.peer is not None
    assert third.peer.subject == first.peer.subject
    assert third.peer.serial == other.cert.serial_number != first.peer.serial
    assert third.peer.der != first.peer.der


def test_an_unverified_certificate_under_optional(pki: Pki, tmp_path: Path) -> None:
    context = _server_context(pki, tmp_path, verify="optional")
    facts = Pair(pki, context, pki.stranger, tmp_path, stem="stranger").handshake()
    assert not facts.verified
    assert facts.chain_length == 0
    assert facts.verify_errors
    assert facts.peer is not None and facts.peer.issuer == "/C=XX/O=Elsewhere/CN=Other Root"
    assert facts.verified_peer is None


def test_no_certificate_under_optional(pki: Pki, tmp_path: Path) -> None:
    context = _server_context(pki, tmp_path, verify="optional")
    facts = Pair(pki, context, None, tmp_path).handshake()
    assert facts.peer is None
    assert not facts.verified
    assert facts.chain_length == 0
