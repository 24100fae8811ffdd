"""`OpenStackCloud`: OpenStack Nova through libcloud's OpenStack driver; owner tags are server metadata.

The driver is libcloud's OPENSTACK provider with Keystone password auth (v2 or v3) and an explicit
service name and region, as mimic (the test server) and most deployments need:

    options: {tenant: t1, auth_version: 2.0_password, service_name: cloudServersOpenStack,
              service_region: ORD}          # service_region defaults to the cloud's `region`

The listing is one `GET /servers/detail` (a fresh token is fetched from Keystone only when the
previous one expired); when Nova pages a long answer (`servers_links` with rel=next) it continues
from the last server as its marker. Nova has no server-side metadata filter for ordinary users, so the
owner filter is applied to the answer.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from libcloud.compute.drivers.openstack import OpenStackNetwork
from libcloud.compute.providers import get_driver
from libcloud.compute.types import NodeState, Provider

from core.ports import CloudVm
from live.clouds.base import CloudSpec, LibcloudCloud, OnCall, parse_time, translate_state


class OpenStackCloud(LibcloudCloud):
    """The Cloud port on an OpenStack (Nova) cloud; see the module docstring."""

    tags_argument = "ex_metadata"
    tags_extra = "metadata"

    @classmethod
    def from_spec(cls, spec: CloudSpec, *, owner_id: str, on_call: OnCall | None = None) -> OpenStackCloud:
        o = spec.options
        kwargs: dict[str, Any] = {
            "secure": spec.endpoint.startswith("https:"), "ex_force_auth_url": spec.endpoint,
            "ex_force_auth_version": o.get("auth_version", "3.x_password"),
            "ex_force_service_region": o.get("service_region", spec.region), "timeout": spec.timeout_s}
        for opt, arg in (("tenant", "ex_tenant_name"), ("service_name", "ex_force_service_name"),
                         ("service_type", "ex_force_service_type"), ("domain", "ex_domain_name")):
            if o.get(opt):
                kwargs[arg] = o[opt]
        driver = get_driver(Provider.OPENSTACK)(spec.secret("username"), spec.secret("password"), **kwargs)
        create: dict[str, Any] = {}
        if o.get("keyname"):
            create["ex_keyname"] = o["keyname"]
        if o.get("availability_zone"):
            create["ex_availability_zone"] = o["availability_zone"]
        if o.get("networks"):
            create["networks"] = [OpenStackNetwork(n, None, None, driver) for n in o["networks"]]
        return cls(name=spec.name, owner_id=owner_id, driver=driver, image=spec.image, size=spec.size,
                   secrets=[v.reveal() for v in spec.credentials.values()], on_call=on_call, create_args=create)

    def _list(self) -> Iterable[CloudVm]:
        conn, states = self.driver.connection, self.driver.NODE_STATE_MAP
        params: dict[str, str] = {}
        out: list[CloudVm] = []
        while True:
            body = conn.request("/servers/detail", params=params).object
            servers = body.get("servers", [])
            for s in servers:
                out.append(CloudVm(id=str(s["id"]), state=translate_state(states.get(s.get("status"),
                                                                                     NodeState.UNKNOWN)),
                                   tags=dict(s.get("metadata") or {}), created_at=parse_time(s.get("created"))))
            more = any(link.get("rel") == "next" for link in body.get("servers_links", ()))
            if not (more and servers):
                return out
            params["marker"] = str(servers[-1]["id"])
