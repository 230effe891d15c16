"""Certificates for the benchmark: one ECDSA P-256 root, one server and one client certificate.

Every peer gets the same files: `root.pem`, `server.pem` + `server.key` (and `server-bundle.pem`,
certificate + key in one file, which is how HAProxy wants it), `client.pem` + `client.key`.
Built with the package's throwaway PKI (`sidecar.testing.pki`), as the demo and the tests are.
"""

from __future__ import annotations

from pathlib import Path

from sidecar.testing.pki import issue, make_ca

ROOT_DN = "/C=FR/O=ACME/CN=ACME Root CA"
SERVER_DN = "/C=FR/O=ACME/CN=localhost"
CLIENT_DN = "/C=US/ST=NY/L=New York/O=ACME/OU=Paris/CN=PARIS"


def make_pki(directory: Path) -> Path:
    """Write the files into `directory` (created) and return it."""
    directory.mkdir(parents=True, exist_ok=True)
    root = make_ca(ROOT_DN, days=(-1, 30))
    (directory / "root.pem").write_bytes(root.cert_pem())
    server = issue(root, SERVER_DN, server=True, client=False, ip="127.0.0.1", days=(-1, 30))
    server.write(directory, "server")
    (directory / "server-bundle.pem").write_bytes(server.cert_pem() + server.key_pem())
    issue(root, CLIENT_DN, ip="127.0.0.1", days=(-1, 30)).write(directory, "client")
    return directory
