"""Session fixtures: real cloud servers for the live tests, each started once per test session.

- `moto_cloud_a`, `moto_cloud_b`: two moto EC2 servers (two independent clouds, "moto-a", "moto-b");
- `mimic_cloud`: a mimic OpenStack server ("mimic"); mimic runs from .mimic-venv, which
  scripts/setup-mimic.sh creates (scripts/test.sh runs it; without it these fixtures fail loudly).

Each is a `LiveCloud` with:
    .server            tests.live.servers.Server (.url, .port, .pid, .stop(), .start(), .reset() on moto)
    .url, .port        where it listens (127.0.0.1)
    .adapter           a ready adapter (owner id "daaas-test") with the server's image and size
    .adapter_for(owner_id, *, name=None, timeout_s=5.0, on_call=None)
                       a fresh adapter with another owner id; tests on a shared session server should
                       use an owner id of their own so that they never see each other's VMs
    .entry(name, creds_dir, **policy)
                       a `clouds:` entry for a clouds YAML file (credentials in a 0600 file)

The servers are shared by every test of the session: a test that stops one must start it again on the
same port (`server.stop(); ...; server.start()`) before it ends.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from core.ports import Cloud
from tests.live import servers as srv


@dataclass
class LiveCloud:
    name: str
    server: srv.Server
    adapter: Cloud
    adapter_for: Callable[..., Cloud]

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    def entry(self, name: str, creds_dir, **policy) -> dict:
        return srv.cloud_entry(self.server, name=name, creds_dir=creds_dir, **policy)


def _moto(tmp_path_factory, name: str):
    server = srv.start_moto(tmp_path_factory.mktemp(name))

    def adapter_for(owner_id: str, *, name: str = name, timeout_s: float = 5.0, on_call=None):
        return srv.moto_adapter(server, name=name, owner_id=owner_id, timeout_s=timeout_s, on_call=on_call)

    try:
        yield LiveCloud(name, server, adapter_for("daaas-test"), adapter_for)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto_cloud_a(tmp_path_factory):
    yield from _moto(tmp_path_factory, "moto-a")


@pytest.fixture(scope="session")
def moto_cloud_b(tmp_path_factory):
    yield from _moto(tmp_path_factory, "moto-b")


@pytest.fixture(scope="session")
def mimic_cloud(tmp_path_factory):
    server = srv.start_mimic(tmp_path_factory.mktemp("mimic"))

    def adapter_for(owner_id: str, *, name: str = "mimic", timeout_s: float = 5.0, on_call=None):
        return srv.mimic_adapter(server, name=name, owner_id=owner_id, timeout_s=timeout_s, on_call=on_call)

    try:
        yield LiveCloud("mimic", server, adapter_for("daaas-test"), adapter_for)
    finally:
        server.stop()
