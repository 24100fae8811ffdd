"""Real cloud servers for tests: moto (EC2) and mimic (OpenStack) on free loopback ports.

    server = start_moto(tmp_dir)          # moto_server from this Python's environment
    server = start_mimic(tmp_dir)         # twistd mimic from .mimic-venv (scripts/setup-mimic.sh)
    server.url, server.port, server.pid
    server.stop()                         # by PID, then wait() (this machine's init does not reap)
    server.start()                        # again, on the same port (a cloud that comes back)
    server.reset()                        # moto only: wipe its state

and ready adapters over them (a fresh owner id per test keeps tests on one session server apart):

    moto_adapter(server, name="a", owner_id="t1")   -> live.clouds.ec2.Ec2Cloud
    mimic_adapter(server, name="m", owner_id="t1")  -> live.clouds.openstack.OpenStackCloud
    cloud_entry(server, name="a", creds_dir=tmp)    -> a `clouds:` entry for a clouds YAML file
                                                       (credentials in a 0600 file under creds_dir)

Nothing here is a pytest fixture: tests/live/conftest.py wraps these in session fixtures, and other
tests (the VMM's reliability tests) may import them directly.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from live.clouds.base import CloudSpec, Secret
from live.clouds.ec2 import Ec2Cloud
from live.clouds.openstack import OpenStackCloud

REPO = Path(__file__).resolve().parents[2]
MIMIC_TWISTD = REPO / ".mimic-venv" / "bin" / "twistd"
EC2_REGION = "us-east-1"
EC2_SIZE = "t2.micro"
EC2_CREDENTIALS = {"access_key": "testing", "secret_key": "testing"}
MIMIC_CREDENTIALS = {"username": "demo-user", "password": "pw"}
MIMIC_OPTIONS = {"tenant": "t1", "auth_version": "2.0_password", "service_name": "cloudServersOpenStack"}
MIMIC_REGION = "ORD"


def free_port() -> int:
    """A loopback port free right now (the server binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A cloud server process on 127.0.0.1:`port`; see the module docstring."""

    kind: str  # "moto" or "mimic"
    port: int
    workdir: Path
    argv: list[str]
    proc: subprocess.Popen | None = None
    cache: dict = field(default_factory=dict)  # per-server lookups (an image id) done once

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def start(self, timeout_s: float = 30.0) -> Server:
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / f"{self.kind}-{self.port}.log", "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                                     stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout_s
        while not self._answers():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} on port {self.port} exited with {self.proc.returncode}; "
                                   f"see {self.workdir / f'{self.kind}-{self.port}.log'}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.kind} did not answer on port {self.port} within {timeout_s:g} s")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        """Stop the process by its PID and reap it (SIGTERM, then SIGKILL after 5 s)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def reset(self) -> None:
        """moto only: wipe every resource (POST /moto-api/reset)."""
        if self.kind != "moto":
            raise RuntimeError("only moto can be reset; use a fresh owner id (or tenant) on mimic")
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/moto-api/reset", method="POST"), timeout=10)

    def _answers(self) -> bool:
        try:
            if self.kind == "mimic":  # its Keystone answers once its plugins are loaded
                body = json.dumps({"auth": {"passwordCredentials": {"username": "probe", "password": "p"},
                                            "tenantName": "probe"}}).encode()
                req = urllib.request.Request(f"{self.url}/identity/v2.0/tokens", data=body,
                                             headers={"Content-Type": "application/json"})
            else:
                req = urllib.request.Request(f"{self.url}/moto-api/")
            with urllib.request.urlopen(req, timeout=2):
                return True
        except OSError:
            return False


def start_moto(tmpdir: str | os.PathLike, *, port: int | None = None) -> Server:
    """moto_server (EC2 and the rest of AWS) from this Python's environment, on a free loopback port."""
    port = port or free_port()
    exe = Path(sys.executable).parent / "moto_server"
    return Server("moto", port, Path(tmpdir), [str(exe), "-H", "127.0.0.1", "-p", str(port)]).start()


def start_mimic(tmpdir: str | os.PathLike, *, port: int | None = None) -> Server:
    """mimic (OpenStack Keystone v2 + Nova) from .mimic-venv, on a free loopback port."""
    if not MIMIC_TWISTD.exists():
        raise RuntimeError(f"{MIMIC_TWISTD} is missing: run scripts/setup-mimic.sh (scripts/test.sh does)")
    port = port or free_port()
    argv = [str(MIMIC_TWISTD), "-n", "--pidfile=", "mimic", "-l", f"tcp:{port}:interface=127.0.0.1"]
    return Server("mimic", port, Path(tmpdir), argv).start()


def moto_image(server: Server) -> str:
    """An AMI moto knows (any of its AMIs boots); one filtered lookup per server."""
    if "image" not in server.cache:
        # moto builds its whole AMI catalogue on the first lookup: seconds on a loaded machine.
        a = moto_adapter(server, name="probe", owner_id="probe", image="ami-none", timeout_s=120.0)
        images = a.driver.list_images(ex_owner="amazon", ex_filters={"name": "amzn2-ami-hvm*"})
        server.cache["image"] = sorted(i.id for i in images)[0]
    return server.cache["image"]


def mimic_image_and_size(server: Server) -> tuple[str, str]:
    if "image" not in server.cache:
        a = mimic_adapter(server, name="probe", owner_id="probe", image="none", size="none", timeout_s=120.0)
        server.cache["image"] = sorted(i.id for i in a.driver.list_images())[0]
        server.cache["size"] = sorted(s.id for s in a.driver.list_sizes())[0]
    return server.cache["image"], server.cache["size"]


def moto_spec(server: Server, *, name: str, image: str | None = None, timeout_s: float = 5.0) -> CloudSpec:
    return CloudSpec(name=name, provider="ec2", region=EC2_REGION, image=image or moto_image(server), size=EC2_SIZE,
                     endpoint=server.url, credentials={k: Secret(v) for k, v in EC2_CREDENTIALS.items()},
                     timeout_s=timeout_s)


def mimic_spec(server: Server, *, name: str, image: str | None = None, size: str | None = None,
               timeout_s: float = 5.0, tenant: str = "t1") -> CloudSpec:
    if image is None or size is None:
        image, size = mimic_image_and_size(server)
    return CloudSpec(name=name, provider="openstack", region=MIMIC_REGION, image=image, size=size,
                     endpoint=f"{server.url}/identity",
                     credentials={k: Secret(v) for k, v in _mimic_credentials(tenant).items()},
                     options=MIMIC_OPTIONS | {"tenant": tenant}, timeout_s=timeout_s)


def _mimic_credentials(tenant: str) -> dict[str, str]:
    # mimic binds a user name to the first tenant it authenticated with: a user per tenant.
    return MIMIC_CREDENTIALS if tenant == MIMIC_OPTIONS["tenant"] else MIMIC_CREDENTIALS | {"username": f"u-{tenant}"}


def moto_adapter(server: Server, *, name: str, owner_id: str, image: str | None = None, timeout_s: float = 5.0,
                 on_call=None) -> Ec2Cloud:
    return Ec2Cloud.from_spec(moto_spec(server, name=name, image=image, timeout_s=timeout_s), owner_id=owner_id,
                              on_call=on_call)


def mimic_adapter(server: Server, *, name: str, owner_id: str, image: str | None = None, size: str | None = None,
                  timeout_s: float = 5.0, tenant: str = "t1", on_call=None) -> OpenStackCloud:
    """An adapter on mimic; another `tenant` is another, separate, OpenStack project."""
    spec = mimic_spec(server, name=name, image=image, size=size, timeout_s=timeout_s, tenant=tenant)
    return OpenStackCloud.from_spec(spec, owner_id=owner_id, on_call=on_call)


def cloud_entry(server: Server, *, name: str, creds_dir: str | os.PathLike, **policy) -> dict:
    """One `clouds:` entry of a clouds YAML file for this server; `policy` adds priority, quota, etc."""
    creds_dir = Path(creds_dir)
    creds_dir.mkdir(parents=True, exist_ok=True)
    creds = creds_dir / f"{name}-credentials.yaml"
    if server.kind == "moto":
        entry = {"name": name, "provider": "ec2", "region": EC2_REGION, "image": moto_image(server),
                 "size": EC2_SIZE, "endpoint": server.url, "timeout_s": 5}
        secrets = EC2_CREDENTIALS
    else:
        image, size = mimic_image_and_size(server)
        entry = {"name": name, "provider": "openstack", "region": MIMIC_REGION, "image": image, "size": size,
                 "endpoint": f"{server.url}/identity", "options": dict(MIMIC_OPTIONS), "timeout_s": 5}
        secrets = MIMIC_CREDENTIALS
    fd = os.open(creds, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(secrets, f)  # JSON is YAML
    entry["credentials"] = {"file": str(creds)}
    return entry | policy
