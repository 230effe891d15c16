"""`sidecar import-cft` as a real subprocess: exit codes, nothing written on error, and the result
accepted by `sidecar check` and used by `sidecar explain` once its certificate files exist."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import yaml

from sidecar.testing.pki import issue, make_ca

from ..support.cftexport import EXAMPLE_A, EXPECTED_A, cftext, pkiext

SIDECAR = [sys.executable, "-m", "sidecar"]


def sidecar(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SIDECAR, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_yaml_on_stdout_and_the_report_on_stderr(tmp_path: Path) -> None:
    (tmp_path / "cft-tcp.conf").write_text(EXAMPLE_A)
    result = sidecar("import-cft", "cft-tcp.conf", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout) == yaml.safe_load(EXPECTED_A)
    assert result.stderr.splitlines() == [
        "cft-tcp.conf:3: skipped: CFTPROT PPLAIN: plaintext (no SSL): the backend of PTLS",
        "cft-tcp.conf:4: ignored: CFTPROT PTLS: PROF=ANY",
        "cft-tcp.conf:12: ignored: CFTPART LILLE: NSPART=HUB",
        "import-cft: wrote stdout (pki: 3, profiles: 2, listeners: 1, partners: 1); "
        "report: error: 0, warning: 0, ignored: 2, skipped: 1",
    ]


def test_syntax_errors_exit_2_and_nothing_is_written(tmp_path: Path) -> None:
    (tmp_path / "good.conf").write_text(EXAMPLE_A)
    (tmp_path / "bad.conf").write_text("* not a comment\nCFTSSL ID='X\nCFTPART ID=P, PROT=(A,\n")
    out = tmp_path / "out.yaml"
    result = sidecar("import-cft", "good.conf", "bad.conf", "missing.conf", "-o", str(out), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "missing.conf: error: cannot read: No such file or directory",
        "bad.conf:1: error: expected a command name, got '*' (CFTUTIL comments are only /* … */)",
        'bad.conf:2: error: quoted string "\'X" is not closed on its line',
        "bad.conf:3: error: PROT: list opened with '(' is never closed",
        "import-cft: 4 problem(s), nothing written",
    ]
    assert not out.exists()
    assert "Traceback" not in result.stderr


def test_an_existing_output_is_left_alone_on_error(tmp_path: Path) -> None:
    out = tmp_path / "out.yaml"
    out.write_text("kept: true\n")
    (tmp_path / "a.conf").write_text(EXAMPLE_A)
    result = sidecar("import-cft", "a.conf", "--backend", "nowhere", "-o", str(out), cwd=tmp_path)
    assert result.returncode == 2
    assert "--backend: error: 'nowhere' is not an address" in result.stderr
    assert out.read_text() == "kept: true\n"
    result = sidecar("import-cft", str(tmp_path), "-o", str(out))  # a directory is not readable as a file
    assert result.returncode == 2
    assert out.read_text() == "kept: true\n"


def test_latin_1_input_and_backend_option(tmp_path: Path) -> None:
    export = "CFTSSL ID=S, DIRECT=CLIENT, CIPHLIST=(49199), DNUSER='O=Société Générale'\n"
    (tmp_path / "a.conf").write_bytes(export.encode("latin-1"))
    result = sidecar("import-cft", "a.conf", "--backend", "10.0.0.1:1761", "-o", "out.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines()[0] == "a.conf: warning: not UTF-8: read as Latin-1"
    tree = yaml.safe_load((tmp_path / "out.yaml").read_text(encoding="utf-8"))
    assert tree["profiles"][0]["dnuser"] == "O=Société Générale"


def test_export_to_check_to_explain(tmp_path: Path) -> None:
    """The worked example of docs/import-cft.md: example A, its certificates, check, explain."""
    (tmp_path / "cft-tcp.conf").write_text(EXAMPLE_A)
    result = sidecar("import-cft", "cft-tcp.conf", "-o", "sidecar.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    pki = tmp_path / "pki"
    pki.mkdir()
    root = make_ca("/O=Bank/CN=Bank Root CA")
    sub = make_ca("/O=Bank/CN=Bank Issuing CA", issuer=root)
    (pki / "BANKROOT.pem").write_bytes(root.cert_pem())
    (pki / "BANKSUB.pem").write_bytes(sub.cert_pem())
    issue(sub, "/O=Bank/CN=sidecar.lille", server=True, client=False).write(pki, "BRCERT")
    issue(sub, "/O=Bank/OU=Lille/CN=LILLE").write(tmp_path, "lille")
    issue(sub, "/O=Bank/OU=Vigo/CN=LILLE").write(tmp_path, "impostor")

    check = sidecar("check", "-c", "sidecar.yaml", cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    explain = ["explain", "-c", "sidecar.yaml", "--listener", "PTLS", "--partner", "LILLE", "--password", "Lil1e",
               "--peer", "198.51.100.7"]  # fmt: skip
    accepted = sidecar(*explain, "--cert", "lille.pem", cwd=tmp_path)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert accepted.stdout.strip().endswith("decision   ACCEPT")
    refused = sidecar(*explain, "--cert", "impostor.pem", cwd=tmp_path)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "decision   REJECT" in refused.stdout and "[profiles[1].dnuser]" in refused.stdout


def test_a_2000_partner_export_imports_quickly_and_passes_check(tmp_path: Path) -> None:
    (tmp_path / "cft-extract.conf").write_text(cftext(2000))
    (tmp_path / "pki-extract.conf").write_text(pkiext())
    pki = tmp_path / "pki"
    pki.mkdir()
    ca = make_ca("/O=ACME/CN=Partners CA")
    (pki / "partca.pem").write_bytes(ca.cert_pem())
    issue(ca, "/O=ACME/CN=sidecar", server=True, client=False).write(pki, "srvcert")

    started = time.monotonic()
    result = sidecar("import-cft", "cft-extract.conf", "pki-extract.conf", "-o", "sidecar.yaml", cwd=tmp_path)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.splitlines()[-1] == (
        "import-cft: wrote sidecar.yaml (pki: 2, profiles: 2001, listeners: 1, partners: 2000); "
        "report: error: 0, warning: 0, ignored: 6003, skipped: 1"
    )
    # The target is under 5 s (about 3.5 s of CPU measured); the bound leaves room for a busy machine.
    assert elapsed < 30, f"import took {elapsed:.1f} s"
    check = sidecar("check", "-c", "sidecar.yaml", cwd=tmp_path)
    assert check.returncode == 0, check.stderr[-2000:]
    assert "2000 partner(s)" in check.stdout


def test_an_output_that_cannot_be_written_exits_1(tmp_path: Path) -> None:
    (tmp_path / "a.conf").write_text(EXAMPLE_A)
    result = sidecar("import-cft", "a.conf", "-o", "no/such/dir/out.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith("no/such/dir/out.yaml: error: cannot write:")
    assert "Traceback" not in result.stderr
