"""Properties of the PeSIT reader and codec: any bytes give a value, encodings parse back."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.pesit import (
    ConnectReader,
    ConnectReceived,
    LogonReceived,
    NeedMore,
    ProtocolError,
    ReadResult,
    encode_connect,
    encode_logon,
    encode_pi,
    frame,
    parse_pis,
)

SETTINGS = settings(max_examples=300, deadline=None)

PRINTABLE_ASCII = st.characters(min_codepoint=0x21, max_codepoint=0x7E)


def _text_without_trailing_blank(max_size: int) -> st.SearchStrategy[str]:
    # Blanks inside are fine; trailing ones are not significant in PeSIT and are trimmed on reading.
    inner = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=max_size - 1)
    return st.tuples(inner, PRINTABLE_ASCII).map(lambda parts: parts[0] + parts[1])


IDS = _text_without_trailing_blank(24)
PASSWORDS = _text_without_trailing_blank(8)


@st.composite
def chunked(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.sets(st.integers(min_value=1, max_value=max(1, len(data) - 1)), max_size=8)))
    bounds = [0, *(cut for cut in cuts if cut < len(data)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def _run(reader: ConnectReader, chunks: list[bytes]) -> list[ReadResult]:
    results: list[ReadResult] = []
    for chunk in chunks:
        result = reader.feed(chunk)
        while isinstance(result, LogonReceived):
            results.append(result)
            result = reader.feed(b"")
        results.append(result)
        if isinstance(result, ConnectReceived | ProtocolError):
            break
    return results


PESIT_LIKE_PREFIXES = st.sampled_from(
    [b"", b"\x00\x18\xd7\xc5", b"\xd7\xc5", b"\x00\x2a\x00\x2a\x40\x20", b"\x00\x2a\x40\x20\x00\x05"]
)


@SETTINGS
@given(prefix=PESIT_LIKE_PREFIXES, body=st.binary(max_size=600), data=st.data())
def test_any_bytes_in_any_chunks_give_a_value(prefix: bytes, body: bytes, data: st.DataObject) -> None:
    stream = prefix + body
    chunks = data.draw(chunked(stream)) if stream else [b""]
    max_bytes = data.draw(st.sampled_from([26, 64, 4096]))
    results = _run(ConnectReader(max_bytes), chunks)
    assert results
    for result in results[:-1]:
        assert isinstance(result, NeedMore | LogonReceived)
    final = results[-1]
    assert isinstance(final, NeedMore | LogonReceived | ConnectReceived | ProtocolError)
    if isinstance(final, ConnectReceived):
        assert final.consumed + final.extra == stream
        assert len(final.consumed) <= max_bytes
    if isinstance(final, ProtocolError):
        assert final.diagnostic in (308, 311, 318)


@SETTINGS
@given(
    requester=IDS,
    server=IDS,
    password=st.none() | PASSWORDS,
    framed=st.booleans(),
    logon=st.booleans(),
    src=st.integers(min_value=1, max_value=255),
    extra=st.binary(max_size=20),
    data=st.data(),
)
def test_encoded_connect_reads_back(
    requester: str,
    server: str,
    password: str | None,
    framed: bool,
    logon: bool,
    src: int,
    extra: bytes,
    data: st.DataObject,
) -> None:
    message = frame(encode_connect(requester, server, password, src=src), framed)
    if logon:
        message = frame(encode_logon("PESIT", "ID", "PW"), framed) + message
    stream = message + extra
    chunks = data.draw(chunked(stream))
    results = _run(ConnectReader(), chunks)
    final = results[-1]
    assert isinstance(final, ConnectReceived), final
    assert (final.connect.requester, final.connect.server) == (requester, server)
    assert final.connect.password == password
    assert final.connect.src == src
    assert final.framed is framed
    # `extra` is what came with the chunk that completed the CONNECT, nothing fed after it.
    completing = next(i for i, _ in enumerate(chunks) if len(b"".join(chunks[: i + 1])) >= len(message))
    assert final.consumed == message
    assert final.extra == b"".join(chunks[: completing + 1])[len(message) :]
    assert sum(isinstance(result, LogonReceived) for result in results) == int(logon)


UNITS = st.lists(
    st.tuples(st.integers(min_value=0, max_value=255), st.binary(min_size=1, max_size=700)),
    max_size=6,
    unique_by=lambda unit: unit[0],
).map(lambda units: tuple(sorted(units)))


@SETTINGS
@given(units=UNITS)
def test_pi_round_trip(units: tuple[tuple[int, bytes], ...]) -> None:
    encoded = b"".join(encode_pi(code, value) for code, value in units)
    assert parse_pis(encoded) == units


@SETTINGS
@given(code=st.integers(min_value=0, max_value=255), length=st.integers(min_value=255, max_value=65535))
def test_long_pi_round_trip(code: int, length: int) -> None:
    value = bytes(length)
    unit = encode_pi(code, value)
    assert unit[1] == 0xFF
    assert parse_pis(unit) == ((code, value),)


@SETTINGS
@given(data=st.binary(max_size=300))
def test_parse_pis_never_raises_and_what_it_accepts_is_well_formed(data: bytes) -> None:
    result = parse_pis(data)
    if isinstance(result, ProtocolError):
        return
    codes = [code for code, _ in result]
    assert codes == sorted(set(codes))
    assert all(value for _, value in result)
    # Re-encoding may differ (a long LI for a short value is accepted) but means the same.
    assert parse_pis(b"".join(encode_pi(code, value) for code, value in result)) == result


def _outcome(results: list[ReadResult]) -> tuple[object, ...]:
    final = results[-1]
    logons = tuple(result for result in results if isinstance(result, LogonReceived))
    if isinstance(final, ConnectReceived):
        return (logons, "connect", final.connect, final.framed, final.consumed)
    if isinstance(final, ProtocolError):
        return (logons, "error", final.diagnostic, final.reply)  # the message may be vaguer with fewer bytes
    return (logons, type(final).__name__)


@SETTINGS
@given(prefix=PESIT_LIKE_PREFIXES, body=st.binary(max_size=200), data=st.data())
def test_chunking_does_not_change_the_outcome(prefix: bytes, body: bytes, data: st.DataObject) -> None:
    stream = prefix + body
    if not stream:
        return
    whole = _run(ConnectReader(64), [stream])
    pieces = _run(ConnectReader(64), data.draw(chunked(stream)))
    assert _outcome(pieces) == _outcome(whole)
