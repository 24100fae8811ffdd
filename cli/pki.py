"""`daaas pki`: the certificate authority every daaas TLS endpoint trusts.

    daaas pki init [--dir D] [--cn NAME] [--days N]
    daaas pki issue NAME --role service|host|user [--dir D] [--out O] [--days N] [--dns H ...] [--ip A ...]
    daaas pki revoke NAME|SERIAL [--dir D]
    daaas pki list [--dir D]

The CA directory defaults to `$DAAAS_PKI_DIR`, else `./pki`.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from cli import UsageError


def _default_dir() -> Path:
    return Path(os.environ.get("DAAAS_PKI_DIR") or "pki")


def _add_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", type=Path, default=None, help="CA directory (default: $DAAAS_PKI_DIR or ./pki)")


def register(subparsers) -> None:
    pki = subparsers.add_parser("pki", help="the daaas certificate authority")
    sub = pki.add_subparsers(dest="pki_command", metavar="ACTION")
    pki.set_defaults(func=lambda args: pki.print_help() or 2)

    p = sub.add_parser("init", help="create a CA")
    _add_dir(p)
    p.add_argument("--cn", default="daaas CA", help="the CA's common name")
    p.add_argument("--days", type=int, default=3650)
    p.set_defaults(func=_init)

    p = sub.add_parser("issue", help="issue a certificate signed by the CA")
    p.add_argument("name", help="subject common name, also the file name")
    p.add_argument("--role", required=True, choices=["service", "host", "user"])
    _add_dir(p)
    p.add_argument("--out", type=Path, default=None, help="where to write NAME.pem and NAME.key (default DIR/certs)")
    p.add_argument("--days", type=int, default=825)
    p.add_argument("--dns", action="append", default=None, help="a DNS subject alternative name (repeatable)")
    p.add_argument("--ip", action="append", default=None, help="an IP subject alternative name (repeatable)")
    p.set_defaults(func=_issue)

    p = sub.add_parser("revoke", help="revoke a certificate and regenerate the CRL")
    p.add_argument("name_or_serial")
    _add_dir(p)
    p.set_defaults(func=_revoke)

    p = sub.add_parser("list", help="list issued certificates")
    _add_dir(p)
    p.set_defaults(func=_list)


def _run(fn, *a, **kw):
    from dms.pki import PkiError
    try:
        return fn(*a, **kw)
    except PkiError as e:
        raise UsageError(str(e)) from None


def _init(args) -> int:
    from dms import pki
    d = args.dir or _default_dir()
    path = _run(pki.init_ca, d, common_name=args.cn, days=args.days)
    print(f"CA created: {path} (key {pki.Path(d) / pki.CA_KEY}, CRL {pki.crl_path(d)})")
    return 0


def _issue(args) -> int:
    from dms import pki
    d = args.dir or _default_dir()
    kw = {}
    if args.dns is not None:
        kw["dns_names"] = tuple(args.dns)
    if args.ip is not None:
        kw["ip_addresses"] = tuple(args.ip)
    got = _run(pki.issue, d, args.name, role=args.role, out_dir=args.out, days=args.days, **kw)
    print(f"issued {args.name} ({args.role}) serial {got.serial}: cert {got.cert}, key {got.key}")
    return 0


def _revoke(args) -> int:
    from dms import pki
    d = args.dir or _default_dir()
    _run(pki.revoke, d, args.name_or_serial)
    print(f"revoked {args.name_or_serial}; CRL regenerated: {pki.crl_path(d)}")
    return 0


def _list(args) -> int:
    from dms import pki
    d = args.dir or _default_dir()
    entries = _run(pki.list_issued, d)
    print(f"{'SERIAL':<40} {'NAME':<24} {'ROLE':<8} {'NOT AFTER':<26} REVOKED")
    for e in entries:
        print(f"{e['serial']:<40} {e['name']:<24} {e['role']:<8} {e['not_after']:<26} {e['revoked'] or '-'}")
    return 0
