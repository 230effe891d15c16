"""Snapshot: one complete, compiled configuration (contexts, policies, rule files), built whole.

`build_snapshot` reads every file the configuration names, compiles every pattern and rule file and
builds every TLS context; any problem anywhere is collected and raised as one ConfigError, together
with the problems of the configuration file itself (`load_snapshot` goes on to the files even when
the YAML had problems, so one `check` lists everything). Warnings (a certificate that expires soon,
a partner anyone can claim) never refuse a configuration: they are `Snapshot.warnings`, and
travel on the ConfigError when there are errors too. A snapshot is never modified: a reload
builds a new one and swaps one reference (runtime), and each connection keeps the snapshot it was
accepted under.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography import x509

from .config import Config, Listener, Outbound, Partner, Profile, locate, read_config
from .errors import ConfigError, Issue, RuleFileError, os_reason
from .pki import LoadedCrl, PkiMaterial, lifetime_issues, load_crls, load_pki, read_bounded
from .policy.classes import ClassPolicy, EncryptionRule, UserClassRule
from .policy.partners import PartnerBook
from .policy.sslauth import RuleSet, load_sslauth
from .policy.verdict import SessionPolicy
from .tls.profiles import CompiledProfile, compile_profile, key_type_warning

_SMALL_FILE = 64 * 1024  # a password or token file; more is a file given by mistake


@dataclass(frozen=True, slots=True)
class ListenerPlan:
    listener: Listener
    profile: CompiledProfile | None  # None only for a plaintext-only listener
    sslauth: RuleSet | None
    policy: SessionPolicy  # what its sessions are judged by (policy.verdict)
    # accept_proxy, compiled: connections from these addresses start with a balancer's PROXY header
    balancers: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()


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
    # Problems that do not refuse the configuration; `run` logs them at start and after each reload.
    warnings: tuple[Issue, ...] = ()

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


def build_snapshot(
    config: Config,
    generation: int = 1,
    config_issues: tuple[Issue, ...] | list[Issue] = (),
    *,
    now: datetime | None = None,
) -> Snapshot:
    """Everything the configuration names, built; ConfigError with every problem otherwise.

    `config_issues` are the problems already found in the file (a configuration read with problems
    is still built as far as it goes, to find the others); `now` is for lifetime checks.
    """
    issues: list[Issue] = list(config_issues)
    warnings: list[Issue] = []

    for listener in config.listeners:
        if listener.listen is None or listener.ssl is None:
            continue
        if config.profile(listener.ssl, "server") is None:
            issues.append(Issue(f"{listener.path}.ssl", cftp20f(listener.ssl, listener.id), msg_id="CFTP20F"))

    pki, pki_issues = load_pki(config)
    issues.extend(pki_issues)
    needed = _profiles_needing_context(config)
    profiles: dict[tuple[str, str], CompiledProfile] = {}
    crls: list[LoadedCrl] = []
    for profile in config.profiles:
        compiled = _compile(profile, pki, issues, crls, with_context=(profile.id, profile.direct) in needed)
        if compiled is not None:
            profiles[(profile.id, profile.direct)] = compiled
            warning = key_type_warning(compiled, pki)
            if warning is not None:
                warnings.append(warning)
    lifetime_errors, lifetime_warnings = lifetime_issues(config, pki, crls, now)
    issues.extend(lifetime_errors)
    warnings.extend(lifetime_warnings)

    outbound: dict[str, OutboundPlan] = {}
    for entry in config.outbound:
        partner = config.partner(entry.partner)
        if partner is None:
            continue  # reported with the configuration: unknown partner
        profile_id = _outbound_profile_id(config, entry)
        client = profiles.get((profile_id, "client")) if profile_id else None
        if profile_id is None:
            issues.append(Issue(f"{entry.path}.ssl", "no client profile: set ssl here, on the partner, or prot"))
        elif client is None and config.profile(profile_id, "client") is None:
            text = f"CFTT47W _ Cannot find SSL security profil <PART={entry.partner} SSLID={profile_id} DIRECT=CLIENT>"
            issues.append(Issue(f"{entry.path}.ssl", text, msg_id="CFTT47W"))
        if client is not None:
            outbound[entry.id] = OutboundPlan(outbound=entry, partner=partner, profile=client)

    passwords: dict[str, str] = {}
    for partner in config.partners:
        if partner.nrpassw is not None:
            passwords[partner.id] = partner.nrpassw
        elif partner.nrpassw_file is not None:
            try:
                secret = read_bounded(partner.nrpassw_file, _SMALL_FILE)
                if secret is None:
                    issues.append(Issue(f"{partner.path}.nrpassw_file", f"{partner.nrpassw_file}: not a password file"))
                else:
                    passwords[partner.id] = secret.decode("utf-8").strip()
            except OSError as exc:
                reason = os_reason(exc)
                issues.append(Issue(f"{partner.path}.nrpassw_file", f"cannot read {partner.nrpassw_file}: {reason}"))
            except UnicodeDecodeError:
                issues.append(Issue(f"{partner.path}.nrpassw_file", f"{partner.nrpassw_file} is not UTF-8 text"))
    warnings.extend(_claimable_partners(config))

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
        sslauth = _load_rules(listener, config.source.parent, issues) if listener.sslauth else None
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
        balancers = tuple(ipaddress.ip_network(cidr, strict=False) for cidr in listener.accept_proxy)
        listeners[listener.id] = ListenerPlan(
            listener=listener, profile=server_profile, sslauth=sslauth, policy=policy, balancers=balancers
        )

    if config.admin is not None and config.admin.token_file is not None:
        _read_token(config.admin.token_file, issues)

    located_warnings = tuple(locate(warnings, config.lines))
    if issues:
        raise ConfigError(locate(issues, config.lines), warnings=located_warnings)
    return Snapshot(
        config=config,
        generation=generation,
        listeners=listeners,
        profiles=profiles,
        partners=book,
        outbound=outbound,
        classes=classes,
        pki_certs={pki_id: material.certs for pki_id, material in pki.items()},
        crl_next_update={_as_configured(crl.path, config.source.parent): crl.next_update for crl in crls},
        warnings=located_warnings,
    )


def _claimable_partners(config: Config) -> list[Issue]:
    """Partners that any client could claim on a PeSIT-identifying listener: no password, no profile.

    With `identify: pesit` the partner is whoever the CONNECT names; without `nrpassw` and without a
    server profile (`ssl`) whose checks tie the name to a certificate, nothing stops a client that
    passed the listener's own checks from sending that name.
    """
    found: list[Issue] = []
    pesit_listeners = [
        listener.id for listener in config.listeners if listener.listen is not None and listener.identify == "pesit"
    ]
    for partner in config.partners:
        if partner.nrpassw is not None or partner.nrpassw_file is not None:
            continue
        if partner.ssl is not None and config.profile(partner.ssl, "server") is not None:
            continue
        where = [lid for lid in pesit_listeners if partner.prot is None or lid in partner.prot]
        if where:
            found.append(
                Issue(
                    partner.path,
                    f"{partner.nrpart} can be claimed on {', '.join(where)} by any client that sends that name "
                    "(no nrpassw and no server profile in ssl)",
                )
            )
    return found


def _class_policy(config: Config, issues: list[Issue]) -> ClassPolicy:
    try:
        return ClassPolicy(
            tuple(UserClassRule(name=c.name, user=c.user, address=c.address) for c in config.user_classes),
            tuple(
                EncryptionRule(user_class=e.user_class, required=e.encryption == "required") for e in config.encryption
            ),
        )
    except ValueError as exc:  # the message starts with its path (user_classes[i] / encryption[i])
        where, _, message = str(exc).partition(": ")
        issues.append(Issue(where, message) if message else Issue("", where))
        return ClassPolicy((), ())


def _compile(
    profile: Profile, pki: dict[str, PkiMaterial], issues: list[Issue], crls: list[LoadedCrl], *, with_context: bool
) -> CompiledProfile | None:
    revoked = None
    if profile.crl:
        anchors = [cert for root in profile.rootcid if root in pki for cert in pki[root].certs]
        revoked = load_crls(profile.crl, anchors, f"{profile.path}.crl", issues, crls)
    return compile_profile(profile, pki, issues, with_context=with_context, revoked=revoked)


def _as_configured(path: Path, config_dir: Path) -> str:
    """A file as the operator wrote it: relative to the config file's folder when inside it."""
    return str(path.relative_to(config_dir)) if path.is_relative_to(config_dir) else str(path)


def _load_rules(listener: Listener, config_dir: Path, issues: list[Issue]) -> RuleSet | None:
    path = listener.sslauth
    assert path is not None
    try:
        return load_sslauth(path, _as_configured(path, config_dir))  # rule references read as written
    except RuleFileError as exc:
        # One line per bad line of the file, each also naming the key that points at the file.
        issues.extend(Issue(f"{listener.path}.sslauth", str(problem), line=0) for problem in exc.problems)
        return None


def _read_token(path: Path, issues: list[Issue]) -> str | None:
    try:
        data = read_bounded(path, _SMALL_FILE)
        if data is None:
            issues.append(Issue("admin.token_file", f"{path}: not a token file"))
            return None
        token = data.decode("utf-8").strip()
    except OSError as exc:
        issues.append(Issue("admin.token_file", f"cannot read {path}: {os_reason(exc)}"))
        return None
    except UnicodeDecodeError:
        issues.append(Issue("admin.token_file", f"{path} is not UTF-8 text"))
        return None
    if len(token) < 16:
        issues.append(Issue("admin.token_file", "the token must be at least 16 characters"))
        return None
    return token


def load_snapshot(path: str | Path, generation: int = 1, *, now: datetime | None = None) -> Snapshot:
    """Parse the file and build everything it names: what `check`, `run` and reload all do.

    The file's own problems do not stop the build: what it names is still read and checked, so
    the ConfigError lists every problem at once.
    """
    config, issues = read_config(path)
    if config is None:
        raise ConfigError(issues)
    return build_snapshot(config, generation, issues, now=now)


__all__ = ["ConfigError", "ListenerPlan", "Snapshot", "build_snapshot", "cftp20f", "load_snapshot"]
