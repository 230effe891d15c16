"""The TLS engine's private bindings: the declared list matches the code, and this installation has them all."""

from __future__ import annotations

import ast
import types
from pathlib import Path

import pytest

from sidecar.tls import bindings

TLS_SOURCES = sorted((Path(bindings.__file__).parent).glob("*.py"))


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _used_bindings(source: str) -> dict[str, set[str]]:
    """What one module reaches of the private binding: `lib.X`, `ffi.X` and private attributes of pyOpenSSL objects.

    `lib`/`ffi` are whatever names `from OpenSSL._util import …` bound, at any depth (a function may
    import them too). A private attribute read on anything but `self`/`cls` is someone else's
    internals: in sidecar/tls that means pyOpenSSL's `Connection`.
    """
    tree = ast.parse(source)
    aliases: dict[str, str] = {}  # local name -> "lib" | "ffi"
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == bindings.BINDING_MODULE:
            for alias in node.names:
                aliases[alias.asname or alias.name] = alias.name
    used: dict[str, set[str]] = {"lib": set(), "ffi": set(), "Connection": set()}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        if isinstance(node.value, ast.Name) and node.value.id in aliases:
            used[aliases[node.value.id]].add(node.attr)
        elif _private(node.attr) and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            used["Connection"].add(node.attr)
    return used


def _used_in_tls_package() -> dict[str, set[str]]:
    total: dict[str, set[str]] = {"lib": set(), "ffi": set(), "Connection": set()}
    for path in TLS_SOURCES:
        for kind, names in _used_bindings(path.read_text(encoding="utf-8")).items():
            total[kind] |= names
    return total


# Private attributes are found by name, not by type: pyOpenSSL's Connection's and Context's together.
DECLARED = {"lib": bindings.LIB, "ffi": bindings.FFI, "Connection": bindings.CONNECTION + bindings.CONTEXT}


@pytest.mark.parametrize("kind", sorted(DECLARED))
def test_every_binding_the_code_uses_is_declared(kind: str) -> None:
    undeclared = _used_in_tls_package()[kind] - set(DECLARED[kind])
    assert not undeclared, f"sidecar/tls uses {kind}.{sorted(undeclared)}: add them to sidecar/tls/bindings.py"


@pytest.mark.parametrize("kind", sorted(DECLARED))
def test_every_declared_binding_is_used(kind: str) -> None:
    # A stale entry would refuse to start on a version that lacks something nobody calls.
    unused = set(DECLARED[kind]) - _used_in_tls_package()[kind]
    assert not unused, f"sidecar/tls/bindings.py declares {kind}.{sorted(unused)}, which no code uses"


def test_the_declared_lists_hold_no_duplicates() -> None:
    for names in DECLARED.values():
        assert len(set(names)) == len(names)


def test_the_scan_sees_every_way_the_code_reaches_the_binding() -> None:
    source = """
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib
def f(conn, self):
    from OpenSSL._util import ffi, lib
    _lib.SSL_read(conn._ssl, _ffi.NULL)
    lib.X509_verify_cert_error_string(ffi.string)
    self._mine = conn._conn._into_ssl
"""
    used = _used_bindings(source)
    assert used == {
        "lib": {"SSL_read", "X509_verify_cert_error_string"},
        "ffi": {"NULL", "string"},
        "Connection": {"_ssl", "_conn", "_into_ssl"},
    }


def test_this_installation_has_every_binding() -> None:
    assert bindings.missing_bindings() == ()


def test_absent_names_what_a_holder_lacks() -> None:
    holder = types.SimpleNamespace(SSL_read=1, BIO_new=2)
    assert bindings.absent(holder, ("SSL_read", "SSL_write", "BIO_new", "BIO_free"), "lib") == [
        "lib.SSL_write",
        "lib.BIO_free",
    ]


def test_the_refusal_is_one_line_naming_what_is_missing_and_the_versions() -> None:
    installed = bindings.versions()
    line = bindings.refusal(["lib.SSL_get0_verified_chain", "Connection._into_ssl"], installed)
    assert "\n" not in line
    assert "lib.SSL_get0_verified_chain, Connection._into_ssl missing" in line
    assert f"pyOpenSSL {installed.pyopenssl}" in line
    assert f"cryptography {installed.cryptography}" in line
    assert installed.openssl in line


def test_versions_name_the_openssl_that_terminates_tls() -> None:
    from OpenSSL import SSL

    installed = bindings.versions()
    assert installed.openssl == SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()
    assert installed.openssl.startswith("OpenSSL ")
    assert installed.pyopenssl[0].isdigit() and installed.cryptography[0].isdigit()
