"""CFTSSL profile -> pyOpenSSL context (server or client side) plus its pure check policy.

One context per profile, built once per snapshot and never mutated afterwards (a reload builds new
ones). The verify callback records OpenSSL's verification errors on the connection's session
object so that the handshake ends in one `TlsFacts` value; whether an error aborts the handshake
depends on `verify`: `required` refuses inside the handshake (the client gets a proper alert),
`optional` tolerates it and the session continues unverified.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography import x509
from OpenSSL import SSL, crypto

from ..config import Profile, TlsVersion
from ..errors import DnPatternError, Issue
from ..pki import PkiMaterial
from ..policy.checks import ProfilePolicy
from ..policy.dn import DnPattern, compile_dn_patterns
from .ciphers import DEFAULT_CIPHLIST, CipherSuite, catalog
from .peer import VerifyError

_PROTOCOL_VERSIONS: dict[TlsVersion, int] = {
    "tls1.0": SSL.TLS1_VERSION,
    "tls1.1": SSL.TLS1_1_VERSION,
    "tls1.2": SSL.TLS1_2_VERSION,
    "tls1.3": SSL.TLS1_3_VERSION,
}

_X509_V_ERR_INVALID_PURPOSE = 26
_X509_V_ERR_CERT_CHAIN_TOO_LONG = 22

# Set on the SSL.Connection (app data) by the engine; the verify callback reports each error to it,
# with the certificate's DER when the error is on the peer's own (depth 0).
VerifyRecorder = Callable[[VerifyError, bytes | None], None]

# OpenSSL's verify callback, called once per certificate of the chain on every handshake.
RawVerifyCallback = Callable[[int, Any], int]

# OpenSSL's name for the client state "a CertificateRequest was read" (TLS 1.2 and 1.3 alike).
_READ_CERTIFICATE_REQUEST = b"SSLv3/TLS read server certificate request"


class CertificateRequestNote(Protocol):
    """The part of the app data that the info callback of a `verify: enforced` profile writes."""

    certificate_requested: bool | None


@dataclass(frozen=True, slots=True)
class CompiledProfile:
    profile: Profile
    suites: tuple[CipherSuite, ...]
    context: SSL.Context | None  # None for a server profile used only for partner checks
    policy: ProfilePolicy


def resolve_ciphlist(profile: Profile, issues: list[Issue]) -> tuple[CipherSuite, ...]:
    table = catalog()
    entries = profile.ciphlist or DEFAULT_CIPHLIST
    suites: list[CipherSuite] = []
    for i, entry in enumerate(entries):
        problem = table.problem(entry)
        if problem:
            issues.append(Issue(f"{profile.path}.ciphlist[{i}]", problem))
            continue
        suite = table.lookup(entry)
        if suite is not None and suite not in suites:
            suites.append(suite)
    return tuple(suites)


def _make_verify_callback(profile: Profile) -> RawVerifyCallback:
    """The profile's verify rules as OpenSSL's own callback `int (*)(int ok, X509_STORE_CTX *)`.

    Registered with `SSL_CTX_set_verify` directly rather than through pyOpenSSL's `set_verify`,
    whose wrapper builds an `X509` object and looks the connection up for every certificate of
    every chain, also when OpenSSL found nothing to say. Here a certificate that verified costs one
    call with two integers; the connection, the error text and the certificate are only looked at
    when there is an error to record. Same rules, same results as pyOpenSSL's wrapper: a tolerated
    error is cleared (`X509_V_OK`), as it did.
    """
    from OpenSSL._util import lib  # the binding pyOpenSSL itself uses (bindings.py)

    tolerate = profile.verify == "optional" or (profile.direct == "client" and profile.verify == "none")
    self_signed_only = profile.depth == 0
    get_error, get_depth, set_error = (
        lib.X509_STORE_CTX_get_error,
        lib.X509_STORE_CTX_get_error_depth,
        lib.X509_STORE_CTX_set_error,
    )
    verified = lib.X509_V_OK

    def on_verify(ok: int, store: Any) -> int:
        if ok and not self_signed_only:
            set_error(store, verified)
            return 1
        errno, depth = get_error(store), get_depth(store)
        if errno == _X509_V_ERR_INVALID_PURPOSE and depth == 0 and not ok:
            # OpenSSL's own purpose check (EKU must allow TLS client/server use). CFT makes that a
            # profile choice, KEYEXT, checked after the handshake with its own reason: skip it here.
            set_error(store, verified)
            return 1
        if self_signed_only and depth >= 1 and ok:
            # CFT DEPTH=0: "only self-signed certificates are accepted"; a chain with an issuer above
            # the peer certificate is too long even when that issuer is trusted.
            errno, ok = _X509_V_ERR_CERT_CHAIN_TOO_LONG, 0
        if not ok:
            record = _recorder(store)
            if record is not None:
                record(VerifyError(depth, errno, _verify_message(errno)), _current_der(store) if depth == 0 else None)
            if not tolerate:
                return 0
        set_error(store, verified)
        return 1

    return on_verify


def _recorder(store: Any) -> VerifyRecorder | None:
    """The engine's recorder of the connection whose chain `store` verifies (its app data)."""
    from OpenSSL._util import lib

    ssl = lib.X509_STORE_CTX_get_ex_data(store, lib.SSL_get_ex_data_X509_STORE_CTX_idx())
    connection = SSL.Connection._reverse_mapping.get(ssl)  # pyOpenSSL's own SSL* -> Connection map
    record: VerifyRecorder | None = connection.get_app_data() if connection is not None else None
    return record


def _current_der(store: Any) -> bytes | None:
    """DER of the certificate the callback is called for."""
    from OpenSSL._util import ffi, lib

    cert = lib.X509_STORE_CTX_get_current_cert(store)
    if cert == ffi.NULL:
        return None
    bio = lib.BIO_new(lib.BIO_s_mem())
    try:
        if lib.i2d_X509_bio(bio, cert) != 1:
            return None
        data = ffi.new("char **")
        length = lib.BIO_get_mem_data(bio, data)
        return bytes(ffi.buffer(data[0], length))
    finally:
        lib.BIO_free(bio)


def set_verify(context: SSL.Context, mode: int, callback: RawVerifyCallback) -> None:
    """`SSL_CTX_set_verify` with `callback` as OpenSSL's own verify callback (see `_make_verify_callback`).

    The cffi callback object lives as long as the context (it would be freed under OpenSSL's feet
    otherwise); an exception in it refuses the certificate (returns 0), as pyOpenSSL's wrapper does.
    """
    from OpenSSL._util import ffi, lib

    raw = ffi.callback("int (*)(int, X509_STORE_CTX *)", callback, error=0)
    _callbacks[context] = raw
    lib.SSL_CTX_set_verify(context._context, mode, raw)


_callbacks: weakref.WeakKeyDictionary[SSL.Context, Any] = weakref.WeakKeyDictionary()


def _verify_message(errno: int) -> str:
    from OpenSSL._util import ffi, lib  # the public API has no X509_verify_cert_error_string

    return str(ffi.string(lib.X509_verify_cert_error_string(errno)).decode("ascii", "replace"))


def _load_own_identity(context: SSL.Context, material: PkiMaterial) -> None:
    leaf, *chain = material.certs
    context.use_certificate(leaf)
    for cert in chain:
        context.add_extra_chain_cert(cert)
    assert material.key is not None
    context.use_privatekey(material.key)
    context.check_privatekey()


def _trust_anchors(profile: Profile, pki: dict[str, PkiMaterial]) -> list[x509.Certificate]:
    return [cert for root in profile.rootcid if root in pki for cert in pki[root].certs]


def build_context(
    profile: Profile, suites: tuple[CipherSuite, ...], pki: dict[str, PkiMaterial], issues: list[Issue]
) -> SSL.Context | None:
    """The TLS context of a profile; problems are appended to `issues` (then None is returned)."""
    server = profile.direct == "server"
    context = SSL.Context(SSL.TLS_SERVER_METHOD if server else SSL.TLS_CLIENT_METHOD)
    low = _PROTOCOL_VERSIONS[profile.version.min]
    high = _PROTOCOL_VERSIONS[profile.version.max]
    tls13 = [suite for suite in suites if suite.tls13]
    legacy = [suite for suite in suites if not suite.tls13]
    if not tls13 and high == SSL.TLS1_3_VERSION:
        high = SSL.TLS1_2_VERSION  # no TLS 1.3 suite listed: TLS 1.3 is never negotiated (SPEC §4.1)
    if not legacy and low < SSL.TLS1_3_VERSION:
        low = SSL.TLS1_3_VERSION  # only TLS 1.3 suites listed: older versions have nothing to offer
    if low < SSL.TLS1_2_VERSION and not any(suite.before_tls12 for suite in legacy):
        low = SSL.TLS1_2_VERSION  # no listed suite works in TLS 1.0/1.1 (all AEAD or SHA-2): same
    if low > high:
        issues.append(
            Issue(
                f"{profile.path}.ciphlist",
                f"no listed suite fits versions {profile.version.min}..{profile.version.max}",
            )
        )
        return None
    context.set_min_proto_version(low)
    context.set_max_proto_version(high)
    # An empty TLS 1.2 list must still be a valid string for OpenSSL; TLS 1.2 is off then anyway.
    cipher_string = ":".join(s.openssl_name for s in legacy) or "DEFAULT"
    if low < SSL.TLS1_2_VERSION:
        # OpenSSL 3+ allows TLS 1.0/1.1 only at security level 0 (their handshake signs with SHA-1
        # and MD5). A profile that lists them chose legacy partners: it alone runs at level 0.
        cipher_string += ":@SECLEVEL=0"
    try:
        context.set_cipher_list(cipher_string.encode())
        context.set_tls13_ciphersuites(":".join(s.openssl_name for s in tls13).encode())
    except SSL.Error as exc:
        issues.append(Issue(f"{profile.path}.ciphlist", f"the TLS library refuses this list ({_reason(exc)})"))
        return None
    options = SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION
    if server:
        options |= SSL.OP_CIPHER_SERVER_PREFERENCE  # the profile's order decides, as CFT's does
    if not profile.session_tickets:
        options |= SSL.OP_NO_TICKET
        context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    context.set_options(options)
    context.set_mode(SSL.MODE_RELEASE_BUFFERS)  # an idle connection keeps no 16 KiB record buffers

    if profile.usercid is not None:
        if profile.usercid not in pki:
            return None  # already reported: an unknown pki id, or a file that could not be loaded
        try:
            _load_own_identity(context, pki[profile.usercid])
        except (SSL.Error, crypto.Error, AssertionError) as exc:
            reason = _reason(exc) if isinstance(exc, SSL.Error | crypto.Error) else "no private key"
            issues.append(Issue(f"{profile.path}.usercid", f"the TLS library refuses pki.{profile.usercid} ({reason})"))
            return None
    elif server:
        issues.append(Issue(f"{profile.path}.usercid", "a server profile needs its own certificate (usercid)"))
        return None

    anchors = _trust_anchors(profile, pki)
    store = context.get_cert_store()
    assert store is not None
    for cert in anchors:
        store.add_cert(crypto.X509.from_cryptography(cert))
    if server and profile.verify != "none":
        # CA names sent in the CertificateRequest: the ROOTCID authorities (CFT behaviour).
        for cert in anchors:
            context.add_client_ca(cert)
    context.set_verify_depth(max(profile.depth, 0))
    mode = SSL.VERIFY_NONE
    if server and profile.verify == "required":
        mode = SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT
    elif (server and profile.verify == "optional") or not server:
        mode = SSL.VERIFY_PEER  # client side always verifies; `none`/`optional` tolerate failures
    set_verify(context, mode, _make_verify_callback(profile))
    if not server and profile.verify == "enforced":
        # Only these profiles pay for a callback at every handshake state.
        context.set_info_callback(_note_certificate_request)
    return context


def _note_certificate_request(connection: SSL.Connection, where: int, _result: int) -> None:
    """Client side: did the server send a CertificateRequest? (CFT `enforced`, SPEC §4.7)."""
    note: CertificateRequestNote | None = connection.get_app_data()
    if note is None:
        return
    if where & SSL.SSL_CB_HANDSHAKE_START:
        if note.certificate_requested is None:
            note.certificate_requested = False
    elif where & SSL.SSL_CB_LOOP and connection.get_state_string() == _READ_CERTIFICATE_REQUEST:
        note.certificate_requested = True


def compile_profile(
    profile: Profile,
    pki: dict[str, PkiMaterial],
    issues: list[Issue],
    *,
    with_context: bool,
    revoked: frozenset[tuple[str, int]] | None,
) -> CompiledProfile | None:
    before = len(issues)
    suites = resolve_ciphlist(profile, issues)
    dnuser = _compile_dn(profile.dnuser, f"{profile.path}.dnuser", issues)
    dnissuer = _compile_dn(profile.dnissuer, f"{profile.path}.dnissuer", issues)
    if not suites and len(issues) == before:
        issues.append(Issue(f"{profile.path}.ciphlist", "no usable cipher suite"))
    if len(issues) > before:
        return None
    context = build_context(profile, suites, pki, issues) if with_context else None
    if with_context and context is None:
        return None
    policy = ProfilePolicy(
        profile_id=profile.id,
        path=profile.path,
        direct=profile.direct,
        verify=profile.verify,
        allowed_codes=frozenset(suite.code for suite in suites),
        dnuser=dnuser,
        dnissuer=dnissuer,
        keyext=profile.keyext == "verify",
        revoked=revoked,
    )
    return CompiledProfile(profile=profile, suites=suites, context=context, policy=policy)


def _compile_dn(patterns: tuple[str, ...], where: str, issues: list[Issue]) -> DnPattern | None:
    """The OR of `patterns`; every bad one is reported (the compiler stops at the first of a list)."""
    if not patterns:
        return None
    bad = False
    for index, text in enumerate(patterns):
        try:
            compile_dn_patterns([text], where)
        except DnPatternError as exc:
            # The compiler names the element `where[0]`; give the real index, path apart.
            message = str(exc).removeprefix(f"{where}[0]: ")
            issues.append(Issue(f"{where}[{index}]", message))
            bad = True
    return None if bad else compile_dn_patterns(patterns, where)


def _reason(exc: SSL.Error | crypto.Error) -> str:
    """OpenSSL's reason texts (`ee key too small`), without the error-queue tuples around them."""
    args = exc.args[0] if exc.args else None
    if isinstance(args, list):
        reasons = [str(item[-1]) for item in args if isinstance(item, tuple) and item and item[-1]]
        if reasons:
            return "; ".join(reasons)
    return "unknown reason"


def _certificate_kind(suite: CipherSuite) -> str | None:
    """The key type a TLS 1.0-1.2 suite needs in the server certificate (None: any, or none at all)."""
    name = suite.openssl_name.upper()
    if suite.tls13:
        return None  # TLS 1.3 suites do not depend on the certificate's key type
    if any(word in name for word in ("PSK", "SRP", "ADH", "AECDH")):
        return None
    if "ECDSA" in name:
        return "EC"
    if "-DSS-" in name:
        return "DSA"
    return "RSA"


def _key_kind(material: PkiMaterial) -> str | None:
    key = material.key
    if key is None:
        return None
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    if isinstance(key, rsa.RSAPrivateKey):
        return "RSA"
    if isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return "EC"  # TLS 1.2 signs with EdDSA keys under the ECDSA suites (RFC 8422)
    return None


def key_type_warning(compiled: CompiledProfile, pki: dict[str, PkiMaterial]) -> Issue | None:
    """A warning when no TLS 1.0-1.2 suite of the list fits the key of the profile's own certificate.

    An EC key with only ECDHE-RSA suites (or the reverse) fails every TLS 1.2 handshake, at the
    peer, with a message that does not point here. A profile without TLS 1.2 in its version range,
    or whose list holds no TLS 1.2 suite, is not concerned.
    """
    profile = compiled.profile
    if profile.direct != "server":
        return None  # a suite names the key type of the server's certificate, not the client's
    if profile.usercid is None or profile.usercid not in pki or profile.version.min == "tls1.3":
        return None
    key_kind = _key_kind(pki[profile.usercid])
    legacy = [suite for suite in compiled.suites if not suite.tls13]
    if key_kind is None or not legacy:
        return None
    kinds = {_certificate_kind(suite) for suite in legacy}
    if None in kinds or key_kind in kinds:
        return None
    needed = " or ".join(sorted(kind for kind in kinds if kind is not None))
    tls13 = any(suite.tls13 for suite in compiled.suites) and profile.version.max == "tls1.3"
    consequence = "every TLS 1.2 handshake will fail" if tls13 else "no handshake can succeed (no TLS 1.3 either)"
    return Issue(
        f"{profile.path}.ciphlist",
        f"no TLS 1.2 suite listed can be used with the {key_kind} key of pki.{profile.usercid} "
        f"(they need an {needed} certificate): {consequence}",
    )
