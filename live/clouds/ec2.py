"""`Ec2Cloud`: EC2 and EC2-compatible endpoints (moto, and other clouds speaking the EC2 API).

Two adjustments make libcloud's EC2 driver talk to EC2-compatible servers, and both are harmless
against AWS itself (../shared/REAL-COMPONENTS.md tells how they were found with moto):
- `signature_version="4"` always: with SigV2 on us-east-1, moto takes the request for S3;
- `NamespaceNormalisingResponse`: moto answers `xmlns="http://ec2.amazonaws.com/doc/2016-11-15"`
  without the trailing slash libcloud's XPath expects (every list would come back empty), and its error
  bodies carry a namespace libcloud's error parser does not expect (the error code would be lost). The
  response body is normalised before parsing; every call still goes over HTTP.

The listing is one DescribeInstances request filtered on the server by our owner tag (libcloud's own
`list_nodes` adds a DescribeAddresses request per listing, and builds full Node objects daaas does not
need); it follows `nextToken` only when a cloud pages its answer.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from libcloud.common.exceptions import BaseHTTPError
from libcloud.compute.drivers.ec2 import NAMESPACE, EC2Connection, EC2NetworkSubnet, EC2NodeDriver, EC2Response

from core.ports import OWNER_TAG, VM_TAG, CloudVm, CloudVmState
from live.clouds.base import CloudSpec, LibcloudCloud, OnCall, parse_time

# EC2's own instance states (DescribeInstances' instanceState/name) -> the port's. shutting-down is on
# its way to terminated and can never run again.
EC2_STATE_MAP: Mapping[str, CloudVmState] = {
    "pending": CloudVmState.PENDING,
    "running": CloudVmState.RUNNING,
    "shutting-down": CloudVmState.TERMINATED,
    "terminated": CloudVmState.TERMINATED,
    "stopping": CloudVmState.STOPPED,
    "stopped": CloudVmState.STOPPED,
}
LISTED_STATES = ("pending", "running", "shutting-down", "stopping", "stopped")  # terminated ones stay listed
GONE_CODES = ("InvalidInstanceID.NotFound",)

_EC2_XMLNS = re.compile(r'xmlns="http://ec2\.amazonaws\.com/doc/[0-9-]+/?"')
_ANY_XMLNS = re.compile(r'\sxmlns="[^"]*"')


def _head_sub(pattern: re.Pattern, repl: str, body: str) -> str:
    # The namespace sits on the root element: only the head of a (possibly megabytes long) body is searched.
    head, rest = body[:512], body[512:]
    return pattern.sub(repl, head, count=1) + rest


class NamespaceNormalisingResponse(EC2Response):
    """EC2Response that accepts EC2-compatible servers' namespace spellings (see the module docstring)."""

    def parse_body(self):
        if isinstance(self.body, str) and self.body:
            self.body = _head_sub(_EC2_XMLNS, f'xmlns="{NAMESPACE}"', self.body)
        return super().parse_body()

    def parse_error(self):
        # AWS sends error bodies without a namespace, which is what libcloud's parser expects.
        if isinstance(self.body, str) and self.body:
            self.body = _head_sub(_ANY_XMLNS, "", self.body)
        return super().parse_error()


class _Connection(EC2Connection):
    responseCls = NamespaceNormalisingResponse


class _Driver(EC2NodeDriver):
    connectionCls = _Connection


def _q(tag: str) -> str:
    return f"{{{NAMESPACE}}}{tag}"


_INSTANCES = "/".join(_q(t) for t in ("reservationSet", "item", "instancesSet", "item"))
_ID, _STATE, _LAUNCH, _TAGSET = _q("instanceId"), _q("instanceState"), _q("launchTime"), _q("tagSet")
_NAME, _KEY, _VALUE, _NEXT = _q("name"), _q("key"), _q("value"), _q("nextToken")


def _instance(inst) -> CloudVm:
    """One DescribeInstances item as a CloudVm. Its children are walked once: ElementPath lookups per
    field cost more than the XML parse itself on thousands of instances."""
    vm_id = state = launched = None
    tags: dict[str, str] = {}
    for child in inst:
        tag = child.tag
        if tag == _ID:
            vm_id = child.text
        elif tag == _STATE:
            for c in child:
                if c.tag == _NAME:
                    state = c.text
        elif tag == _TAGSET:
            for item in child:
                key = value = None
                for c in item:
                    if c.tag == _KEY:
                        key = c.text
                    elif c.tag == _VALUE:
                        value = c.text
                if key is not None:
                    tags[key] = value or ""
        elif tag == _LAUNCH:
            launched = child.text
    return CloudVm(id=vm_id, state=EC2_STATE_MAP.get(state, CloudVmState.UNKNOWN), tags=tags,
                   created_at=parse_time(launched))


class Ec2Cloud(LibcloudCloud):
    """The Cloud port on EC2 or an EC2-compatible endpoint; VMs carry daaas's owner tags as EC2 tags."""

    tags_argument = "ex_metadata"  # libcloud sends these as TagSpecification at RunInstances
    tags_extra = "tags"

    @classmethod
    def from_spec(cls, spec: CloudSpec, *, owner_id: str, on_call: OnCall | None = None) -> Ec2Cloud:
        kwargs: dict[str, Any] = {"region": spec.options.get("region", spec.region), "signature_version": "4",
                                  "timeout": spec.timeout_s}
        if spec.secret("token"):
            kwargs["token"] = spec.secret("token")
        if spec.endpoint:
            u = urlsplit(spec.endpoint)
            kwargs.update(host=u.hostname, port=u.port or (443 if u.scheme == "https" else 80),
                          secure=u.scheme == "https")
        driver = _Driver(spec.secret("access_key"), spec.secret("secret_key"), **kwargs)
        if spec.endpoint and urlsplit(spec.endpoint).path not in ("", "/"):
            driver.path = urlsplit(spec.endpoint).path
        create: dict[str, Any] = {}
        o = spec.options
        if o.get("keyname"):
            create["ex_keyname"] = o["keyname"]
        if o.get("security_groups"):
            create["ex_security_groups"] = list(o["security_groups"])
        if o.get("subnet_id"):
            create["ex_subnet"] = EC2NetworkSubnet(o["subnet_id"], None, None)
        if o.get("security_group_ids"):
            create["ex_security_group_ids"] = list(o["security_group_ids"])
        return cls(name=spec.name, owner_id=owner_id, driver=driver, image=spec.image, size=spec.size,
                   secrets=[v.reveal() for v in spec.credentials.values()], on_call=on_call, create_args=create)

    def _create(self, name: str, tags: Mapping[str, str]) -> str:
        # The daaas VM id doubles as EC2's idempotency token: a launch repeated after a lost answer
        # returns the same instance instead of a second one.
        extra = {"ex_clienttoken": tags[VM_TAG][:64]} if tags.get(VM_TAG) else {}
        node = self.driver.create_node(name=name, size=self._size(), image=self._image(), ex_metadata=dict(tags),
                                       **extra, **self._create_args)
        return node.id

    def _list(self) -> Iterable[CloudVm]:
        params: dict[str, str] = {"Action": "DescribeInstances", "Filter.1.Name": f"tag:{OWNER_TAG}",
                                  "Filter.1.Value.1": self.owner_id, "Filter.2.Name": "instance-state-name"}
        for i, s in enumerate(LISTED_STATES, 1):
            params[f"Filter.2.Value.{i}"] = s
        out: list[CloudVm] = []
        while True:
            root = self.driver.connection.request(self.driver.path, params=params).object
            out.extend(_instance(inst) for inst in root.iterfind(_INSTANCES))
            token = root.findtext(_NEXT)
            if not token:
                return out
            params["NextToken"] = token

    def _is_gone(self, e: Exception) -> bool:
        return isinstance(e, BaseHTTPError) and any(c in str(e) for c in GONE_CODES)

    def ex_launch_many(self, *, pool: str, tags: Mapping[str, str], count: int) -> list[str]:
        """Bulk creation for benchmarks and tests: `count` VMs in one RunInstances (all share `tags`)."""
        tags = {str(k): str(v) for k, v in tags.items()} | {OWNER_TAG: self.owner_id}

        def go():
            nodes = self.driver.create_node(name=f"daaas-{pool}-bulk", size=self._size(), image=self._image(),
                                            ex_metadata=tags, ex_mincount=count, ex_maxcount=count)
            return [n.id for n in (nodes if isinstance(nodes, list) else [nodes])]
        return self._call("launch", go)
