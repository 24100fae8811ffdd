"""`PROVIDERS`: the provider names the clouds file accepts, each mapped to its adapter (libcloud's
providers.py pattern). Adapters and their libcloud drivers are imported only when a cloud of that
provider is configured, so another libcloud provider is one more entry here (and a small adapter class
when its create/list calls need provider-specific arguments).

Each entry says which credential fields the provider needs (and may take), which `options` keys it
knows, and whether `endpoint` is required; live.clouds.config validates a cloud against its entry
before the adapter is built.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from core.ports import Cloud
from live.clouds.base import CloudSpec, OnCall


@dataclass(frozen=True)
class ProviderEntry:
    """One provider: where its adapter lives and what its config must hold."""

    adapter: str  # "module:Class", imported lazily; the class has `from_spec(spec, *, owner_id, on_call)`
    credentials: tuple[str, ...]  # required credential fields
    optional_credentials: tuple[str, ...] = ()
    options: tuple[str, ...] = ()  # the `options` keys it knows
    required_options: tuple[str, ...] = ()
    endpoint_required: bool = False
    doc: str = ""

    def build(self, spec: CloudSpec, *, owner_id: str, on_call: OnCall | None = None) -> Cloud:
        module, cls = self.adapter.split(":")
        return getattr(importlib.import_module(module), cls).from_spec(spec, owner_id=owner_id, on_call=on_call)


PROVIDERS: dict[str, ProviderEntry] = {
    "ec2": ProviderEntry(
        "live.clouds.ec2:Ec2Cloud", credentials=("access_key", "secret_key"), optional_credentials=("token",),
        options=("region", "keyname", "security_groups", "subnet_id", "security_group_ids"),
        doc="AWS EC2, or an EC2-compatible endpoint (`endpoint: http://host:port`); `region` is the EC2 region"),
    "openstack": ProviderEntry(
        "live.clouds.openstack:OpenStackCloud", credentials=("username", "password"),
        options=("tenant", "auth_version", "service_name", "service_type", "service_region", "domain", "keyname",
                 "availability_zone", "networks"),
        endpoint_required=True,
        doc="OpenStack Nova; `endpoint` is the Keystone URL; `region` is the service region"),
    "azure": ProviderEntry(
        "live.clouds.extra:AzureCloud", credentials=("tenant_id", "subscription_id", "key", "secret"),
        options=("resource_group", "location", "network", "subnet", "ssh_public_key"),
        required_options=("resource_group", "location", "network", "ssh_public_key"),
        doc="Azure Resource Manager; `image` is publisher:offer:sku:version"),
    "gce": ProviderEntry(
        "live.clouds.extra:GceCloud", credentials=("user_id", "key"), options=("project", "zone"),
        required_options=("project",),
        doc="Google Compute Engine; `key` is the service account's key (a path or its PEM)"),
}
