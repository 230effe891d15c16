"""PeSIT codec and ConnectReader against the byte layouts of domain/NOTES.md C.4-C.7."""

from __future__ import annotations

import pytest

from sidecar import pesit
from sidecar.pesit import (
    ACK0,
    NAK0,
    Connect,
    ConnectReader,
    ConnectReceived,
    LogonAnswer,
    LogonReceived,
    NeedMore,
    ProtocolError,
    ReadResult,
    encode_aconnect,
    encode_connect,
    encode_logon,
    encode_pi,
    encode_rconnect,
    frame,
    parse_connect,
    parse_logon_answer,
    parse_pis,
)

# --- NOTES C.6, byte for byte -------------------------------------------------------------------

LOGON_NSDU = bytes.fromhex("00 18 D7 C5 E2 C9 E3 40 40 40 D5 C5 E6 E8 D6 D9 D2 40 D5 E8 D7 C1 E2 E2 E6 40")
ACK_NSDU = bytes.fromhex("0004C1C3D2F0")
CONNECT_NSDU = bytes.fromhex(
    "002A 002A40200005 03074E4557594F524B 04055041524953 05074E595041535357 060102 0703002003 160102"
)
ACONNECT_NSDU = bytes.fromhex("000E 000E40210501 060102 0703002003")
RCONNECT_301_NSDU = bytes.fromhex("000B 000B40220500 0203 03012D")

LOGON = LOGON_NSDU[2:]
CONNECT = CONNECT_NSDU[2:]

# NOTES C.5: a CONNECT captured from an IBM Connect:Express client.
CX_CONNECT = (
    bytes.fromhex("002F 4020 0062")
    + b"\x03\x08CXCLIENT"
    + b"\x04\x08PESITSRV"
    + b"\x05\x08test123 "
    + bytes.fromhex("060102 0703002002 160102")
)


def test_worked_example_lengths_are_those_of_the_notes() -> None:
    assert len(LOGON_NSDU) == 26
    assert len(CONNECT) == 0x2A
    assert len(CX_CONNECT) == 0x2F


def test_encode_logon_is_the_worked_example() -> None:
    assert frame(encode_logon("PESIT", "NEWYORK", "NYPASSW"), framed=True) == LOGON_NSDU
    assert encode_logon("PESIT", "NEWYORK", "NYPASSW") == LOGON


def test_ack_nsdu_is_the_worked_example() -> None:
    assert frame(ACK0, framed=True) == ACK_NSDU
    assert bytes.fromhex("D5C1D2F0") == NAK0


def test_encode_connect_is_the_worked_example() -> None:
    fpdu = encode_connect("NEWYORK", "PARIS", "NYPASSW", version=2, sync=(32, 3), access_type=2, src=5)
    assert fpdu == CONNECT
    assert frame(fpdu, framed=True) == CONNECT_NSDU
    assert frame(fpdu, framed=False) == fpdu


def test_encode_aconnect_is_the_worked_example() -> None:
    assert frame(encode_aconnect(dst=5, src=1), framed=True) == ACONNECT_NSDU


def test_encode_rconnect_301_is_the_worked_example() -> None:
    assert frame(encode_rconnect(dst=5, diagnostic=301), framed=True) == RCONNECT_301_NSDU


def test_encode_rconnect_304() -> None:
    # Type byte 3, then 304 = 0x0130 on two bytes.
    assert encode_rconnect(dst=0x62, diagnostic=304) == bytes.fromhex("000B40226200020303 0130")


def test_encode_connect_without_password_or_sync() -> None:
    fpdu = encode_connect("A", "B", sync=None, access_type=0, src=1)
    assert fpdu == bytes.fromhex("0012 4020 0001 030141 040142 060102 160100")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: encode_connect("", "PARIS"), "1 to 24"),
        (lambda: encode_connect("X" * 25, "PARIS"), "1 to 24"),
        (lambda: encode_connect("NEWYORKé", "PARIS"), "not ASCII"),
        (lambda: encode_connect("NEWYORK", "PARIS", "123456789"), "1 to 8"),
        (lambda: encode_connect("NEWYORK", "PARIS", access_type=3), "access type"),
        (lambda: encode_rconnect(5, 1000), "three digits"),
        (lambda: encode_logon("PESIT", "TOOLONGID", ""), "longer than 8"),
        (lambda: encode_pi(3, b""), "LI=0"),
        (lambda: encode_pi(3, b"x" * 65536), "65535"),
    ],
)
def test_encoders_refuse_bad_arguments(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


# --- PI encoding ------------------------------------------------------------------------------


def test_long_li_form() -> None:
    value = bytes(range(256)) + bytes(44)
    unit = encode_pi(99, value)
    assert unit[:4] == bytes.fromhex("63FF012C")
    assert parse_pis(unit) == ((99, value),)


@pytest.mark.parametrize("length", [1, 254, 255, 256, 65535])
def test_li_boundaries(length: int) -> None:
    unit = encode_pi(7, b"v" * length)
    assert len(unit) == length + (2 if length <= 254 else 4)
    assert parse_pis(unit) == ((7, b"v" * length),)


def test_parse_pis_of_nothing_is_empty() -> None:
    assert parse_pis(b"") == ()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (bytes.fromhex("0300"), "length 0"),
        (bytes.fromhex("03FF0000"), "length 0"),
        (bytes.fromhex("0401410301 41"), "ascending"),
        (bytes.fromhex("030141030142"), "twice"),
        (bytes.fromhex("030541"), "announces 5 bytes"),
        (bytes.fromhex("03"), "no length byte"),
        (bytes.fromhex("03FF01"), "cut short"),
    ],
)
def test_parse_pis_rejects(data: bytes, message: str) -> None:
    result = parse_pis(data)
    assert isinstance(result, ProtocolError)
    assert message in result.message
    assert result.diagnostic == pesit.DIAG_PROTOCOL_ERROR


# --- parse_connect ------------------------------------------------------------------------------


def test_parse_connect_worked_example() -> None:
    assert parse_connect(CONNECT) == Connect(
        requester="NEWYORK",
        server="PARIS",
        password="NYPASSW",
        new_password=None,
        version=2,
        access_type=2,
        dst=0,
        src=5,
        params=(
            (3, b"NEWYORK"),
            (4, b"PARIS"),
            (5, b"NYPASSW"),
            (6, b"\x02"),
            (7, b"\x00\x20\x03"),
            (22, b"\x02"),
        ),
    )


def test_parse_connect_golden_cx_capture() -> None:
    connect = parse_connect(CX_CONNECT)
    assert isinstance(connect, Connect)
    assert (connect.requester, connect.server, connect.password) == ("CXCLIENT", "PESITSRV", "test123")
    assert (connect.dst, connect.src, connect.version, connect.access_type) == (0, 0x62, 2, 2)


def test_parse_connect_trims_blanks_and_nuls_and_reads_new_password() -> None:
    fpdu = _connect_with(
        (3, b"NEWYORK \x00\x00"),
        (4, b"PARIS   "),
        (5, b"OLD     NEW\x00\x00\x00\x00\x00"),
        (6, b"\x00\x02"),
        (22, b"\x01"),
    )
    connect = parse_connect(fpdu)
    assert isinstance(connect, Connect)
    assert (connect.requester, connect.server) == ("NEWYORK", "PARIS")
    assert (connect.password, connect.new_password) == ("OLD", "NEW")
    assert (connect.version, connect.access_type) == (2, 1)


def test_parse_connect_without_pi5_has_no_password() -> None:
    connect = parse_connect(_connect_with((3, b"A"), (4, b"B"), (6, b"\x01"), (22, b"\x00")))
    assert isinstance(connect, Connect)
    assert connect.password is None
    assert connect.new_password is None
    assert connect.version == 1


def test_parse_connect_keeps_unknown_and_long_pis() -> None:
    free_message = b"m" * 300
    connect = parse_connect(_connect_with((3, b"A"), (4, b"B"), (6, b"\x02"), (22, b"\x02"), (99, free_message)))
    assert isinstance(connect, Connect)
    assert connect.params[-1] == (99, free_message)


def _connect_with(*units: tuple[int, bytes], phase: int = 0x40, fpdu_type: int = 0x20, src: int = 5) -> bytes:
    body = b"".join(encode_pi(code, value) for code, value in units)
    return (6 + len(body)).to_bytes(2, "big") + bytes((phase, fpdu_type, 0, src)) + body


# --- ConnectReader: good input ------------------------------------------------------------------


def _drive(reader: ConnectReader, chunks: list[bytes]) -> list[ReadResult]:
    """Feed chunks as a proxy would: after a LogonReceived, feed(b"") before reading more."""
    results: list[ReadResult] = []
    for chunk in chunks:
        result = reader.feed(chunk)
        while isinstance(result, LogonReceived):
            results.append(result)
            result = reader.feed(b"")
        results.append(result)
        if not isinstance(result, NeedMore):
            break
    return results


def _splits(data: bytes) -> list[list[bytes]]:
    # All at once, byte by byte, and every two-chunk split.
    cases = [[data], [bytes((b,)) for b in data]]
    cases += [[data[:cut], data[cut:]] for cut in range(1, len(data))]
    return cases


def _final(results: list[ReadResult]) -> ReadResult:
    return results[-1]


GOOD_STREAMS = [
    pytest.param(LOGON_NSDU + CONNECT_NSDU, True, True, id="framed-logon-connect"),
    pytest.param(CONNECT_NSDU, True, False, id="framed-connect"),
    pytest.param(LOGON + CONNECT, False, True, id="unframed-logon-connect"),
    pytest.param(CONNECT, False, False, id="unframed-connect"),
    pytest.param(CX_CONNECT, False, False, id="cx-unframed"),
    pytest.param(frame(CX_CONNECT, framed=True), True, False, id="cx-framed"),
]


@pytest.mark.parametrize(("stream", "framed", "with_logon"), GOOD_STREAMS)
def test_reader_every_split(stream: bytes, framed: bool, with_logon: bool) -> None:
    for chunks in _splits(stream):
        results = _drive(ConnectReader(), chunks)
        assert all(isinstance(r, NeedMore) for r in results[:-1] if not isinstance(r, LogonReceived))
        logons = [r for r in results if isinstance(r, LogonReceived)]
        final = _final(results)
        assert isinstance(final, ConnectReceived), (chunks, final)
        assert final.framed is framed
        assert final.consumed == stream
        assert final.extra == b""
        if with_logon:
            assert len(logons) == 1
            assert logons[0].framed is framed
            assert logons[0].reply == (ACK_NSDU if framed else ACK0)
            assert logons[0].logon.protocol == "PESIT"
            assert logons[0].logon.identifier == "NEWYORK"
            assert logons[0].logon.password == "NYPASSW"
            assert logons[0].logon.raw == LOGON
        else:
            assert logons == []


def test_reader_decodes_worked_example_connect() -> None:
    result = ConnectReader().feed(CONNECT_NSDU)
    assert isinstance(result, ConnectReceived)
    assert result.connect == parse_connect(CONNECT)


def test_reader_result_at_the_last_byte_not_before() -> None:
    reader = ConnectReader()
    for byte in CONNECT_NSDU[:-1]:
        assert reader.feed(bytes((byte,))) == NeedMore()
    assert isinstance(reader.feed(CONNECT_NSDU[-1:]), ConnectReceived)


def test_reader_logon_as_soon_as_complete() -> None:
    reader = ConnectReader()
    assert reader.feed(LOGON_NSDU[:-1]) == NeedMore()
    result = reader.feed(LOGON_NSDU[-1:])
    assert isinstance(result, LogonReceived)
    assert reader.feed(b"") == NeedMore()


def test_reader_pipelined_connect_is_found_by_feeding_nothing() -> None:
    reader = ConnectReader()
    assert isinstance(reader.feed(LOGON_NSDU + CONNECT_NSDU), LogonReceived)
    result = reader.feed(b"")
    assert isinstance(result, ConnectReceived)
    assert result.consumed == LOGON_NSDU + CONNECT_NSDU


@pytest.mark.parametrize("stream", [LOGON_NSDU + CONNECT_NSDU, CONNECT, LOGON + CONNECT])
def test_reader_carries_extra_bytes(stream: bytes) -> None:
    extra = b"\x00\x10\xc0\x11 more PeSIT that follows"
    for chunks in ([stream + extra], [stream[:-1], stream[-1:] + extra]):
        final = _final(_drive(ConnectReader(), chunks))
        assert isinstance(final, ConnectReceived)
        assert final.consumed == stream
        assert final.extra == extra


def test_reader_lowercase_pesit_logon_unframed() -> None:
    logon = encode_logon("PeSIT", "NEWYORK", "NYPASSW")
    result = ConnectReader().feed(logon)
    assert isinstance(result, LogonReceived)
    assert result.logon.protocol == "PeSIT"
    assert result.reply == ACK0


def test_reader_connect_with_long_pi99_fits_default_limit() -> None:
    fpdu = _connect_with((3, b"A"), (4, b"B"), (6, b"\x02"), (22, b"\x02"), (99, b"x" * 300))
    result = ConnectReader().feed(frame(fpdu, framed=True))
    assert isinstance(result, ConnectReceived)
    assert result.connect.params[-1] == (99, b"x" * 300)


def test_reader_refuses_feed_after_final_result() -> None:
    reader = ConnectReader()
    assert isinstance(reader.feed(CONNECT), ConnectReceived)
    with pytest.raises(RuntimeError):
        reader.feed(b"")
    reader = ConnectReader()
    assert isinstance(reader.feed(b"GET / HTTP/1.1\r\n"), ProtocolError)
    with pytest.raises(RuntimeError):
        reader.feed(b"x")


def test_reader_max_bytes_must_hold_a_logon() -> None:
    with pytest.raises(ValueError):
        ConnectReader(max_bytes=10)


# --- ConnectReader: malformed input ---------------------------------------------------------------


def _rejects(stream: bytes, *, max_bytes: int = 4096) -> ProtocolError:
    final = _final(_drive(ConnectReader(max_bytes), [stream]))
    assert isinstance(final, ProtocolError), final
    # Byte by byte it ends the same way; only the message may be vaguer, from fewer bytes seen.
    trickled = _final(_drive(ConnectReader(max_bytes), [bytes((b,)) for b in stream]))
    assert isinstance(trickled, ProtocolError), trickled
    assert (trickled.diagnostic, trickled.reply) == (final.diagnostic, final.reply)
    return final


MANDATORY = ((3, b"NEWYORK"), (4, b"PARIS"), (6, b"\x02"), (22, b"\x02"))


def _without(code: int) -> tuple[tuple[int, bytes], ...]:
    return tuple(unit for unit in MANDATORY if unit[0] != code)


def _fix_length(fpdu: bytes) -> bytes:
    return len(fpdu).to_bytes(2, "big") + fpdu[2:]


def _raw_connect(pi_area: bytes, src: int = 5) -> bytes:
    return _fix_length(bytes((0, 0, 0x40, 0x20, 0, src)) + pi_area)


MALFORMED_CONNECT_FPDUS = {
    "li-zero": (_raw_connect(bytes.fromhex("0301410401420601021600")), 311, "length 0"),
    "out-of-order": (_raw_connect(bytes.fromhex("040142030141060102160102")), 311, "ascending"),
    "duplicate": (_raw_connect(bytes.fromhex("030141030141040142060102160102")), 311, "twice"),
    "pi-past-end": (_raw_connect(bytes.fromhex("030141040142060102160502")), 311, "announces 5"),
    "missing-pi3": (_connect_with(*_without(3)), 318, "PI 3"),
    "missing-pi4": (_connect_with(*_without(4)), 318, "PI 4"),
    "missing-pi6": (_connect_with(*_without(6)), 318, "PI 6"),
    "missing-pi22": (_connect_with(*_without(22)), 318, "PI 22"),
    "no-pis": (_raw_connect(b""), 318, "PI 3"),
    "blank-requester": (_connect_with((3, b"   "), *MANDATORY[1:]), 318, "blank"),
    "requester-too-long": (_connect_with((3, b"X" * 25), *MANDATORY[1:]), 318, "at most 24"),
    "requester-not-ascii": (_connect_with((3, b"NEW\xc9"), *MANDATORY[1:]), 318, "not ASCII"),
    "pi5-too-long": (_connect_with(*MANDATORY[:2], (5, b"p" * 17), *MANDATORY[2:]), 318, "PI 5"),
    "version-3": (_connect_with(*MANDATORY[:2], (6, b"\x03"), MANDATORY[3]), 308, "version 3"),
    "version-3-bytes": (_connect_with(*MANDATORY[:2], (6, b"\x00\x00\x02"), MANDATORY[3]), 318, "PI 6"),
    "access-type-3": (_connect_with(*MANDATORY[:3], (22, b"\x03")), 318, "PI 22"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED_CONNECT_FPDUS))
@pytest.mark.parametrize("framed", [False, True])
def test_reader_rejects_malformed_connect_with_rconnect(name: str, framed: bool) -> None:
    fpdu, diagnostic, message = MALFORMED_CONNECT_FPDUS[name]
    assert isinstance(parse_connect(fpdu), ProtocolError)
    error = _rejects(frame(fpdu, framed))
    assert error.diagnostic == diagnostic
    assert message in error.message
    # The requester gets an RCONNECT with the same diagnostic, addressed to its id, framed like it.
    assert error.reply == frame(encode_rconnect(dst=5, diagnostic=diagnostic), framed)


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        pytest.param(_connect_with(*MANDATORY, phase=0xC0), "phase 0xc0", id="bad-phase"),
        pytest.param(encode_aconnect(5, 1), "ACONNECT", id="aconnect-from-client"),
        pytest.param(frame(encode_aconnect(5, 1), True), "ACONNECT", id="framed-aconnect"),
        pytest.param(encode_rconnect(5, 301), "RCONNECT", id="rconnect-from-client"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "not a PeSIT", id="http"),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "not a PeSIT", id="tls-client-hello"),
        pytest.param(b"\xff\xff\xff\xff\xff\xff\xff", "not a PeSIT", id="all-ones"),
        pytest.param(bytes.fromhex("002A002B40200005") + CONNECT[6:], "does not match", id="nsdu-fpdu-length-mismatch"),
    ],
)
def test_reader_rejects_what_is_not_a_connect(stream: bytes, message: str) -> None:
    error = _rejects(stream)
    assert error.diagnostic == pesit.DIAG_PROTOCOL_ERROR
    assert message in error.message
    assert error.reply is None  # not a CONNECT: nothing to answer in PeSIT


def test_reader_rejects_http_after_three_bytes() -> None:
    reader = ConnectReader()
    assert reader.feed(b"GE") == NeedMore()
    assert isinstance(reader.feed(b"T"), ProtocolError)


@pytest.mark.parametrize("framed", [False, True])
def test_reader_rejects_fpdu_shorter_than_its_header(framed: bool) -> None:
    error = _rejects(bytes.fromhex("00054020") if not framed else bytes.fromhex("000500054020"))
    assert "shorter than its 6-byte header" in error.message


@pytest.mark.parametrize("framed", [False, True])
def test_reader_rejects_oversized_connect_without_waiting_for_it(framed: bool) -> None:
    fpdu = _connect_with(*MANDATORY, (99, b"x" * 200))
    stream = frame(fpdu, framed)
    reader = ConnectReader(max_bytes=128)
    header_length = 8 if framed else 6
    results = [reader.feed(bytes((b,))) for b in stream[:header_length]]
    error = results[-1]
    assert isinstance(error, ProtocolError)
    assert "limit 128" in error.message
    assert error.reply == frame(encode_rconnect(dst=5, diagnostic=311), framed)


def test_reader_max_bytes_counts_the_logon() -> None:
    limit = len(LOGON_NSDU) + len(CONNECT_NSDU)
    final = _final(_drive(ConnectReader(max_bytes=limit), [LOGON_NSDU + CONNECT_NSDU]))
    assert isinstance(final, ConnectReceived)
    error = _rejects(LOGON_NSDU + CONNECT_NSDU, max_bytes=limit - 1)
    assert "limit" in error.message


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        pytest.param(LOGON_NSDU + CONNECT, "framing changed", id="framed-logon-unframed-connect"),
        pytest.param(LOGON + CONNECT_NSDU, "framing changed", id="unframed-logon-framed-connect"),
        pytest.param(LOGON_NSDU + LOGON_NSDU, "second LOGON", id="two-logons"),
        pytest.param(LOGON + ACK0, "not a PeSIT", id="logon-then-garbage"),
    ],
)
def test_reader_rejects_bad_sequence_after_logon(stream: bytes, message: str) -> None:
    error = _rejects(stream)
    assert message in error.message


def test_reader_framing_change_answers_like_the_connect() -> None:
    error = _rejects(LOGON_NSDU + CONNECT)
    assert error.reply == encode_rconnect(dst=5, diagnostic=311)


# --- parse_logon_answer ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "accepted", "length"),
    [
        (ACK_NSDU, True, 6),
        (ACK0, True, 4),
        (frame(NAK0, True), False, 6),
        (NAK0, False, 4),
        (ACK_NSDU + CONNECT_NSDU, True, 6),
        (ACK0 + b"\x00\x0e", True, 4),
    ],
)
def test_logon_answer(data: bytes, accepted: bool, length: int) -> None:
    assert parse_logon_answer(data) == LogonAnswer(accepted=accepted, consumed_len=length, raw=data[:length])


@pytest.mark.parametrize("answer", [ACK_NSDU, ACK0, frame(NAK0, True), NAK0])
def test_logon_answer_needs_more_until_complete(answer: bytes) -> None:
    for cut in range(len(answer)):
        assert parse_logon_answer(answer[:cut]) == NeedMore()


@pytest.mark.parametrize(
    "data",
    [b"\x00\x05\xc1\xc3\xd2\xf0", b"\x00\x04ACK0", b"ACK0", b"\xc1\xc3\xd2\xf1", b"\x00\x0e\x00\x0e\x40\x21"],
)
def test_logon_answer_rejects(data: bytes) -> None:
    result = parse_logon_answer(data)
    assert isinstance(result, ProtocolError)
    assert "ACK0 or NAK0" in result.message


# --- purity -------------------------------------------------------------------------------------
