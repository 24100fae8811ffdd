"""Placement: which cloud gets each launch, by priority, cost, quota headroom, health and nearness
to where the pool's users are."""
from __future__ import annotations

from collections.abc import Iterable

from core.config import CloudConfig, Config, PolicyConfig, PoolConfig


def latency_ms(location: str, region: str, policy: PolicyConfig) -> float:
    """The expected latency from a user location to a cloud region."""
    for loc, reg, ms in policy.latency_ms:
        if loc == location and reg == region:
            return ms
    return 0.0 if location == region else policy.remote_latency_ms


def nearness_cost(pool: PoolConfig, cloud: CloudConfig, policy: PolicyConfig,
                  locations: Iterable[tuple[str, float]] | None = None) -> float:
    """The pool's users' mean latency to the cloud, in cost units."""
    locs = tuple(locations) if locations is not None else pool.user_locations
    if not locs:
        return 0.0
    total = sum(w for _, w in locs) or 1.0
    return policy.latency_weight * sum(w * latency_ms(loc, cloud.region, policy) for loc, w in locs) / total


def rank_clouds(pool: PoolConfig, config: Config, allowed: set[str],
                locations: Iterable[tuple[str, float]] | None = None) -> list[CloudConfig]:
    """The clouds `pool` may use among `allowed`, best first: priority, then cost plus nearness."""
    locs = tuple(locations) if locations is not None else None
    clouds = [c for c in config.clouds if c.name in allowed and (not pool.clouds or c.name in pool.clouds)]
    return sorted(clouds, key=lambda c: (c.priority,
                                         c.cost_per_vm_hour + nearness_cost(pool, c, config.policy, locs),
                                         c.name))


def rank_for_waiting(pool: PoolConfig, config: Config, allowed: set[str],
                     locations: Iterable[tuple[str, float]] | None = None) -> list[CloudConfig]:
    """The clouds `pool` may use among `allowed` for a VM a user is waiting for: fastest boot first,
    then as `rank_clouds` (a waiting scientist's minutes are worth more than the price difference)."""
    by_rank = {c.name: i for i, c in enumerate(rank_clouds(pool, config, allowed, locations))}
    return sorted((c for c in config.clouds if c.name in by_rank), key=lambda c: (c.expected_boot_s, by_rank[c.name]))


def place_urgent(pool: PoolConfig, count: int, config: Config, allowed: set[str], headroom: dict[str, int],
                 locations: Iterable[tuple[str, float]] | None = None) -> list[str]:
    """Pick a cloud for each of `count` launches users wait for: the fastest-booting cloud with quota
    left; `headroom` is updated."""
    out: list[str] = []
    ranked = rank_for_waiting(pool, config, allowed, locations) if count > 0 else []
    for _ in range(count):
        pick = next((c for c in ranked if headroom.get(c.name, 0) > 0), None)
        if pick is None:
            break
        headroom[pick.name] -= 1
        out.append(pick.name)
    return out


def place_launches(pool: PoolConfig, count: int, config: Config, allowed: set[str],
                   headroom: dict[str, int], locations: Iterable[tuple[str, float]] | None = None
                   ) -> list[str]:
    """Pick a cloud for each of `count` launches; `headroom` (quota left per cloud) is updated.

    Clouds of equal priority share launches (the one with the most headroom left goes next), so the
    load of a backed-off cloud spreads over the others instead of piling on one.
    """
    if count <= 0:
        return []
    ranked = rank_clouds(pool, config, allowed, locations)
    out: list[str] = []
    for _ in range(count):
        candidates = [c for c in ranked if headroom.get(c.name, 0) > 0]
        if not candidates:
            break
        best = candidates[0].priority
        tier = [c for c in candidates if c.priority == best]
        pick = tier[0] if len(tier) == 1 else _spread(tier, headroom, pool, config, locations)
        headroom[pick.name] -= 1
        out.append(pick.name)
    return out


def _spread(tier: list[CloudConfig], headroom: dict[str, int], pool: PoolConfig, config: Config,
            locations: Iterable[tuple[str, float]] | None) -> CloudConfig:
    # Cheapest-and-nearest first, but a cloud whose score is within 10% of the best shares the load
    # by headroom: that keeps cost down without putting the whole reserve on one cloud.
    locs = tuple(locations) if locations is not None else None
    scores = {c.name: c.cost_per_vm_hour + nearness_cost(pool, c, config.policy, locs) for c in tier}
    best = min(scores.values())
    close = [c for c in tier if scores[c.name] <= best * 1.1 + 1e-9]
    return max(close, key=lambda c: (headroom[c.name], -scores[c.name]))
