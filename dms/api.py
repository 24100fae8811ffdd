"""The DMS web API (Flask): transfer requests in, HTTP-TPC copies out, status and cancel.

    POST   /transfers        {"source", "destination", "paths": [...] | "directory", "adapter", "streams",
                              "cwd"?, "parallel_files"?, "verify_checksum"?}  -> 201 {"id", ...}
    GET    /transfers        every transfer (summaries)
    GET    /transfers/<id>   state, files done/total, bytes done/total, per-file state (`?files=0`: without)
    DELETE /transfers/<id>   cancel (202); 409 when it already finished
    GET    /healthz          no authentication

Only clients whose certificate chains to the configured CA, is valid now, is not on the CRL and whose
subject CN is in `ALLOWED_SUBJECTS` (shell patterns; empty = any) get past `before_request`; the
others get 401 (no certificate) or 403 naming the reason (`dms.peer`), before anything is read or
written. The TLS handshake lets every certificate through (`server_ssl_context`) so that this answer
is possible. The certificate comes from the WSGI environ key `daaas.peer_cert` (DER), which
`PeerCertRequestHandler` fills from the TLS socket; behind Flask's test client,
`PEER_SUBJECT_HOOK(environ) -> CN | None` stands in and only the subject is checked.

Configuration is layered (the Flask tutorial's way): `DEFAULTS`, then a YAML file (`CONFIG_FILE`
in the given dict, or `config_file=`), then the given dict. Every bad request is a 4xx with JSON
`{"error": reason, "field": name}`.
"""
from __future__ import annotations

import ssl
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from flask import Flask, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.serving import WSGIRequestHandler, make_server

from core.transfer_order import ADAPTERS
from dms import client, orchestrator, peer
from dms.tls import client_context

PEER_CERT = "daaas.peer_cert"

DEFAULTS: dict[str, Any] = {
    "DB": "dms-api.sqlite",  # the transfer journal
    "EVENT_LOG": "dms-events.jsonl",  # events in the common schema; "" for none
    "CA": None,  # CA certificate (TLS server and client side)
    "CRL": None,
    "CERT": None,  # this service's certificate: served, and presented to sources and DMTSs
    "KEY": None,
    "ALLOWED_SUBJECTS": [],  # CN patterns allowed to use the API; empty: any certificate from the CA
    "ALLOW_PLAIN_URLS": False,  # accept http:// sources/destinations (tests, benchmarks on plain paths)
    "MAX_STREAMS": 32,
    "MAX_PARALLEL_FILES": 16,
    "PARALLEL_FILES": 4,
    "COPY_TIMEOUT": 120.0,
    "HOST": "127.0.0.1",
    "PORT": 8443,
    "PEER_SUBJECT_HOOK": None,  # tests: callable(environ) -> CN or None, instead of the TLS peer
}

REQUEST_FIELDS = {"source", "destination", "paths", "directory", "adapter", "streams", "cwd",
                  "parallel_files", "verify_checksum"}


class ConfigError(Exception):
    """Bad DMS API configuration; the message names the key or file."""


class BadRequest(Exception):
    def __init__(self, field: str | None, reason: str, status: int = 400):
        super().__init__(reason)
        self.field, self.reason, self.status = field, reason, status


def load_config(config: Mapping[str, Any] | None = None, *, config_file: str | Path | None = None) -> dict[str, Any]:
    """DEFAULTS, overlaid by the YAML file (keys in any case), overlaid by `config`."""
    cfg = dict(DEFAULTS)
    path = config_file or (config or {}).get("CONFIG_FILE")
    if path:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as e:
            raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not YAML: {e}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of settings")
        for k, v in raw.items():
            key = str(k).upper().replace("-", "_")
            if key not in DEFAULTS:
                raise ConfigError(f"{path}: unknown setting {k!r}; known: {', '.join(sorted(DEFAULTS))}")
            cfg[key] = v
    for k, v in (config or {}).items():
        if k != "CONFIG_FILE":
            cfg[k] = v
    for key in ("MAX_STREAMS", "MAX_PARALLEL_FILES", "PARALLEL_FILES", "PORT"):
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] < 0:
            raise ConfigError(f"{key}: must be a non-negative integer, got {cfg[key]!r}")
    if not isinstance(cfg["ALLOWED_SUBJECTS"], list | tuple):
        raise ConfigError("ALLOWED_SUBJECTS: must be a list of common-name patterns")
    return cfg


def _client_tls(cfg: Mapping[str, Any]) -> ssl.SSLContext | None:
    if not cfg.get("CA"):
        return None
    return client_context(cert=cfg.get("CERT"), key=cfg.get("KEY"), ca=cfg["CA"])


def create_app(config: Mapping[str, Any] | None = None, *, config_file: str | Path | None = None,
               orch: orchestrator.Orchestrator | None = None) -> Flask:
    """The DMS API app; wiring (journal, event log, orchestrator) happens here, not at import."""
    cfg = load_config(config, config_file=config_file)
    app = Flask("dms.api")
    app.config.update(cfg)
    if orch is None:
        orch = orchestrator.Orchestrator(store=orchestrator.Store(cfg["DB"]), tls=_client_tls(cfg),
                                         log=orchestrator.EventLog(cfg["EVENT_LOG"] or None),
                                         copy_timeout=float(cfg["COPY_TIMEOUT"]))
    app.extensions["dms"] = orch
    app.extensions["dms.peers"] = _peer_verifier(cfg)

    @app.errorhandler(BadRequest)
    def _bad(e: BadRequest):
        return jsonify({"error": e.reason, "field": e.field}), e.status

    @app.errorhandler(HTTPException)
    def _http(e: HTTPException):
        return jsonify({"error": e.description, "field": None}), e.code

    @app.before_request
    def _authenticate():
        if request.endpoint in ("healthz", "static"):
            return None
        hook = current_app.config.get("PEER_SUBJECT_HOOK")
        verifier = current_app.extensions["dms.peers"]
        allowed = current_app.config["ALLOWED_SUBJECTS"]
        if hook is not None:
            verdict = peer.check_subject(hook(request.environ), allowed)
        elif verifier is not None:
            verdict = verifier.verify(request.environ.get(PEER_CERT))
        else:
            verdict = peer.PeerVerdict(401, "no CA configured (CA): no client certificate can be verified")
        if verdict.ok and verdict.common_name is None:
            verdict = peer.PeerVerdict(401, "a client certificate issued by the daaas CA is required")
        if not verdict.ok:
            raise BadRequest("client certificate", verdict.reason, verdict.status)
        g.user = verdict.common_name
        return None

    @app.get("/healthz")
    def healthz():
        return jsonify({"ok": True})

    @app.post("/transfers")
    def submit():
        req = parse_request(request.get_json(silent=True), current_app.config)
        orch_ = current_app.extensions["dms"]
        try:
            planned = orch_.plan(req)
        except client.ManifestError as e:
            field = "directory" if req.directory is not None else "paths"
            if e.status == 404:
                raise BadRequest(field, f"the source has no such directory: {e}", 404) from None
            if e.status in (401, 403):
                raise BadRequest("source", f"the source refused the DMS: {e}", 502) from None
            raise BadRequest("source", f"could not read the source's manifest: {e}", 502) from None
        except LookupError as e:
            raise BadRequest("paths", str(e), 404) from None
        except (OSError, ValueError) as e:
            raise BadRequest("source", f"could not reach the source: {e}", 502) from None
        if not planned:
            raise BadRequest("adapter", f"adapter {req.adapter!r} selects no files "
                                        f"(directory {req.directory!r}, cwd {req.cwd!r})")
        clash = orch_.busy_destinations(req, planned)
        if clash:
            raise BadRequest("destination", "another unfinished transfer is writing "
                                            f"{len(clash)} of these files, e.g. {clash[0]!r}", 409)
        tid = orch_.submit(req, planned, user=g.user)
        body = orch_.get(tid).to_dict(with_files=False)
        return jsonify(body), 201, {"Location": f"/transfers/{tid}"}

    @app.get("/transfers")
    def list_transfers():
        return jsonify({"transfers": [t.summary() for t in current_app.extensions["dms"].list()]})

    def _find(tid: str) -> orchestrator.Transfer:
        try:
            return current_app.extensions["dms"].get(tid)
        except KeyError:
            raise BadRequest("id", f"no transfer {tid!r}", 404) from None

    @app.get("/transfers/<tid>")
    def get_transfer(tid: str):
        # `?files=0` leaves out the per-file list: cheap polling of a transfer of many files.
        files = request.args.get("files", "1")
        if files not in ("0", "1"):
            raise BadRequest("files", f"query parameter must be 0 or 1, got {files!r}")
        return jsonify(_find(tid).to_dict(with_files=files == "1"))

    @app.delete("/transfers/<tid>")
    def cancel_transfer(tid: str):
        t = _find(tid)
        if t.state in orchestrator.FINAL_STATES:
            raise BadRequest("id", f"transfer {tid} already finished ({t.state}); nothing to cancel", 409)
        current_app.extensions["dms"].cancel(transfer_id=tid)
        return jsonify({"id": tid, "state": "cancelling"}), 202

    return app


def _check_url(body: dict, name: str, allow_plain: bool) -> str:
    v = body.get(name)
    if not isinstance(v, str) or not v:
        raise BadRequest(name, "required: a URL string")
    parts = urllib.parse.urlsplit(v)
    schemes = ("https", "http") if allow_plain else ("https",)
    if parts.scheme not in schemes or not parts.hostname:
        raise BadRequest(name, f"{v!r} is not an {' or '.join(schemes)} URL")
    if parts.query or parts.fragment:
        raise BadRequest(name, "must not have a query or fragment")
    return v.rstrip("/")


def _check_rel(name: str, p: object) -> str:
    if not isinstance(p, str) or not p.strip("/"):
        raise BadRequest(name, f"{p!r} is not a non-empty relative path")
    if p.startswith("/"):
        raise BadRequest(name, f"{p!r} is absolute; paths are relative to the source")
    parts = p.split("/")
    if any(s in ("..", ".") for s in parts) or "\x00" in p or "\\" in p:
        raise BadRequest(name, f"{p!r} has '.', '..', a backslash or a NUL")
    return p.strip("/")


def _check_int(body: dict, name: str, default: int, lo: int, hi: int) -> int:
    v = body.get(name, default)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise BadRequest(name, f"must be an integer from {lo} to {hi}, got {v!r}")
    return v


def parse_request(body: object, cfg: Mapping[str, Any]) -> orchestrator.TransferRequest:
    """Validate a POST /transfers body into a `TransferRequest`; `BadRequest` names the field."""
    if not isinstance(body, dict):
        raise BadRequest("body", "expected a JSON object (Content-Type: application/json)")
    unknown = sorted(set(body) - REQUEST_FIELDS)
    if unknown:
        raise BadRequest(unknown[0], f"unknown field(s) {unknown}; known: {sorted(REQUEST_FIELDS)}")
    allow_plain = bool(cfg.get("ALLOW_PLAIN_URLS"))
    source = _check_url(body, "source", allow_plain)
    destination = _check_url(body, "destination", allow_plain)
    has_paths, has_dir = "paths" in body, "directory" in body
    if has_paths == has_dir:
        raise BadRequest("paths", "give exactly one of 'paths' (a list of files) or 'directory'")
    paths: tuple[str, ...] = ()
    directory = None
    if has_paths:
        if not isinstance(body["paths"], list) or not body["paths"]:
            raise BadRequest("paths", "must be a non-empty list of relative file paths")
        paths = tuple(_check_rel("paths", p) for p in body["paths"])
        if len(set(paths)) != len(paths):
            raise BadRequest("paths", "lists a file more than once")
    else:
        d = body["directory"]
        directory = "" if d in ("", "/", ".") else _check_rel("directory", d)
    adapter = body.get("adapter", "everything")
    if adapter not in ADAPTERS:
        raise BadRequest("adapter", f"{adapter!r} is not one of {sorted(ADAPTERS)}")
    cwd = body.get("cwd")
    if cwd is not None:
        cwd = "" if cwd in ("", "/", ".") else _check_rel("cwd", cwd)
    verify = body.get("verify_checksum", True)
    if not isinstance(verify, bool):
        raise BadRequest("verify_checksum", "must be true or false")
    return orchestrator.TransferRequest(
        source=source, destination=destination, paths=paths, directory=directory, adapter=adapter,
        streams=_check_int(body, "streams", 1, 1, int(cfg["MAX_STREAMS"])), cwd=cwd,
        parallel_files=_check_int(body, "parallel_files", int(cfg["PARALLEL_FILES"]), 1,
                                  int(cfg["MAX_PARALLEL_FILES"])),
        verify_checksum=verify)


def _peer_verifier(cfg: Mapping[str, Any]) -> peer.PeerVerifier | None:
    if not cfg.get("CA"):
        return None
    try:
        return peer.PeerVerifier(ca=cfg["CA"], crl=cfg.get("CRL") or None,
                                 allowed_subjects=tuple(cfg["ALLOWED_SUBJECTS"]))
    except peer.PeerConfigError as e:
        raise ConfigError(str(e)) from None


class PeerCertRequestHandler(WSGIRequestHandler):
    """Puts the client certificate (DER, not yet verified) into the WSGI environ (werkzeug does not)."""

    def make_environ(self):
        environ = super().make_environ()
        environ[PEER_CERT] = peer.peer_certificate(self.connection)
        return environ


def make_api_server(app: Flask, *, host: str, port: int, ssl_context: ssl.SSLContext | None):
    """A threaded WSGI server for `app` (werkzeug's), TLS when `ssl_context` is given.

    The context should ask for a client certificate but let any (or none) through the handshake
    (`server_ssl_context`), so that a missing or bad certificate is answered 401/403 in HTTP with
    the reason rather than a bare TLS alert.
    """
    return make_server(host, port, app, threaded=True, request_handler=PeerCertRequestHandler,
                       ssl_context=ssl_context)


def server_ssl_context(cfg: Mapping[str, Any]) -> ssl.SSLContext:
    """The API's TLS server context from the config (CERT, KEY; CA for the clients); a missing one is ConfigError.

    Client certificates are checked per request against CA and CRL by `before_request`.
    """
    from dms.tls import TlsError, http_enforced_server_context
    for key in ("CERT", "KEY", "CA"):
        if not cfg.get(key):
            raise ConfigError(f"{key}: required to serve the DMS API over TLS")
    try:
        return http_enforced_server_context(cert=cfg["CERT"], key=cfg["KEY"])
    except TlsError as e:
        raise ConfigError(str(e)) from None
