"""Azure (ARM) and Google Compute Engine: further libcloud providers, each one registry entry.

Unlike EC2 and OpenStack, no server for these runs on this machine, so they are exercised only by the
config tests (their drivers are built without any network call), not by the contract suite against a
live endpoint. Both list with ONE request per page and no per-VM follow-up calls:
- Azure: `list_nodes(ex_fetch_nic=False, ex_fetch_power_state=False)` (the defaults make 1 + 3 requests
  per VM); the state then comes from the provisioning state. Tags are Azure tags. `image` is a
  marketplace URN `publisher:offer:sku:version`; options: resource_group, location, network, subnet,
  ssh_public_key (all required but subnet).
- GCE: tags are instance labels, which allow only lowercase letters, digits, '-' and '_', so the owner
  id must already be such a label; options: project (required), zone.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from libcloud.compute.base import NodeAuthSSHKey, NodeLocation
from libcloud.compute.providers import get_driver
from libcloud.compute.types import Provider

from core.ports import CloudVm
from live.clouds.base import CloudSpec, LibcloudCloud, OnCall, translate_state

_LABEL = re.compile(r"^[a-z0-9_-]{0,63}$")


class AzureCloud(LibcloudCloud):
    """The Cloud port on Azure Resource Manager; see the module docstring."""

    tags_argument = "ex_tags"
    tags_extra = "tags"

    @classmethod
    def from_spec(cls, spec: CloudSpec, *, owner_id: str, on_call: OnCall | None = None) -> AzureCloud:
        o = spec.options
        def driver():  # Azure's driver fetches a token when built: build it at the first call
            return get_driver(Provider.AZURE_ARM)(spec.secret("tenant_id"), spec.secret("subscription_id"),
                                                  spec.secret("key"), spec.secret("secret"), timeout=spec.timeout_s)
        from libcloud.compute.drivers.azure_arm import AzureNetwork, AzureSubnet

        location = NodeLocation(o["location"], o["location"], None, None)
        network = AzureNetwork(o["network"], o["network"].rsplit("/", 1)[-1], o["location"], {})
        create: dict[str, Any] = {"auth": NodeAuthSSHKey(o["ssh_public_key"]), "ex_resource_group": o["resource_group"],
                                  "location": location, "ex_network": network, "ex_use_managed_disks": True}
        if o.get("subnet"):
            create["ex_subnet"] = AzureSubnet(o["subnet"], o["subnet"].rsplit("/", 1)[-1], {})
        self = cls(name=spec.name, owner_id=owner_id, driver=driver, image=spec.image, size=spec.size,
                   secrets=[v.reveal() for v in spec.credentials.values()], on_call=on_call, create_args=create)
        self._resource_group = o["resource_group"]
        return self

    def _image(self):
        from libcloud.compute.drivers.azure_arm import AzureImage

        publisher, offer, sku, version = self.image.split(":")
        return AzureImage(version, sku, offer, publisher, self._create_args["location"].id, self.driver)

    def _terminate(self, vm_id: str) -> None:
        # Azure's destroy_node reads the NICs and disks to delete from the node's details: fetch them.
        try:
            node = self.driver.ex_get_node(vm_id)
        except Exception as e:
            if self._is_gone(e):
                return
            raise
        self.driver.destroy_node(node)

    def _list(self) -> Iterable[CloudVm]:
        for n in self.driver.list_nodes(ex_resource_group=self._resource_group, ex_fetch_nic=False,
                                        ex_fetch_power_state=False):
            yield CloudVm(id=n.id, state=translate_state(n.state), tags=dict(n.extra.get("tags") or {}))


class GceCloud(LibcloudCloud):
    """The Cloud port on Google Compute Engine; see the module docstring."""

    tags_argument = "ex_labels"
    tags_extra = "labels"

    @classmethod
    def from_spec(cls, spec: CloudSpec, *, owner_id: str, on_call: OnCall | None = None) -> GceCloud:
        if not _LABEL.match(owner_id):
            raise ValueError(f"owner_id {owner_id!r}: a GCE label allows only a-z, 0-9, '-' and '_' (63 at most)")
        o = spec.options
        def driver():  # GCE's driver fetches a token when built: build it at the first call
            return get_driver(Provider.GCE)(spec.secret("user_id"), spec.secret("key"), project=o["project"],
                                            datacenter=o.get("zone", spec.region), timeout=spec.timeout_s)
        return cls(name=spec.name, owner_id=owner_id, driver=driver, image=spec.image, size=spec.size,
                   secrets=[v.reveal() for v in spec.credentials.values()], on_call=on_call)

    def _create(self, name: str, tags: Mapping[str, str]) -> str:
        labels = {k: re.sub(r"[^a-z0-9_-]", "_", v.lower())[:63] for k, v in tags.items()}
        return self.driver.create_node(name=name.lower(), size=self.size, image=self.image, ex_labels=labels).id

    def _terminate(self, vm_id: str) -> None:
        from libcloud.common.google import ResourceNotFoundError

        try:
            node = self.driver.ex_get_node(vm_id, zone="all")  # destroy needs the node's zone
        except ResourceNotFoundError:
            return
        self.driver.destroy_node(node)

    def _list(self) -> Iterable[CloudVm]:
        for n in self.driver.list_nodes(ex_zone="all"):
            yield CloudVm(id=n.name, state=translate_state(n.state), tags=dict(n.extra.get("labels") or {}))
