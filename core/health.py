"""Cloud health: a verdict per cloud from recent API errors, boot failures and boot latency, and a
backoff state machine (ok -> backoff -> probing -> ok, or back to a longer backoff).

A cloud that fails or slows down is backed off: no launches there, and what it held in reserve is
rebuilt elsewhere. When its backoff ends one probe VM is launched; a good boot brings it back.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from core.census import Census, take_census
from core.config import CloudConfig, Config, HealthConfig
from core.snapshot import CloudObservation, Snapshot

OK, BACKOFF, PROBING = "ok", "backoff", "probing"
GOOD, FAILING, SLOW = "good", "failing", "slow"


@dataclass(frozen=True)
class CloudHealth:
    """The policy's memory of one cloud between passes."""

    status: str = OK
    since: float = float("-inf")  # when the status last changed; evidence before it is old news
    backoff_s: float = 0.0
    until: float = float("-inf")  # end of the current backoff
    probe_sent: bool = False
    verdict: str = GOOD
    probe_at: float = float("-inf")  # when the probe launch was sent


FRESH = CloudHealth()  # a cloud the policy has no memory of yet (one shared instance: it is immutable)


@dataclass(frozen=True)
class HealthChange:
    """A note for the event log: the policy's view of a cloud changed."""

    cloud: str
    status: str
    verdict: str
    backoff_s: float


def judge_cloud(obs: CloudObservation, cloud: CloudConfig, booting_ages: list[float], *, now: float,
                since: float, cfg: HealthConfig, strict: bool = False) -> tuple[str, int]:
    """(GOOD, FAILING or SLOW, good boots seen) from the evidence newer than the window and `since`.

    `strict` (while probing) makes a single failed call or boot a failure.
    """
    start = max(now - cfg.window_s, since)
    calls = errors = boot_failures = slow = fast = 0
    limit = cfg.slow_factor * cloud.expected_boot_s
    for s in obs.samples:
        if s.at < start:
            continue
        if s.kind == "api":
            calls += 1
            errors += not s.ok
        elif not s.ok:
            boot_failures += 1
        elif s.duration_s > limit:
            slow += 1
        else:
            fast += 1
    if strict and (errors or boot_failures):
        return FAILING, fast
    if calls >= cfg.min_calls and errors / calls > cfg.max_error_rate:
        return FAILING, fast
    if boot_failures > cfg.max_boot_failures or (boot_failures and boot_failures > fast):
        return FAILING, fast
    slow += sum(1 for age in booting_ages if age > limit)
    if slow and slow >= fast:
        return SLOW, fast
    return GOOD, fast


def update_health(snapshot: Snapshot, config: Config, memory: dict[str, CloudHealth], *,
                  census: Census | None = None) -> tuple[dict[str, CloudHealth], list[HealthChange]]:
    """Advance each cloud's backoff state machine by one pass (`census`: the snapshot's, if taken)."""
    now, cfg = snapshot.now, config.policy.health
    since = (census if census is not None else take_census(snapshot)).booting_since
    booting = {cloud: [now - t for t in created] for cloud, created in since.items()}
    out: dict[str, CloudHealth] = {}
    changes: list[HealthChange] = []
    for cloud in config.clouds:
        h = memory.get(cloud.name, FRESH)
        verdict, good_boots = judge_cloud(snapshot.observation(cloud.name), cloud,
                                          booting.get(cloud.name, []), now=now, since=h.since, cfg=cfg,
                                          strict=h.status == PROBING)
        new = _step(h, verdict, good_boots, now, cfg, config.policy.boot_timeout_s)
        if new.status != h.status:
            changes.append(HealthChange(cloud.name, new.status, verdict, new.backoff_s))
        out[cloud.name] = new
    return out, changes


def _step(h: CloudHealth, verdict: str, good_boots: int, now: float, cfg: HealthConfig,
          boot_timeout_s: float) -> CloudHealth:
    if h.status == OK:
        if verdict == GOOD:
            return replace(h, verdict=verdict) if h.verdict != verdict else h
        return CloudHealth(BACKOFF, now, cfg.backoff_initial_s, now + cfg.backoff_initial_s, False, verdict)
    if h.status == BACKOFF:
        if now >= h.until:
            return CloudHealth(PROBING, now, h.backoff_s, h.until, False, verdict)
        return h
    # PROBING: only evidence since the probe began counts (judge_cloud was given `since`).
    if verdict == GOOD and not good_boots and probe_timed_out(h, now, boot_timeout_s):
        verdict = FAILING  # the probe vanished without a word (e.g. a launch never confirmed): it failed
    if verdict != GOOD:
        backoff = min(cfg.backoff_max_s, h.backoff_s * cfg.backoff_growth)
        return CloudHealth(BACKOFF, now, backoff, now + backoff, False, verdict)
    if good_boots:
        return CloudHealth(OK, now, 0.0, float("-inf"), False, GOOD)
    return h


def probe_timed_out(h: CloudHealth, now: float, boot_timeout_s: float) -> bool:
    """Whether a probe sent has had a boot's whole timeout to prove the cloud, without any outcome."""
    return h.status == PROBING and h.probe_sent and now >= h.probe_at + boot_timeout_s


def usable(h: CloudHealth) -> bool:
    """May ordinary launches go to this cloud?"""
    return h.status == OK
