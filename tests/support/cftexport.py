"""A generated Transfer CFT export in CFTEXT / PKIEXT style, for import-cft tests at scale."""

from __future__ import annotations


def _object(command: str, params: list[tuple[str, str]]) -> str:
    """One object the way CFTEXT writes it: a parameter per line, values quoted, MODE last."""
    lines = [f"{command} ID = {params[0][1]},"]
    lines += [f" {name} = {value}," for name, value in params[1:]]
    lines.append(" /* COMMENT = '',*/")
    lines.append(" MODE = 'REPLACE'")
    return "\n".join(lines)


def cftext(partners: int) -> str:
    """A CFTEXT-style export: one TLS and one plaintext PeSIT protocol, a server profile, and per
    partner a CFTPART, its CFTTCP and a partner profile with a DNUSER check."""
    objects = [
        "/* CFTUTIL CFTEXT TYPE=ALL, FOUT=cft-extract.conf */",
        "UCONFSET ID = 'cft.ssl.version_min', VALUE = 'tls_1.2'",
        _object("CFTNET", [("ID", "'NET0'"), ("TYPE", "'TCP'"), ("HOST", "'INADDR_ANY'"), ("CALL", "'INOUT'"),
                           ("MAXCNX", "'256'"), ("CLASS", "'1'"), ("ORIGIN", "'CFTUTIL'")]),
        _object("CFTPROT", [("ID", "'PESIT'"), ("TYPE", "'PESIT'"), ("NET", "'NET0'"), ("SAP", "'1761'"),
                            ("PROF", "'ANY'"), ("DISCTD", "'90'"), ("RRUSIZE", "'4096'"), ("ORIGIN", "'CFTUTIL'")]),
        _object("CFTPROT", [("ID", "'PESITSSL'"), ("TYPE", "'PESIT'"), ("NET", "'NET0'"), ("SAP", "'1762'"),
                            ("SSL", "'SSLSRV'"), ("PROF", "'ANY'"), ("DISCTD", "'90'"), ("ORIGIN", "'CFTUTIL'")]),
        _object("CFTSSL", [("ID", "'SSLSRV'"), ("DIRECT", "'SERVER'"), ("USERCID", "'SRVCERT'"),
                           ("ROOTCID", "( 'PARTCA')"), ("CIPHLIST", "( '49199',\n '49200',\n '156')"),
                           ("VERIFY", "'REQUIRED'"), ("VERSION", "'TLSV1'"), ("DEPTH", "'10'"), ("TRACE", "'0'"),
                           ("KEYEXT", "'NONE'"), ("ORIGIN", "'CFTUTIL'")]),
    ]  # fmt: skip
    for i in range(partners):
        name = f"P{i:05d}"
        objects.append(_object("CFTSSL", [
            ("ID", f"'S{i:05d}'"), ("DIRECT", "'SERVER'"), ("CIPHLIST", "( '49199',\n '156')"),
            ("VERIFY", "'REQUIRED'"), ("DNUSER", f"( 'O=ACME/CN={name}')"), ("DEPTH", "'10'"), ("TRACE", "'0'"),
            ("ORIGIN", "'CFTUTIL'"),
        ]))  # fmt: skip
        objects.append(_object("CFTPART", [
            ("ID", f"'{name}'"), ("NRPART", f"'{name}'"), ("NSPART", "'HUB'"), ("SSL", f"'S{i:05d}'"),
            ("PROT", "( 'PESITSSL')"), ("SAP", "( '1762')"), ("STATE", "'ACTIVEBOTH'"), ("COMMUT", "'YES'"),
            ("IPART", "''"), ("NSPASSW", "'SECRET'"), ("ORIGIN", "'CFTUTIL'"),
        ]))  # fmt: skip
        objects.append(_object("CFTTCP", [
            ("ID", f"'{name}'"), ("CLASS", "'1'"), ("HOST", f"( '10.{i // 250}.{i % 250}.1')"), ("VERIFY", "'0'"),
            ("CNXIN", "'2'"), ("CNXOUT", "'2'"), ("CNXINOUT", "'4'"), ("RETRYM", "'12'"), ("ORIGIN", "'CFTUTIL'"),
        ]))  # fmt: skip
    return "\n".join(objects) + "\n"


def pkiext() -> str:
    """A PKIEXT-style export of the two certificates the profiles name."""
    return (
        "PKIUTIL PKICER ID = 'PARTCA', ROOTCID = 'PARTCA', ITYPE = 'ROOT', /*\n PKIFNAME = '',*/\n"
        " INAME = 'pki/partca.pem', IFORM = 'PEM', MODE = 'REPLACE'\n"
        "PKIUTIL PKICER ID = 'SRVCERT', ROOTCID = 'PARTCA', ITYPE = 'USER',\n"
        " INAME = 'pki/srvcert.pem', IFORM = 'PEM', IKNAME = 'pki/srvcert.key', IKFORM = 'PEM', MODE = 'REPLACE'\n"
    )
