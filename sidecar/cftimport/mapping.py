"""From parsed CFTUTIL/PKIUTIL commands to sidecar's configuration tree (domain/CFTUTIL.md §4-§8).

A pure function: commands in, a plain tree in the YAML schema (the same dicts and lists a
hand-written file loads into) plus the report's notes out. The tree is then checked by the same
loader as a hand-written file (`config.parse_config`); nothing here validates what the loader will.

Steps, in order:
1. `UCONFSET ID=…, VALUE=…` of every file (the last one wins) feed `%uconf:…%` references.
2. Commands are applied in file order by MODE (REPLACE without merge, CREATE, DELETE) onto stores
   keyed as CFT keys them: CFTSSL by (ID, DIRECT), CFTTCP by (ID, CLASS), the others by ID; PKICER
   and PKIENTITY share one id space. A replaced object keeps the position of its first definition.
3. What survived is resolved against the whole input, whatever the file order: active protocols
   (CFTPARM PROT), listeners and their backend, profiles, partners with their CFTTCP, then the `pki`
   entries that the profiles name.

Every parameter read is marked as used; whatever an imported object had besides goes on its
`ignored` line, so nothing of the input disappears without a line saying so.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .parser import Command, ListValue, Param, Scalar, Value
from .report import Level, Note

Case = Literal["id", "keyword", "nr", "text", "verbatim"]

# CFTUTIL.md §4: the installer's values for the samples' UCONF keys, used when the input has none.
INSTALLER_UCONF = {
    "samples.pesitany_sap.value": "1761",
    "samples.pesitssl_sap.value": "1762",
    "samples.sftp_sap.value": "1763",
}
# IANA names the Transfer CFT ports cft-0 … cft-7 (1761-1768).
_SERVICE = re.compile(r"cft-([0-7])", re.IGNORECASE)
_REFERENCE = re.compile(r"%(env|uconf):([^%]*)%", re.IGNORECASE)
# Codes CFT lists that the TLS library cannot offer: NULL, RC4, DES, 3DES (NOTES A.3).
UNAVAILABLE_CIPHERS = (1, 2, 4, 5, 9, 10, 59)
# CFT's fixed server preference order: CFT ignores a server profile's list order, sidecar follows it.
CFT_SERVER_ORDER = (49199, 49200, 49191, 49192, 156, 157, 60, 61, 47, 53)
_TLS_UCONF = {"tls_1.0": "tls1.0", "tls_1.1": "tls1.1", "tls_1.2": "tls1.2", "tls_1.3": "tls1.3"}
_WILDCARD_V4 = ("INADDR_ANY", "IN4ADDR_ANY")

# Parameters read by no rule and reported by none: configuration management, and comments that
# sidecar keeps only on profiles.
_ALWAYS_USED = frozenset({"ID", "MODE", "ORIGIN", "COMMENT"})
_STORED = ("CFTSSL", "CFTPROT", "CFTNET", "CFTPART", "CFTTCP", "CFTPARM", "PKICER", "PKIENTITY")


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an item of the result came from, so that the loader's findings point at the input."""

    file: str
    line: int
    subject: str


@dataclass(frozen=True, slots=True)
class Imported:
    tree: dict[str, Any]
    notes: tuple[Note, ...]
    origins: dict[str, Origin]  # "profiles[0]", "listeners[1]", "partners[2]", "pki.ROOTCA"


@dataclass(slots=True)
class _Object:
    command: Command
    ident: str
    qualifier: str = ""  # CFTSSL: server | client; CFTTCP: the CLASS

    @property
    def subject(self) -> str:
        if self.command.name == "CFTSSL":
            return f"CFTSSL {self.ident}/{self.qualifier}"
        if self.command.name == "CFTTCP" and self.qualifier != "1":
            return f"CFTTCP {self.ident}/CLASS={self.qualifier}"
        return f"{self.command.name} {self.ident}"


class _Notes:
    def __init__(self) -> None:
        self.items: list[Note] = []

    def add(self, command: Command, subject: str, level: Level, message: str) -> None:
        self.items.append(Note(command.file, command.line, level, subject, message))


def _last_params(command: Command) -> dict[str, Param]:
    return {param.name: param for param in command.params}


def _is_unset(value: Value) -> bool:
    if isinstance(value, ListValue):
        return all(not item.text.strip() for item in value.items)
    return not value.text.strip()


def _cased(scalar: Scalar, case: Case) -> str:
    if case in ("id", "keyword"):
        return scalar.text.strip().upper()
    if case == "nr":  # CFT's `STRING or "String"`: case kept only inside double quotes
        return scalar.text if scalar.quote == '"' else scalar.text.upper()
    if case == "text":  # free text: quoted verbatim, bare upper-cased as CFTUTIL stores it
        return scalar.text if scalar.quote else scalar.text.upper()
    return scalar.text


def _shown(name: str, value: Value) -> str:
    """A parameter as the report lists it: bare upper-cased, quoted as written, passwords masked."""
    if "PASSW" in name:
        return f"{name}=***"
    if isinstance(value, ListValue):
        inner = ", ".join(_cased(item, "text") for item in value.items if item.text.strip())
        return f"{name}=({inner})"
    return f"{name}={_cased(value, 'text')}"


class _View:
    """One object's parameters, read by name with references resolved; records what was read."""

    def __init__(self, obj: _Object, context: _Context) -> None:
        self.obj = obj
        self.context = context
        self.params: dict[str, Param] = {}
        self.used: set[str] = set(_ALWAYS_USED)
        self._resolved: dict[str, Value | None] = {}
        for param in obj.command.params:
            earlier = self.params.get(param.name)
            if earlier is not None:
                self.note("warning", f"{param.name} given twice (lines {earlier.line} and {param.line}): the last wins")
            self.params[param.name] = param

    def note(self, level: Level, message: str) -> None:
        self.context.notes.add(self.obj.command, self.obj.subject, level, message)

    def has(self, name: str) -> bool:
        param = self.params.get(name)
        return param is not None and not _is_unset(param.value)

    def value(self, name: str) -> Value | None:
        """The value with %uconf:…% and %env:…% substituted; None when unset or unresolvable."""
        self.used.add(name)
        if name in self._resolved:
            return self._resolved[name]
        param = self.params.get(name)
        resolved: Value | None = None
        if param is not None and not _is_unset(param.value):
            if isinstance(param.value, ListValue):
                items = [self._substitute(name, item) for item in param.value.items if item.text.strip()]
                kept = [item for item in items if item is not None]
                resolved = ListValue(tuple(kept)) if len(kept) == len(items) else None
            else:
                resolved = self._substitute(name, param.value)
                if resolved is not None and not resolved.text.strip():
                    resolved = None
        self._resolved[name] = resolved
        return resolved

    def _substitute(self, name: str, scalar: Scalar) -> Scalar | None:
        return self.context.substitute(self.obj.command, self.obj.subject, name, scalar)

    def text(self, name: str, case: Case) -> str | None:
        value = self.value(name)
        if value is None:
            return None
        if isinstance(value, ListValue):
            value = value.items[0]
        if value.curly:
            self.note("warning", f"{name}: typographic quotes read as {value.quote}")
        return _cased(value, case)

    def items(self, name: str, case: Case) -> list[str] | None:
        value = self.value(name)
        if value is None:
            return None
        scalars = value.items if isinstance(value, ListValue) else (value,)
        if any(scalar.curly for scalar in scalars):
            self.note("warning", f"{name}: typographic quotes read as straight ones")
        return [_cased(scalar, case) for scalar in scalars]

    def integer(self, name: str, low: int, high: int) -> int | None:
        """A number (CFTEXT quotes them); out of range or not a number: an error, None."""
        text = self.text(name, "verbatim")
        if text is None:
            return None
        text = text.strip()
        if not text.isdigit() or not low <= int(text) <= high:
            self.note("error", f"{name}={text}: not a number from {low} to {high}: left out")
            return None
        return int(text)

    def ignored_line(self) -> None:
        shown = [
            _shown(name, param.value)
            for name, param in self.params.items()
            if name not in self.used and not _is_unset(param.value)
        ]
        if shown:
            self.note("ignored", ", ".join(shown))


@dataclass(slots=True)
class _Context:
    notes: _Notes = field(default_factory=_Notes)
    uconf: dict[str, str] = field(default_factory=dict)
    stores: dict[str, dict[tuple[str, ...], _Object]] = field(default_factory=dict)
    views: dict[int, _View] = field(default_factory=dict)

    def view(self, obj: _Object) -> _View:
        found = self.views.get(id(obj))
        if found is None:
            found = self.views[id(obj)] = _View(obj, self)
        return found

    def substitute(self, command: Command, subject: str, name: str, scalar: Scalar) -> Scalar | None:
        """`scalar` with its %uconf:…% references replaced; None (and an error) when one cannot be."""
        if "%" not in scalar.text:
            return scalar
        unresolved: list[str] = []

        def replace(match: re.Match[str]) -> str:
            kind, key = match.group(1).lower(), match.group(2).lower()
            if kind == "uconf":
                value = self.uconf.get(key)
                if value is not None:
                    return value
                default = INSTALLER_UCONF.get(key)
                if default is not None:
                    message = f"{name}: {match.group()} is not set in the input: installer default {default}"
                    self.notes.add(command, subject, "warning", message)
                    return default
            unresolved.append(match.group())
            return match.group()

        text = _REFERENCE.sub(replace, scalar.text)
        if unresolved:
            where = "is not set in the input" if unresolved[0].lower().startswith("%uconf") else "cannot be read here"
            self.notes.add(command, subject, "error", f"{name}: {unresolved[0]} {where}: {name} left out")
            return None
        return Scalar(text, scalar.quote, scalar.curly)


# --------------------------------------------------------------------------------------------
# Step 1 and 2: UCONF, then MODE onto the stores


def _collect_uconf(commands: Iterable[Command], context: _Context) -> None:
    for command in commands:
        if command.name != "UCONFSET":
            continue
        params = _last_params(command)
        key, value = params.get("ID"), params.get("VALUE")
        if key is None or not isinstance(key.value, Scalar) or not key.value.text.strip():
            context.notes.add(command, "UCONFSET", "error", "ID missing: command skipped")
            continue
        text = value.value.text if value is not None and isinstance(value.value, Scalar) else ""
        context.uconf[key.value.text.strip().lower()] = text


def _key_text(command: Command, name: str, context: _Context) -> str | None:
    """ID, DIRECT, CLASS or MODE of a command, references resolved, upper-cased; None when absent."""
    param = _last_params(command).get(name)
    if param is None or _is_unset(param.value):
        return None
    scalar = param.value.items[0] if isinstance(param.value, ListValue) else param.value
    resolved = context.substitute(command, command.name, name, scalar)
    return None if resolved is None else _cased(resolved, "id")


def _apply(command: Command, context: _Context) -> None:
    ident = _key_text(command, "ID", context)
    if ident is None:
        context.notes.add(command, command.name, "error", "ID missing: command skipped")
        return
    obj = _Object(command, ident)
    if command.name == "CFTSSL":
        direct = _key_text(command, "DIRECT", context)
        if direct is None:
            obj.qualifier = "client"
            context.notes.add(command, obj.subject, "warning", "DIRECT absent: CLIENT assumed (CFT's default)")
        elif direct in ("CLIENT", "SERVER"):
            obj.qualifier = direct.lower()
        else:
            context.notes.add(command, f"CFTSSL {ident}", "error", f"DIRECT={direct}: not CLIENT or SERVER: skipped")
            return
    elif command.name == "CFTTCP":
        obj.qualifier = (_key_text(command, "CLASS", context) or "1").lstrip("0") or "0"
    mode = _key_text(command, "MODE", context) or "REPLACE"
    group = "PKI" if command.name in ("PKICER", "PKIENTITY") else command.name
    store = context.stores.setdefault(group, {})
    key = (ident, obj.qualifier)
    if mode == "REPLACE":
        store[key] = obj  # an existing key keeps its position: REPLACE does not move an object
    elif mode == "CREATE":
        first = store.get(key)
        if first is not None:
            context.notes.add(command, obj.subject, "error",
                              f"MODE=CREATE: already defined at {first.command.file}:{first.command.line}: "
                              "the first definition is kept")  # fmt: skip
        else:
            store[key] = obj
    elif mode == "DELETE":
        if store.pop(key, None) is None:
            context.notes.add(command, obj.subject, "warning", "MODE=DELETE: not defined before: nothing deleted")
    else:
        context.notes.add(command, obj.subject, "error", f"MODE={mode}: not REPLACE, CREATE or DELETE: skipped")


# --------------------------------------------------------------------------------------------
# Step 3: resolution


def _sap(view: _View, text: str) -> int | None:
    """A SAP as CFT reads it: a port, a cft-N service name, or `#` + hex ASCII (`#31373632` = 1762)."""
    original = text
    text = text.strip()
    if text.startswith("#"):
        try:
            text = bytes.fromhex(text[1:]).decode("ascii").strip()
        except (ValueError, UnicodeDecodeError):
            view.note("error", f"SAP={original}: not hexadecimal ASCII: left out")
            return None
    service = _SERVICE.fullmatch(text)
    if service:
        return 1761 + int(service.group(1))
    if text.isdigit() and 1 <= int(text) <= 65535:
        return int(text)
    view.note("error", f"SAP={original}: not a port or a known service name (cft-0 … cft-7): left out")
    return None


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(slots=True)
class _Protocol:
    obj: _Object
    view: _View
    type: str
    sap: int | None
    net: _Object | None
    net_class: str = "1"
    backend_of: list[str] = field(default_factory=list)


def _net_host(context: _Context, net: _Object | None) -> str | None:
    if net is None:
        return None
    hosts = context.view(net).items("HOST", "verbatim")
    return hosts[0].strip() if hosts else None


def _protocols(context: _Context) -> tuple[list[_Protocol], list[_Protocol]]:
    """The active CFTPROTs as (with SSL, plaintext), in order of first definition."""
    parms = context.stores.get("CFTPARM", {})
    active: set[str] | None = None
    chosen: _Object | None = None
    if parms:
        # The UCONF cft.param_id's, else IDPARM0, else the only one.
        configured = context.uconf.get("cft.param_id", "").strip().upper()
        wanted = configured if (configured, "") in parms else "IDPARM0"
        chosen = parms.get((wanted, "")) or (next(iter(parms.values())) if len(parms) == 1 else None)
        for obj in parms.values():
            view = context.view(obj)
            if obj is chosen:
                prots = view.items("PROT", "id")
                active = set(prots) if prots is not None else None
                listed = f"({', '.join(prots)})" if prots else "absent: every CFTPROT is taken"
                view.note("skipped", f"no equivalent in sidecar; its PROT list selects the protocols: {listed}")
            else:
                view.note("skipped", f"not the active CFTPARM ({chosen.ident if chosen else wanted})")
        if chosen is None:
            first = next(iter(parms.values()))
            context.notes.add(first.command, "CFTPARM", "warning",
                              f"several CFTPARM and none is {wanted}: every CFTPROT is taken as active")  # fmt: skip

    secure: list[_Protocol] = []
    plain: list[_Protocol] = []
    for obj in context.stores.get("CFTPROT", {}).values():
        view = context.view(obj)
        if active is not None and obj.ident not in active:
            assert chosen is not None
            view.note("skipped", f"not in the PROT list of CFTPARM {chosen.ident}: not active")
            continue
        kind = view.text("TYPE", "keyword")
        if kind is None:
            kind = "PESIT"
            view.note("warning", "TYPE absent: PESIT assumed")
        if kind == "SFTP":
            view.note("skipped", "TYPE=SFTP is SSH, not TLS: not proxied")
            continue
        net_id = view.text("NET", "id")
        net = context.stores.get("CFTNET", {}).get((net_id, "")) if net_id else None
        if net_id and net is None:
            view.note("warning", f"NET={net_id}: no such CFTNET")
        sap = view.text("SAP", "verbatim")
        protocol = _Protocol(obj, view, kind, _sap(view, sap) if sap is not None else None, net)
        if net is not None:
            protocol.net_class = (context.view(net).text("CLASS", "verbatim") or "1").strip().lstrip("0") or "0"
        (secure if view.has("SSL") else plain).append(protocol)
    return secure, plain


def _backend(context: _Context, protocol: _Protocol, plain: list[_Protocol], given: str | None) -> str | None:
    if given is not None:
        return given
    candidates = [p for p in plain if p.type == protocol.type and p.sap is not None]
    if len(candidates) != 1:
        if candidates:
            names = ", ".join(p.obj.ident for p in candidates)
            problem = f"several plaintext CFTPROTs of TYPE={protocol.type} could be it ({names})"
        else:
            problem = f"no plaintext CFTPROT (without SSL) of TYPE={protocol.type} with a SAP"
        protocol.view.note("error", f"no backend: {problem}: give it with --backend HOST:PORT")
        return None
    candidate = candidates[0]
    candidate.backend_of.append(protocol.obj.ident)
    host = _net_host(context, candidate.net)
    if host is None or host.upper() in _WILDCARD_V4:
        host = "127.0.0.1"
    elif host.upper() == "IN6ADDR_ANY":
        host = "::1"
    assert candidate.sap is not None
    return _address(host, candidate.sap)


def _listeners(
    context: _Context, backend: str | None, origins: dict[str, Origin]
) -> tuple[list[dict[str, Any]], list[_Protocol]]:
    secure, plain = _protocols(context)
    listeners: list[dict[str, Any]] = []
    emitted: list[_Protocol] = []
    used_nets: list[_Object] = []
    for protocol in secure:
        view = protocol.view
        ssl = view.text("SSL", "id")
        item: dict[str, Any] = {"id": protocol.obj.ident}
        net = protocol.net
        call = context.view(net).text("CALL", "keyword") if net is not None else None
        if net is not None:
            context.view(net).used.discard("CALL")  # reported on the CFTNET's ignored line
            if net not in used_nets:
                used_nets.append(net)
        serves = protocol.sap is not None and call != "OUT"
        if protocol.sap is not None and call == "OUT":
            view.note("warning", f"NET={net.ident if net else ''} has CALL=OUT: requester only, no listen")
        if serves:
            assert protocol.sap is not None
            host = _net_host(context, net)
            if net is None:
                if not view.has("NET"):
                    view.note("warning", "NET absent: listening on every IPv4 address (0.0.0.0)")
                host = None
            if host is None or host.upper() in _WILDCARD_V4:
                host = "0.0.0.0"
            elif host.upper() == "IN6ADDR_ANY":
                host = "::"
            item["listen"] = _address(host, protocol.sap)
        item["ssl"] = ssl
        if serves:
            found = _backend(context, protocol, plain, backend)
            if found is not None:
                item["backend"] = found
            item["identify"] = "pesit" if protocol.type == "PESIT" else "none"
            if ssl is not None and (ssl, "server") not in context.stores.get("CFTSSL", {}):
                view.note("error", f"SSL={ssl}: no CFTSSL ID={ssl} DIRECT=SERVER (CFT refuses to start: CFTP20F)")
        origins[f"listeners[{len(listeners)}]"] = Origin(protocol.obj.command.file, protocol.obj.command.line,
                                                          protocol.obj.subject)  # fmt: skip
        listeners.append(item)
        emitted.append(protocol)
        view.ignored_line()
    for protocol in plain:
        if protocol.backend_of:
            protocol.view.note("skipped", f"plaintext (no SSL): the backend of {', '.join(protocol.backend_of)}")
        else:
            protocol.view.note("skipped", "plaintext (no SSL): nothing to proxy")
        if protocol.backend_of and protocol.net is not None and protocol.net not in used_nets:
            used_nets.append(protocol.net)
    for net in used_nets:
        net_view = context.view(net)
        net_view.text("TYPE", "keyword")
        net_view.text("HOST", "verbatim")
        net_view.text("CLASS", "verbatim")
        net_view.ignored_line()
    return listeners, emitted


def _ciphers(view: _View, direct: str) -> list[int | str] | None:
    written = view.items("CIPHLIST", "verbatim")
    if written is None:
        view.note("warning", "CIPHLIST absent (mandatory in CFT): sidecar's default list applies")
        return None
    codes: list[int | str] = [int(c.strip()) if c.strip().isdigit() else c.strip() for c in written]
    dropped = [code for code in codes if code in UNAVAILABLE_CIPHERS]
    kept = [code for code in codes if code not in UNAVAILABLE_CIPHERS]
    if dropped:
        tail = "" if kept else ": none left, sidecar's default list applies"
        view.note("warning", f"CIPHLIST: {', '.join(map(str, dropped))} dropped (NULL, RC4, DES or 3DES){tail}")
    if direct == "server":  # CFT serves by its own fixed order whatever the list's order
        rank = {code: i for i, code in enumerate(CFT_SERVER_ORDER)}
        kept = sorted(kept, key=lambda code: rank.get(code, len(rank)) if isinstance(code, int) else len(rank))
    return kept or None


def _version(view: _View, context: _Context) -> dict[str, str]:
    bounds = {"min": "tls1.0", "max": "tls1.2"}  # TLSV1 within CFT's default UCONF bounds (NOTES A.4)
    for bound in ("min", "max"):
        configured = context.uconf.get(f"cft.ssl.version_{bound}")
        if configured is None or not configured.strip():
            continue
        value = configured.strip().lower()
        if value == "ssl_3.0":
            view.note("warning", f"UCONF cft.ssl.version_{bound}=ssl_3.0: SSL 3.0 is not available, tls1.0 used")
            bounds[bound] = "tls1.0"
        elif value in _TLS_UCONF:
            bounds[bound] = _TLS_UCONF[value]
        else:
            view.note("warning", f"UCONF cft.ssl.version_{bound}={configured}: not a TLS version, ignored")
    keyword = view.text("VERSION", "keyword")
    if keyword in ("SSLV3", "SSLV3COMP"):
        view.note("warning", f"VERSION={keyword}: SSL 3.0 is not available: tls1.0 is the lowest")
    elif keyword is not None and keyword not in ("TLSV1", "TLSV1COMP"):
        view.note("error", f"VERSION={keyword}: unknown: TLSV1 assumed")
    return bounds


def _depth(view: _View) -> int:
    depth = view.integer("DEPTH", 0, 10)
    if depth is None:
        depth = 10
    if depth == 1:
        view.note("warning", "DEPTH=1: translated to depth 1, which also admits one intermediate CA")
        return 1
    return depth - 1 if depth >= 2 else 0


def _dn(view: _View, name: str) -> str | list[str] | None:
    value = view.value(name)
    if value is None:
        return None
    texts = view.items(name, "text") or []
    scalars = value.items if isinstance(value, ListValue) else (value,)
    if any(not scalar.quote for scalar in scalars):
        view.note("warning", f"{name}: written without quotes, so CFTUTIL stores it in upper case: imported so")
    if isinstance(value, ListValue):
        return [text.strip() for text in texts]
    text = texts[0].strip()
    if text.startswith("(") and '"' in text:
        return text  # the extended expression ("a" AND "b")
    if text.startswith("(") and text.endswith(")"):
        return [part.strip() for part in text[1:-1].split(",") if part.strip()]
    if "," in text:  # a comma means OR
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


def _profiles(context: _Context, origins: dict[str, Origin]) -> list[dict[str, Any]]:
    profiles: list[dict[str, Any]] = []
    for obj in context.stores.get("CFTSSL", {}).values():
        view = context.view(obj)
        view.used.add("DIRECT")
        direct = obj.qualifier
        item: dict[str, Any] = {"id": obj.ident, "direct": direct}
        usercid = view.text("USERCID", "id")
        if usercid is not None and "&" in usercid:  # &PART, &USERID: CFT picks a certificate per partner
            view.note("error", f"USERCID={usercid}: substituted per partner by CFT: cannot be imported: left out")
        elif usercid is not None:
            item["usercid"] = usercid
        rootcid = view.items("ROOTCID", "id")
        if rootcid:
            item["rootcid"] = rootcid
        verify = view.text("VERIFY", "keyword")
        choices = ("NONE", "OPTIONAL", "REQUIRED") + (("ENFORCED",) if direct == "client" else ())
        default = "REQUIRED" if direct == "server" else "NONE"
        if verify == "ENFORCED" and direct == "server":
            view.note("warning", "VERIFY=ENFORCED on a server profile: required")
            verify = "REQUIRED"
        elif verify is not None and verify not in choices:
            view.note("error", f"VERIFY={verify}: not one of {', '.join(choices)}: {default} assumed")
            verify = None
        item["verify"] = (verify or default).lower()
        ciphers = _ciphers(view, direct)
        if ciphers is not None:
            item["ciphlist"] = ciphers
        item["version"] = _version(view, context)
        item["depth"] = _depth(view)
        for name in ("DNUSER", "DNISSUER"):
            dn = _dn(view, name)
            if dn is not None:
                item[name.lower()] = dn
        keyext = view.text("KEYEXT", "keyword")
        if keyext in ("VERIFY", "NONE"):
            item["keyext"] = keyext.lower()
        elif keyext is not None:
            view.note("error", f"KEYEXT={keyext}: not VERIFY or NONE: left out")
        cache = view.text("CACHE", "keyword")
        if cache == "YES":
            item["session_tickets"] = True
        elif cache not in (None, "NO"):
            view.note("warning", f"CACHE={cache}: not YES or NO: left out")
        for name in ("PARM", "COMMENT"):
            text = view.text(name, "text")
            if text is not None:
                item[name.lower()] = text
        origins[f"profiles[{len(profiles)}]"] = Origin(obj.command.file, obj.command.line, obj.subject)
        profiles.append(item)
        view.ignored_line()
    return profiles


def _partner_prot(view: _View, listener_ids: list[str]) -> tuple[list[str] | None, int | None]:
    """The partner's `prot` and the position (in its PROT list) of the first kept entry."""
    written = view.items("PROT", "id")
    if written is None:
        view.note("warning", "PROT absent: the partner may arrive on every listener")
        return None, None
    if written == ["*"]:
        return ["*"], 0
    kept: list[str] = []
    first: int | None = None
    for position, entry in enumerate(written):
        if "*" in entry or "?" in entry:
            matches = [lid for lid in listener_ids if fnmatch.fnmatchcase(lid, entry)]
        elif entry in listener_ids:
            matches = [entry]
        else:
            view.note("warning", f"PROT {entry} not proxied")
            matches = []
        for match in matches:
            if match not in kept:
                kept.append(match)
                if first is None:
                    first = position
    return kept, first


def _partners(context: _Context, listeners: list[_Protocol], origins: dict[str, Origin]) -> list[dict[str, Any]]:
    listener_ids = [p.obj.ident for p in listeners]
    net_class = {p.obj.ident: p.net_class for p in listeners}
    tcps = context.stores.get("CFTTCP", {})
    parts = context.stores.get("CFTPART", {})
    tcps_by_id: dict[str, list[_Object]] = {}
    for (ident, _), record in tcps.items():
        tcps_by_id.setdefault(ident, []).append(record)
    profile_ids = {ident for ident, _ in context.stores.get("CFTSSL", {})}
    used_tcps: set[int] = set()
    imported: set[str] = set()
    partners: list[dict[str, Any]] = []
    for obj in parts.values():
        view = context.view(obj)
        state = view.params.get("STATE")
        if state is not None and isinstance(state.value, Scalar) and _cased(state.value, "keyword") == "NOACTIVE":
            view.note("warning", "STATE=NOACTIVE: partner not imported")
            continue
        prot, first = _partner_prot(view, listener_ids)
        if prot is not None and not prot:
            view.note("warning", "no PROT entry names an imported listener: partner not imported")
            continue
        item: dict[str, Any] = {"id": obj.ident}
        nrpart = view.text("NRPART", "nr")
        if nrpart is not None:
            item["nrpart"] = nrpart
        nrpassw = view.text("NRPASSW", "nr")
        if nrpassw is not None and set(nrpassw) == {"*"}:
            view.note("warning", "NRPASSW is masked (only '*'): left out, set nrpassw or nrpassw_file by hand")
        elif nrpassw is not None:
            item["nrpassw"] = nrpassw
        ssl = view.text("SSL", "id")
        if ssl is not None:
            item["ssl"] = ssl
            if ssl not in profile_ids:
                view.note("warning", f"SSL={ssl}: no such CFTSSL")
        if prot is not None:
            item["prot"] = prot
        saps = view.items("SAP", "verbatim")
        if saps and first is not None and first < len(saps):
            sap = _sap(view, saps[first])
            if sap is not None:
                item["sap"] = sap
        lead = (listener_ids[0] if listener_ids else None) if prot == ["*"] else (prot[0] if prot else None)
        wanted_class = net_class.get(lead, "1") if lead is not None else "1"
        same_id = tcps_by_id.get(obj.ident, [])
        tcp = tcps.get((obj.ident, wanted_class)) or tcps.get((obj.ident, "1"))
        if tcp is None and len(same_id) == 1:
            tcp = same_id[0]
        if tcp is not None:
            used_tcps.add(id(tcp))
            tcp_view = context.view(tcp)
            tcp_view.used.add("CLASS")
            hosts = [h.strip() for h in tcp_view.items("HOST", "verbatim") or [] if h.strip()]
            if hosts:
                item["host"] = hosts
            verify = tcp_view.integer("VERIFY", 0, 255)
            if verify and hosts:
                item["host_verify"] = verify
            elif verify:
                tcp_view.note("warning", f"VERIFY={verify} without HOST: no address check")
            tcp_view.ignored_line()
        origins[f"partners[{len(partners)}]"] = Origin(obj.command.file, obj.command.line, obj.subject)
        partners.append(item)
        imported.add(obj.ident)
        view.ignored_line()
    for (ident, _), record in tcps.items():
        if (ident, "") not in parts:
            context.view(record).note("warning", f"no CFTPART {ident}: not imported")
        elif id(record) not in used_tcps and ident in imported:
            context.view(record).note("skipped", f"CLASS={record.qualifier} is not the class of {ident}'s listener")
    return partners


def _pki(context: _Context, profiles: list[dict[str, Any]], origins: dict[str, Origin]) -> dict[str, Any]:
    named: dict[str, bool] = {}  # id -> needs a key (named by a USERCID)
    named_by: dict[str, str] = {}
    for index, profile in enumerate(profiles):
        for ident, own in [(profile.get("usercid"), True)] + [(root, False) for root in profile.get("rootcid", [])]:
            if ident is None:
                continue
            named[ident] = named.get(ident, False) or own
            named_by.setdefault(ident, f"profiles[{index}]")
    store = context.stores.get("PKI", {})
    pki: dict[str, Any] = {}
    for ident, own in named.items():
        obj = store.get((ident, ""))
        stub: dict[str, str] = {"cert": f"pki/{ident}.pem"}
        if own:
            stub["key"] = f"pki/{ident}.key"
        if obj is None:
            pki[ident] = stub
            origins[f"pki.{ident}"] = origins[named_by[ident]]
            continue
        origins[f"pki.{ident}"] = Origin(obj.command.file, obj.command.line, obj.subject)
        view = context.view(obj)
        if obj.command.name == "PKIENTITY":
            members = view.items("CERTIFICATES", "id") or []
            if len(members) == 1 and members[0].startswith("("):
                members = [m.strip().strip("'\"").upper() for m in members[0].strip("()").split(",") if m.strip()]
            view.note("warning", f"a group of CAs ({', '.join(members)}): put their certificates in {stub['cert']}")
            pki[ident] = {"cert": stub["cert"]}
            view.ignored_line()
            continue
        pki[ident] = _pki_entry(view, ident, own, stub)
        view.ignored_line()
    for (ident, _), obj in store.items():
        if ident not in named:
            context.view(obj).note("skipped", "named by no imported CFTSSL USERCID or ROOTCID")
    return pki


def _pki_entry(view: _View, ident: str, own: bool, stub: dict[str, str]) -> dict[str, str]:
    view.used.update({"ITYPE", "ROOTCID"})
    form = view.text("IFORM", "keyword")
    iname = view.text("INAME", "verbatim")
    entry: dict[str, str] = {}
    if view.has("IDATA"):
        view.used.add("IDATA")
        view.note("warning", f"IDATA: the certificate is inline: write it to {stub['cert']}")
        entry["cert"] = stub["cert"]
    elif form in ("PKCS12", "PKCS7"):
        what = "its certificate and key" if own else "its certificate"
        view.note("warning", f"IFORM={form}: sidecar reads PEM or DER files: extract {what} from {iname} "
                             f"to {' and '.join(stub.values())}")  # fmt: skip
        entry["cert"] = stub["cert"]
    elif form not in (None, "PEM", "DER"):
        view.note("warning", f"IFORM={form}: unknown format: {stub['cert']} assumed")
        entry["cert"] = stub["cert"]
    elif iname is None:
        view.note("warning", f"INAME absent: {stub['cert']} assumed")
        entry["cert"] = stub["cert"]
    else:
        entry["cert"] = iname
    if own:
        ikname = view.text("IKNAME", "verbatim")
        ikform = view.text("IKFORM", "keyword")
        if ikname is not None and form not in ("PKCS12", "PKCS7"):
            entry["key"] = ikname
            if ikform not in (None, "PEM", "DER", "PKCS8"):
                view.note("warning", f"IKFORM={ikform}: sidecar reads PEM or DER keys")
        else:
            if form not in ("PKCS12", "PKCS7"):
                view.note("warning", f"IKNAME absent: the key of this own certificate is expected in {stub['key']}")
            entry["key"] = stub["key"]
    if view.has("IKPASSW"):
        password = view.text("IKPASSW", "verbatim") or ""
        source = f" (CFT reads it from {password[1:]})" if password[:1] in ("#", "@") else ""
        view.note("warning", f"IKPASSW: the key password is not imported{source}: "
                             f"set pki.{ident}.key_password_file")  # fmt: skip
    state = view.text("STATE", "keyword")
    if state is not None and state.startswith("INACT"):
        view.note("warning", f"STATE={state}: inactive in CFT, imported anyway")
    return entry


def _others(commands: Sequence[Command], context: _Context) -> None:
    for command in commands:
        if command.name in _STORED or command.name == "UCONFSET":
            continue
        if command.name in ("CFTUTIL", "PKIUTIL") and not command.params:
            continue  # a pasted program name: `PKIUTIL PKICER ID=…`
        ident = _last_params(command).get("ID")
        shown = ident.value.text.strip().upper() if ident is not None and isinstance(ident.value, Scalar) else ""
        subject = f"{command.name} {shown}" if shown else command.name
        context.notes.add(command, subject, "skipped", "no equivalent in sidecar")


def map_commands(commands: Sequence[Command], backend: str | None = None) -> Imported:
    """The configuration tree for `commands` (every file's, in order) and the report's notes."""
    context = _Context()
    _collect_uconf(commands, context)
    for command in commands:
        if command.name in _STORED:
            _apply(command, context)
    _others(commands, context)
    origins: dict[str, Origin] = {}
    listeners, emitted = _listeners(context, backend, origins)
    profiles = _profiles(context, origins)
    partners = _partners(context, emitted, origins)
    pki = _pki(context, profiles, origins)
    tree: dict[str, Any] = {}
    for key, section in (("pki", pki), ("profiles", profiles), ("listeners", listeners), ("partners", partners)):
        if section:
            tree[key] = section
    files = list(dict.fromkeys(command.file for command in commands))
    order = {name: i for i, name in enumerate(files)}
    notes = sorted(context.notes.items, key=lambda n: (order.get(n.file, len(order)), n.line or 0))
    return Imported(tree, tuple(notes), origins)
