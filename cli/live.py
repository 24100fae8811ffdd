"""`daaas serve`: the live VMM loop; `daaas portal`: the users' and agents' HTTP API.

    daaas serve [--config F] [--once] [--duration S]
    daaas portal [--config F] [--host H] [--port P]

With no config, `serve` runs the embedded default: the live VMM over the twin's simulated clouds on
the wall clock, with a little simulated demand, a fresh store and usage logs under
$DAAAS_STATE_DIR/embedded (default ~/.local/share/daaas/embedded). It prints a line per pass.
"""
from __future__ import annotations

import random
import signal
import sys
import time
import traceback
from pathlib import Path

from cli import UsageError


def register(sub) -> None:
    p = sub.add_parser("serve", help="run the live VMM (no config: simulated clouds on the wall clock)")
    p.add_argument("--config", metavar="F", help="the VMM's YAML config (pools, clouds file, store, log dir)")
    p.add_argument("--once", action="store_true", help="run one pass and exit")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--quiet", action="store_true", help="no line per pass")
    p.add_argument("--seed", type=int, default=None, help="embedded default: seed of the simulated world")
    p.set_defaults(func=serve)
    q = sub.add_parser("portal", help="serve the portal API (requests, release, agent heartbeats)")
    q.add_argument("--config", metavar="F")
    q.add_argument("--host")
    q.add_argument("--port", type=int)
    q.set_defaults(func=portal)


def _settings(path: str | None):
    from live.settings import SettingsError, embedded_settings, load_settings

    if path is None:
        return embedded_settings()
    try:
        return load_settings(path)
    except SettingsError as e:
        raise UsageError(str(e)) from None


def build(settings, *, now: float, seed: int | None = None):
    """Wire the store, the clouds (configured, or the embedded world), the log and the VMM."""
    from core.config import Config
    from live.store import open_store
    from live.usage_log import UsageLog
    from live.vmm import Vmm

    world = demand = None
    if settings.clouds_file is None:
        from live.realtime import Demand, RealtimeWorld

        # The simulated clouds live in this process: a store from an earlier run describes VMs that
        # no longer exist anywhere, so the embedded default starts from a fresh one.
        if settings.store_url.startswith("sqlite:///") and settings.source == "<defaults>":
            db = Path(settings.store_url[len("sqlite:///"):])
            for f in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
                f.unlink(missing_ok=True)
        world = RealtimeWorld(now, seed)
        clouds, cloud_configs = world.clouds, world.cloud_configs
    else:
        try:
            from live.clouds.config import CloudsConfigError, load_clouds
        except ImportError as e:
            raise UsageError(f"{settings.source}: clouds: the cloud adapters are not installed ({e})") from None
        try:
            bindings = load_clouds(settings.clouds_file, owner_id=settings.owner_id)
        except CloudsConfigError as e:  # names the file, the field and the reason
            raise UsageError(str(e)) from None
        except (ValueError, OSError) as e:
            raise UsageError(f"{settings.clouds_file}: {e}") from None
        clouds = {b.config.name: b.adapter for b in bindings}
        cloud_configs = tuple(b.config for b in bindings)
    for p in settings.pools:
        bad = set(p.clouds) - {c.name for c in cloud_configs}
        if bad:
            raise UsageError(f"{settings.source}: pools.{p.name}.clouds: unknown cloud(s) {sorted(bad)}")
    config = Config(pools=settings.pools, clouds=cloud_configs, policy=settings.policy)
    store = open_store(settings.store_url)
    log = UsageLog(settings.log_dir, {
        "scenario": "live" if world is None else "embedded", "seed": seed, "start": now, "end": None,
        "clouds": {c.name: {"cost_per_hour": c.cost_per_vm_hour, "region": c.region} for c in cloud_configs},
        "pools": [p.name for p in settings.pools]})
    vmm = Vmm(store=store, clouds=clouds, config=config, owner_id=settings.owner_id, log=log,
              options=settings.vmm, image_version=settings.image_version)
    if world is not None:
        demand = Demand(store, [p.name for p in settings.pools], random.Random(seed))
    return vmm, world, demand


def serve(args) -> int:
    from live.leader import leader_for

    settings = _settings(args.config)
    if args.duration is not None and args.duration < 0:
        raise UsageError("--duration: must be zero or more seconds")
    start = time.time()
    vmm, world, demand = build(settings, now=start, seed=args.seed)
    leader = leader_for(vmm.store.engine)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    if not args.quiet:
        where = "embedded simulated clouds" if world else f"clouds of {settings.clouds_file}"
        print(f"daaas serve: {where}; store {settings.store_url}; usage logs in {settings.log_dir}", flush=True)
    state: dict = {}
    try:
        while not stop:
            now = time.time()
            try:
                if not _step(args, vmm, world, demand, leader, now, start, state) and args.once:
                    return 1
            except Exception as e:  # noqa: BLE001 - a failed pass (database or cloud trouble) is retried
                # The store's rules make any partial pass safe to repeat: log it and go on.
                traceback.print_exc()
                print(f"{now:.0f} pass failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                if args.once:
                    return 1
            if args.once or (args.duration is not None and time.time() - start >= args.duration):
                break
            _wait(vmm.store, now + settings.period_s, stop, early=state.get("leading", False))
    finally:
        leader.release()
        vmm.log.close()
        vmm.store.close()
    return 0


REQUEST_POLL_S = 0.25  # how often a leading VMM looks for new requests between its periodic passes


def _wait(store, until: float, stop: list, *, early: bool) -> None:
    """Sleep until the next periodic pass, or (`early`: this instance leads) until a user asks for a VM:
    a request is served by a pass at once, not up to a period later, as the twin's controller does."""
    while not stop and (left := until - time.time()) > 0:
        time.sleep(min(REQUEST_POLL_S, left) if early else left)
        if early and store.has_new_requests():
            return


def _step(args, vmm, world, demand, leader, now: float, start: float, state: dict) -> bool:
    """One round: a pass if this instance leads; False when --once could not lead."""
    if not leader.acquire():
        if state.get("leading", True) or not args.quiet:
            print(f"{now:.0f} standby: another instance leads", flush=True)
        state["leading"] = False
        return False
    state["leading"] = True
    if world is not None:
        world.advance(now)
        demand.step(now)
    res = vmm.run_pass(now)
    if not args.quiet:
        print(_line(vmm, res, start), flush=True)
    return True


def _line(vmm, res, start: float) -> str:
    counts = vmm.store.counts()
    by_state: dict[str, int] = {}
    for (_, _, st), n in counts.items():
        by_state[st] = by_state.get(st, 0) + n
    acts: dict[str, int] = {}
    for a in res.decision.actions if res.decision else ():
        acts[type(a).__name__.lower()] = acts.get(type(a).__name__.lower(), 0) + 1
    listed = " ".join(f"{c}={'ERR' if n is None else n}" for c, n in res.listed.items())
    states = " ".join(f"{s}={by_state.get(s, 0)}" for s in ("booting", "ready", "allocated", "reclaiming"))
    did = " ".join(f"{k}={v}" for k, v in sorted(acts.items())) or "-"
    return f"+{res.now - start:6.1f}s listed[{listed}] {states} actions[{did}]"


def portal(args) -> int:
    from live.portal import create_app

    settings = _settings(args.config)
    app = create_app(settings)
    host = args.host or settings.portal_host
    port = args.port if args.port is not None else settings.portal_port
    if not 0 <= port < 65536:
        raise UsageError(f"--port: {port} is not a port number")
    print(f"daaas portal on http://{host}:{port}/api (store {settings.store_url})", file=sys.stderr)
    app.run(host=host, port=port, threaded=True)
    return 0
