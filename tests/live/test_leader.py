"""Leader election: a file lock for SQLite; a PostgreSQL advisory lock for several instances sharing a
real PostgreSQL server (Debian's, started here as the postgres user), with takeover when the leader dies."""
from __future__ import annotations

import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import simpy

from core.config import CloudConfig, Config, PolicyConfig, PoolConfig
from live.leader import FileLeader, PgLeader, leader_for
from live.store import open_store
from live.usage_log import UsageLog
from live.vmm import Vmm, VmmOptions
from twin.cloud import SimCloud, SimCloudSpec

REPO = Path(__file__).resolve().parents[2]


def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL is not installed (Debian package 'postgresql', listed in .ci/apt-packages.txt)")
    return found[-1].parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pg_url():
    """A PostgreSQL server of its own on a free loopback port; its URL. Stopped (and waited for) after."""
    bin_ = _pg_bin()
    d = Path(tempfile.mkdtemp(prefix="daaas-pg-"))
    os.chmod(d, 0o755)
    data = d / "data"
    data.mkdir()
    shutil.chown(data, "postgres", "postgres")
    as_pg = ["runuser", "-u", "postgres", "--"]
    subprocess.run(as_pg + [str(bin_ / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True)
    port = _free_port()
    subprocess.run(as_pg + [str(bin_ / "pg_ctl"), "-D", str(data), "-o",
                            f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "-l", str(data / "log"),
                            "-w", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(as_pg + [str(bin_ / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


def test_file_leader_admits_one_instance(tmp_path):
    a, b = FileLeader(tmp_path / "l.lock"), FileLeader(tmp_path / "l.lock")
    assert a.acquire() and a.acquire()
    assert not b.acquire()
    a.release()
    assert b.acquire()
    b.release()


def test_file_leader_is_freed_when_its_process_is_killed(tmp_path):
    lock = tmp_path / "l.lock"
    code = ("import sys, time; from live.leader import FileLeader; "
            f"assert FileLeader({str(lock)!r}).acquire(); print('led', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "led"
        assert not FileLeader(lock).acquire()
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert FileLeader(lock).acquire()


def test_sqlite_store_gets_a_file_leader(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    assert isinstance(leader_for(store.engine), FileLeader)
    store.close()


def _instances(url: str, tmp_path: Path, n: int):
    """`n` VMM instances (own engines, own leaders) over one PostgreSQL store and shared simulated clouds."""
    env = simpy.Environment()
    cloud = SimCloud(env, SimCloudSpec(name="a", boot_median_s=5, boot_sigma=0.01, boot_failure_rate=0),
                     random.Random(3))
    config = Config(pools=(PoolConfig(name="p", min_ready=3, max_total=10),), clouds=(CloudConfig(name="a"),),
                    policy=PolicyConfig())
    out = []
    for i in range(n):
        store = open_store(url)
        vmm = Vmm(store=store, clouds={"a": cloud}, config=config, owner_id="pg-test",
                  log=UsageLog(tmp_path / f"logs{i}", {}), options=VmmOptions())
        out.append((vmm, leader_for(store.engine)))
    return env, cloud, out


def test_exactly_one_of_two_instances_leads_and_no_deficit_is_launched_twice(pg_url, tmp_path):
    env, cloud, inst = _instances(pg_url, tmp_path, 2)
    assert all(isinstance(leader, PgLeader) for _, leader in inst)
    passes = [0, 0]
    for t in range(0, 12, 2):
        if t > env.now:
            env.run(until=t)
        leading = [leader.acquire() for _, leader in inst]
        assert sum(leading) == 1
        for i, (vmm, _) in enumerate(inst):
            if leading[i]:
                vmm.run_pass(1000.0 + t)
                passes[i] += 1
    assert sorted(passes) == [0, 6]
    launched = [v for v in cloud.list_vms()]
    assert len(launched) == 3  # the reserve once, not once per instance
    store = inst[0][0].store
    assert len(store.vms()) == 3
    # The leader dies (its session ends): the other takes over and keeps the reserve, launching nothing new.
    lead = passes.index(6)
    inst[lead][1].release()
    inst[lead][0].store.engine.dispose()
    other_vmm, other_leader = inst[1 - lead]
    assert other_leader.acquire()
    env.run(until=20)
    other_vmm.run_pass(1020.0)
    assert len(cloud.list_vms()) == 3 and {r.state for r in other_vmm.store.vms()} == {"ready"}
    for vmm, leader in inst:
        leader.release()
        vmm.store.close()


def test_a_killed_leader_process_is_taken_over(pg_url):
    code = ("import time; from live.store import open_store; from live.leader import leader_for; "
            f"l = leader_for(open_store({pg_url!r}).engine); assert l.acquire(); print('led', flush=True); "
            "time.sleep(120)")
    p = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    store = open_store(pg_url)
    leader = leader_for(store.engine)
    try:
        assert p.stdout.readline().strip() == "led"
        assert not leader.acquire()
        p.send_signal(signal.SIGKILL)
        p.wait()
        deadline = time.monotonic() + 30  # the server notices the dead session's socket close
        while not leader.acquire():
            assert time.monotonic() < deadline, "the advisory lock was not released after SIGKILL"
            time.sleep(0.1)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        leader.release()
        store.close()


def _lines_until(p: subprocess.Popen, want: str, timeout: float = 60) -> list[str]:
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([p.stdout], [], [], 0.5)
        if ready:
            line = p.stdout.readline().strip()
            if not line and p.poll() is not None:
                break
            seen.append(line)
            if line.startswith(want):
                return seen
    raise AssertionError(f"no {want!r} line; saw {seen[-5:]}; stderr: {p.stderr.read() if p.poll() else ''}")


def test_two_vmm_processes_over_postgres_and_moto(pg_url, tmp_path):
    """Two VMM processes, one PostgreSQL store, two moto clouds: one leads, the reserve is launched
    once, and when the leader is SIGKILLed the other takes over and launches nothing twice."""
    import json

    import test_reliability as rel  # the EC2 adapter, the moto server and the VMM driver

    motos = [rel.Moto(tmp_path).start(), rel.Moto(tmp_path).start()]
    procs = []
    try:
        settings = rel._write_settings(tmp_path, min_ready=3)
        data = json.loads(settings.read_text())
        data["store"] = pg_url
        settings.write_text(json.dumps(data))
        from sqlalchemy import text

        store = open_store(pg_url)
        with store.session() as s:  # a clean database for this test (the module's server is shared)
            for table in ("allocations", "requests", "users", "vm_transitions", "health_samples", "leak_candidates",
                          "vms"):
                s.execute(text(f"DELETE FROM {table}"))
        procs = [rel._spawn(settings, motos, "8,40"), rel._spawn(settings, motos, "8,40")]
        for p in procs:
            _lines_until(p, "up")
        # Whichever took the lock leads; the other only stands by.
        lead = None
        deadline = time.monotonic() + 60
        while lead is None and time.monotonic() < deadline:
            for i, p in enumerate(procs):
                if select.select([p.stdout], [], [], 0.1)[0]:
                    line = p.stdout.readline().strip()
                    if line.startswith("pass"):
                        lead = i
        assert lead is not None, "no instance leads"
        standby = procs[1 - lead]
        assert all(x == "standby" for x in _lines_until(standby, "standby")[-1:])
        _lines_until(procs[lead], "pass 4")
        time.sleep(1.0)
        launched = {i: rel._tagged_instances(m.url) for i, m in enumerate(motos)}
        assert sum(len(v) for v in launched.values()) == 3, launched  # the deficit once, not once per instance
        # The leader dies; the standby takes over within a pass of the server noticing.
        procs[lead].send_signal(signal.SIGKILL)
        procs[lead].wait()
        took_over = _lines_until(standby, "pass 3")
        assert all(x in ("standby", "pass 1", "pass 2", "pass 3") for x in took_over)
        for _ in range(3):
            store.create_request(pool="mantid", user="after", now=time.time())
        deadline = time.monotonic() + 60  # passes are slow on a loaded machine: wait for the refill
        while time.monotonic() < deadline:
            n = sum(len(rel._tagged_instances(m.url)) for m in motos)
            if n >= 6 and len(store.requests(state="assigned")) == 3:
                break
            time.sleep(0.2)
        _lines_until(standby, "pass")
        time.sleep(0.5)
        after = {i: rel._tagged_instances(m.url) for i, m in enumerate(motos)}
        assert sum(len(v) for v in after.values()) == 6  # 3 given away, 3 to refill: nothing twice
        assert len(store.requests(state="assigned")) == 3
        vms = store.vms()
        assert len(vms) == 6 and len({v.cloud_id for v in vms}) == 6
        store.close()
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            p.wait()
            p.stdout.close()
            p.stderr.close()
        for m in motos:
            m.stop()
