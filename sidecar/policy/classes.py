"""SecureTransport user classes and SSL encryption entries (SPEC 4.6, NOTES D), pure.

A session's class is the one named explicitly (its partner's `user_class`), else the first rule
whose user glob and address both match. The first encryption entry for that class, or for `*`,
says whether encryption is required; no entry means optional. Only a plaintext session can fail:
TLS satisfies every entry.

Patterns and networks are compiled when the policy is built, so a bad one is refused at load
(ValueError, which the config layer turns into a path-qualified issue) and nothing is parsed per
session except the session's own address.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from sidecar.policy.decision import Decision, Reason

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ANY = "*"
_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


@dataclass(frozen=True, slots=True)
class UserClassRule:
    """Puts a session in class `name` when its user matches the glob and its address the network.

    `user`: `*` any run of characters, `?` one character, everything else literal, case-sensitive.
    `address`: a CIDR or a single IP; None matches any address, including an unknown one.
    """

    name: str
    user: str = ANY
    address: str | None = None


@dataclass(frozen=True, slots=True)
class EncryptionRule:
    """Encryption for one class; `user_class` `*` matches every session, even one without a class."""

    user_class: str
    required: bool


@dataclass(frozen=True, slots=True)
class ClassMatch:
    name: str | None  # None: no class (no rule matched, none named)
    rule_index: int | None  # index in `ClassPolicy.classes`; None when explicit or unmatched
    explicit: bool  # the class came from the caller (partner's user_class), not from a rule


@dataclass(frozen=True, slots=True)
class EncryptionMatch:
    required: bool
    rule_index: int | None  # index in `ClassPolicy.encryption`; None: no entry, hence optional


@dataclass(frozen=True, slots=True)
class _CompiledClass:
    name: str
    user: re.Pattern[str] | None  # None: matches any user, even an unknown one
    network: IPNetwork | None


@dataclass(frozen=True, slots=True)
class ClassPolicy:
    classes: tuple[UserClassRule, ...]
    encryption: tuple[EncryptionRule, ...]
    _compiled: tuple[_CompiledClass, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Callers may hand lists: keep the value hashable and immutable like every config value.
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "encryption", tuple(self.encryption))
        for index, entry in enumerate(self.encryption):
            if not entry.user_class:
                raise ValueError(f"encryption[{index}]: user_class must not be empty")
        compiled = tuple(_compile_class(index, rule) for index, rule in enumerate(self.classes))
        object.__setattr__(self, "_compiled", compiled)

    def classify(self, user: str | None, address: str | None, explicit_class: str | None = None) -> ClassMatch:
        """The session's class: `explicit_class` if given, else the first matching rule, else none."""
        if explicit_class is not None:
            return ClassMatch(name=explicit_class, rule_index=None, explicit=True)
        session_address = _session_address(address)
        for index, rule in enumerate(self._compiled):
            if _user_matches(rule.user, user) and _address_matches(rule.network, session_address):
                return ClassMatch(name=rule.name, rule_index=index, explicit=False)
        return ClassMatch(name=None, rule_index=None, explicit=False)

    def encryption_for(self, user_class: str | None) -> EncryptionMatch:
        """The first entry for this class or for `*`; a session without a class matches only `*`."""
        for index, entry in enumerate(self.encryption):
            if entry.user_class == ANY or (user_class is not None and entry.user_class == user_class):
                return EncryptionMatch(required=entry.required, rule_index=index)
        return EncryptionMatch(required=False, rule_index=None)

    def decide(
        self,
        *,
        encrypted: bool,
        user: str | None,
        address: str | None,
        explicit_class: str | None = None,
    ) -> tuple[Decision, ClassMatch, EncryptionMatch]:
        """Refuse a plaintext session whose class requires encryption; allow everything else."""
        match = self.classify(user, address, explicit_class)
        encryption = self.encryption_for(match.name)
        class_text = "no class" if match.name is None else f"class {match.name!r}"
        if encryption.rule_index is None:
            return (
                Decision.allow(f"{class_text}: no encryption entry, encryption optional"),
                match,
                encryption,
            )
        entry = self.encryption[encryption.rule_index]
        rule_ref = f"encryption[{encryption.rule_index}]"
        level = "required" if entry.required else "optional"
        entry_text = f"{rule_ref} (user_class {entry.user_class!r}): encryption {level}"
        if entry.required and not encrypted:
            detail = f"{class_text}: {entry_text}, session is plaintext"
            return Decision.deny(Reason.ENCRYPTION_REQUIRED, detail, rule_ref=rule_ref), match, encryption
        session = "TLS" if encrypted else "plaintext"
        return (
            Decision.allow(f"{class_text}: {entry_text}, session is {session}", rule_ref),
            match,
            encryption,
        )


def class_rule_problem(index: int, rule: UserClassRule) -> str | None:
    """Why `rule` (at `user_classes[index]`) cannot be used, or None: the very check ClassPolicy makes.

    The configuration calls it while reading the file, so a class is validated once, by one rule.
    """
    try:
        _compile_class(index, rule)
    except ValueError as exc:
        return str(exc)
    return None


def _compile_class(index: int, rule: UserClassRule) -> _CompiledClass:
    where = f"user_classes[{index}]"
    if not rule.name:
        raise ValueError(f"{where}: name must not be empty")
    if rule.name == ANY:
        # `*` in an encryption entry means "every session"; a class by that name would be ambiguous.
        raise ValueError(f"{where}: {ANY!r} cannot be a class name, it is reserved for 'every class'")
    return _CompiledClass(
        name=rule.name,
        user=_compile_user_glob(where, rule.user),
        network=None if rule.address is None else _compile_network(where, rule.address),
    )


def _compile_user_glob(where: str, pattern: str) -> re.Pattern[str] | None:
    if not pattern:
        raise ValueError(f"{where}: user pattern must not be empty (use {ANY!r} for any user)")
    if set(pattern) == {ANY}:
        return None
    # Only `*` and `?` are special (SecureTransport's user name patterns); brackets stay literal.
    parts = (".*" if char == "*" else "." if char == "?" else re.escape(char) for char in pattern)
    return re.compile("".join(parts), re.DOTALL)


def _compile_network(where: str, address: str) -> IPNetwork:
    try:
        network = ipaddress.ip_network(address.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(f"{where}: address {address!r} is not an IP address or CIDR: {exc}") from exc
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_IPV4_MAPPED):
        # Written as ::ffff:a.b.c.d/n: compare as IPv4, like the session addresses below.
        mapped = network.network_address.ipv4_mapped
        assert mapped is not None  # inside ::ffff:0:0/96 by the test above
        return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


def _session_address(address: str | None) -> IPAddress | None:
    if address is None:
        return None
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        # Not an IP (e.g. a Unix socket peer): it cannot be in any network, so only rules without
        # an address can match, as for an unknown address. A denial is never an exception.
        return None
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return parsed.ipv4_mapped  # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
    return parsed


def _user_matches(pattern: re.Pattern[str] | None, user: str | None) -> bool:
    if pattern is None:
        return True
    return user is not None and pattern.fullmatch(user) is not None


def _address_matches(network: IPNetwork | None, address: IPAddress | None) -> bool:
    if network is None:
        return True
    # `in` across IPv4 and IPv6 is simply False, which is what we want.
    return address is not None and address in network
