"""Snapshot: one complete, compiled configuration (contexts, policies, rule files), built whole.

`build_snapshot` reads every file the configuration names, compiles every pattern and rule file and
builds every TLS context; any problem anywhere is collected and raised as one ConfigError. A
snapshot is never modified: a reload builds a new one and swaps one reference (runtime), and each
connection keeps the snapshot it was accepted under.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography import x509

from .config import Config, Listener, Outbound, Partner, Profile, load_config
from .errors import ConfigError, Issue, RuleFileError
from .pki import PkiMaterial, load_crls, load_pki
from .policy.classes import ClassPolicy, EncryptionRule, UserClassRule
from .policy.partners import PartnerBook
from .policy.sslauth import RuleSet, load_sslauth
from .policy.verdict import SessionPolicy
from .tls.profiles import CompiledProfile, compile_profile


@dataclass(frozen=True, slots=True)
class ListenerPlan:
    listener: Listener
    profile: CompiledProfile | None  # None only for a plaintext-only listener
    sslauth: RuleSet | None
    policy: SessionPolicy  # what its sessions are judged by (policy.verdict)


@dataclass(frozen=True, slots=True)
class OutboundPlan:
    outbound: Outbound
    partner: Partner
    profile: CompiledProfile


@dataclass(frozen=True, slots=True)
class Snapshot:
    config: Config
    generation: int
    listeners: dict[str, ListenerPlan]  # only listeners that bind (have `listen`)
    profiles: dict[tuple[str, str], CompiledProfile]  # (id, direct)
    outbound: dict[str, OutboundPlan] = field(default_factory=dict)
    partners: PartnerBook = field(default_factory=PartnerBook)
    classes: ClassPolicy = field(default_factory=lambda: ClassPolicy((), ()))
    pki_certs: dict[str, tuple[x509.Certificate, ...]] = field(default_factory=dict)  # for explain and metrics
    # nextUpdate of every CRL file the profiles name, keyed by the file as configured (None: the CRL has none)
    crl_next_update: dict[str, datetime | None] = field(default_factory=dict)

    def server_profile(self, profile_id: str) -> CompiledProfile | None:
        return self.profiles.get((profile_id, "server"))


def cftp20f(profile_id: str, listener_id: str) -> str:
    """Transfer CFT's start-up refusal text (V24 form)."""
    return f"CFTP20F CFTSSL direct=server {profile_id} for CFTPROT {listener_id} _ Not found"


def _profiles_needing_context(config: Config) -> set[tuple[str, str]]:
    needed: set[tuple[str, str]] = set()
    for listener in config.listeners:
        if listener.listen is not None and listener.ssl is not None:
            needed.add((listener.ssl, "server"))
    for entry in config.outbound:
        client_id = _outbound_profile_id(config, entry)
        if client_id is not None:
            needed.add((client_id, "client"))
    return needed


def _outbound_profile_id(config: Config, entry: Outbound) -> str | None:
    """CFT requester default: the entry's ssl, else the partner's, else its CFTPROT's ssl."""
    if entry.ssl is not None:
        return entry.ssl
    partner = config.partner(entry.partner)
    if partner is not None and partner.ssl is not None:
        return partner.ssl
    if entry.prot is not None:
        listener = config.listener(entry.prot)
        if listener is not None:
            return listener.ssl
    return None


def build_snapshot(config: Config, generation: int = 1) -> Snapshot:
    issues: list[Issue] = []

    for listener in config.listeners:
        if listener.listen is None or listener.ssl is None:
            continue
        if config.profile(listener.ssl, "server") is None:
            issues.append(Issue(f"{listener.path}.ssl", cftp20f(listener.ssl, listener.id), msg_id="CFTP20F"))

    pki, pki_issues = load_pki(config)
    issues.extend(pki_issues)
    needed = _profiles_needing_context(config)
    profiles: dict[tuple[str, str], CompiledProfile] = {}
    crl_next_update: dict[Path, datetime | None] = {}
    for profile in config.profiles:
        compiled = _compile(
            profile, pki, issues, with_context=(profile.id, profile.direct) in needed, next_updates=crl_next_update
        )
        if compiled is not None:
            profiles[(profile.id, profile.direct)] = compiled

    outbound: dict[str, OutboundPlan] = {}
    for entry in config.outbound:
        profile_id = _outbound_profile_id(config, entry)
        partner = config.partner(entry.partner)
        client = profiles.get((profile_id, "client")) if profile_id else None
        if profile_id is None:
            issues.append(Issue(f"{entry.path}.ssl", "no client profile: set ssl here, on the partner, or prot"))
        elif client is None and config.profile(profile_id, "client") is None:
            text = f"CFTT47W _ Cannot find SSL security profil <PART={entry.partner} SSLID={profile_id} DIRECT=CLIENT>"
            issues.append(Issue(f"{entry.path}.ssl", text, msg_id="CFTT47W"))
        if client is not None and partner is not None:
            outbound[entry.id] = OutboundPlan(outbound=entry, partner=partner, profile=client)

    passwords: dict[str, str] = {}
    for partner in config.partners:
        if partner.nrpassw is not None:
            passwords[partner.id] = partner.nrpassw
        elif partner.nrpassw_file is not None:
            try:
                passwords[partner.id] = partner.nrpassw_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                issues.append(Issue(f"{partner.path}.nrpassw_file", f"cannot read {partner.nrpassw_file}: {exc}"))

    book = PartnerBook.build(
        config.partners,
        passwords,
        {profile_id: compiled.policy for (profile_id, direct), compiled in profiles.items() if direct == "server"},
    )
    classes = _class_policy(config, issues)

    listeners: dict[str, ListenerPlan] = {}
    for listener in config.listeners:
        if listener.listen is None:
            continue
        sslauth = _load_rules(listener.sslauth, config.source.parent, issues) if listener.sslauth else None
        server_profile = profiles.get((listener.ssl, "server")) if listener.ssl else None
        policy = SessionPolicy(
            listener_id=listener.id,
            identify=listener.identify,
            missing_partner_profile=listener.missing_partner_profile,
            profile=server_profile.policy if server_profile is not None else None,
            sslauth=sslauth,
            partners=book,
            classes=classes,
        )
        listeners[listener.id] = ListenerPlan(listener=listener, profile=server_profile, sslauth=sslauth, policy=policy)

    if config.admin is not None and config.admin.token_file is not None:
        _read_token(config.admin.token_file, issues)

    if issues:
        raise ConfigError(issues)
    return Snapshot(
        config=config,
        generation=generation,
        listeners=listeners,
        profiles=profiles,
        partners=book,
        outbound=outbound,
        classes=classes,
        pki_certs={pki_id: material.certs for pki_id, material in pki.items()},
        crl_next_update={_as_configured(path, config.source.parent): when for path, when in crl_next_update.items()},
    )


def _class_policy(config: Config, issues: list[Issue]) -> ClassPolicy:
    try:
        return ClassPolicy(
            tuple(UserClassRule(name=c.name, user=c.user, address=c.address) for c in config.user_classes),
            tuple(
                EncryptionRule(user_class=e.user_class, required=e.encryption == "required") for e in config.encryption
            ),
        )
    except ValueError as exc:  # the message starts with its path (user_classes[i] / encryption[i])
        issues.append(Issue("", str(exc)))
        return ClassPolicy((), ())


def _compile(
    profile: Profile,
    pki: dict[str, PkiMaterial],
    issues: list[Issue],
    *,
    with_context: bool,
    next_updates: dict[Path, datetime | None] | None = None,
) -> CompiledProfile | None:
    revoked = None
    if profile.crl:
        anchors = [cert for root in profile.rootcid if root in pki for cert in pki[root].certs]
        revoked = load_crls(profile.crl, anchors, f"{profile.path}.crl", issues, next_updates)
    return compile_profile(profile, pki, issues, with_context=with_context, revoked=revoked)


def _as_configured(path: Path, config_dir: Path) -> str:
    """A file as the operator wrote it: relative to the config file's folder when inside it."""
    return str(path.relative_to(config_dir)) if path.is_relative_to(config_dir) else str(path)


def _load_rules(path: Path, config_dir: Path, issues: list[Issue]) -> RuleSet | None:
    # Rule references read as the operator wrote them: relative to the config file when inside it.
    display = str(path.relative_to(config_dir)) if path.is_relative_to(config_dir) else str(path)
    try:
        return load_sslauth(path, display)
    except RuleFileError as exc:
        issues.append(Issue(f"{exc.file}:{exc.line}", exc.message))
        return None


def _read_token(path: Path, issues: list[Issue]) -> str | None:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        issues.append(Issue("admin.token_file", f"cannot read {path}: {exc.strerror or exc}"))
        return None
    if len(token) < 16:
        issues.append(Issue("admin.token_file", "the token must be at least 16 characters"))
        return None
    return token


def load_snapshot(path: str | Path, generation: int = 1) -> Snapshot:
    """Parse the file and build everything it names: what `check`, `run` and reload all do."""
    return build_snapshot(load_config(path), generation)


__all__ = ["ConfigError", "ListenerPlan", "Snapshot", "build_snapshot", "cftp20f", "load_snapshot"]
