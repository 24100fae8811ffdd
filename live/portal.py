"""The portal API (Flask): users request and release VMs; agents on VMs report activity.

    GET  /api/pools                         pools and their load (VMs by state)
    POST /api/requests {pool, user[, location]}   -> 201 {id, state}
    GET  /api/requests/<id>                 -> {id, state, pool, user, vm, cloud, cloud_id}
    POST /api/requests/<id>/release         -> {id, state}
    POST /api/vms/<vm>/heartbeat {cpu_percent, io_bytes_per_s[, last_input_at]}

The portal only writes the store; the VMM's next pass assigns, launches and reclaims. Bad input is a
400 naming the field, an unknown id a 404.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, request

from core.activity import is_busy
from live.store import Store, open_store

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")


class BadInput(Exception):
    pass


def create_app(settings, *, store: Store | None = None, clock: Callable[[], float] = time.time) -> Flask:
    """The portal for `settings` (live.settings.Settings); `store` and `clock` may be given by tests."""
    app = Flask("daaas.portal")
    app.config["DAAAS_SETTINGS"] = settings
    app.config["DAAAS_STORE"] = store or open_store(settings.store_url)
    app.config["DAAAS_CLOCK"] = clock
    app.register_blueprint(api, url_prefix="/api")

    @app.errorhandler(BadInput)
    def _bad(e):
        return jsonify(error=str(e)), 400

    @app.errorhandler(404)
    def _nf(e):
        return jsonify(error=getattr(e, "description", "not found")), 404

    @app.errorhandler(405)
    def _na(e):
        return jsonify(error="method not allowed"), 405

    return app


api = Blueprint("api", __name__)


def _store() -> Store:
    return current_app.config["DAAAS_STORE"]


def _now() -> float:
    return current_app.config["DAAAS_CLOCK"]()


def _body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise BadInput("body: expected a JSON object")
    return data


def _name(data: dict[str, Any], key: str, *, required: bool = True, default: str | None = None) -> str | None:
    v = data.get(key, default)
    if v is None and not required:
        return None
    if not isinstance(v, str) or not NAME.match(v):
        raise BadInput(f"{key}: expected a name of letters, digits and _.@- (1-128 characters), got {v!r}")
    return v


def _num(data: dict[str, Any], key: str, *, required: bool = True) -> float | None:
    v = data.get(key)
    if v is None and not required:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or v < 0 or v != v or v == float("inf"):
        raise BadInput(f"{key}: expected a number >= 0, got {v!r}")
    return float(v)


@api.get("/pools")
def pools():
    settings = current_app.config["DAAAS_SETTINGS"]
    counts = _store().counts()
    out = []
    for p in settings.pools:
        load: dict[str, int] = {}
        for (pool, _, state), n in counts.items():
            if pool == p.name:
                load[state] = load.get(state, 0) + n
        out.append({"name": p.name, "min_ready": p.min_ready, "max_total": p.max_total, "load": load})
    return jsonify(pools=out)


@api.post("/requests")
def create_request():
    data = _body()
    unknown = set(data) - {"pool", "user", "location"}
    if unknown:
        raise BadInput(f"body: unknown field(s) {sorted(unknown)}")
    pool = _name(data, "pool")
    if pool not in {p.name for p in current_app.config["DAAAS_SETTINGS"].pools}:
        raise BadInput(f"pool: no pool named {pool!r}")
    user = _name(data, "user")
    location = _name(data, "location", default="home")
    rid = _store().create_request(pool=pool, user=user, location=location, now=_now())
    return jsonify(id=rid, state="pending"), 201


def _view(rid: str):
    v = _store().request(rid)
    if v is None:
        return None
    return {"id": v.id, "state": v.state, "pool": v.pool, "user": v.user, "requested_at": v.requested_at,
            "vm": v.vm_id, "cloud": v.cloud, "cloud_id": v.cloud_id, "assigned_at": v.assigned_at}


@api.get("/requests/<rid>")
def get_request(rid: str):
    v = _view(rid)
    if v is None:
        return jsonify(error=f"request {rid}: unknown"), 404
    return jsonify(v)


@api.post("/requests/<rid>/release")
def release(rid: str):
    if _store().request(rid) is None:
        return jsonify(error=f"request {rid}: unknown"), 404
    _store().release(rid, now=_now())
    return jsonify(_view(rid))


@api.post("/vms/<vm>/heartbeat")
def heartbeat(vm: str):
    data = _body()
    unknown = set(data) - {"cpu_percent", "io_bytes_per_s", "last_input_at"}
    if unknown:
        raise BadInput(f"body: unknown field(s) {sorted(unknown)}")
    cpu, io = _num(data, "cpu_percent"), _num(data, "io_bytes_per_s")
    if cpu > 100.0 * 1024:
        raise BadInput(f"cpu_percent: {cpu} is not a CPU share")
    last_input = _num(data, "last_input_at", required=False)
    now = _now()
    if last_input is not None and last_input > now + 60:
        raise BadInput("last_input_at: in the future")
    policy = current_app.config["DAAAS_SETTINGS"].policy
    if not _store().heartbeat(vm, now=now, cpu_percent=cpu, io_bytes_per_s=io, last_input_at=last_input,
                              busy=is_busy(cpu, io, policy)):
        return jsonify(error=f"vm {vm}: unknown or gone"), 404
    return jsonify(ok=True)
