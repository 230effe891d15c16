"""The configuration: one frozen tree that mirrors the YAML schema (SPEC §3).

YAML keys equal field names, so an issue's path is the YAML path (`profiles[1].ciphlist[2]`).
Parsing collects every problem before failing; it never logs, exits or opens sockets. Files named
by the configuration (certificates, keys, rule files) are only resolved to absolute paths here;
`runtime.build_snapshot` loads them and reports their problems with the same paths.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, cast, get_args

import yaml

from .errors import ConfigError, Issue

Direct = Literal["server", "client"]
ServerVerify = Literal["none", "optional", "required"]
ClientVerify = Literal["none", "optional", "required", "enforced"]
TlsVersion = Literal["tls1.0", "tls1.1", "tls1.2", "tls1.3"]
Identify = Literal["none", "pesit", "certificate"]
Plaintext = Literal["refuse", "allow"]
ProxyProtocol = Literal["none", "v1", "v2"]
MissingPartnerProfile = Literal["warn", "reject"]
KeyExt = Literal["none", "verify"]
LogFormat = Literal["json", "text"]
LogLevel = Literal["debug", "info", "warning", "error"]
EmptyConnectionsLevel = Literal["debug", "info", "warning"]
Encryption = Literal["required", "optional"]

TLS_VERSIONS: tuple[TlsVersion, ...] = get_args(TlsVersion)
# CFT VERSION keywords: TLSV1 / TLSV1COMP mean "TLS 1.0 up to TLS 1.2" (NOTES A.4).
_CFT_VERSION_KEYWORDS: dict[str, tuple[TlsVersion, TlsVersion]] = {
    "tlsv1": ("tls1.0", "tls1.2"),
    "tlsv1comp": ("tls1.0", "tls1.2"),
}


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


@dataclass(frozen=True, slots=True, kw_only=True)
class PkiEntry:
    id: str
    cert: Path
    key: Path | None = None
    key_password_file: Path | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionRange:
    min: TlsVersion = "tls1.2"
    max: TlsVersion = "tls1.3"


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    id: str
    direct: Direct
    usercid: str | None = None
    rootcid: tuple[str, ...] = ()
    verify: str = "required"  # ServerVerify or ClientVerify, by `direct`
    ciphlist: tuple[int | str, ...] = ()  # as written; tls.profiles resolves to codes
    version: VersionRange = field(default_factory=VersionRange)
    depth: int = 10
    dnuser: tuple[str, ...] = ()
    dnissuer: tuple[str, ...] = ()
    keyext: KeyExt = "none"
    crl: tuple[Path, ...] = ()
    session_tickets: bool = False
    parm: str | None = None
    comment: str | None = None
    index: int = 0  # position in `profiles`, for error paths

    @property
    def path(self) -> str:
        return f"profiles[{self.index}]"


@dataclass(frozen=True, slots=True, kw_only=True)
class Listener:
    id: str
    listen: Address | None = None
    ssl: str | None = None
    backend: Address | None = None
    sslauth: Path | None = None
    identify: Identify = "none"
    plaintext: Plaintext = "refuse"
    proxy_protocol: ProxyProtocol = "none"
    missing_partner_profile: MissingPartnerProfile = "warn"
    backend_check: float = 0.0  # seconds between TCP connect probes of the backend; 0 = off
    index: int = 0

    @property
    def path(self) -> str:
        return f"listeners[{self.index}]"


@dataclass(frozen=True, slots=True, kw_only=True)
class Partner:
    id: str
    nrpart: str
    nrpassw: str | None = None
    nrpassw_file: Path | None = None
    ssl: str | None = None
    prot: tuple[str, ...] | None = None  # None: every listener
    host: tuple[str, ...] = ()
    host_verify: int = 0
    sap: int | None = None
    user_class: str | None = None
    index: int = 0

    @property
    def path(self) -> str:
        return f"partners[{self.index}]"


@dataclass(frozen=True, slots=True, kw_only=True)
class Outbound:
    id: str
    listen: Address
    partner: str
    ssl: str | None = None
    prot: str | None = None
    index: int = 0

    @property
    def path(self) -> str:
        return f"outbound[{self.index}]"


@dataclass(frozen=True, slots=True, kw_only=True)
class UserClass:
    name: str
    user: str = "*"
    address: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EncryptionEntry:
    user_class: str  # YAML key `class`
    encryption: Encryption


@dataclass(frozen=True, slots=True, kw_only=True)
class Admin:
    listen: Address
    token_file: Path | None = None
    health_without_token: bool = False  # /healthz and /readyz answer without the token (httpGet probes)


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    handshake_timeout: float = 10.0
    idle_timeout: float = 600.0
    connect_timeout: float = 5.0
    max_connections: int = 10000
    drain_timeout: float = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Logging:
    format: LogFormat = "json"
    level: LogLevel = "info"
    empty_connections: EmptyConnectionsLevel = "info"  # close line of a connection that sent no byte


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    source: Path  # the config file; relative paths inside it are resolved against its folder
    pki: tuple[PkiEntry, ...] = ()
    profiles: tuple[Profile, ...] = ()
    listeners: tuple[Listener, ...] = ()
    partners: tuple[Partner, ...] = ()
    outbound: tuple[Outbound, ...] = ()
    user_classes: tuple[UserClass, ...] = ()
    encryption: tuple[EncryptionEntry, ...] = ()
    admin: Admin | None = None
    limits: Limits = field(default_factory=Limits)
    logging: Logging = field(default_factory=Logging)

    def profile(self, profile_id: str, direct: Direct) -> Profile | None:
        for profile in self.profiles:
            if profile.id == profile_id and profile.direct == direct:
                return profile
        return None

    def pki_entry(self, pki_id: str) -> PkiEntry | None:
        return next((entry for entry in self.pki if entry.id == pki_id), None)

    def partner(self, partner_id: str) -> Partner | None:
        return next((partner for partner in self.partners if partner.id == partner_id), None)

    def listener(self, listener_id: str) -> Listener | None:
        return next((listener for listener in self.listeners if listener.id == listener_id), None)


# --------------------------------------------------------------------------------------------
# Parsing


T = TypeVar("T")
_MISSING = object()
_ID_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$")


class _Reader:
    """Reads typed values out of plain YAML data, recording an issue (with its path) per problem."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.issues: list[Issue] = []

    def problem(self, path: str, message: str) -> None:
        self.issues.append(Issue(path, message))

    def mapping(self, value: Any, path: str, allowed: tuple[str, ...]) -> dict[str, Any] | None:
        if not isinstance(value, Mapping):
            self.problem(path, f"must be a mapping, got {_describe(value)}")
            return None
        result: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                self.problem(path, f"keys must be strings, got {key!r}")
            elif key not in allowed:
                self.problem(_join(path, key), f"unknown key (expected one of: {', '.join(allowed)})")
            else:
                result[key] = item
        return result

    def sequence(self, value: Any, path: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(path, f"must be a list, got {_describe(value)}")
            return []
        return value

    def required(self, data: dict[str, Any], key: str, path: str) -> Any:
        if key not in data or data[key] is None:
            self.problem(_join(path, key), "is required")
            return _MISSING
        return data[key]

    def string(self, value: Any, path: str) -> str | None:
        if isinstance(value, bool) or not isinstance(value, str | int):
            self.problem(path, f"must be a string, got {_describe(value)}")
            return None
        text = str(value)
        if not text.strip():
            self.problem(path, "must not be empty")
            return None
        return text

    def identifier(self, value: Any, path: str) -> str | None:
        text = self.string(value, path)
        if text is not None and not _ID_PATTERN.match(text):
            self.problem(path, f"{text!r} is not a valid identifier (letters, digits, _ . -; at most 32)")
            return None
        return text

    def string_list(self, value: Any, path: str) -> tuple[str, ...]:
        if isinstance(value, str | int) and not isinstance(value, bool):
            value = [value]
        items = [self.string(item, f"{path}[{i}]") for i, item in enumerate(self.sequence(value, path))]
        return tuple(item for item in items if item is not None)

    def choice(self, value: Any, path: str, choices: tuple[str, ...]) -> str | None:
        if isinstance(value, bool):  # YAML reads a bare `none`/`off` as null/False
            value = "none" if value is False else str(value).lower()
        if value is None:
            value = "none"
        if not isinstance(value, str) or value.lower() not in choices:
            self.problem(path, f"must be one of {', '.join(choices)}, got {value!r}")
            return None
        return value.lower()

    def integer(self, value: Any, path: str, low: int, high: int) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(path, f"must be an integer, got {_describe(value)}")
            return None
        if not low <= value <= high:
            self.problem(path, f"must be between {low} and {high}, got {value}")
            return None
        return value

    def seconds(self, value: Any, path: str) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            self.problem(path, f"must be a positive number of seconds, got {value!r}")
            return None
        return float(value)

    def boolean(self, value: Any, path: str) -> bool | None:
        if not isinstance(value, bool):
            self.problem(path, f"must be true or false, got {value!r}")
            return None
        return value

    def path(self, value: Any, path: str) -> Path | None:
        text = self.string(value, path)
        if text is None:
            return None
        candidate = Path(text).expanduser()
        return candidate if candidate.is_absolute() else self.base_dir / candidate

    def address(self, value: Any, path: str) -> Address | None:
        if isinstance(value, int) and not isinstance(value, bool):
            value = f"0.0.0.0:{value}"
        text = self.string(value, path)
        if text is None:
            return None
        try:
            return parse_address(text)
        except ValueError as exc:
            self.problem(path, str(exc))
            return None

    def optional(self, data: dict[str, Any], key: str, read: Callable[[Any, str], T | None], path: str) -> T | None:
        value = data.get(key)
        if value is None:
            return None
        return read(value, _join(path, key))


def parse_address(text: str) -> Address:
    """`host:port`, `[v6]:port`; port 0 means "let the kernel choose"."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\[\]\s]+):(\d+)", text.strip())
    if not match:
        raise ValueError(f"{text!r} is not an address (expected host:port or [v6]:port)")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if port > 65535:
        raise ValueError(f"port {port} is out of range (0-65535)")
    return Address(host, port)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {value!r}"[:80]


_TOP_KEYS = (
    "pki",
    "profiles",
    "listeners",
    "partners",
    "outbound",
    "user_classes",
    "encryption",
    "admin",
    "limits",
    "logging",
)
_PROFILE_KEYS = (
    "id",
    "direct",
    "usercid",
    "rootcid",
    "verify",
    "ciphlist",
    "version",
    "depth",
    "dnuser",
    "dnissuer",
    "keyext",
    "crl",
    "session_tickets",
    "parm",
    "comment",
)
_LISTENER_KEYS = (
    "id",
    "listen",
    "ssl",
    "backend",
    "sslauth",
    "identify",
    "plaintext",
    "proxy_protocol",
    "missing_partner_profile",
    "backend_check",
)
_PARTNER_KEYS = (
    "id",
    "nrpart",
    "nrpassw",
    "nrpassw_file",
    "ssl",
    "prot",
    "host",
    "host_verify",
    "sap",
    "user_class",
)


def load_config(path: str | Path) -> Config:
    """Read and validate a configuration file; raise ConfigError listing every problem."""
    source = Path(path).resolve()
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Issue(str(path), f"cannot read the configuration: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([Issue(str(path), f"not UTF-8 text: {exc}")]) from None
    return parse_config(text, source)


def parse_config(text: str, source: Path) -> Config:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source.name}:{mark.line + 1}" if mark is not None else source.name
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([Issue(where, f"invalid YAML: {problem}")]) from None
    reader = _Reader(source.parent)
    if data is None:
        data = {}
    top = reader.mapping(data, "", _TOP_KEYS)
    if top is None:
        raise ConfigError(reader.issues)
    config = Config(
        source=source,
        pki=_parse_pki(reader, top.get("pki")),
        profiles=_parse_list(reader, top, "profiles", _parse_profile),
        listeners=_parse_list(reader, top, "listeners", _parse_listener),
        partners=_parse_list(reader, top, "partners", _parse_partner),
        outbound=_parse_list(reader, top, "outbound", _parse_outbound),
        user_classes=_parse_list(reader, top, "user_classes", _parse_user_class),
        encryption=_parse_list(reader, top, "encryption", _parse_encryption),
        admin=_parse_admin(reader, top.get("admin")),
        limits=_parse_limits(reader, top.get("limits")),
        logging=_parse_logging(reader, top.get("logging")),
    )
    _check_references(reader, config)
    if reader.issues:
        raise ConfigError(reader.issues)
    return config


def _parse_list(
    reader: _Reader, top: dict[str, Any], section: str, parse_item: Callable[[_Reader, Any, int], T | None]
) -> tuple[T, ...]:
    """A list section: each item parsed with its index (for paths); unusable items are left out."""
    parsed = (parse_item(reader, item, i) for i, item in enumerate(reader.sequence(top.get(section), section)))
    return tuple(item for item in parsed if item is not None)


def _parse_pki(reader: _Reader, value: Any) -> tuple[PkiEntry, ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        reader.problem("pki", f"must be a mapping of certificate ids, got {_describe(value)}")
        return ()
    entries = []
    for pki_id, item in value.items():
        path = f"pki.{pki_id}"
        if reader.identifier(pki_id, path) is None:
            continue
        data = reader.mapping(item, path, ("cert", "key", "key_password_file"))
        if data is None:
            continue
        cert = reader.required(data, "cert", path)
        cert_path = reader.path(cert, f"{path}.cert") if cert is not _MISSING else None
        key = reader.optional(data, "key", reader.path, path)
        password = reader.optional(data, "key_password_file", reader.path, path)
        if password is not None and key is None:
            reader.problem(f"{path}.key_password_file", "given without a key")
        if cert_path is not None:
            entries.append(PkiEntry(id=str(pki_id), cert=cert_path, key=key, key_password_file=password))
    return tuple(entries)


def _parse_version(reader: _Reader, value: Any, path: str) -> VersionRange:
    if value is None:
        return VersionRange()
    if isinstance(value, str):
        keyword = value.lower()
        if keyword in _CFT_VERSION_KEYWORDS:
            low, high = _CFT_VERSION_KEYWORDS[keyword]
            return VersionRange(min=low, max=high)
        if keyword in TLS_VERSIONS:
            return VersionRange(min=keyword, max=keyword)
        reader.problem(path, f"unknown version {value!r} (tls1.0 … tls1.3, tlsv1, or {{min:, max:}})")
        return VersionRange()
    data = reader.mapping(value, path, ("min", "max"))
    if data is None:
        return VersionRange()
    low = cast(TlsVersion, reader.choice(data.get("min", "tls1.2"), f"{path}.min", TLS_VERSIONS) or "tls1.2")
    high = cast(TlsVersion, reader.choice(data.get("max", "tls1.3"), f"{path}.max", TLS_VERSIONS) or "tls1.3")
    if TLS_VERSIONS.index(low) > TLS_VERSIONS.index(high):
        reader.problem(path, f"min {low} is above max {high}")
    return VersionRange(min=low, max=high)


def _parse_profile(reader: _Reader, item: Any, index: int) -> Profile | None:
    path = f"profiles[{index}]"
    data = reader.mapping(item, path, _PROFILE_KEYS)
    if data is None:
        return None
    profile_id = reader.required(data, "id", path)
    profile_id = reader.identifier(profile_id, f"{path}.id") if profile_id is not _MISSING else None
    direct = reader.required(data, "direct", path)
    direct = reader.choice(direct, f"{path}.direct", ("server", "client")) if direct is not _MISSING else None
    verify_choices = (
        ("none", "optional", "required") if direct != "client" else ("none", "optional", "required", "enforced")
    )
    verify = reader.choice(
        data.get("verify", "required" if direct != "client" else "none"), f"{path}.verify", verify_choices
    )
    ciphlist: list[int | str] = []
    raw_ciphers = data.get("ciphlist")
    if isinstance(raw_ciphers, str | int) and not isinstance(raw_ciphers, bool):
        raw_ciphers = [raw_ciphers]
    for i, cipher in enumerate(reader.sequence(raw_ciphers, f"{path}.ciphlist")):
        if isinstance(cipher, bool) or not isinstance(cipher, int | str) or cipher == "":
            reader.problem(f"{path}.ciphlist[{i}]", f"must be a cipher code or name, got {_describe(cipher)}")
        else:
            ciphlist.append(int(cipher) if isinstance(cipher, str) and cipher.isdigit() else cipher)
    rootcid = reader.string_list(data.get("rootcid"), f"{path}.rootcid")
    if len(rootcid) > 10:
        reader.problem(f"{path}.rootcid", f"at most 10 trusted CA ids (CFT ROOTCID), got {len(rootcid)}")
    depth = reader.integer(data.get("depth", 10), f"{path}.depth", 0, 10)
    keyext = reader.choice(data.get("keyext", "none"), f"{path}.keyext", ("none", "verify"))
    tickets = reader.boolean(data.get("session_tickets", False), f"{path}.session_tickets")
    crl = tuple(
        p
        for i, item in enumerate(reader.sequence(_as_list(data.get("crl")), f"{path}.crl"))
        if (p := reader.path(item, f"{path}.crl[{i}]")) is not None
    )
    if profile_id is None or direct is None:
        return None
    return Profile(
        id=profile_id,
        direct=cast(Direct, direct),
        usercid=reader.optional(data, "usercid", reader.string, path),
        rootcid=rootcid,
        verify=verify or "required",
        ciphlist=tuple(ciphlist),
        version=_parse_version(reader, data.get("version"), f"{path}.version"),
        depth=10 if depth is None else depth,
        dnuser=reader.string_list(data.get("dnuser"), f"{path}.dnuser"),
        dnissuer=reader.string_list(data.get("dnissuer"), f"{path}.dnissuer"),
        keyext=cast(KeyExt, keyext or "none"),
        crl=crl,
        session_tickets=bool(tickets),
        parm=reader.optional(data, "parm", reader.string, path),
        comment=reader.optional(data, "comment", reader.string, path),
        index=index,
    )


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _parse_listener(reader: _Reader, item: Any, index: int) -> Listener | None:
    path = f"listeners[{index}]"
    data = reader.mapping(item, path, _LISTENER_KEYS)
    if data is None:
        return None
    listener_id = reader.required(data, "id", path)
    listener_id = reader.identifier(listener_id, f"{path}.id") if listener_id is not _MISSING else None
    listen = reader.optional(data, "listen", reader.address, path)
    backend = reader.optional(data, "backend", reader.address, path)
    if listen is not None and backend is None and "backend" not in data:
        reader.problem(f"{path}.backend", "is required for a listener with `listen`")
    identify = reader.choice(data.get("identify", "none"), f"{path}.identify", ("none", "pesit", "certificate"))
    plaintext = reader.choice(data.get("plaintext", "refuse"), f"{path}.plaintext", ("refuse", "allow"))
    proxy_protocol = reader.choice(data.get("proxy_protocol", "none"), f"{path}.proxy_protocol", ("none", "v1", "v2"))
    missing = reader.choice(
        data.get("missing_partner_profile", "warn"), f"{path}.missing_partner_profile", ("warn", "reject")
    )
    backend_check = 0.0
    if data.get("backend_check", 0) != 0:
        backend_check = reader.seconds(data["backend_check"], f"{path}.backend_check") or 0.0
    if listener_id is None:
        return None
    return Listener(
        id=listener_id,
        listen=listen,
        ssl=reader.optional(data, "ssl", reader.identifier, path),
        backend=backend,
        sslauth=reader.optional(data, "sslauth", reader.path, path),
        identify=cast(Identify, identify or "none"),
        plaintext=cast(Plaintext, plaintext or "refuse"),
        proxy_protocol=cast(ProxyProtocol, proxy_protocol or "none"),
        missing_partner_profile=cast(MissingPartnerProfile, missing or "warn"),
        backend_check=backend_check,
        index=index,
    )


def _parse_partner(reader: _Reader, item: Any, index: int) -> Partner | None:
    path = f"partners[{index}]"
    data = reader.mapping(item, path, _PARTNER_KEYS)
    if data is None:
        return None
    partner_id = reader.required(data, "id", path)
    partner_id = reader.identifier(partner_id, f"{path}.id") if partner_id is not _MISSING else None
    nrpart = reader.optional(data, "nrpart", reader.string, path)
    if nrpart is not None and len(nrpart) > 24:
        reader.problem(f"{path}.nrpart", "at most 24 characters (PeSIT PI 3)")
    nrpassw = reader.optional(data, "nrpassw", reader.string, path)
    if nrpassw is not None and len(nrpassw) > 8:
        reader.problem(f"{path}.nrpassw", "at most 8 characters (PeSIT PI 5)")
    nrpassw_file = reader.optional(data, "nrpassw_file", reader.path, path)
    if nrpassw is not None and nrpassw_file is not None:
        reader.problem(path, "nrpassw and nrpassw_file are mutually exclusive")
    prot = reader.string_list(data["prot"], f"{path}.prot") if data.get("prot") is not None else None
    host_verify = reader.integer(data.get("host_verify", 0), f"{path}.host_verify", 0, 255)
    sap = reader.optional(data, "sap", lambda v, p: reader.integer(v, p, 1, 65535), path)
    if partner_id is None:
        return None
    return Partner(
        id=partner_id,
        nrpart=nrpart or partner_id,
        nrpassw=nrpassw,
        nrpassw_file=nrpassw_file,
        ssl=reader.optional(data, "ssl", reader.identifier, path),
        prot=None if prot is not None and "*" in prot else prot,
        host=reader.string_list(data.get("host"), f"{path}.host"),
        host_verify=host_verify or 0,
        sap=sap,
        user_class=reader.optional(data, "user_class", reader.string, path),
        index=index,
    )


def _parse_outbound(reader: _Reader, item: Any, index: int) -> Outbound | None:
    path = f"outbound[{index}]"
    data = reader.mapping(item, path, ("id", "listen", "partner", "ssl", "prot"))
    if data is None:
        return None
    entry_id = reader.required(data, "id", path)
    entry_id = reader.identifier(entry_id, f"{path}.id") if entry_id is not _MISSING else None
    listen = reader.required(data, "listen", path)
    listen = reader.address(listen, f"{path}.listen") if listen is not _MISSING else None
    partner = reader.required(data, "partner", path)
    partner = reader.identifier(partner, f"{path}.partner") if partner is not _MISSING else None
    if entry_id is None or listen is None or partner is None:
        return None
    return Outbound(
        id=entry_id,
        listen=listen,
        partner=partner,
        ssl=reader.optional(data, "ssl", reader.identifier, path),
        prot=reader.optional(data, "prot", reader.identifier, path),
        index=index,
    )


def _parse_user_class(reader: _Reader, item: Any, index: int) -> UserClass | None:
    path = f"user_classes[{index}]"
    data = reader.mapping(item, path, ("name", "user", "address"))
    if data is None:
        return None
    name = reader.required(data, "name", path)
    name = reader.string(name, f"{path}.name") if name is not _MISSING else None
    address = reader.optional(data, "address", reader.string, path)
    if address is not None:
        try:
            ipaddress.ip_network(address, strict=False)
        except ValueError:
            reader.problem(f"{path}.address", f"{address!r} is not an IP address or CIDR network")
    if name is None:
        return None
    return UserClass(name=name, user=reader.optional(data, "user", reader.string, path) or "*", address=address)


def _parse_encryption(reader: _Reader, item: Any, index: int) -> EncryptionEntry | None:
    path = f"encryption[{index}]"
    data = reader.mapping(item, path, ("class", "encryption"))
    if data is None:
        return None
    user_class = reader.required(data, "class", path)
    user_class = reader.string(user_class, f"{path}.class") if user_class is not _MISSING else None
    encryption = reader.required(data, "encryption", path)
    if encryption is not _MISSING:
        encryption = reader.choice(encryption, f"{path}.encryption", ("required", "optional"))
    if user_class is None or encryption in (None, _MISSING):
        return None
    return EncryptionEntry(user_class=user_class, encryption=cast(Encryption, encryption))


def _parse_admin(reader: _Reader, value: Any) -> Admin | None:
    if value is None:
        return None
    data = reader.mapping(value, "admin", ("listen", "token_file", "health_without_token"))
    if data is None:
        return None
    listen = reader.address(data.get("listen", "127.0.0.1:9901"), "admin.listen")
    token_file = reader.optional(data, "token_file", reader.path, "admin")
    health_without_token = reader.boolean(data.get("health_without_token", False), "admin.health_without_token")
    if listen is None:
        return None
    if not listen.is_loopback and token_file is None:
        reader.problem("admin.token_file", f"is required when admin.listen ({listen}) is not a loopback address")
    return Admin(listen=listen, token_file=token_file, health_without_token=bool(health_without_token))


def _parse_limits(reader: _Reader, value: Any) -> Limits:
    if value is None:
        return Limits()
    keys = ("handshake_timeout", "idle_timeout", "connect_timeout", "max_connections", "drain_timeout")
    data = reader.mapping(value, "limits", keys)
    if data is None:
        return Limits()
    defaults = Limits()
    values: dict[str, Any] = {}
    for key in keys:
        if key not in data:
            continue
        if key == "max_connections":
            parsed: Any = reader.integer(data[key], f"limits.{key}", 1, 1_000_000)
        else:
            parsed = reader.seconds(data[key], f"limits.{key}")
        values[key] = parsed if parsed is not None else getattr(defaults, key)
    return Limits(**values)


def _parse_logging(reader: _Reader, value: Any) -> Logging:
    if value is None:
        return Logging()
    data = reader.mapping(value, "logging", ("format", "level", "empty_connections"))
    if data is None:
        return Logging()
    log_format = reader.choice(data.get("format", "json"), "logging.format", ("json", "text"))
    level = reader.choice(data.get("level", "info"), "logging.level", ("debug", "info", "warning", "error"))
    empty = reader.choice(
        data.get("empty_connections", "info"), "logging.empty_connections", ("debug", "info", "warning")
    )
    return Logging(
        format=cast(LogFormat, log_format or "json"),
        level=cast(LogLevel, level or "info"),
        empty_connections=cast(EmptyConnectionsLevel, empty or "info"),
    )


def _duplicates(reader: _Reader, section: str, keys: list[Any]) -> None:
    seen: dict[Any, int] = {}
    for i, key in enumerate(keys):
        if key in seen:
            reader.problem(f"{section}[{i}]", f"duplicate {key!r} (already at {section}[{seen[key]}])")
        else:
            seen[key] = i


def _check_references(reader: _Reader, config: Config) -> None:
    """Cross-references between sections: every id named must exist with the right direction."""
    pki_ids = {entry.id for entry in config.pki}
    _duplicates(reader, "profiles", [(p.id, p.direct) for p in config.profiles])
    _duplicates(reader, "listeners", [listener.id for listener in config.listeners])
    _duplicates(reader, "partners", [p.id for p in config.partners])
    _duplicates(reader, "partners", [("nrpart", p.nrpart) for p in config.partners])
    _duplicates(reader, "outbound", [o.id for o in config.outbound])
    class_names = {c.name for c in config.user_classes}
    listener_ids = {listener.id for listener in config.listeners}

    for profile in config.profiles:
        if profile.usercid is not None:
            entry = config.pki_entry(profile.usercid)
            if entry is None:
                reader.problem(f"{profile.path}.usercid", f"unknown pki id {profile.usercid!r}")
            elif entry.key is None:
                reader.problem(f"{profile.path}.usercid", f"pki.{entry.id} has no key: it cannot be an own certificate")
        for i, root in enumerate(profile.rootcid):
            if root not in pki_ids:
                reader.problem(f"{profile.path}.rootcid[{i}]", f"unknown pki id {root!r}")
        if profile.direct == "server" and profile.verify != "none" and not profile.rootcid:
            used_by_listener = any(listener.ssl == profile.id for listener in config.listeners)
            if used_by_listener:
                reader.problem(f"{profile.path}.rootcid", f"verify: {profile.verify} needs trusted CAs (rootcid)")

    for listener in config.listeners:
        if listener.listen is None:
            continue
        if listener.ssl is None:
            if listener.plaintext != "allow":
                reader.problem(f"{listener.path}.ssl", "is required (a plaintext-only listener needs plaintext: allow)")
            continue
        # CFTP20F (refusal to start) is reported by the runtime with Transfer CFT's text; see runtime.
        server_profile = config.profile(listener.ssl, "server")
        if server_profile is not None and server_profile.usercid is None:
            reader.problem(
                f"{server_profile.path}.usercid", f"is mandatory for a server profile used by {listener.path}"
            )

    for partner in config.partners:
        for i, prot in enumerate(partner.prot or ()):
            if prot not in listener_ids:
                reader.problem(f"{partner.path}.prot[{i}]", f"unknown listener {prot!r}")
        if partner.user_class is not None and partner.user_class not in class_names:
            reader.problem(f"{partner.path}.user_class", f"unknown user class {partner.user_class!r}")
        if partner.host_verify and not partner.host:
            reader.problem(f"{partner.path}.host_verify", "needs at least one host to compare with")

    for outbound in config.outbound:
        called = config.partner(outbound.partner)
        if called is None:
            reader.problem(f"{outbound.path}.partner", f"unknown partner {outbound.partner!r}")
        elif not called.host or called.sap is None:
            reader.problem(f"{outbound.path}.partner", f"partner {called.id!r} needs host and sap for outbound calls")
        if outbound.prot is not None and outbound.prot not in listener_ids:
            reader.problem(f"{outbound.path}.prot", f"unknown listener {outbound.prot!r}")

    for i, enc in enumerate(config.encryption):
        if enc.user_class != "*" and enc.user_class not in class_names:
            reader.problem(f"encryption[{i}].class", f"unknown user class {enc.user_class!r}")
