"""`sidecar explain`: the decision the proxy would take for a client certificate, and why.

No network: the certificate is verified offline against the listener profile's trust anchors
and depth, then the proxy's own verdict function (`policy.verdict.judge`) decides, and its steps
are printed. When a step the proxy would run cannot be evaluated (the partner of an `identify:
pesit` listener without `--partner`), the answer is not ACCEPT: it says so and exits 4.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import TextIO

from cryptography import x509

from .errors import ConfigError
from .pki import load_certificates
from .policy.checks import CheckStep
from .policy.verdict import PesitClaim, SessionFacts, judge
from .snapshot import Snapshot, load_snapshot
from .tls.ciphers import catalog
from .tls.peer import PeerCert, TlsFacts
from .tls.verify import verify_offline

EXIT_ACCEPT, EXIT_BAD_INPUT, EXIT_REJECT, EXIT_NOT_EVALUATED = 0, 2, 3, 4


class BadInput(Exception):
    pass


def _load_cert_file(path: Path) -> list[x509.Certificate]:
    try:
        certs = load_certificates(path.read_bytes())
    except OSError as exc:
        raise BadInput(f"{path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise BadInput(f"{path}: no readable certificate ({exc})") from None
    if not certs:
        raise BadInput(f"{path}: no certificate found")
    return certs


def _moment(text: str | None) -> datetime:
    if text is None:
        return datetime.now().astimezone()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(f"--at {text!r}: not an ISO 8601 date/time (e.g. 2026-11-21T14:30)") from None
    return moment if moment.tzinfo else moment.astimezone()  # naive = server local time, as SSLAUTH uses


def _row(number: int, step: CheckStep) -> str:
    ref = f"  [{step.rule_ref}]" if step.rule_ref else ""
    return f"  {number}. {step.name:<9} {step.outcome.upper():<4}  {step.detail}{ref}"


def explain(snapshot: Snapshot, args: argparse.Namespace, out: TextIO) -> int:
    plan = snapshot.listeners.get(args.listener)
    if plan is None:
        known = ", ".join(sorted(snapshot.listeners)) or "none"
        raise BadInput(f"unknown listener {args.listener!r} (listeners that bind: {known})")
    if plan.profile is None:
        raise BadInput(f"listener {args.listener!r} has no TLS profile")
    compiled = plan.profile
    profile = compiled.profile
    at = _moment(args.at)
    certs = _load_cert_file(args.cert)
    if args.cipher:
        entry: int | str = int(args.cipher) if args.cipher.isdigit() else args.cipher
        suite = catalog().lookup(entry)
        if suite is None:
            raise BadInput(f"--cipher {args.cipher}: {catalog().problem(entry)}")
    else:
        suite = compiled.suites[0]
    anchors = [cert for root in profile.rootcid for cert in snapshot.pki_certs.get(root, ())]
    verified, errors, chain_length = verify_offline(certs, anchors, profile.depth, at)
    if profile.verify == "none":
        verified, errors = False, ()  # no certificate is requested: the proxy would never see one
    peer = PeerCert.from_x509(certs[0]) if profile.verify != "none" else None
    facts = TlsFacts(
        tls_version="TLSv1.3" if suite.tls13 else "TLSv1.2",
        cipher_name=suite.openssl_name,
        cipher_code=suite.code,
        peer=peer,
        verified=verified,
        verify_errors=errors,
        chain_length=chain_length,
    )
    identify = plan.listener.identify
    if args.partner is not None and identify != "pesit":
        raise BadInput(f"--partner is the PeSIT requester: listener {plan.listener.id} has identify: {identify}")
    claim = PesitClaim(args.partner, args.password) if args.partner is not None else None
    # A plaintext session (plaintext: allow) has no TLS facts: only partner and user-class rules apply.
    session = SessionFacts(None if args.plaintext else facts, args.peer or "", claim)
    verdict = judge(plan.policy, session, at)
    if verdict.partner is not None:
        partner_line = f"{verdict.partner.id} ({verdict.partner.path}), nrpart {verdict.partner.nrpart}"
    elif identify == "none":
        partner_line = "none (identify: none)"
    elif verdict.pending_identification:
        partner_line = "not evaluated (identify: pesit: give --partner NRPART, and --password if it has one)"
    else:
        partner_line = f"not identified (identify: {identify})"

    leaf = PeerCert.from_x509(certs[0])
    print(f"listener   {plan.listener.id} ({plan.listener.path}) -> profile {profile.id} ({profile.path}), "
          f"verify: {profile.verify}, depth: {profile.depth}", file=out)  # fmt: skip
    print(f"subject    {leaf.subject}", file=out)
    print(f"issuer     {leaf.issuer}", file=out)
    print(f"serial     {leaf.serial_hex} ({leaf.serial})", file=out)
    print(f"validity   {leaf.not_before:%Y-%m-%d %H:%M} .. {leaf.not_after:%Y-%m-%d %H:%M} UTC", file=out)
    if profile.verify == "none":
        print("chain      not requested (verify: none)", file=out)
    elif verified:
        print(f"chain      verified against {', '.join(profile.rootcid)} ({chain_length} certificates)", file=out)
    else:
        print(f"chain      NOT verified: {'; '.join(str(e) for e in errors)}", file=out)
    print(f"cipher     {suite} as {facts.tls_version}{'' if args.cipher else ' (first of the profile)'}", file=out)
    print(f"at         {at.isoformat(timespec='minutes')}", file=out)
    print(f"partner    {partner_line}", file=out)
    print("checks", file=out)
    for number, step in enumerate(verdict.steps, 1):
        print(_row(number, step), file=out)
    for message in verdict.messages:
        print(f"cft        {message.text}", file=out)
    if verdict.user:
        print(f"user       {verdict.user} (SSLAUTH /USER)", file=out)
    if verdict.user_class:
        print(f"class      {verdict.user_class}", file=out)
    if verdict.pesit_diagnostic is not None:
        print(f"pesit      RCONNECT with diagnostic {verdict.pesit_diagnostic}", file=out)
    decision = verdict.decision
    if verdict.pending_identification:
        print("decision   NOT EVALUATED: the listener checks pass; the partner checks need --partner", file=out)
        return EXIT_NOT_EVALUATED
    if decision.allowed and verdict.time_limit is not None:
        limit = verdict.time_limit
        what = "client certificate notAfter" if limit.kind == "certificate" else f"end of the window of {limit.rule}"
        print(f"until      {limit.at.astimezone(at.tzinfo):%Y-%m-%d %H:%M:%S %z} ({what}; with live_recheck "
              "a live session is closed then: expired_live)", file=out)  # fmt: skip
    if decision.allowed:
        print("decision   ACCEPT", file=out)
        return EXIT_ACCEPT
    assert decision.reason is not None
    ref = f" at {decision.rule_ref}" if decision.rule_ref else ""
    print(f"decision   REJECT ({decision.reason.value}{ref}): {decision.detail}", file=out)
    return EXIT_REJECT


def explain_command(args: argparse.Namespace) -> int:
    try:
        snapshot = load_snapshot(args.config)
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"error: {issue}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return explain(snapshot, args, sys.stdout)
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
