"""One contract, every adapter of the core's `Cloud` port: EC2 on moto, OpenStack on mimic, and the
twin's SimCloud (driven by a tiny wrapper that advances its SimPy clock), held to the same tests.

Contract: launch returns an id at once; the VM is listed with our tags, pending or running; it becomes
running; terminate makes it vanish or show terminated, and terminating again (or an id never seen) is
fine; another installation's VMs are not listed; an unreachable cloud raises CloudError; a listing is
ONE request whatever the number of VMs.

Then the libcloud adapters' own edges: a cloud that accepts connections but never answers times out
into a CloudError, errors are translated (quota, credentials, throttling) with secrets scrubbed, node
names, and the on_call hook.
"""
from __future__ import annotations

import random
import socket
import time
import uuid
from collections.abc import Callable

import libcloud.http
import pytest
import simpy
from libcloud.common.exceptions import BaseHTTPError, RateLimitReachedError
from libcloud.common.types import InvalidCredsError

from core.ports import IMAGE_TAG, OWNER_TAG, POOL_TAG, VM_TAG, Cloud, CloudError, CloudVmState
from live.clouds.base import STATE_MAP, Secret, node_name, translate_state
from tests.live import servers as srv
from twin.cloud import DOWN, Outage, SimCloud, SimCloudSpec

ALIVE = (CloudVmState.PENDING, CloudVmState.RUNNING)


class DrivenSimCloud:
    """SimCloud as a contract subject: the port's calls go straight through, and `advance` runs its
    SimPy environment forward, which is how boots finish (the twin's processes do that in a run)."""

    def __init__(self, env: simpy.Environment, cloud: SimCloud):
        self.env, self.cloud, self.name = env, cloud, cloud.name

    @property
    def calls(self) -> int:
        return self.cloud.api_calls  # the port's calls: a SimCloud has no HTTP to count

    def launch(self, *, pool, tags):
        return self.cloud.launch(pool=pool, tags=tags)

    def terminate(self, *, vm_id):
        self.cloud.terminate(vm_id=vm_id)

    def list_vms(self):
        return self.cloud.list_vms()

    def advance(self, seconds: float) -> None:
        self.env.run(until=self.env.now + seconds)


class Harness:
    """What the contract needs from each kind of cloud, beyond the port itself."""

    def __init__(self, kind: str, cloud: Cloud, other: Cloud, unreachable: Callable[[], Cloud],
                 settle: Callable[[], None], requests: Callable[[], int], unknown_id: str, owner_id: str):
        self.kind, self.cloud, self.other, self.unreachable = kind, cloud, other, unreachable
        self.settle, self.requests, self.unknown_id, self.owner_id = settle, requests, unknown_id, owner_id

    def tags(self, vm: str | None = None) -> dict[str, str]:
        return {OWNER_TAG: self.owner_id, POOL_TAG: "mantid", VM_TAG: vm or uuid.uuid4().hex[:10], IMAGE_TAG: "7"}

    def wait_for(self, cond, what: str, timeout_s: float = 30.0):
        deadline = time.monotonic() + timeout_s
        while True:
            self.settle()
            vms = {v.id: v for v in self.cloud.list_vms()}
            if cond(vms):
                return vms
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.kind}: {what} within {timeout_s:g} s; listed {vms}")
            time.sleep(0.2)


@pytest.fixture
def http_requests(monkeypatch):
    """Counts every HTTP request libcloud sends, at its lowest layer (identity requests included)."""
    count = [0]
    original = libcloud.http.LibcloudConnection.request

    def request(self, *args, **kwargs):
        count[0] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(libcloud.http.LibcloudConnection, "request", request)
    return lambda: count[0]


def _closed_port() -> int:
    return srv.free_port()  # nothing listens there once the probe socket is closed


@pytest.fixture(params=["ec2-moto", "openstack-mimic", "simcloud"])
def harness(request, http_requests):
    owner = f"contract-{uuid.uuid4().hex[:8]}"
    if request.param == "ec2-moto":
        lc = request.getfixturevalue("moto_cloud_a")
        dead = srv.Server("moto", _closed_port(), lc.server.workdir, [])
        return Harness("ec2", lc.adapter_for(owner), lc.adapter_for(owner + "-other"),
                       lambda: srv.moto_adapter(dead, name="dead", owner_id=owner, image=srv.moto_image(lc.server)),
                       lambda: None, http_requests, "i-0123456789abcdef0", owner)
    if request.param == "openstack-mimic":
        lc = request.getfixturevalue("mimic_cloud")
        dead = srv.Server("mimic", _closed_port(), lc.server.workdir, [])
        image, size = srv.mimic_image_and_size(lc.server)
        return Harness("openstack", lc.adapter_for(owner), lc.adapter_for(owner + "-other"),
                       lambda: srv.mimic_adapter(dead, name="dead", owner_id=owner, image=image, size=size),
                       lambda: None, http_requests, "no-such-server", owner)
    env = simpy.Environment()
    spec = SimCloudSpec(name="sim", quota=50, boot_median_s=60.0, boot_failure_rate=0.0)
    cloud = DrivenSimCloud(env, SimCloud(env, spec, random.Random(7)))
    # A SimCloud is one installation's simulated world: another owner is another SimCloud.
    other = DrivenSimCloud(env, SimCloud(env, SimCloudSpec(name="sim-other"), random.Random(8)))
    down = SimCloudSpec(name="sim-down", outages=(Outage(0.0, 1e12, DOWN),))

    def unreachable():
        d = DrivenSimCloud(env, SimCloud(env, down, random.Random(9)))
        d.advance(1.0)  # let the outage begin
        return d
    return Harness("sim", cloud, other, unreachable, lambda: cloud.advance(600.0), lambda: cloud.calls, "sim-999",
                   owner)


# -- the contract ---------------------------------------------------------------------------------------
def test_launch_answers_at_once_and_the_vm_is_listed_with_our_tags(harness):
    tags = harness.tags()
    vm = harness.cloud.launch(pool="mantid", tags=tags)
    assert isinstance(vm, str) and vm
    listed = {v.id: v for v in harness.cloud.list_vms()}  # no settling: right after the launch
    assert vm in listed
    assert listed[vm].state in ALIVE
    assert {k: listed[vm].tags.get(k) for k in tags} == tags
    harness.cloud.terminate(vm_id=vm)


def test_the_vm_becomes_running(harness):
    vm = harness.cloud.launch(pool="mantid", tags=harness.tags())
    harness.wait_for(lambda vms: vm in vms and vms[vm].state == CloudVmState.RUNNING, "the VM runs")
    harness.cloud.terminate(vm_id=vm)


def test_terminate_removes_the_vm_and_twice_is_fine(harness):
    keep = harness.cloud.launch(pool="mantid", tags=harness.tags())
    vm = harness.cloud.launch(pool="mantid", tags=harness.tags())
    harness.cloud.terminate(vm_id=vm)
    vms = harness.wait_for(lambda vms: vm not in vms or vms[vm].state == CloudVmState.TERMINATED,
                           "the VM is gone or terminated")
    assert vms[keep].state in ALIVE  # only the one asked for
    harness.cloud.terminate(vm_id=vm)  # already gone: not an error
    harness.cloud.terminate(vm_id=harness.unknown_id)  # never existed: gone as well
    harness.cloud.terminate(vm_id=keep)


def test_vms_of_another_installation_are_not_listed(harness):
    theirs = harness.other.launch(pool="mantid", tags={POOL_TAG: "mantid", VM_TAG: "theirs"})
    ours = harness.cloud.launch(pool="mantid", tags=harness.tags())
    listed = [v.id for v in harness.cloud.list_vms()]
    assert ours in listed and theirs not in listed
    assert theirs in [v.id for v in harness.other.list_vms()]
    assert all(v.tags.get(OWNER_TAG) == harness.owner_id for v in harness.cloud.list_vms())
    harness.other.terminate(vm_id=theirs)
    harness.cloud.terminate(vm_id=ours)


def test_an_unreachable_cloud_raises_cloud_error(harness):
    dead = harness.unreachable()
    with pytest.raises(CloudError) as e:
        dead.list_vms()
    if harness.kind != "sim":  # the reason, not the URL of the request
        assert "Connection refused" in str(e.value) and "Action=" not in str(e.value)
    with pytest.raises(CloudError):
        dead.launch(pool="mantid", tags=harness.tags())
    with pytest.raises(CloudError):
        dead.terminate(vm_id=harness.unknown_id)


def test_a_listing_is_one_request_whatever_the_number_of_vms(harness):
    harness.cloud.list_vms()  # warm: an OpenStack token is fetched once, not per listing
    before = harness.requests()
    assert harness.cloud.list_vms() == []
    assert harness.requests() - before == 1
    vms = [harness.cloud.launch(pool="mantid", tags=harness.tags()) for _ in range(5)]
    before = harness.requests()
    assert len(harness.cloud.list_vms()) == 5
    assert harness.requests() - before == 1
    for vm in vms:
        harness.cloud.terminate(vm_id=vm)


# -- the libcloud adapters' own edges -------------------------------------------------------------------
def test_a_cloud_that_never_answers_times_out_into_cloud_error(moto_cloud_a, mimic_cloud):
    with socket.socket() as silent:  # accepts connections (the kernel's backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        mute = srv.Server("moto", port, moto_cloud_a.server.workdir, [])
        adapters = [srv.moto_adapter(mute, name="mute", owner_id="t", image="ami-x", timeout_s=0.5),
                    srv.mimic_adapter(srv.Server("mimic", port, mimic_cloud.server.workdir, []), name="mute",
                                      owner_id="t", image="i", size="s", timeout_s=0.5)]
        for a in adapters:
            with pytest.raises(CloudError, match="mute: .*timed out"):
                a.list_vms()
            assert a.calls[-1].ok is False and a.calls[-1].call == "list"


def test_node_names_and_owner_tag(moto_cloud_a, mimic_cloud):
    owner = f"names-{uuid.uuid4().hex[:6]}"
    ec2, nova = moto_cloud_a.adapter_for(owner), mimic_cloud.adapter_for(owner)
    tags = {POOL_TAG: "mantid", VM_TAG: "v42", IMAGE_TAG: "3"}
    a, b = ec2.launch(pool="mantid", tags=tags), nova.launch(pool="mantid", tags=tags)
    assert {n.name for n in ec2.driver.list_nodes(ex_node_ids=[a])} == {"daaas-mantid-v42"}
    assert {n.name for n in nova.driver.list_nodes() if n.id == b} == {"daaas-mantid-v42"}
    for cloud, vm in ((ec2, a), (nova, b)):
        (listed,) = cloud.list_vms()
        assert listed.tags[OWNER_TAG] == owner  # set by the adapter even when the caller did not
        cloud.terminate(vm_id=vm)
    with pytest.raises(ValueError, match="owner"):
        ec2.launch(pool="mantid", tags={OWNER_TAG: "someone-else"})
    assert node_name("big mem/gpu", "x1") == "daaas-big-mem-gpu-x1"


def test_on_call_hook_and_call_records(moto_cloud_a):
    seen = []
    cloud = moto_cloud_a.adapter_for(f"hook-{uuid.uuid4().hex[:6]}", on_call=lambda *a: seen.append(a))
    vm = cloud.launch(pool="mantid", tags={VM_TAG: "h1"})
    cloud.list_vms()
    cloud.terminate(vm_id=vm)
    assert [(c, ok) for c, ok, _ in seen] == [("launch", True), ("list", True), ("terminate", True)]
    assert all(s >= 0 for _, _, s in seen)
    assert [r.requests for r in cloud.calls] == [1, 1, 1]


def test_states_are_translated_with_an_unknown_fallback():
    assert translate_state("running") == CloudVmState.RUNNING
    assert translate_state("no-such-state") == CloudVmState.UNKNOWN
    assert set(STATE_MAP.values()) <= set(CloudVmState)


@pytest.mark.parametrize("error, quota, transient", [
    (BaseHTTPError(400, "InstanceLimitExceeded: You have requested more instances (21) than your current "
                        "instance limit of 20 allows"), True, True),
    (BaseHTTPError(400, "VcpuLimitExceeded: You have requested more vCPU capacity than allowed"), True, True),
    (BaseHTTPError(403, "Quota exceeded for instances: Requested 1, but already used 10 of 10 instances"),
     True, True),
    (BaseHTTPError(413, "{\"overLimit\": {\"message\": \"Quota exceeded for cores\"}}"), True, True),
    (BaseHTTPError(503, "RequestLimitExceeded: Request limit exceeded."), False, True),  # throttling
    (RateLimitReachedError(), False, True),
    (InvalidCredsError("AuthFailure: AWS was not able to validate the provided access credentials"), False, False),
    (ConnectionRefusedError(111, "Connection refused"), False, True),
    (TimeoutError("timed out"), False, True),
])
def test_errors_are_translated(moto_cloud_a, error, quota, transient):
    e = moto_cloud_a.adapter.translate_error(error)
    assert isinstance(e, CloudError)
    assert (e.quota, e.transient) == (quota, transient)
    assert str(e).startswith("moto-a: ")


def test_secrets_are_scrubbed_from_errors_and_reprs(moto_cloud_a):
    cloud = srv.Ec2Cloud.from_spec(srv.moto_spec(moto_cloud_a.server, name="s", image="ami-x"), owner_id="t")
    cloud._secrets = ("s3cr3t-value",)
    e = cloud.translate_error(BaseHTTPError(400, "SignatureDoesNotMatch for key s3cr3t-value"))
    assert "s3cr3t-value" not in str(e) and "***" in str(e)
    spec = srv.moto_spec(moto_cloud_a.server, name="s", image="ami-x")
    assert "testing" not in repr(spec) and "testing" not in repr(cloud)
    assert repr(Secret("x")) == str(Secret("x")) == "***" and f"{Secret('x')}" == "***"


class _Answer:
    def __init__(self, obj):
        self.object = obj


def test_paged_listings_are_followed(moto_cloud_a, mimic_cloud):
    """Clouds that page long answers (EC2 nextToken, Nova servers_links): a request per page, not per VM.
    moto and mimic never page, so the pages are played to the adapters' connection here."""
    import xml.etree.ElementTree as ET

    from libcloud.compute.drivers.ec2 import NAMESPACE

    def ec2_page(ids, token):
        items = "".join(f"<item><instanceId>{i}</instanceId><instanceState><code>16</code><name>running</name>"
                        f"</instanceState><tagSet><item><key>{OWNER_TAG}</key><value>pg</value></item></tagSet>"
                        f"<launchTime>2026-11-25T08:00:00.000Z</launchTime></item>" for i in ids)
        nxt = f"<nextToken>{token}</nextToken>" if token else ""
        return ET.fromstring(f'<DescribeInstancesResponse xmlns="{NAMESPACE}"><reservationSet><item>'
                             f"<instancesSet>{items}</instancesSet></item></reservationSet>{nxt}"
                             f"</DescribeInstancesResponse>")

    ec2 = moto_cloud_a.adapter_for("pg")
    sent = []
    pages = {None: ec2_page(["i-1", "i-2"], "t2"), "t2": ec2_page(["i-3"], None)}
    ec2.driver.connection.request = lambda path, params: sent.append(dict(params)) or _Answer(
        pages[params.get("NextToken")])
    vms = ec2.list_vms()
    assert [(v.id, v.state) for v in vms] == [(i, CloudVmState.RUNNING) for i in ("i-1", "i-2", "i-3")]
    assert vms[0].created_at == 1795593600.0
    assert len(sent) == 2 and sent[0]["Filter.1.Value.1"] == "pg"

    nova = mimic_cloud.adapter_for("pg")
    sent.clear()

    def server(i, status="ACTIVE", owner="pg"):
        return {"id": i, "status": status, "metadata": {OWNER_TAG: owner}, "created": "2026-11-25T08:00:00Z"}
    pages = {None: {"servers": [server("a"), server("b", "BUILD")], "servers_links": [{"rel": "next", "href": "x"}]},
             "b": {"servers": [server("c", "ERROR"), server("d", owner="else")]}}
    nova.driver.connection.request = lambda path, params: sent.append(dict(params)) or _Answer(
        pages[params.get("marker")])
    assert [(v.id, v.state) for v in nova.list_vms()] == [
        ("a", CloudVmState.RUNNING), ("b", CloudVmState.PENDING), ("c", CloudVmState.ERROR)]
    assert sent == [{}, {"marker": "b"}]
