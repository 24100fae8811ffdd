"""The oracle: a clairvoyant policy, in the twin only, that bounds what any policy can do.

It knows every future request and launches one VM for each exactly one boot time before it comes,
keeping no reserve at all. Its VM-hours are therefore the floor for (nearly) zero wait: sessions,
abandoned time and boots, with no idle reserve. The twin's clouds draw each boot at launch, so its
exact length cannot be known ahead: the oracle plans with a high quantile of the cloud's boot-time
distribution (`boot_quantile`, default 99.9%), so almost no user waits, and the VM is ready a little
early (planning with the median, `boot_quantile=0.5`, would make half the users wait the difference).
Everything else (sessions, abandonment, reclaims, health, failover) runs as in any twin run.
"""
from __future__ import annotations

import math
from dataclasses import replace
from statistics import NormalDist

from core.events import Event
from core.placement import rank_clouds
from twin.model import Twin, build_twin
from twin.scenario import Scenario


def oracle_twin(scenario: Scenario, *, boot_quantile: float = 0.999, **twin_kwargs) -> Twin:
    """A twin whose policy keeps no reserve and whose launches come one boot before each request."""
    # No reserve: every pool's min_ready is 0 and no sizer runs (a sizer would also make the twin pass
    # after every boot and release in case its targets followed the VMs, which these do not).
    config = replace(scenario.config, pools=tuple(replace(p, min_ready=0) for p in scenario.config.pools))
    twin = build_twin(scenario, config=config, **twin_kwargs)
    twin.set_sizer(None)  # a scenario's predictive section must not size the oracle's reserve either
    z = NormalDist().inv_cdf(boot_quantile)
    boots = {c.name: c.boot_median_s * math.exp(z * c.boot_sigma) for c in scenario.clouds}
    every = {c.name for c in scenario.config.clouds}
    for pool in scenario.config.pools:
        ranked = rank_clouds(pool, scenario.config, every, pool.user_locations)
        if not ranked:
            continue
        lead = boots[ranked[0].name]
        for pool_name, stream in twin.demand_streams().items():
            if pool_name != pool.name:
                continue
            for a in stream:
                twin.launch_at(max(0.0, a.t - lead), pool.name, reason="oracle")
    return twin


def run_oracle(scenario: Scenario, *, boot_quantile: float = 0.999, **twin_kwargs) -> list[Event]:
    """The oracle's events for `scenario`."""
    return oracle_twin(scenario, boot_quantile=boot_quantile, **twin_kwargs).run()
