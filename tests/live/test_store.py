"""The store: migrations, the VM state machine and its transitions, allocations that never double up."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError

from live.store import open_store
from live.store.models import Allocation


@pytest.fixture
def store(tmp_path):
    s = open_store(f"sqlite:///{tmp_path / 'live.db'}")
    yield s
    s.close()


def ready_vm(store, pool="p", cloud="c", cid="i-1", now=1.0):
    vm = store.intend_launch(pool=pool, cloud=cloud, now=now)
    assert store.move(vm, "booting", now=now + 1, cloud_id=cid)
    assert store.move(vm, "ready", now=now + 2, ready_at=now + 2)
    return vm


def test_migrations_create_the_schema_and_rerun_as_a_no_op(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    s = open_store(url)
    s.close()
    s = open_store(url)  # already at head
    tables = set(inspect(s.engine).get_table_names())
    assert {"vms", "vm_transitions", "users", "requests", "allocations", "health_samples", "leak_candidates",
            "alembic_version"} <= tables
    with s.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    s.close()


def test_a_store_of_an_older_revision_is_upgraded_keeping_its_rows(tmp_path):
    from alembic import command
    from alembic.config import Config

    from core.health import BACKOFF, CloudHealth
    from live.store.db import MIGRATIONS, make_engine

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")  # a database as the first release left it
    engine.dispose()
    s = open_store(url, migrate_schema=False)
    vm = ready_vm(s)
    s.close()
    s = open_store(url)
    assert s.vm(vm).state == "ready"
    saved = {"c": CloudHealth(BACKOFF, 10.0, 300.0, 310.0, False, "failing")}
    s.save_cloud_health(saved)
    assert s.cloud_health() == saved
    s.close()


def test_the_head_constant_is_alembics_head():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from live.store.db import HEAD, MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(cfg).get_current_head() == HEAD


def test_the_migrations_build_exactly_the_models(tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from live.store.models import Base

    s = open_store(f"sqlite:///{tmp_path / 'm.db'}")
    with s.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    s.close()


def test_every_transition_is_recorded_and_illegal_ones_refused(store):
    vm = ready_vm(store)
    assert not store.move(vm, "booting", now=5)  # ready -> booting is not in the state machine
    assert store.move(vm, "reclaiming", now=6, reason="recycle")
    assert store.move(vm, "gone", now=7)
    assert not store.move(vm, "ready", now=8)
    assert [(t.from_state, t.to_state) for t in store.transitions(vm)] == [
        (None, "requested"), ("requested", "booting"), ("booting", "ready"), ("ready", "reclaiming"),
        ("reclaiming", "gone")]


def test_allocation_moves_request_and_vm_together(store):
    vm = ready_vm(store)
    r1 = store.create_request(pool="p", user="alice", now=3)
    r2 = store.create_request(pool="p", user="bob", now=3)
    assert store.allocate(vm_id=vm, request_id=r1, now=4)
    assert not store.allocate(vm_id=vm, request_id=r2, now=4)  # the VM is taken
    assert store.request(r1).state == "assigned" and store.request(r1).vm_id == vm
    assert store.request(r2).state == "pending"
    assert store.vm(vm).state == "allocated" and store.vm(vm).owner == "alice"


def test_a_wrong_pool_is_not_allocated(store):
    vm = ready_vm(store, pool="p")
    r = store.create_request(pool="q", user="alice", now=3)
    assert not store.allocate(vm_id=vm, request_id=r, now=4)


def test_the_database_itself_refuses_a_second_holder(store):
    vm = ready_vm(store)
    r1 = store.create_request(pool="p", user="alice", now=3)
    r2 = store.create_request(pool="p", user="bob", now=3)
    assert store.allocate(vm_id=vm, request_id=r1, now=4)
    with pytest.raises(IntegrityError), store.session() as s:
        s.add(Allocation(request_id=r2, vm_id=vm, active_vm=vm, user="bob", at=5))


def test_concurrent_allocations_of_one_vm_give_it_to_one_user(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    store = open_store(url)
    vms = [ready_vm(store, cid=f"i-{i}") for i in range(5)]
    reqs = [store.create_request(pool="p", user=f"u{i}", now=3) for i in range(10)]
    results: list[tuple[str, str, bool]] = []

    def worker(k: int) -> None:
        s = open_store(url, migrate_schema=False)
        for vm in vms:
            results.append((vm, reqs[k], s.allocate(vm_id=vm, request_id=reqs[k], now=4)))
        s.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [(vm, r) for vm, r, ok in results if ok]
    assert sorted(vm for vm, _ in won) == sorted(vms)  # each VM once
    assert len({r for _, r in won}) == len(won)  # each request at most once
    holders = {a.vm_id: a.user for a in store.allocations()}
    assert len(holders) == 5
    store.close()


def test_release_ends_the_allocation_and_reclaims_the_vm(store):
    vm = ready_vm(store)
    r = store.create_request(pool="p", user="alice", now=3)
    assert store.allocate(vm_id=vm, request_id=r, now=4)
    assert store.release(r, now=10)
    assert not store.release(r, now=11)  # twice is harmless
    assert store.request(r).state == "released"
    assert store.vm(vm).state == "reclaiming"
    (alloc,) = store.allocations()
    assert alloc.active_vm is None and alloc.ended_at == 10
    pending = store.create_request(pool="p", user="bob", now=12)
    assert store.release(pending, now=13) and store.request(pending).state == "cancelled"


def test_a_provider_may_reuse_the_id_of_a_gone_vm(store):
    a = ready_vm(store, cid="node-1")
    b = store.intend_launch(pool="p", cloud="c", now=9)
    with pytest.raises(IntegrityError):  # two live rows for one cloud VM: never
        store.move(b, "booting", now=10, cloud_id="node-1")
    store.move(a, "gone", now=11)
    assert store.move(b, "booting", now=12, cloud_id="node-1")


def test_heartbeats_and_leak_sightings(store):
    vm = ready_vm(store)
    assert store.heartbeat(vm, now=5, cpu_percent=50, io_bytes_per_s=0, last_input_at=4, busy=True)
    row = store.vm(vm)
    assert (row.cpu_percent, row.last_input_at, row.last_busy_at) == (50, 4, 5)
    assert not store.heartbeat("vm-nope", now=5, cpu_percent=0, io_bytes_per_s=0, last_input_at=None, busy=False)
    assert store.sight_unknown("c", ["x", "y"], now=1) == {"x": 1, "y": 1}
    assert store.sight_unknown("c", ["x"], now=2) == {"x": 2}
    assert store.sight_unknown("c", ["y"], now=3) == {"y": 1}  # y went away in between: starts again
