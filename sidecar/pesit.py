"""PeSIT E connection start, sans-IO: pre-connection (LOGON), CONNECT, ACONNECT, RCONNECT.

The proxy must know who is calling before a single byte reaches the backend, so it reads the start
of the decrypted stream itself: an optional 24-byte EBCDIC LOGON, which it acknowledges with ACK0,
then the CONNECT FPDU. Each may come with or without the 2-byte NSDU length prefix (NOTES C.4-C.7).
Nothing here does I/O: `ConnectReader.feed` takes bytes and returns a value saying what to do next.

Wire layouts (NOTES C.1-C.3):

    NSDU  = length(2, itself excluded) + NSDU content      the "framed" form; absent when unframed
    FPDU  = length(2, header included) phase(1) type(1) dst(1) src(1) + PI units
    PI    = code(1) + LI + value; LI is 1 byte for 1-254, 0xFF + 2 bytes big-endian for 255-65535;
            LI = 0 is rejected by the protocol; units in strictly ascending code order
    LOGON = 24 EBCDIC bytes: protocol(8) identifier(8) password(8), each left-aligned, blank-padded

Malformed input is never an exception here: it is a `ProtocolError` value carrying the PeSIT
diagnostic to answer with. Exceptions are kept for programming errors (bad arguments to an encoder,
feeding a reader that already gave its final result).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

EBCDIC = "cp037"  # letters, digits and blank are identical in cp037 and cp500 (NOTES C.4)
EBCDIC_BLANK = 0x40

ACK0 = b"\xc1\xc3\xd2\xf0"  # "ACK0" in EBCDIC: the pre-connection message is accepted
NAK0 = b"\xd5\xc1\xd2\xf0"  # "NAK0" in EBCDIC: refused

LOGON_LENGTH = 24
LOGON_FIELD_LENGTH = 8
NSDU_PREFIX_LENGTH = 2
FPDU_HEADER_LENGTH = 6
MAX_NSDU_LENGTH = 0xFFFF
MAX_ID_LENGTH = 24  # PI 3 / PI 4; CFT's NRPART is string24 (NOTES C.8.2)
PASSWORD_LENGTH = 8  # PI 5 holds password (bytes 1-8) then an optional new password (bytes 9-16)
MAX_ACCESS_CONTROL_LENGTH = 2 * PASSWORD_LENGTH

PHASE_CONNECTION = 0x40
TYPE_CONNECT = 0x20
TYPE_ACONNECT = 0x21
TYPE_RCONNECT = 0x22
_CONNECTION_PHASE_NAMES = {
    TYPE_CONNECT: "CONNECT",
    TYPE_ACONNECT: "ACONNECT",
    TYPE_RCONNECT: "RCONNECT",
    0x23: "RELEASE",
    0x24: "RELCONF",
    0x25: "ABORT",
}

PI_DIAGNOSTIC = 2
PI_REQUESTER = 3
PI_SERVER = 4
PI_ACCESS_CONTROL = 5
PI_VERSION = 6
PI_SYNC_POINTS = 7
PI_ACCESS_TYPE = 22
PI_FREE_MESSAGE = 99
_LONG_LI_MARKER = 0xFF
_MAX_SHORT_LI = 254

VERSION_D = 1
VERSION_E = 2
ACCESS_WRITE = 0
ACCESS_READ = 1
ACCESS_MIXED = 2

# Diagnostics (NOTES C.3). 301 is what CFT answers for an unknown requester or a wrong password.
DIAG_BAD_IDENTIFICATION = 301
DIAG_NOT_ATTACHED = 302  # "not attached to SAP": the transfer service behind the proxy is unreachable
DIAG_UNAUTHORIZED_REQUESTER = 304
DIAG_VERSION_NOT_SUPPORTED = 308
DIAG_PROTOCOL_ERROR = 311
DIAG_BAD_PARAMETER = 318

DEFAULT_MAX_BYTES = 4096


# --- values -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Logon:
    """A decoded pre-connection message; `raw` is its 24 bytes without any NSDU prefix."""

    protocol: str
    identifier: str
    password: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class Connect:
    """A decoded CONNECT FPDU. Strings are right-trimmed of blanks and NULs (PeSIT type C)."""

    requester: str  # PI 3: compared with the partners' nrpart
    server: str  # PI 4: CFT does not process it
    password: str | None  # PI 5 bytes 1-8; None when PI 5 is absent
    new_password: str | None  # PI 5 bytes 9-16; None when absent or blank
    version: int  # PI 6
    access_type: int  # PI 22
    dst: int
    src: int  # the requester's connection id: an RCONNECT goes back with dst = this
    params: tuple[tuple[int, bytes], ...]  # every PI, in wire order


@dataclass(frozen=True, slots=True)
class NeedMore:
    """Not enough bytes yet: read more and feed them."""


@dataclass(frozen=True, slots=True)
class LogonReceived:
    """A LOGON was read. Send `reply` (ACK0, framed like the LOGON), then call `feed` again.

    The client may have sent its CONNECT without waiting for the ACK0: call `feed(b"")` first, it
    works on the bytes already buffered before asking the socket for more.
    """

    logon: Logon
    framed: bool
    reply: bytes


@dataclass(frozen=True, slots=True)
class ConnectReceived:
    """The CONNECT was read. Replay `consumed` then `extra` to the backend, verbatim, in that order."""

    connect: Connect
    framed: bool
    consumed: bytes  # every byte of the LOGON (if any) and the CONNECT, exactly as received
    extra: bytes  # whatever the client sent beyond the CONNECT


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """Malformed or unexpected bytes. `diagnostic` is the PeSIT code that fits (311, 318, 308).

    `reply` is the RCONNECT to send before closing, framed like the offending CONNECT; None when the
    peer did not get far enough into a CONNECT to be answered in PeSIT (just close).
    """

    message: str
    diagnostic: int
    reply: bytes | None = None


@dataclass(frozen=True, slots=True)
class LogonAnswer:
    """The backend's answer to a replayed LOGON; `raw` is its `consumed_len` bytes as received."""

    accepted: bool
    consumed_len: int
    raw: bytes


ReadResult = NeedMore | LogonReceived | ConnectReceived | ProtocolError
NEED_MORE = NeedMore()


# --- encoding -----------------------------------------------------------------------------------


def frame(fpdu: bytes, framed: bool) -> bytes:
    """Prefix `fpdu` with the 2-byte NSDU length when the peer uses framing."""
    if not framed:
        return fpdu
    if len(fpdu) > MAX_NSDU_LENGTH:
        raise ValueError(f"an NSDU holds at most {MAX_NSDU_LENGTH} bytes, got {len(fpdu)}")
    return len(fpdu).to_bytes(2, "big") + fpdu


def encode_pi(code: int, value: bytes) -> bytes:
    """One PI unit: code, LI (1 byte, or 0xFF + 2 bytes from 255 on), value."""
    if not 0 <= code <= 0xFF:
        raise ValueError(f"PI code must fit in one byte, got {code}")
    length = len(value)
    if length == 0:
        raise ValueError(f"PI {code}: an empty value cannot be encoded (LI=0 is rejected by PeSIT)")
    if length <= _MAX_SHORT_LI:
        return bytes((code, length)) + value
    if length <= 0xFFFF:
        return bytes((code, _LONG_LI_MARKER)) + length.to_bytes(2, "big") + value
    raise ValueError(f"PI {code}: a value holds at most 65535 bytes, got {length}")


def encode_logon(protocol: str, identifier: str, password: str) -> bytes:
    """The 24-byte EBCDIC pre-connection message, each field left-aligned and blank-padded."""
    fields = []
    for label, text in (("protocol", protocol), ("identifier", identifier), ("password", password)):
        try:
            encoded = text.encode(EBCDIC)
        except UnicodeEncodeError as exc:
            raise ValueError(f"LOGON {label} {text!r} is not encodable in EBCDIC") from exc
        if len(encoded) > LOGON_FIELD_LENGTH:
            raise ValueError(f"LOGON {label} {text!r} is longer than {LOGON_FIELD_LENGTH} characters")
        fields.append(encoded.ljust(LOGON_FIELD_LENGTH, bytes((EBCDIC_BLANK,))))
    return b"".join(fields)


def encode_connect(
    requester: str,
    server: str,
    password: str | None = None,
    version: int = VERSION_E,
    sync: tuple[int, int] | None = (32, 3),
    access_type: int = ACCESS_MIXED,
    src: int = 5,
) -> bytes:
    """A CONNECT FPDU (no NSDU prefix). `sync` = (interval in KB, ack window); None omits PI 7.

    Strings go on the wire as given, unpadded, like the worked example of NOTES C.6.
    """
    units = [
        encode_pi(PI_REQUESTER, _ascii_field("requester", requester, MAX_ID_LENGTH)),
        encode_pi(PI_SERVER, _ascii_field("server", server, MAX_ID_LENGTH)),
    ]
    if password is not None:
        units.append(encode_pi(PI_ACCESS_CONTROL, _ascii_field("password", password, PASSWORD_LENGTH)))
    units.append(encode_pi(PI_VERSION, _encode_number(version)))
    if sync is not None:
        units.append(encode_pi(PI_SYNC_POINTS, _encode_sync(sync)))
    if not ACCESS_WRITE <= access_type <= ACCESS_MIXED:
        raise ValueError(f"access type must be 0 (write), 1 (read) or 2 (mixed), got {access_type}")
    units.append(encode_pi(PI_ACCESS_TYPE, bytes((access_type,))))
    return _encode_fpdu(TYPE_CONNECT, dst=0, src=src, units=units)


def encode_aconnect(dst: int, src: int, version: int = VERSION_E, sync: tuple[int, int] | None = (32, 3)) -> bytes:
    """An ACONNECT FPDU (no NSDU prefix): dst = the requester's id, src = the server's."""
    units = [encode_pi(PI_VERSION, _encode_number(version))]
    if sync is not None:
        units.append(encode_pi(PI_SYNC_POINTS, _encode_sync(sync)))
    return _encode_fpdu(TYPE_ACONNECT, dst=dst, src=src, units=units)


def encode_rconnect(dst: int, diagnostic: int) -> bytes:
    """An RCONNECT FPDU (no NSDU prefix). PI 2 = error type (diagnostic // 100) + the full code on 2 bytes."""
    if not 0 <= diagnostic <= 999:
        raise ValueError(f"a PeSIT diagnostic has three digits, got {diagnostic}")
    value = bytes((diagnostic // 100,)) + diagnostic.to_bytes(2, "big")
    return _encode_fpdu(TYPE_RCONNECT, dst=dst, src=0, units=[encode_pi(PI_DIAGNOSTIC, value)])


def _encode_fpdu(fpdu_type: int, *, dst: int, src: int, units: list[bytes]) -> bytes:
    for label, connection_id in (("dst", dst), ("src", src)):
        if not 0 <= connection_id <= 0xFF:
            raise ValueError(f"connection id {label} must fit in one byte, got {connection_id}")
    body = b"".join(units)
    length = FPDU_HEADER_LENGTH + len(body)
    if length > MAX_NSDU_LENGTH:
        raise ValueError(f"an FPDU holds at most {MAX_NSDU_LENGTH} bytes, got {length}")
    return length.to_bytes(2, "big") + bytes((PHASE_CONNECTION, fpdu_type, dst, src)) + body


def _ascii_field(label: str, text: str, max_length: int) -> bytes:
    try:
        encoded = text.encode("ascii")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{label} {text!r} is not ASCII (PeSIT type C)") from exc
    if not 1 <= len(encoded) <= max_length:
        raise ValueError(f"{label} {text!r} must have 1 to {max_length} characters")
    return encoded


def _encode_number(value: int) -> bytes:
    # PeSIT type N: unsigned big-endian with leading zero bytes removed, at least one byte.
    if value < 0:
        raise ValueError(f"a PeSIT number is unsigned, got {value}")
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def _encode_sync(sync: tuple[int, int]) -> bytes:
    interval_kb, window = sync
    if not 0 <= interval_kb <= 0xFFFF or not 0 <= window <= 0xFF:
        raise ValueError(f"sync points are (interval KB < 65536, window < 256), got {sync}")
    return interval_kb.to_bytes(2, "big") + bytes((window,))


# --- decoding -----------------------------------------------------------------------------------


def parse_pis(data: bytes) -> tuple[tuple[int, bytes], ...] | ProtocolError:
    """Split a PI area into (code, value) units, strictly: LI rules, ascending codes, no duplicate.

    A long-form LI (0xFF) announcing fewer than 255 bytes is accepted: its meaning is unambiguous.
    """
    units: list[tuple[int, bytes]] = []
    position = 0
    previous_code = -1
    while position < len(data):
        code = data[position]
        if code == previous_code:
            return _error(f"PI {code} appears twice")
        if code < previous_code:
            return _error(f"PI {code} follows PI {previous_code}: PIs must come in ascending order")
        if position + 1 >= len(data):
            return _error(f"PI {code} at offset {position} has no length byte")
        length = data[position + 1]
        value_start = position + 2
        if length == _LONG_LI_MARKER:
            if position + 4 > len(data):
                return _error(f"PI {code} at offset {position}: its 3-byte length is cut short")
            length = int.from_bytes(data[position + 2 : position + 4], "big")
            value_start = position + 4
        if length == 0:
            return _error(f"PI {code} at offset {position} has length 0, which PeSIT rejects")
        value_end = value_start + length
        if value_end > len(data):
            available = len(data) - value_start
            return _error(f"PI {code} at offset {position} announces {length} bytes, only {available} remain")
        units.append((code, bytes(data[value_start:value_end])))
        previous_code = code
        position = value_end
    return tuple(units)


def parse_connect(fpdu: bytes) -> Connect | ProtocolError:
    """Decode one complete CONNECT FPDU (no NSDU prefix). `reply` of an error is left to the caller."""
    if len(fpdu) < FPDU_HEADER_LENGTH:
        return _error(f"an FPDU has a {FPDU_HEADER_LENGTH}-byte header, got {len(fpdu)} bytes")
    declared = int.from_bytes(fpdu[0:2], "big")
    if declared != len(fpdu):
        return _error(f"FPDU length field says {declared} bytes, the FPDU has {len(fpdu)}")
    phase, fpdu_type, dst, src = fpdu[2], fpdu[3], fpdu[4], fpdu[5]
    if (phase, fpdu_type) != (PHASE_CONNECTION, TYPE_CONNECT):
        return _error(f"{_fpdu_name(phase, fpdu_type)} where a CONNECT was expected")
    params = parse_pis(fpdu[FPDU_HEADER_LENGTH:])
    if isinstance(params, ProtocolError):
        return params
    values = dict(params)
    for code, label in (
        (PI_REQUESTER, "requester id"),
        (PI_SERVER, "server id"),
        (PI_VERSION, "version"),
        (PI_ACCESS_TYPE, "access type"),
    ):
        if code not in values:
            return _error(f"CONNECT lacks mandatory PI {code} ({label})", DIAG_BAD_PARAMETER)

    requester = _decode_id(values[PI_REQUESTER], PI_REQUESTER, "requester id")
    if isinstance(requester, ProtocolError):
        return requester
    if not requester:
        return _error("PI 3 (requester id) is blank", DIAG_BAD_PARAMETER)
    server = _decode_id(values[PI_SERVER], PI_SERVER, "server id")
    if isinstance(server, ProtocolError):
        return server
    password, new_password = None, None
    if PI_ACCESS_CONTROL in values:
        access_control = _decode_access_control(values[PI_ACCESS_CONTROL])
        if isinstance(access_control, ProtocolError):
            return access_control
        password, new_password = access_control
    version = _decode_version(values[PI_VERSION])
    if isinstance(version, ProtocolError):
        return version
    access_type = _decode_access_type(values[PI_ACCESS_TYPE])
    if isinstance(access_type, ProtocolError):
        return access_type
    return Connect(
        requester=requester,
        server=server,
        password=password,
        new_password=new_password,
        version=version,
        access_type=access_type,
        dst=dst,
        src=src,
        params=params,
    )


def parse_logon_answer(data: bytes) -> NeedMore | LogonAnswer | ProtocolError:
    """Read the backend's ACK0/NAK0, framed (`00 04` + 4 bytes) or not. Bytes beyond it are not touched."""
    framed_prefix = (4).to_bytes(NSDU_PREFIX_LENGTH, "big")
    prefix_length = NSDU_PREFIX_LENGTH if data[:1] == framed_prefix[:1] else 0
    if prefix_length and len(data) >= NSDU_PREFIX_LENGTH and data[:NSDU_PREFIX_LENGTH] != framed_prefix:
        return _error(f"LOGON answer: expected ACK0 or NAK0, got {_hex(data[:NSDU_PREFIX_LENGTH])}")
    answer_end = prefix_length + len(ACK0)
    answer = data[prefix_length:answer_end]
    if not any(known.startswith(answer) for known in (ACK0, NAK0)):
        return _error(f"LOGON answer: expected ACK0 or NAK0, got {_hex(data[:answer_end])}")
    if len(answer) < len(ACK0):
        return NEED_MORE
    return LogonAnswer(accepted=answer == ACK0, consumed_len=answer_end, raw=bytes(data[:answer_end]))


def _decode_logon(raw: bytes) -> Logon:
    text = raw.decode(EBCDIC)  # cp037 maps all 256 byte values: decoding cannot fail

    def field(index: int) -> str:
        return text[index * LOGON_FIELD_LENGTH : (index + 1) * LOGON_FIELD_LENGTH].rstrip(" \x00")

    return Logon(protocol=field(0), identifier=field(1), password=field(2), raw=bytes(raw))


def _decode_text(value: bytes, code: int, label: str) -> str | ProtocolError:
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return _error(f"PI {code} ({label}) is not ASCII: {_hex(value)}", DIAG_BAD_PARAMETER)
    # Type C: "les blancs à droite ne sont pas significatifs"; NULs pad fixed-size fields in the wild.
    return text.rstrip(" \x00")


def _decode_id(value: bytes, code: int, label: str) -> str | ProtocolError:
    if len(value) > MAX_ID_LENGTH:
        return _error(
            f"PI {code} ({label}) has {len(value)} bytes, at most {MAX_ID_LENGTH} allowed", DIAG_BAD_PARAMETER
        )
    return _decode_text(value, code, label)


def _decode_access_control(value: bytes) -> tuple[str, str | None] | ProtocolError:
    if len(value) > MAX_ACCESS_CONTROL_LENGTH:
        return _error(
            f"PI 5 (access control) has {len(value)} bytes, at most {MAX_ACCESS_CONTROL_LENGTH} allowed",
            DIAG_BAD_PARAMETER,
        )
    password = _decode_text(value[:PASSWORD_LENGTH], PI_ACCESS_CONTROL, "password")
    if isinstance(password, ProtocolError):
        return password
    new_password = _decode_text(value[PASSWORD_LENGTH:], PI_ACCESS_CONTROL, "new password")
    if isinstance(new_password, ProtocolError):
        return new_password
    return password, new_password or None


def _decode_version(value: bytes) -> int | ProtocolError:
    # Typed "C, length 2" in one table of the spec, binary on the wire: accept 1 or 2 bytes (NOTES C.8.3).
    if len(value) > 2:
        return _error(f"PI 6 (version) has {len(value)} bytes, at most 2 allowed", DIAG_BAD_PARAMETER)
    version = int.from_bytes(value, "big")
    if version not in (VERSION_D, VERSION_E):
        return _error(f"PI 6: version {version} is not supported (1 = D, 2 = E)", DIAG_VERSION_NOT_SUPPORTED)
    return version


def _decode_access_type(value: bytes) -> int | ProtocolError:
    if len(value) != 1 or value[0] > ACCESS_MIXED:
        return _error(f"PI 22 (access type) must be one byte 0, 1 or 2, got {_hex(value)}", DIAG_BAD_PARAMETER)
    return value[0]


def _error(message: str, diagnostic: int = DIAG_PROTOCOL_ERROR) -> ProtocolError:
    return ProtocolError(message=message, diagnostic=diagnostic)


def _hex(data: bytes) -> str:
    return data.hex(" ") if data else "(nothing)"


def _fpdu_name(phase: int, fpdu_type: int) -> str:
    known = _CONNECTION_PHASE_NAMES.get(fpdu_type) if phase == PHASE_CONNECTION else None
    described = f"phase 0x{phase:02x} type 0x{fpdu_type:02x}"
    return f"{known} FPDU ({described})" if known else f"FPDU {described}"


# --- the incremental reader ---------------------------------------------------------------------


class _Shape(Enum):
    """What the first bytes of a message look like, in the order NOTES C.7 tries them."""

    LOGON_FRAMED = "framed LOGON"
    LOGON_UNFRAMED = "unframed LOGON"
    CONNECT_FRAMED = "framed CONNECT"
    CONNECT_UNFRAMED = "unframed CONNECT"

    @property
    def is_logon(self) -> bool:
        return self in (_Shape.LOGON_FRAMED, _Shape.LOGON_UNFRAMED)

    @property
    def framed(self) -> bool:
        return self in (_Shape.LOGON_FRAMED, _Shape.CONNECT_FRAMED)


_SNIFF_LENGTH = NSDU_PREFIX_LENGTH + 4  # enough for every signature below


def _signatures(head: bytes) -> tuple[tuple[_Shape, tuple[int | None, ...]], ...]:
    # None is "any byte". A framed CONNECT repeats its NSDU length as the FPDU length.
    nsdu_high = head[0] if len(head) > 0 else None
    nsdu_low = head[1] if len(head) > 1 else None
    return (
        (_Shape.LOGON_FRAMED, (0x00, LOGON_LENGTH, 0xD7)),  # 00 18 'P'
        (_Shape.LOGON_UNFRAMED, (0xD7, 0xC5)),  # 'P' 'E'
        (_Shape.LOGON_UNFRAMED, (0xD7, 0x85)),  # 'P' 'e': "PeSIT" is accepted too (NOTES C.7)
        (_Shape.CONNECT_FRAMED, (None, None, nsdu_high, nsdu_low, PHASE_CONNECTION, TYPE_CONNECT)),
        (_Shape.CONNECT_UNFRAMED, (None, None, PHASE_CONNECTION, TYPE_CONNECT)),
    )


def _sniff(head: bytes) -> _Shape | NeedMore | ProtocolError:
    """Decide the shape as soon as the bytes allow it, and no sooner.

    Shapes are tried in priority order: the first one the bytes do not contradict wins once all its
    signature bytes are there; while it is still only possible, wait, even if a later one matches.
    """
    for shape, signature in _signatures(head):
        contradicted = any(
            expected is not None and got != expected for got, expected in zip(head, signature, strict=False)
        )
        if contradicted:
            continue
        return shape if len(head) >= len(signature) else NEED_MORE
    return _diagnose(head)


_KNOWN_PHASES = (PHASE_CONNECTION, 0xC0, 0x00)
# Phase 0x00 is left out here: it is also the first byte of every NSDU prefix below 256 bytes.
_UNFRAMED_LOOKING_PHASES = (PHASE_CONNECTION, 0xC0)


def _diagnose(head: bytes) -> ProtocolError:
    # Nothing matched: say what it looks like, to make the log line useful. The verdict does not
    # wait for more bytes than it needed, so how specific the message is depends on how much
    # arrived in one piece (in practice the first TCP segment holds the whole header).
    if len(head) >= 6 and head[4:6] == bytes((PHASE_CONNECTION, TYPE_CONNECT)):
        nsdu_length, fpdu_length = int.from_bytes(head[0:2], "big"), int.from_bytes(head[2:4], "big")
        return _error(f"framed CONNECT: NSDU length {nsdu_length} does not match FPDU length {fpdu_length}")
    if len(head) >= 6 and head[0:2] == head[2:4] and head[4] in _KNOWN_PHASES:
        return _error(f"framed {_fpdu_name(head[4], head[5])} where a LOGON or CONNECT was expected")
    if len(head) >= 4 and head[2] in _UNFRAMED_LOOKING_PHASES:
        return _error(f"{_fpdu_name(head[2], head[3])} where a LOGON or CONNECT was expected")
    return _error(f"not a PeSIT LOGON or CONNECT (first bytes: {_hex(head)})")


class ConnectReader:
    """Reads [LOGON] CONNECT from the client's first bytes; `feed` returns what to do next.

    Results: `NeedMore` (read and feed more), `LogonReceived` (send its reply, feed again, starting
    with `feed(b"")`), then one final `ConnectReceived` or `ProtocolError`. Any input gives a value;
    feeding after the final result raises RuntimeError (a bug in the caller, not bad input).
    At most `max_bytes` are buffered for LOGON + CONNECT together: a larger CONNECT is refused
    as soon as its length field is read, without waiting for its body.
    """

    __slots__ = ("_buffer", "_finished", "_logon_framed", "_max_bytes", "_message_start")

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        minimum = NSDU_PREFIX_LENGTH + LOGON_LENGTH
        if max_bytes < minimum:
            raise ValueError(f"max_bytes must be at least {minimum} (a framed LOGON), got {max_bytes}")
        self._max_bytes = max_bytes
        self._buffer = bytearray()
        self._message_start = 0  # where the message being read begins: 0, or just after the LOGON
        self._logon_framed: bool | None = None  # None until a LOGON was read
        self._finished = False

    def feed(self, data: bytes) -> ReadResult:
        if self._finished:
            raise RuntimeError("ConnectReader.feed called after its final result")
        self._buffer += data
        result = self._step()
        self._finished = isinstance(result, ConnectReceived | ProtocolError)
        return result

    def _step(self) -> ReadResult:
        start = self._message_start
        shape = _sniff(bytes(self._buffer[start : start + _SNIFF_LENGTH]))
        if not isinstance(shape, _Shape):
            return shape
        prefix_length = NSDU_PREFIX_LENGTH if shape.framed else 0
        if shape.is_logon:
            return self._read_logon(shape, prefix_length)
        return self._read_connect(shape, prefix_length)

    def _read_logon(self, shape: _Shape, prefix_length: int) -> ReadResult:
        if self._logon_framed is not None:
            return _error(f"a second LOGON ({shape.value}) where the CONNECT was expected")
        start = self._message_start
        end = start + prefix_length + LOGON_LENGTH
        if len(self._buffer) < end:
            return NEED_MORE
        logon = _decode_logon(bytes(self._buffer[start + prefix_length : end]))
        self._message_start = end
        self._logon_framed = shape.framed
        return LogonReceived(logon=logon, framed=shape.framed, reply=frame(ACK0, shape.framed))

    def _read_connect(self, shape: _Shape, prefix_length: int) -> ReadResult:
        start = self._message_start
        fpdu_start = start + prefix_length
        header = bytes(self._buffer[fpdu_start : fpdu_start + FPDU_HEADER_LENGTH])
        fpdu_length = int.from_bytes(header[0:2], "big")  # the shape is known: these bytes are there
        if fpdu_length < FPDU_HEADER_LENGTH:
            # Not even a header: no requester id to address an RCONNECT to, and no reason to wait.
            return _error(f"FPDU length {fpdu_length} is shorter than its {FPDU_HEADER_LENGTH}-byte header")
        if len(header) < FPDU_HEADER_LENGTH:
            # Even a refusal waits for the whole header: its last byte (src, the requester's
            # connection id) addresses the RCONNECT, and a CONNECT needs it anyway.
            return NEED_MORE
        requester_id = header[5]

        def refuse(message: str, diagnostic: int = DIAG_PROTOCOL_ERROR) -> ProtocolError:
            reply = frame(encode_rconnect(requester_id, diagnostic), shape.framed)
            return ProtocolError(message=message, diagnostic=diagnostic, reply=reply)

        if self._logon_framed is not None and self._logon_framed != shape.framed:
            logon_shape = "framed" if self._logon_framed else "unframed"
            return refuse(f"{shape.value} after a LOGON that was {logon_shape}: the framing changed")
        end = fpdu_start + fpdu_length
        if end > self._max_bytes:
            return refuse(f"{shape.value} of {fpdu_length} bytes would end at byte {end}, limit {self._max_bytes}")
        if len(self._buffer) < end:
            return NEED_MORE
        connect = parse_connect(bytes(self._buffer[fpdu_start:end]))
        if isinstance(connect, ProtocolError):
            return refuse(connect.message, connect.diagnostic)
        return ConnectReceived(
            connect=connect,
            framed=shape.framed,
            consumed=bytes(self._buffer[:end]),
            extra=bytes(self._buffer[end:]),
        )
