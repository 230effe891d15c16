"""The configuration: one frozen tree that mirrors the YAML schema (SPEC §3).

YAML keys equal field names, so an issue's path is the YAML path (`profiles[1].ciphlist[2]`).
The schema is written once, here, as the dataclasses: the allowed keys of a mapping are its
class's fields, the choices of a key are the `Literal` of its type, the default is the field's
default, bounds and renames are field metadata (`_INTERNAL`, `_range`, `_YAML_KEY`, `_ID`). One
reader (`_read_fields`) turns a YAML mapping into those fields; the few keys with a grammar of their
own (`ciphlist`, `version`, `crl`, `prot`, …) are read beside it by the section's parser.

Parsing collects every problem before failing and still returns the best configuration it could
build, so that `snapshot.load_snapshot` can go on to the files, certificates, cipher suites, DN
patterns and rule files and report their problems in the same pass. It never logs, exits or opens
sockets. Files named by the configuration are only resolved to absolute paths here.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import os
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

from .errors import ConfigError, Issue, os_reason
from .policy.classes import UserClassRule, class_rule_problem
from .yamlsource import MAX_BYTES, YamlRefused, line_of, read_yaml

# Field metadata. A field that is not a YAML key (positions, the source file) is internal; a key
# spelled differently from its field (`class`, a Python keyword) names its key; an id is read with
# the identifier grammar; a number has bounds; a duration may take 0 for "off".
_INTERNAL = {"yaml": False}
_ID = {"id": True}
_ZERO_IS_OFF = {"zero_is_off": True}  # a number of seconds where 0 turns the feature off


def _range(low: int, high: int) -> dict[str, Any]:
    return {"range": (low, high)}


def _yaml_key(key: str) -> dict[str, Any]:
    return {"key": key}


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
CLIENT_VERIFY_DEFAULT: ClientVerify = "none"  # CFT: a requester accepts any server certificate by default
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
    id: str = field(metadata=_INTERNAL)  # the key of its `pki` mapping
    cert: Path
    key: Path | None = None
    key_password_file: Path | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionRange:
    min: TlsVersion = "tls1.2"
    max: TlsVersion = "tls1.3"


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    id: str = field(metadata=_ID)
    direct: Direct
    usercid: str | None = None
    rootcid: tuple[str, ...] = ()
    verify: ServerVerify | ClientVerify = "required"  # choices and default by `direct` (CLIENT_VERIFY_DEFAULT)
    ciphlist: tuple[int | str, ...] = ()  # as written; tls.profiles resolves to codes
    version: VersionRange = field(default_factory=VersionRange)
    depth: int = field(default=10, metadata=_range(0, 10))
    dnuser: tuple[str, ...] = ()
    dnissuer: tuple[str, ...] = ()
    keyext: KeyExt = "none"
    crl: tuple[Path, ...] = ()
    session_tickets: bool = False
    parm: str | None = None
    comment: str | None = None
    index: int = field(default=0, metadata=_INTERNAL)  # position in `profiles`, for error paths

    @property
    def path(self) -> str:
        return f"profiles[{self.index}]"


@dataclass(frozen=True, slots=True, kw_only=True)
class Listener:
    id: str = field(metadata=_ID)
    listen: Address | None = None
    ssl: str | None = field(default=None, metadata=_ID)
    backend: Address | None = None
    sslauth: Path | None = None
    identify: Identify = "none"
    plaintext: Plaintext = "refuse"
    proxy_protocol: ProxyProtocol = "none"
    missing_partner_profile: MissingPartnerProfile = "warn"
    backend_check: float = field(default=0.0, metadata=_ZERO_IS_OFF)  # seconds between TCP probes of the backend
    live_recheck: bool = True  # judge live sessions again after a reload and when a time limit passes
    # CIDRs of load balancers that send a PROXY header first (SPEC 8.4); read apart: each must be a network
    accept_proxy: tuple[str, ...] = ()
    index: int = field(default=0, metadata=_INTERNAL)

    @property
    def path(self) -> str:
        return f"listeners[{self.index}]"


@dataclass(frozen=True, slots=True, kw_only=True)
class Partner:
    id: str = field(metadata=_ID)
    nrpart: str  # YAML default: the id
    nrpassw: str | None = None
    nrpassw_file: Path | None = None
    ssl: str | None = field(default=None, metadata=_ID)
    prot: tuple[str, ...] | None = None  # None: every listener
    host: tuple[str, ...] = ()
    host_verify: int = field(default=0, metadata=_range(0, 255))
    sap: int | None = field(default=None, metadata=_range(1, 65535))
    user_class: str | None = None
    index: int = field(default=0, metadata=_INTERNAL)

    @property
    def path(self) -> str:
        return f"partners[{self.index}]"


@dataclass(frozen=True, slots=True, kw_only=True)
class Outbound:
    id: str = field(metadata=_ID)
    listen: Address
    partner: str = field(metadata=_ID)
    ssl: str | None = field(default=None, metadata=_ID)
    prot: str | None = field(default=None, metadata=_ID)
    live_recheck: bool = True  # judge live sessions again when a reload changes the client profile's checks
    index: int = field(default=0, metadata=_INTERNAL)

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
    user_class: str = field(metadata=_yaml_key("class"))
    encryption: Encryption


@dataclass(frozen=True, slots=True, kw_only=True)
class Admin:
    listen: Address = Address("127.0.0.1", 9901)
    token_file: Path | None = None
    health_without_token: bool = False  # /healthz and /readyz answer without the token (httpGet probes)


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    handshake_timeout: float = 10.0
    idle_timeout: float = 600.0
    connect_timeout: float = 5.0
    max_connections: int = field(default=10000, metadata=_range(1, 1_000_000))
    drain_timeout: float = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Reload:
    watch: bool = False  # reload by itself when the configuration or a file it names changes
    interval: float = 2.0  # seconds without further change before a change counts as settled


@dataclass(frozen=True, slots=True, kw_only=True)
class Logging:
    format: LogFormat = "json"
    level: LogLevel = "info"
    empty_connections: EmptyConnectionsLevel = "info"  # close line of a connection that sent no byte


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    source: Path = field(metadata=_INTERNAL)  # the config file; relative paths inside are resolved against its folder
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
    reload: Reload = field(default_factory=Reload)
    pki_warn_days: int = field(default=30, metadata=_range(0, 3650))  # lifetimes: warn this many days ahead
    # Worker processes (SPEC 8.4): a number, or "auto" = the CPUs this process may use. Read apart.
    workers: int | Literal["auto"] = 1
    # YAML path -> line where it is written; for messages only.
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False, metadata=_INTERNAL)

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
# The schema, read from the dataclasses


@functools.cache
def _schema(cls: type) -> tuple[tuple[str, dataclasses.Field[Any], Any], ...]:
    """(YAML key, field, resolved type) of every YAML key of `cls`, in declaration order."""
    hints = typing.get_type_hints(cls)
    return tuple(
        (f.metadata.get("key", f.name), f, hints[f.name])
        for f in dataclasses.fields(cls)
        if f.metadata.get("yaml", True)
    )


def keys_of(cls: type) -> tuple[str, ...]:
    """The keys a YAML mapping of `cls` may hold."""
    return tuple(key for key, _, _ in _schema(cls))


def _literal_args(kind: Any) -> tuple[str, ...] | None:
    if typing.get_origin(kind) is Literal:
        return tuple(get_args(kind))
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        found = [arg for arg in get_args(kind) if arg is not type(None)]
        if len(found) == 1:
            return _literal_args(found[0])
    return None


def choices_of(cls: type, name: str) -> tuple[str, ...]:
    """The choices of the `Literal`-typed field `name` of `cls`."""
    kind = typing.get_type_hints(cls)[name]
    choices = _literal_args(kind)
    assert choices is not None, f"{cls.__name__}.{name} is not a Literal"
    return choices


def default_of(cls: type, name: str) -> Any:
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
    raise KeyError(f"{cls.__name__}.{name} has no default")


def _is_required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


# --------------------------------------------------------------------------------------------
# Parsing


T = TypeVar("T")
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
                self.problem(path, f"keys must be strings, got {_describe(key)}")
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
            self.problem(path, f"{_shown(text)} is not a valid identifier (letters, digits, _ . -; at most 32)")
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
            self.problem(path, f"must be one of {', '.join(choices)}, got {_shown(value)}")
            return None
        return value.lower()

    def integer(self, value: Any, path: str, low: int, high: int) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(path, f"must be an integer, got {_describe(value)}")
            return None
        if not low <= value <= high:
            self.problem(path, f"must be between {low} and {high}, got {_shown(value)}")
            return None
        return value

    def seconds(self, value: Any, path: str) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 10**9:
            self.problem(path, f"must be a positive number of seconds, got {_shown(value)}")
            return None
        return float(value)

    def boolean(self, value: Any, path: str) -> bool | None:
        if not isinstance(value, bool):
            self.problem(path, f"must be true or false, got {_shown(value)}")
            return None
        return value

    def path(self, value: Any, path: str) -> Path | None:
        text = self.string(value, path)
        if text is None:
            return None
        if "\0" in text:
            self.problem(path, "a file name cannot contain a NUL character")
            return None
        candidate = Path(text).expanduser() if text.startswith("~") else Path(text)
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


def _read_fields(
    reader: _Reader, cls: type, data: dict[str, Any], path: str, *, apart: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Field values of `cls` from a mapping already checked for unknown keys.

    Every field is read by its type; a value that is absent, null or wrong is left out (so the
    field default applies and the problem is recorded). `apart` names the keys the caller reads
    itself; a required field that is missing is reported here.
    """
    values: dict[str, Any] = {}
    for key, f, kind in _schema(cls):
        if key in apart:
            continue
        key_path = _join(path, key)
        raw = data.get(key)
        if raw is None:
            if _is_required(f):
                reader.problem(key_path, "is required")
            continue
        value = _read_typed(reader, f, kind, raw, key_path)
        if value is not None:
            values[f.name] = value
    return values


def _read_typed(reader: _Reader, f: dataclasses.Field[Any], kind: Any, raw: Any, path: str) -> Any:
    choices = _literal_args(kind)
    if choices is not None:
        return reader.choice(raw, path, choices)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kind = next(arg for arg in get_args(kind) if arg is not type(None))
    if kind is bool:
        return reader.boolean(raw, path)
    if kind is int:
        low, high = f.metadata.get("range", (0, 2**31 - 1))
        return reader.integer(raw, path, low, high)
    if kind is float:
        if f.metadata.get("zero_is_off") and raw == 0 and not isinstance(raw, bool):
            return 0.0
        return reader.seconds(raw, path)
    if kind is Path:
        return reader.path(raw, path)
    if kind is Address:
        return reader.address(raw, path)
    if kind == tuple[str, ...]:
        return reader.string_list(raw, path) or None
    if kind is str:
        return reader.identifier(raw, path) if f.metadata.get("id") else reader.string(raw, path)
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        return _parse_section(reader, kind, raw, path)  # a nested mapping, read by the same rules
    # A field whose type has no reader here must be read by its section's parser (`apart`).
    raise TypeError(f"no reader for {kind!r} ({path}): read it apart")


def parse_address(text: str) -> Address:
    """`host:port`, `[v6]:port`; port 0 means "let the kernel choose"."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\[\]\s]+):(\d{1,5})", text.strip())
    if not match:
        raise ValueError(f"{_shown(text)} is not an address (expected host:port or [v6]:port)")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if port > 65535:
        raise ValueError(f"port {port} is out of range (0-65535)")
    return Address(host, port)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _shown(value: Any) -> str:
    """A value quoted in a message, cut so that a huge value cannot make a huge message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "…"


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    kinds = {dict: "a mapping", list: "a list", str: "text", bool: "true/false", int: "a number", float: "a number"}
    kind = kinds.get(type(value), type(value).__name__)
    if isinstance(value, dict | list):
        return kind
    return f"{kind} {_shown(value)}"


def load_config(path: str | Path) -> Config:
    """Read and validate a configuration file; raise ConfigError listing every problem."""
    config, issues = read_config(path)
    if issues or config is None:
        raise ConfigError(issues)
    return config


def read_config(path: str | Path) -> tuple[Config | None, list[Issue]]:
    """The configuration and every problem of the file itself (None when nothing usable was read).

    A configuration returned with problems is the best that could be built (bad values replaced
    by defaults, unusable items left out): good enough to look for problems in what it names.
    """
    # Absolute but not resolved: relative paths inside are relative to the folder the file was named in.
    # Under a Kubernetes ConfigMap that is the mount (config.yaml -> ..data/config.yaml -> ..2026_…/), where
    # the other keys and further mounts are, not the timestamped folder the link happens to point at now.
    source = Path(os.path.abspath(path))
    try:
        with source.open("rb") as file:  # read, not stat-ed: /dev/zero has no size to ask
            data = file.read(MAX_BYTES + 1)
    except OSError as exc:
        return None, [Issue(str(path), f"cannot read the configuration: {os_reason(exc)}")]
    if len(data) > MAX_BYTES:
        return None, [
            Issue(str(path), f"the file is larger than {MAX_BYTES:,} bytes; a configuration is at most {MAX_BYTES:,}")
        ]
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return None, [Issue(f"{path}:{line}", "the configuration is not UTF-8 text")]
    return read_config_text(text, source)


def parse_config(text: str, source: Path) -> Config:
    config, issues = read_config_text(text, source)
    if issues or config is None:
        raise ConfigError(issues)
    return config


def read_config_text(text: str, source: Path) -> tuple[Config | None, list[Issue]]:
    try:
        document = read_yaml(text, source.name)
    except YamlRefused as refused:
        return None, [refused.issue]
    if document.data is None:
        return None, [
            Issue(
                source.name,
                "the configuration is empty (no listener with `listen`, no `outbound`: nothing to serve)",
            )
        ]
    reader = _Reader(source.parent)
    reader.issues.extend(document.issues)
    top = reader.mapping(document.data, "", keys_of(Config))
    if top is None:
        return None, locate(reader.issues, document.lines)
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
        **_read_fields(reader, Config, top, "", apart=_SECTIONS),  # limits, logging, pki_warn_days, …
        workers=_parse_workers(reader, top.get("workers", 1)),
        lines=document.lines,
    )
    _check_references(reader, config)
    if not _serves_something(top):
        reader.problem("", "nothing to serve: no listener with `listen` and no `outbound` entry")
    return config, locate(reader.issues, document.lines)


def _serves_something(top: dict[str, Any]) -> bool:
    """Read from the YAML, not the parsed items: a listener whose other keys are wrong still has `listen`."""
    listeners = top.get("listeners")
    outbound = top.get("outbound")
    binds = isinstance(listeners, list) and any(
        isinstance(item, Mapping) and item.get("listen") is not None for item in listeners
    )
    return binds or (isinstance(outbound, list) and bool(outbound))


# Top-level keys read by a parser of their own; the other top-level keys are read by their type.
_SECTIONS = (
    "pki", "profiles", "listeners", "partners", "outbound", "user_classes", "encryption", "admin", "workers",
)  # fmt: skip


def locate(issues: list[Issue], lines: Mapping[str, int]) -> list[Issue]:
    """Give each issue located by a YAML path the line it was written on (or its parent's)."""
    located = []
    for issue in issues:
        if issue.line is None and _is_yaml_path(issue.where):
            line = line_of(issue.where, lines) if lines else None
            if line is not None:
                issue = dataclasses.replace(issue, line=line)
        located.append(issue)
    return located


_YAML_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\[\d+\]|\.[^\s:\[\]]+)*")


def _is_yaml_path(where: str) -> bool:
    return bool(where) and _YAML_PATH.fullmatch(where) is not None


def _parse_list(
    reader: _Reader, top: dict[str, Any], section: str, parse_item: Callable[[_Reader, Any, int], T | None]
) -> tuple[T, ...]:
    """A list section: each item parsed with its index (for paths); unusable items are left out."""
    parsed = (parse_item(reader, item, i) for i, item in enumerate(reader.sequence(top.get(section), section)))
    return tuple(item for item in parsed if item is not None)


def _parse_section(reader: _Reader, cls: type[T], value: Any, path: str) -> T:
    """A mapping section whose every key is read by its type (limits, logging)."""
    if value is None:
        return cls()
    data = reader.mapping(value, path, keys_of(cls))
    if data is None:
        return cls()
    return cls(**_read_fields(reader, cls, data, path))


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
        data = reader.mapping(item, path, keys_of(PkiEntry))
        if data is None:
            continue
        values = _read_fields(reader, PkiEntry, data, path)
        if "key_password_file" in values and "key" not in values and data.get("key") is None:
            reader.problem(f"{path}.key_password_file", "given without a key")
        if "cert" in values:
            entries.append(PkiEntry(id=str(pki_id), **values))
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
        reader.problem(path, f"unknown version {_shown(value)} (tls1.0 … tls1.3, tlsv1, or {{min:, max:}})")
        return VersionRange()
    data = reader.mapping(value, path, keys_of(VersionRange))
    if data is None:
        return VersionRange()
    versions = VersionRange(**_read_fields(reader, VersionRange, data, path))
    if TLS_VERSIONS.index(versions.min) > TLS_VERSIONS.index(versions.max):
        reader.problem(path, f"min {versions.min} is above max {versions.max}")
    return versions


def _parse_profile(reader: _Reader, item: Any, index: int) -> Profile | None:
    path = f"profiles[{index}]"
    data = reader.mapping(item, path, keys_of(Profile))
    if data is None:
        return None
    values = _read_fields(reader, Profile, data, path, apart=("verify", "ciphlist", "version", "crl"))
    direct = values.get("direct")
    if direct == "client":
        choices, default = get_args(ClientVerify), CLIENT_VERIFY_DEFAULT
    else:
        choices, default = get_args(ServerVerify), default_of(Profile, "verify")
    verify = data.get("verify", default)
    values["verify"] = reader.choice(verify, f"{path}.verify", choices) or default
    ciphlist: list[int | str] = []
    raw_ciphers = data.get("ciphlist")
    if isinstance(raw_ciphers, str | int) and not isinstance(raw_ciphers, bool):
        raw_ciphers = [raw_ciphers]
    for i, cipher in enumerate(reader.sequence(raw_ciphers, f"{path}.ciphlist")):
        if isinstance(cipher, bool) or not isinstance(cipher, int | str) or cipher == "":
            reader.problem(f"{path}.ciphlist[{i}]", f"must be a cipher code or name, got {_describe(cipher)}")
        elif isinstance(cipher, str) and len(cipher) > 64:
            reader.problem(f"{path}.ciphlist[{i}]", f"{_shown(cipher)} is not a cipher suite name")
        else:
            ciphlist.append(int(cipher) if isinstance(cipher, str) and cipher.isdigit() else cipher)
    values["ciphlist"] = tuple(ciphlist)
    if len(values.get("rootcid", ())) > 10:
        reader.problem(f"{path}.rootcid", f"at most 10 trusted CA ids (CFT ROOTCID), got {len(values['rootcid'])}")
    values["version"] = _parse_version(reader, data.get("version"), f"{path}.version")
    values["crl"] = tuple(
        p
        for i, item in enumerate(reader.sequence(_as_list(data.get("crl")), f"{path}.crl"))
        if (p := reader.path(item, f"{path}.crl[{i}]")) is not None
    )
    if "id" not in values or direct is None:
        return None
    return Profile(**values, index=index)


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _parse_listener(reader: _Reader, item: Any, index: int) -> Listener | None:
    path = f"listeners[{index}]"
    data = reader.mapping(item, path, keys_of(Listener))
    if data is None:
        return None
    values = _read_fields(reader, Listener, data, path, apart=("accept_proxy",))
    if data.get("listen") is not None and "backend" not in data:
        reader.problem(f"{path}.backend", "is required for a listener with `listen`")
    accept_proxy = _parse_networks(reader, data.get("accept_proxy"), f"{path}.accept_proxy")
    if "id" not in values:
        return None
    return Listener(**values, accept_proxy=accept_proxy, index=index)


def _parse_networks(reader: _Reader, value: Any, path: str) -> tuple[str, ...]:
    """A list of IP networks (CIDR) or single addresses (one alone may be written without the list),
    kept as written once each is known valid."""
    if value is None:
        return ()
    networks: list[str] = []
    for i, item in enumerate(reader.sequence(_as_list(value), path)):
        text = reader.string(item, f"{path}[{i}]")
        if text is None:
            continue
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError:
            reader.problem(f"{path}[{i}]", f"{_shown(text)} is not an IP address or CIDR network")
            continue
        networks.append(text)
    return tuple(networks)


def _parse_workers(reader: _Reader, value: Any) -> int | Literal["auto"]:
    if value == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, int):
        reader.problem("workers", f"expected a number of processes or 'auto', got {_describe(value)}")
        return 1
    return reader.integer(value, "workers", 1, 256) or 1


def _parse_partner(reader: _Reader, item: Any, index: int) -> Partner | None:
    path = f"partners[{index}]"
    data = reader.mapping(item, path, keys_of(Partner))
    if data is None:
        return None
    values = _read_fields(reader, Partner, data, path, apart=("nrpart", "prot"))
    nrpart = reader.optional(data, "nrpart", reader.string, path)
    if nrpart is not None and len(nrpart) > 24:
        reader.problem(f"{path}.nrpart", "at most 24 characters (PeSIT PI 3)")
    nrpassw = values.get("nrpassw")
    if nrpassw is not None and len(nrpassw) > 8:
        reader.problem(f"{path}.nrpassw", "at most 8 characters (PeSIT PI 5)")
    if data.get("nrpassw") is not None and data.get("nrpassw_file") is not None:
        reader.problem(path, "nrpassw and nrpassw_file are mutually exclusive")
    prot = reader.string_list(data["prot"], f"{path}.prot") if data.get("prot") is not None else None
    if "id" not in values:
        return None
    return Partner(
        **values,
        nrpart=nrpart or values["id"],
        prot=None if prot is not None and "*" in prot else prot,
        index=index,
    )


def _parse_outbound(reader: _Reader, item: Any, index: int) -> Outbound | None:
    path = f"outbound[{index}]"
    data = reader.mapping(item, path, keys_of(Outbound))
    if data is None:
        return None
    values = _read_fields(reader, Outbound, data, path)
    if not all(name in values for name in ("id", "listen", "partner")):
        return None
    return Outbound(**values, index=index)


def _parse_user_class(reader: _Reader, item: Any, index: int) -> UserClass | None:
    path = f"user_classes[{index}]"
    data = reader.mapping(item, path, keys_of(UserClass))
    if data is None:
        return None
    values = _read_fields(reader, UserClass, data, path)
    if "name" not in values:
        return None
    user_class = UserClass(**values)
    # The check the policy makes when it compiles the class: one validator, applied here.
    rule = UserClassRule(name=user_class.name, user=user_class.user, address=user_class.address)
    problem = class_rule_problem(index, rule)
    if problem is not None:
        reader.problem(path, problem.removeprefix(f"{path}: "))
        return None
    return user_class


def _parse_encryption(reader: _Reader, item: Any, index: int) -> EncryptionEntry | None:
    path = f"encryption[{index}]"
    data = reader.mapping(item, path, keys_of(EncryptionEntry))
    if data is None:
        return None
    values = _read_fields(reader, EncryptionEntry, data, path)
    if not all(name in values for name in ("user_class", "encryption")):
        return None
    return EncryptionEntry(**values)


def _parse_admin(reader: _Reader, value: Any) -> Admin | None:
    if value is None:
        return None
    data = reader.mapping(value, "admin", keys_of(Admin))
    if data is None:
        return None
    listen = reader.address(data.get("listen", str(default_of(Admin, "listen"))), "admin.listen")
    values = _read_fields(reader, Admin, data, "admin", apart=("listen",))
    if listen is None:
        return None
    admin = Admin(listen=listen, **values)
    if not admin.listen.is_loopback and admin.token_file is None:
        reader.problem("admin.token_file", f"is required when admin.listen ({admin.listen}) is not a loopback address")
    return admin


def _duplicates(reader: _Reader, section: str, keys: list[Any], what: str) -> None:
    seen: dict[Any, int] = {}
    for i, key in enumerate(keys):
        if key in seen:
            reader.problem(f"{section}[{i}]", f"duplicate {what} (already at {section}[{seen[key]}])")
        else:
            seen[key] = i


def _check_references(reader: _Reader, config: Config) -> None:
    """Cross-references between sections: every id named must exist with the right direction."""
    pki_ids = {entry.id for entry in config.pki}
    _duplicates(reader, "profiles", [(p.id, p.direct) for p in config.profiles], "profile id and direct")
    _duplicates(reader, "listeners", [listener.id for listener in config.listeners], "listener id")
    _duplicates(reader, "partners", [p.id for p in config.partners], "partner id")
    _duplicates(reader, "partners", [p.nrpart for p in config.partners], "nrpart")
    _duplicates(reader, "outbound", [o.id for o in config.outbound], "outbound id")
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
