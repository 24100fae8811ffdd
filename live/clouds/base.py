"""`LibcloudCloud`: the core's `Cloud` port over an Apache libcloud driver, shared by every provider.

What every provider shares lives here once (Nodepool's split): the owner tags on every VM daaas
creates, node names (`daaas-<pool>-<vm id>`), ONE list call per `list_vms` filtered to this
installation's owner id, the translation of provider states (`STATE_MAP`, libcloud's NodeState ->
CloudVmState, UNKNOWN for anything else) and of errors (libcloud exceptions, refused connections and
timeouts -> `CloudError`; quota refusals -> `CloudError(quota=True)`), and a record of each call's
outcome and latency (`calls`, and an optional `on_call(call, ok, seconds)` hook).

A provider adapter (live.clouds.ec2, live.clouds.openstack) overrides only what differs: how a node is
created with tags, how the list is fetched and read, and which errors mean "already gone" or "quota".
Adapters never sleep, retry or loop: the VMM drives them, one call at a time.
"""
from __future__ import annotations

import gc
import re
import time
import uuid
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import requests
from libcloud.common.exceptions import BaseHTTPError, RateLimitReachedError
from libcloud.common.types import InvalidCredsError, LibcloudError
from libcloud.compute.base import Node, NodeDriver, NodeImage, NodeSize
from libcloud.compute.types import NodeState

from core.ports import OWNER_TAG, VM_TAG, CloudError, CloudVm, CloudVmState

# libcloud's provider-neutral NodeState -> the port's CloudVmState. A VM that is rebooting, resizing or
# migrating still exists and still holds its user's session, so it counts as running.
STATE_MAP: Mapping[str, CloudVmState] = {
    NodeState.PENDING: CloudVmState.PENDING,
    NodeState.STARTING: CloudVmState.PENDING,
    NodeState.RUNNING: CloudVmState.RUNNING,
    NodeState.REBOOTING: CloudVmState.RUNNING,
    NodeState.RECONFIGURING: CloudVmState.RUNNING,
    NodeState.MIGRATING: CloudVmState.RUNNING,
    NodeState.UPDATING: CloudVmState.RUNNING,
    NodeState.NORMAL: CloudVmState.RUNNING,
    NodeState.STOPPING: CloudVmState.STOPPED,
    NodeState.STOPPED: CloudVmState.STOPPED,
    NodeState.SUSPENDED: CloudVmState.STOPPED,
    NodeState.PAUSED: CloudVmState.STOPPED,
    NodeState.TERMINATED: CloudVmState.TERMINATED,
    NodeState.ERROR: CloudVmState.ERROR,
}

DEFAULT_TIMEOUT_S = 10.0  # a cloud that does not answer within this is down for this pass

# Error codes and phrases that mean "no quota left" (fail over, don't back off). EC2's
# RequestLimitExceeded is throttling, not quota, hence the explicit list rather than "LimitExceeded".
QUOTA_MARKERS = ("instancelimitexceeded", "vcpulimitexceeded", "maxspotinstancecountexceeded",
                 "resourcelimitexceeded", "insufficientinstancecapacity", "quota")


# What a provider call may raise besides programming errors: libcloud's errors, HTTP errors, refused
# connections and timeouts (requests' errors are OSErrors), and malformed answers.
PROVIDER_ERRORS = (LibcloudError, BaseHTTPError, OSError, ValueError, KeyError, ET.ParseError)


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a listing is parsed. Parsing thousands of VMs allocates
    hundreds of thousands of tree nodes, which triggers collections that each walk the whole heap: on
    2,000 VMs they were a third to half of the listing's CPU time. Nothing cyclic is created meanwhile;
    the collector runs as usual afterwards."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def translate_state(state: Any) -> CloudVmState:
    """A libcloud NodeState (or its string) as the port's state; UNKNOWN for anything unmapped."""
    return STATE_MAP.get(state, CloudVmState.UNKNOWN)


def node_name(pool: str, vm_id: str) -> str:
    """`daaas-<pool>-<vm id>`, with characters clouds refuse in names replaced by '-'."""
    return re.sub(r"[^A-Za-z0-9.-]", "-", f"daaas-{pool}-{vm_id}")[:63]


def parse_time(text: str | None) -> float | None:
    """An ISO 8601 time from a provider (EC2 launchTime, Nova `created`) as Unix seconds, or None."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None  # a provider's odd time format must not fail a whole listing


class Secret:
    """A credential: its repr and str are '***', so it cannot leak through logs, errors or reprs."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        """The value itself, for the one place that needs it: the driver's constructor."""
        return self._value

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class CloudSpec:
    """One cloud as the config file describes it, already validated (see live.clouds.config)."""

    name: str
    provider: str
    region: str
    image: str
    size: str
    endpoint: str | None = None
    credentials: Mapping[str, Secret] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    timeout_s: float = DEFAULT_TIMEOUT_S

    def secret(self, key: str) -> str | None:
        s = self.credentials.get(key)
        return None if s is None else s.reveal()


@dataclass(frozen=True)
class CallRecord:
    """One port call: which (launch, terminate, list), whether it worked, its latency and HTTP requests."""

    call: str
    ok: bool
    seconds: float
    requests: int
    error: str | None = None


OnCall = Callable[[str, bool, float], None]


class LibcloudCloud:
    """The `Cloud` port over one libcloud driver; see the module docstring.

    `driver` is a libcloud driver, or a factory called at the first call (building an adapter then makes
    no network call whatever the provider). `image` and `size` are provider ids, used without a lookup
    call. `secrets` are scrubbed from every error message. `calls` keeps the last `keep_calls` records.
    """

    tags_argument = "ex_metadata"  # create_node's keyword for tags (EC2 tags, Nova metadata)
    tags_extra = "metadata"  # where a listed node's extra holds them

    def __init__(self, *, name: str, owner_id: str, driver: NodeDriver | Callable[[], NodeDriver], image: str,
                 size: str, secrets: Iterable[str] = (), on_call: OnCall | None = None,
                 create_args: Mapping[str, Any] | None = None, keep_calls: int = 1000):
        if not owner_id:
            raise ValueError("owner_id: required (it tags every VM daaas creates)")
        self.name = name
        self.owner_id = owner_id
        self._driver = driver if isinstance(driver, NodeDriver) else None
        self._make_driver = None if isinstance(driver, NodeDriver) else driver
        self.image, self.size = image, size
        self.on_call = on_call
        self.calls: deque[CallRecord] = deque(maxlen=keep_calls)
        self.requests = 0  # HTTP requests to the compute API (identity tokens are fetched apart)
        self._create_args = dict(create_args or {})
        self._secrets = tuple(s for s in secrets if s)
        if self._driver is not None:
            self._count_requests()

    @property
    def driver(self) -> NodeDriver:
        """The libcloud driver; built on first use when given as a factory (some drivers, e.g. GCE's and
        Azure's, fetch a token when built: that happens inside a call, so its failure is a CloudError)."""
        if self._driver is None:
            self._driver = self._make_driver()
            self._count_requests()
        return self._driver

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} owner={self.owner_id!r}>"

    # -- the Cloud port -------------------------------------------------------------------------------
    def launch(self, *, pool: str, tags: Mapping[str, str]) -> str:
        if tags.get(OWNER_TAG, self.owner_id) != self.owner_id:
            raise ValueError(f"{self.name}: {OWNER_TAG}={tags[OWNER_TAG]!r} is not this adapter's owner id")
        tags = {str(k): str(v) for k, v in tags.items()} | {OWNER_TAG: self.owner_id}
        vm_id = tags.get(VM_TAG) or uuid.uuid4().hex[:12]
        return self._call("launch", lambda: self._create(node_name(pool, vm_id), tags))

    def terminate(self, *, vm_id: str) -> None:
        self._call("terminate", lambda: self._terminate(vm_id))

    def list_vms(self) -> Sequence[CloudVm]:
        owner = self.owner_id
        with gc_paused():
            return self._call("list", lambda: [v for v in self._list() if v.tags.get(OWNER_TAG) == owner])

    # -- what a provider may override -----------------------------------------------------------------
    def _create(self, name: str, tags: Mapping[str, str]) -> str:
        node = self.driver.create_node(name=name, size=self._size(), image=self._image(),
                                       **{self.tags_argument: dict(tags)}, **self._create_args)
        return node.id

    def _terminate(self, vm_id: str) -> None:
        try:
            self.driver.destroy_node(Node(vm_id, None, None, [], [], self.driver))
        except Exception as e:
            if not self._is_gone(e):
                raise

    def _list(self) -> Iterable[CloudVm]:
        """Every VM the account holds, in one list request (the base filters to our owner id)."""
        for n in self.driver.list_nodes():
            tags = n.extra.get(self.tags_extra) or {}
            yield CloudVm(id=n.id, state=translate_state(n.state), tags=dict(tags),
                          created_at=_created(n))

    def _is_gone(self, e: Exception) -> bool:
        """Whether a terminate failed only because the VM no longer exists (that is not an error)."""
        return isinstance(e, BaseHTTPError) and e.code == 404

    def _image(self) -> NodeImage:
        return NodeImage(self.image, None, self.driver)

    def _size(self) -> NodeSize:
        return NodeSize(self.size, None, None, None, None, None, self.driver)

    # -- calls: measured, errors translated -----------------------------------------------------------
    def _call(self, call: str, fn: Callable[[], Any]) -> Any:
        t0, n0 = time.perf_counter(), self.requests
        try:
            result = fn()
        except PROVIDER_ERRORS as e:
            err = self.translate_error(e)
            self._record(CallRecord(call, False, time.perf_counter() - t0, self.requests - n0, str(err)))
            raise err from None
        self._record(CallRecord(call, True, time.perf_counter() - t0, self.requests - n0))
        return result

    def _record(self, rec: CallRecord) -> None:
        self.calls.append(rec)
        if self.on_call is not None:
            self.on_call(rec.call, rec.ok, rec.seconds)

    def translate_error(self, e: Exception) -> CloudError:
        """Any exception of a provider call as a CloudError naming this cloud, with secrets scrubbed."""
        if isinstance(e, CloudError):
            return e
        detail = _describe(e)
        code = getattr(e, "code", None)
        if isinstance(e, BaseHTTPError) and code is not None and str(code) not in detail:
            detail = f"HTTP {code} {detail}"
        for s in self._secrets:
            detail = detail.replace(s, "***")
        quota = self._is_quota(e, detail)
        transient = not isinstance(e, InvalidCredsError) and not (isinstance(e, BaseHTTPError) and code in (401, 403)
                                                                  and not quota)
        kind = "" if isinstance(e, (BaseHTTPError, LibcloudError, RateLimitReachedError)) else f"{type(e).__name__}: "
        return CloudError(f"{self.name}: {kind}{detail}"[:500], quota=quota, transient=transient)

    def _is_quota(self, e: Exception, detail: str) -> bool:
        if isinstance(e, RateLimitReachedError):
            return False  # throttled: back off, the quota is not the problem
        low = detail.lower()
        return any(m in low for m in QUOTA_MARKERS)

    def _count_requests(self) -> None:
        # Count requests at the driver's connection, so tests and the benchmark can check that a list
        # is one request however many VMs there are.
        conn = self.driver.connection
        request = conn.request

        def counted(*args, **kwargs):
            self.requests += 1
            return request(*args, **kwargs)

        conn.request = counted


def _describe(e: Exception) -> str:
    """An exception's text, short: for requests' errors the underlying reason (refused, timed out)
    rather than the retry wrapper's URL; query strings dropped (a SigV2 request carries its signature)."""
    reason = e
    if isinstance(e, requests.RequestException) and e.args:
        reason = getattr(e.args[0], "reason", None) or e.args[0]
    text = str(reason) or type(e).__name__
    return re.sub(r"\?[^\s'\"()]*", "", text)


def _created(node: Node) -> float | None:
    extra = node.extra or {}
    return parse_time(extra.get("created") or extra.get("launch_time") or extra.get("launchTime"))
