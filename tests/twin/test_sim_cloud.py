"""SimCloud: the simulated cloud behind the twin (quota, outages, slow periods, determinism)."""
from __future__ import annotations

import random
import statistics

import pytest
import simpy

from core.ports import CloudError, CloudVmState
from twin.cloud import DOWN, ERRORS, SLOW, Outage, SimCloud, SimCloudSpec


def _cloud(spec: SimCloudSpec, seed: int = 1):
    env = simpy.Environment()
    heard: list[tuple[float, str, str | None]] = []
    cloud = SimCloud(env, spec, random.Random(seed), listener=lambda k, v: heard.append((env.now, k, v)))
    return env, cloud, heard


def _launch(cloud: SimCloud, n: int) -> list[str]:
    return [cloud.launch(pool="p", tags={"daaas-pool": "p"}) for _ in range(n)]


def test_boots_finish_and_are_heard():
    env, cloud, heard = _cloud(SimCloudSpec("c", boot_failure_rate=0.0))
    ids = _launch(cloud, 3)
    assert {v.state for v in cloud.list_vms()} == {CloudVmState.PENDING}
    env.run(until=3600)
    assert sorted(v for _, k, v in heard if k == "running") == sorted(ids)
    assert {v.state for v in cloud.list_vms()} == {CloudVmState.RUNNING}
    assert all(v.tags == {"daaas-pool": "p"} for v in cloud.list_vms())


def test_quota_refusal_and_terminate_frees_it():
    env, cloud, _ = _cloud(SimCloudSpec("c", quota=2))
    a, _b = _launch(cloud, 2)
    with pytest.raises(CloudError) as e:
        cloud.launch(pool="p", tags={})
    assert e.value.quota is True
    cloud.terminate(vm_id=a)
    _launch(cloud, 1)  # room again
    with pytest.raises(CloudError):
        cloud.launch(pool="p", tags={})


def test_failed_boots_free_quota():
    env, cloud, heard = _cloud(SimCloudSpec("c", quota=1, boot_failure_rate=1.0))
    _launch(cloud, 1)
    env.run(until=3600)
    assert [k for _, k, _ in heard] == ["boot_failed"]
    _launch(cloud, 1)  # the failed VM no longer counts against the quota


def test_outage_loses_running_vms_and_refuses_calls_until_it_ends():
    env, cloud, heard = _cloud(SimCloudSpec("c", boot_failure_rate=0.0,
                                            outages=(Outage(1000.0, 2000.0, DOWN),)))
    ids = _launch(cloud, 3)
    env.run(until=1500)
    assert cloud.mode == DOWN
    lost = [v for t, k, v in heard if k == "lost"]
    assert sorted(lost) == sorted(ids) and all(t == 1000.0 for t, k, _ in heard if k in ("lost", "down"))
    for call in (lambda: cloud.launch(pool="p", tags={}), cloud.list_vms, lambda: cloud.terminate(vm_id=ids[0])):
        with pytest.raises(CloudError) as e:
            call()
        assert e.value.quota is False
    env.run(until=2500)
    assert cloud.mode is None and ("up" in [k for _, k, _ in heard])
    assert cloud.list_vms() == []
    _launch(cloud, 1)


def test_a_boot_in_flight_when_the_cloud_goes_down_is_lost():
    env, cloud, heard = _cloud(SimCloudSpec("c", boot_median_s=500.0, boot_sigma=0.0, boot_failure_rate=0.0,
                                            outages=(Outage(100.0, 200.0, DOWN),)))
    (vm,) = _launch(cloud, 1)
    env.run(until=1000)
    assert (100.0, "lost", vm) in heard and not [k for _, k, _ in heard if k == "running"]


def _boot_times(spec: SimCloudSpec, start: float, n: int = 200) -> list[float]:
    env, cloud, heard = _cloud(spec, seed=3)
    env.run(until=start)
    launched = {vid: env.now for vid in _launch(cloud, n)}
    env.run(until=start + 100_000)
    return [t - launched[v] for t, k, v in heard if k == "running"]


def test_slow_mode_multiplies_boot_times():
    base = SimCloudSpec("c", quota=1000, boot_median_s=100.0, boot_failure_rate=0.0)
    slow = SimCloudSpec("c", quota=1000, boot_median_s=100.0, boot_failure_rate=0.0,
                        outages=(Outage(0.0, 50_000.0, SLOW, factor=4.0),))
    normal, slowed = _boot_times(base, 10.0), _boot_times(slow, 10.0)
    # Same seed, same draws: each boot is exactly `factor` times longer.
    assert slowed == pytest.approx([4.0 * b for b in normal])
    assert 80 < statistics.median(normal) < 125


def test_errors_mode_fails_calls_at_its_rate():
    env, cloud, _ = _cloud(SimCloudSpec("c", quota=10_000, outages=(Outage(0.0, 1e9, ERRORS, error_rate=0.5),)))
    env.run(until=1)
    fails = 0
    for _ in range(1000):
        try:
            cloud.launch(pool="p", tags={})
        except CloudError as e:
            assert not e.quota
            fails += 1
    assert 400 < fails < 600


def test_deterministic_for_a_seed():
    spec = SimCloudSpec("c", boot_failure_rate=0.2, api_error_rate=0.1)

    def trace(seed: int) -> list:
        env, cloud, heard = _cloud(spec, seed)
        results = []
        for _ in range(50):
            try:
                results.append(cloud.launch(pool="p", tags={}))
            except CloudError as e:
                results.append(str(e))
        env.run(until=10_000)
        return results + heard

    assert trace(5) == trace(5)
    assert trace(5) != trace(6)
