"""Transfer CFT configurations for import-cft tests: the reference examples, and generated CFTEXT / PKIEXT
exports at scale."""

from __future__ import annotations

# The examples of domain/CFTUTIL.md §11, with the YAML and report they must give.
EXAMPLE_A = """\
/* Lille branch: the TLS front door */
cftnet  id = nbr, type = tcp, host = INADDR_ANY
cftprot id = pplain, type = pesit, prof = any, net = nbr, sap = 1761
cftprot id = ptls, type = pesit, prof = any, net = nbr,
        sap = 1762,                        /* the port partners call */
        ssl = brsrv
cftssl  id = brsrv, direct = server, usercid = brcert,
        rootcid = (bankroot, banksub),
        ciphlist = (47, 156, 49199), verify = required, depth = 3
cftssl  id = lillechk, direct = server, ciphlist = (49199),
        dnuser = '("O=Bank" AND "OU=Lille")'
cftpart id = lille, prot = (ptls), nrpart = lille, nrpassw = "Lil1e",
        ssl = lillechk, nspart = hub
cfttcp  id = lille, host = (198.51.100.7, 198.51.100.8), verify = 11
"""
EXPECTED_A = """
pki: {BRCERT: {cert: pki/BRCERT.pem, key: pki/BRCERT.key}, BANKROOT: {cert: pki/BANKROOT.pem},
      BANKSUB: {cert: pki/BANKSUB.pem}}
profiles:
- {id: BRSRV, direct: server, usercid: BRCERT, rootcid: [BANKROOT, BANKSUB], verify: required,
   ciphlist: [49199, 156, 47], version: {min: tls1.0, max: tls1.2}, depth: 2}
- {id: LILLECHK, direct: server, verify: required, ciphlist: [49199],
   version: {min: tls1.0, max: tls1.2}, depth: 9, dnuser: '("O=Bank" AND "OU=Lille")'}
listeners:
- {id: PTLS, listen: 0.0.0.0:1762, ssl: BRSRV, backend: 127.0.0.1:1761, identify: pesit}
partners:
- {id: LILLE, nrpart: LILLE, nrpassw: Lil1e, ssl: LILLECHK, prot: [PTLS],
   host: [198.51.100.7, 198.51.100.8], host_verify: 11}
"""
REPORT_A = [
    "a.cft:3: skipped: CFTPROT PPLAIN: plaintext (no SSL): the backend of PTLS",
    "a.cft:4: ignored: CFTPROT PTLS: PROF=ANY",
    "a.cft:12: ignored: CFTPART LILLE: NSPART=HUB",
]
EXAMPLE_B = """\
CFTSSL ID = 'SSLOUT',
 CIPHLIST = ( '49199',
 '60'),
 DIRECT = 'CLIENT',
 /* DNISSUER = ( ''),*/
 DNUSER = ( 'O=Central Bank/OU=Clearing'),
 DEPTH = '10', KEYEXT = 'VERIFY', ROOTCID = ( 'CBROOT'), TRACE = '0',
 USERCID = 'OURCERT', VERIFY = 'REQUIRED', VERSION = 'TLSV1COMP', ORIGIN = 'CFTUTIL',
 MODE = 'REPLACE'
"""
EXAMPLE_C = """\
CFTSSL  ID=CHK1, DIRECT=SERVER, CIPHLIST=(156), DNISSUER='CN=Old Issuing CA'
CFTSSL  ID=CHK1, DIRECT=SERVER, CIPHLIST=(157,156), MODE=REPLACE   /* DNISSUER gone */
CFTSSL  ID=CHK1, DIRECT=CLIENT, CIPHLIST=(157,156), PARM='a ''quoted'' word'
CFTPART ID=VIGO, PROT=(P*), NRPART="Vigo", NRPASSW='abc', SSL=CHK1
CFTPART ID=OLDP, MODE=DELETE
"""
EXAMPLE_D = """\
PKICER ID = 'BANKROOT', ROOTCID = 'BANKROOT', ITYPE = 'ROOT', /*
 PKIFNAME = '',*/
 INAME = 'pki/ROOT0001', IFORM = 'DER', MODE = 'REPLACE'
PKICER ID = 'BRCERT', ROOTCID = 'BANKSUB', ITYPE = 'USER',
 INAME = 'pki/brcert.p12', IFORM = 'PKCS12', IKPASSW = '@/run/secrets/p12pass'
"""


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
