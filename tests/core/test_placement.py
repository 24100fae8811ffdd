"""core.placement: which cloud each launch goes to. Rows of clouds in, a list of clouds out."""
from __future__ import annotations

import pytest

from core.config import CloudConfig, Config, PolicyConfig, PoolConfig
from core.placement import latency_ms, nearness_cost, place_launches, rank_clouds

POLICY = PolicyConfig(latency_weight=0.01, remote_latency_ms=80.0, latency_ms=(("us", "eu", 150.0),))


@pytest.mark.parametrize("location, region, ms", [
    ("home", "home", 0.0),
    ("home", "eu", 80.0),  # another name: the remote default
    ("us", "eu", 150.0),  # the table overrides
    ("eu", "us", 80.0),  # the table is directional
])
def test_latency_ms(location, region, ms):
    assert latency_ms(location, region, POLICY) == ms


def test_nearness_cost_is_the_users_weighted_mean_latency():
    pool = PoolConfig("p", user_locations=(("home", 3.0), ("us", 1.0)))
    assert nearness_cost(pool, CloudConfig("c", region="eu"), POLICY) == pytest.approx(0.01 * (3 * 80 + 150) / 4)
    assert nearness_cost(pool, CloudConfig("c", region="home"), POLICY) == pytest.approx(0.01 * 80 / 4)
    assert nearness_cost(PoolConfig("p"), CloudConfig("c", region="eu"), POLICY) == 0.0
    # `locations` overrides the pool's own
    assert nearness_cost(pool, CloudConfig("c", region="eu"), POLICY, [("eu", 1.0)]) == 0.0


def C(name, **kw):  # noqa: N802 - reads like a row
    return CloudConfig(name, **kw)


@pytest.mark.parametrize("case, clouds, pool, allowed, headroom, count, expected", [
    ("priority beats cost", [C("own", priority=0, cost_per_vm_hour=5.0), C("pub", priority=1)],
     PoolConfig("p"), None, None, 2, ["own", "own"]),
    ("then cost", [C("dear", cost_per_vm_hour=2.0), C("cheap", cost_per_vm_hour=1.0)],
     PoolConfig("p"), None, None, 2, ["cheap", "cheap"]),
    ("nearness to the pool's users counts with cost",
     [C("eu", region="eu", cost_per_vm_hour=1.0), C("us", region="us", cost_per_vm_hour=1.2)],
     PoolConfig("p", user_locations=(("us", 1.0),)), None, None, 1, ["us"]),
    ("but a much cheaper far cloud wins",
     [C("eu", region="eu", cost_per_vm_hour=0.1), C("us", region="us", cost_per_vm_hour=2.0)],
     PoolConfig("p", user_locations=(("us", 1.0),)), None, None, 1, ["eu"]),
    ("quota headroom: overflow to the next cloud", [C("own", priority=0), C("pub", priority=1)],
     PoolConfig("p"), None, {"own": 1, "pub": 5}, 3, ["own", "pub", "pub"]),
    ("no headroom anywhere: fewer launches", [C("own"), C("pub", priority=1)],
     PoolConfig("p"), None, {"own": 1, "pub": 0}, 3, ["own"]),
    ("a cloud not allowed (unhealthy, maintenance) gets nothing", [C("own", priority=0), C("pub", priority=1)],
     PoolConfig("p"), {"pub"}, None, 2, ["pub", "pub"]),
    ("nothing allowed: nothing", [C("own")], PoolConfig("p"), set(), None, 2, []),
    ("equal priority and cost share the load", [C("a"), C("b")], PoolConfig("p"), None, None, 4,
     ["a", "b", "a", "b"]),
    ("sharing follows headroom", [C("a"), C("b")], PoolConfig("p"), None, {"a": 2, "b": 5}, 4,
     ["b", "b", "b", "a"]),
    ("the pool's cloud list restricts", [C("a"), C("b", priority=1)], PoolConfig("p", clouds=("b",)), None,
     None, 1, ["b"]),
    ("zero launches", [C("a")], PoolConfig("p"), None, None, 0, []),
])
def test_place_launches(case, clouds, pool, allowed, headroom, count, expected):
    config = Config(pools=(pool,), clouds=tuple(clouds), policy=POLICY)
    allowed = {c.name for c in clouds} if allowed is None else allowed
    headroom = {c.name: 100 for c in clouds} if headroom is None else dict(headroom)
    before = sum(headroom.values())
    got = place_launches(pool, count, config, allowed, headroom)
    assert got == expected, case
    assert sum(headroom.values()) == before - len(got)  # headroom is spent


def test_rank_clouds_orders_by_priority_then_score_then_name():
    clouds = (C("z", priority=1), C("b", cost_per_vm_hour=1.0), C("a", cost_per_vm_hour=1.0), C("c"))
    config = Config(pools=(PoolConfig("p"),), clouds=clouds, policy=POLICY)
    assert [c.name for c in rank_clouds(PoolConfig("p"), config, {"a", "b", "c", "z"})] == ["c", "a", "b", "z"]


def test_placement_locations_override():
    clouds = (C("eu", region="eu"), C("us", region="us"))
    pool = PoolConfig("p", user_locations=(("eu", 1.0),))
    config = Config(pools=(pool,), clouds=clouds, policy=POLICY)
    assert place_launches(pool, 1, config, {"eu", "us"}, {"eu": 9, "us": 9}) == ["eu"]
    assert place_launches(pool, 1, config, {"eu", "us"}, {"eu": 9, "us": 9}, [("us", 1.0)]) == ["us"]
