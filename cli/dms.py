"""`daaas dms`: run the data-movement endpoints and the DMS API, and drive third-party copies.

    daaas dms serve-source ROOT [--host H] [--port P] [--pki DIR] [--cert-name N] [--allow CN ...] [--plain]
    daaas dms serve-dmts ROOT   [--host H] [--port P] [--pki DIR] [--cert-name N] [--allow CN ...] [--plain]
                                [--max-streams N]
    daaas dms serve-api [--config F] [--host H] [--port P] [--pki DIR] [--cert-name N]
    daaas dms copy SRC DST [--streams N] [--checksum adler32:xxxxxxxx] [--pki DIR] [--cert-name N] [--quiet]

Certificates come from a PKI directory (`--pki`, else `$DAAAS_PKI_DIR`, else ./pki, as `daaas pki`
makes it): the CA (`ca.pem`), its CRL (`crl.pem`), and `certs/<NAME>.pem`/`.key` for the role
certificate: by default `source`, `dmts`, `dms-api`, and for `copy` `$USER` (else `user`).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cli import UsageError

DEFAULT_NAMES = {"serve-source": "source", "serve-dmts": "dmts", "serve-api": "dms-api"}


def _pki_dir(args) -> Path:
    return Path(args.pki or os.environ.get("DAAAS_PKI_DIR") or "pki")


def _role_files(args, name: str) -> tuple[Path, Path, Path, Path | None]:
    d = _pki_dir(args)
    ca, crl = d / "ca.pem", d / "crl.pem"
    cert, key = d / "certs" / f"{name}.pem", d / "certs" / f"{name}.key"
    if not ca.is_file():
        raise UsageError(f"--pki: {ca}: no CA certificate (run `daaas pki init --dir {d}`)")
    for what, p in (("certificate", cert), ("key", key)):
        if not p.is_file():
            raise UsageError(f"--cert-name: {p}: no {what} for {name!r} "
                             f"(run `daaas pki issue {name} --role service --dir {d}`)")
    return cert, key, ca, (crl if crl.is_file() else None)


def _add_tls(p: argparse.ArgumentParser, default_name: str | None) -> None:
    p.add_argument("--pki", default=None, help="PKI directory (default: $DAAAS_PKI_DIR or ./pki)")
    p.add_argument("--cert-name", default=default_name,
                   help=f"certificate name under PKI/certs (default: {default_name or '$USER or user'})")


def _port(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"{n} is not a port number (0-65535)")
    return n


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def register(subparsers) -> None:
    dms = subparsers.add_parser("dms", help="data movement: source, DMTS, DMS API, third-party copy")
    sub = dms.add_subparsers(dest="dms_command", metavar="ACTION")
    dms.set_defaults(func=lambda args: dms.print_help() or 2)

    for cmd, text in (("serve-source", "serve ROOT as an archive-side HTTPS source (Range, Digest, manifests)"),
                      ("serve-dmts", "serve ROOT as an HTTP-TPC destination (DMTS, pull mode)")):
        p = sub.add_parser(cmd, help=text)
        p.add_argument("root", type=Path, help="the directory served")
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=_port, default=0, help="0 picks a free port (printed)")
        _add_tls(p, DEFAULT_NAMES[cmd])
        p.add_argument("--allow", action="append", default=[], metavar="CN",
                       help="client CN pattern allowed (repeatable; default: any certificate from the CA)")
        p.add_argument("--plain", action="store_true", help="plain HTTP, no TLS (trusted networks only)")
        if cmd == "serve-dmts":
            p.add_argument("--max-streams", type=_positive, default=16)
        p.set_defaults(func=_serve_source if cmd == "serve-source" else _serve_dmts)

    p = sub.add_parser("serve-api", help="serve the DMS web API over mutual TLS")
    p.add_argument("--config", type=Path, default=None, help="YAML settings (see dms.api.DEFAULTS)")
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=_port, default=None)
    _add_tls(p, DEFAULT_NAMES["serve-api"])
    p.set_defaults(func=_serve_api)

    p = sub.add_parser("copy", help="ask a DMTS to pull SRC into DST (HTTP third-party copy)")
    p.add_argument("src", help="source URL (https://archive/path)")
    p.add_argument("dst", help="destination URL on a DMTS (https://vm/path)")
    p.add_argument("--streams", type=_positive, default=1)
    p.add_argument("--checksum", default=None, help="expected checksum, e.g. adler32:0a1b2c3d")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_tls(p, None)
    p.set_defaults(func=_copy)


def _check_root(root: Path) -> Path:
    if not root.is_dir():
        raise UsageError(f"ROOT: {root}: not a directory")
    return root.resolve()


def _server_tls(args):
    if args.plain:
        return None
    from dms.tls import TlsConfig
    cert, key, ca, crl = _role_files(args, args.cert_name)
    return TlsConfig(cert=cert, key=key, ca=ca, crl=crl, allowed_subjects=tuple(args.allow))


def _serve(server, what: str) -> int:
    host, port = server.server_address[:2]
    print(f"{what} listening on {host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _serve_source(args) -> int:
    root = _check_root(args.root)
    tls = _server_tls(args)
    from dms.source import make_source_server
    try:
        server = make_source_server(root, host=args.host, port=args.port, tls=tls)
    except OSError as e:
        raise UsageError(f"--host/--port: cannot listen on {args.host}:{args.port}: {e.strerror}") from None
    return _serve(server, f"source ({'plain' if tls is None else 'TLS'}) of {root}")


def _serve_dmts(args) -> int:
    root = _check_root(args.root)
    tls = _server_tls(args)
    from dms.dmts import make_dmts_server
    from dms.tls import client_context
    client_tls = None if tls is None else client_context(cert=tls.cert, key=tls.key, ca=tls.ca)
    try:
        server = make_dmts_server(root, host=args.host, port=args.port, tls=tls, client_tls=client_tls,
                                  max_streams=args.max_streams)
    except OSError as e:
        raise UsageError(f"--host/--port: cannot listen on {args.host}:{args.port}: {e.strerror}") from None
    return _serve(server, f"DMTS ({'plain' if tls is None else 'TLS'}) into {root}")


def _serve_api(args) -> int:
    from dms import api
    overrides: dict = {}
    if args.host:
        overrides["HOST"] = args.host
    if args.port is not None:
        overrides["PORT"] = args.port
    try:
        cfg = api.load_config(overrides, config_file=args.config)
        if not cfg.get("CERT"):  # certificates from the PKI directory unless the config names them
            cert, key, ca, crl = _role_files(args, args.cert_name)
            cfg.update(CERT=str(cert), KEY=str(key), CA=str(ca), CRL=str(crl) if crl else None)
        ctx = api.server_ssl_context(cfg)
        app = api.create_app(cfg)
    except api.ConfigError as e:
        raise UsageError(f"--config: {e}") from None
    try:
        server = api.make_api_server(app, host=cfg["HOST"], port=cfg["PORT"], ssl_context=ctx)
    except OSError as e:
        raise UsageError(f"--host/--port: cannot listen on {cfg['HOST']}:{cfg['PORT']}: {e}") from None
    try:
        return _serve(server, "DMS API (mutual TLS)")
    finally:
        app.extensions["dms"].shutdown()


def _copy(args) -> int:
    from dms import client
    from dms.tls import TlsError, client_context
    for what, url in (("SRC", args.src), ("DST", args.dst)):
        if not url.startswith(("https://", "http://")):
            raise UsageError(f"{what}: {url!r} is not an http(s) URL")
    tls = None
    if args.src.startswith("https:") or args.dst.startswith("https:"):
        name = args.cert_name or os.environ.get("USER") or "user"
        cert, key, ca, _ = _role_files(args, name)
        try:
            tls = client_context(cert=cert, key=key, ca=ca)
        except TlsError as e:
            raise UsageError(f"--pki: {e}") from None
    try:
        job = client.TpcCopy(args.src, args.dst, streams=args.streams, tls=tls, checksum=args.checksum)
    except ValueError as e:
        raise UsageError(str(e)) from None
    total = None
    try:  # the size for the bar; the source may refuse us (it trusts the DMTS, not us): then no total
        status, headers = client.head(args.src, tls=tls, timeout=10)
        if status == 200 and "content-length" in headers:
            total = int(headers["content-length"])
    except (OSError, ValueError):
        pass
    bar = None
    if not args.quiet:
        from tqdm import tqdm
        bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=args.dst.rsplit("/", 1)[-1],
                   file=sys.stderr)

    def progress(p) -> None:
        if bar is not None:
            bar.update(p.bytes_done - bar.n)
            bar.set_postfix(streams=len(p.stripes), refresh=False)

    job.on_progress = progress
    try:
        result = job.run()
    except client.CopyError as e:
        if bar is not None:
            bar.close()
        print(f"daaas: copy failed: {e}", file=sys.stderr)
        return 1
    if bar is not None:
        if total:
            bar.update(total - bar.n)
        bar.close()
    rate = (total or result.bytes_done) / result.seconds / 2**20 if result.seconds > 0 else 0.0
    print(f"{result.final} ({total or result.bytes_done} bytes in {result.seconds:.2f} s, {rate:.1f} MiB/s, "
          f"{args.streams} stream(s))")
    return 0
