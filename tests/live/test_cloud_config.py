"""The clouds file (live.clouds.config): a valid file gives each cloud's CloudConfig and a working adapter
(checked against moto and mimic), docs/LIVE-CLOUDS.md's example is valid, every mistake is refused with
the file, the field path and the reason, and credentials never show in reprs or errors."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from core.config import CloudConfig, MaintenanceWindow
from core.ports import POOL_TAG, VM_TAG
from live.clouds.config import CloudsConfigError, load_clouds
from live.clouds.ec2 import Ec2Cloud
from live.clouds.extra import AzureCloud, GceCloud
from live.clouds.openstack import OpenStackCloud
from live.clouds.registry import PROVIDERS

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, data, name: str = "clouds.yaml") -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def test_a_file_with_an_ec2_and_an_openstack_cloud_gives_working_adapters(tmp_path, moto_cloud_b, mimic_cloud):
    ec2 = moto_cloud_b.entry("ec2-public", tmp_path, priority=10, cost_per_vm_hour=0.34, quota=20,
                             expected_boot_s=90)
    nova = mimic_cloud.entry("facility", tmp_path, priority=0, quota=40,
                             maintenance=[{"start": "2026-12-01T08:00:00Z", "end": "2026-12-01T12:00:00+00:00"}])
    nova["credentials"] = {"env": {"username": "T_OS_USER", "password": "T_OS_PASSWORD"}}
    path = _write(tmp_path, {"clouds": [nova, ec2]})
    calls = []
    bindings = load_clouds(path, owner_id="cfg-test", environ={"T_OS_USER": "demo-user", "T_OS_PASSWORD": "pw"},
                           on_call=lambda *a: calls.append(a))
    assert [b.config for b in bindings] == [
        CloudConfig(name="facility", region="ORD", priority=0, cost_per_vm_hour=0.0, quota=40, expected_boot_s=120.0,
                    maintenance=(MaintenanceWindow(1796112000.0, 1796126400.0),)),
        CloudConfig(name="ec2-public", region="us-east-1", priority=10, cost_per_vm_hour=0.34, quota=20,
                    expected_boot_s=90.0)]
    assert [type(b.adapter) for b in bindings] == [OpenStackCloud, Ec2Cloud]
    for b in bindings:
        vm = b.adapter.launch(pool="mantid", tags={POOL_TAG: "mantid", VM_TAG: f"cfg-{b.config.name}"})
        assert [v.id for v in b.adapter.list_vms()] == [vm]
        b.adapter.terminate(vm_id=vm)
    assert {(c[0], c[1], c[2]) for c in calls} == {(n, call, True) for n in ("facility", "ec2-public")
                                                   for call in ("launch", "list", "terminate")}


def test_the_documented_example_is_valid(tmp_path):
    text = (REPO / "docs" / "LIVE-CLOUDS.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    clouds = next(b for b in blocks if b.startswith("# clouds.yaml"))
    creds = next(b for b in blocks if b.startswith("# ec2-credentials.yaml"))
    path = _write(tmp_path, clouds)
    c = _write(tmp_path, creds.replace("...", "x"), "ec2-credentials.yaml")
    c.chmod(0o600)
    bindings = load_clouds(path, owner_id="doc", environ={"OS_USERNAME": "u", "OS_PASSWORD": "p"})
    assert [(b.config.name, type(b.adapter).__name__) for b in bindings] == [
        ("facility-openstack", "OpenStackCloud"), ("ec2-public", "Ec2Cloud")]
    assert bindings[0].config.maintenance[0].end - bindings[0].config.maintenance[0].start == 4 * 3600


def _base(tmp_path) -> dict:
    return {"name": "c1", "provider": "ec2", "region": "us-east-1", "image": "ami-1", "size": "t2.micro",
            "endpoint": "http://127.0.0.1:9", "credentials": {"env": {"access_key": "AK", "secret_key": "SK"}}}


ENV = {"AK": "the-access-key", "SK": "the-secret-key"}


@pytest.mark.parametrize("change, where, why", [
    (lambda c: c.update(colour="blue"), "clouds[0].colour", "unknown key"),
    (lambda c: c.update(quota="ten"), "clouds[0].quota", "must be an integer, not a string"),
    (lambda c: c.update(quota=True), "clouds[0].quota", "must be an integer"),
    (lambda c: c.update(quota=-1), "clouds[0].quota", "at least 0"),
    (lambda c: c.update(cost_per_vm_hour=float("nan")), "clouds[0].cost_per_vm_hour", "must be a number"),
    (lambda c: c.update(expected_boot_s=0), "clouds[0].expected_boot_s", "more than 0"),
    (lambda c: c.update(priority=1.5), "clouds[0].priority", "must be an integer"),
    (lambda c: c.pop("image"), "clouds[0].image", "required"),
    (lambda c: c.update(name="bad name!"), "clouds[0].name", "letters, digits"),
    (lambda c: c.update(provider="vsphere"), "clouds[0].provider", "unknown provider 'vsphere'"),
    (lambda c: c.update(region="mars-1"), "clouds[0]", "Invalid region: mars-1"),
    (lambda c: c.update(endpoint="ftp://x"), "clouds[0].endpoint", "http:// or https:// URL"),
    (lambda c: c.update(options={"colour": 1}), "clouds[0].options.colour", "unknown option for provider 'ec2'"),
    (lambda c: c.update(credentials={"env": {"access_key": "AK", "secret_key": "MISSING_VAR"}}),
     "clouds[0].credentials.env.secret_key", "environment variable MISSING_VAR is not set"),
    (lambda c: c.update(credentials={"env": {"access_key": "AK"}}), "clouds[0].credentials",
     "missing credential field 'secret_key'"),
    (lambda c: c.update(credentials={"env": {"password": "AK"}}), "clouds[0].credentials.env.password",
     "unknown credential field"),
    (lambda c: c.update(credentials={"vault": "x"}), "clouds[0].credentials", "{env:"),
    (lambda c: c.update(credentials={"file": "nowhere.yaml"}), "clouds[0].credentials.file", "cannot read"),
    (lambda c: c.update(maintenance=[{"start": "2026-12-01T08:00:00", "end": "2026-12-01T09:00:00Z"}]),
     "clouds[0].maintenance[0].start", "needs a time zone"),
    (lambda c: c.update(maintenance=[{"start": "2026-12-01T08:00:00Z", "end": "2026-12-01T07:00:00Z"}]),
     "clouds[0].maintenance[0].end", "after start"),
    (lambda c: c.update(maintenance=[{"start": "tomorrow", "end": "2026-12-01T07:00:00Z"}]),
     "clouds[0].maintenance[0].start", "not an ISO 8601 time"),
    (lambda c: c.update(maintenance={"start": 1}), "clouds[0].maintenance", "must be a list"),
])
def test_mistakes_name_the_file_and_field(tmp_path, change, where, why):
    cloud = _base(tmp_path)
    change(cloud)
    path = _write(tmp_path, {"clouds": [cloud]})
    with pytest.raises(CloudsConfigError) as e:
        load_clouds(path, owner_id="o", environ=ENV)
    assert str(e.value).startswith(f"{path}: {where}: "), str(e.value)
    assert why in str(e.value)
    assert "the-secret-key" not in str(e.value)


@pytest.mark.parametrize("text, where", [
    ("clouds: [", "not valid YAML (line"),
    ("- a\n- b\n", "(top): must be a mapping"),
    ("clouds: []\n", "clouds: must be a non-empty list"),
    ("clouds: [1]\n", "clouds[0]: must be a mapping"),
    ("clouds: []\nextra: 1\n", "extra: unknown key"),
])
def test_malformed_files(tmp_path, text, where):
    path = _write(tmp_path, text)
    with pytest.raises(CloudsConfigError, match=re.escape(f"{path}: {where}")):
        load_clouds(path, owner_id="o", environ=ENV)


def test_missing_file_and_duplicate_names(tmp_path):
    with pytest.raises(CloudsConfigError, match="nope.yaml: cannot read"):
        load_clouds(tmp_path / "nope.yaml", owner_id="o", environ=ENV)
    path = _write(tmp_path, {"clouds": [_base(tmp_path), _base(tmp_path)]})
    with pytest.raises(CloudsConfigError, match=r"clouds\[1\].name: 'c1' is used by an earlier cloud"):
        load_clouds(path, owner_id="o", environ=ENV)


def test_credential_files(tmp_path):
    cloud = _base(tmp_path)
    cloud["credentials"] = {"file": "creds.yaml"}  # relative to the clouds file
    path = _write(tmp_path, {"clouds": [cloud]})
    creds = _write(tmp_path, json.dumps({"access_key": "ak", "secret_key": "the-secret-key"}), "creds.yaml")
    creds.chmod(0o644)
    with pytest.raises(CloudsConfigError, match=r"credentials.file: .*readable by others than its owner"):
        load_clouds(path, owner_id="o", environ={})
    creds.chmod(0o600)
    (binding,) = load_clouds(path, owner_id="o", environ={})
    assert binding.adapter.driver.secret == "the-secret-key"
    creds.write_text("access_key: ak\ntoken_typo: x\n")
    with pytest.raises(CloudsConfigError, match="unknown credential field 'token_typo'"):
        load_clouds(path, owner_id="o", environ={})


def test_credentials_never_show_in_reprs_or_errors(tmp_path):
    path = _write(tmp_path, {"clouds": [_base(tmp_path)]})
    (binding,) = load_clouds(path, owner_id="o", environ=ENV)
    for text in (repr(binding), str(binding), repr(binding.adapter)):
        assert "the-secret-key" not in text and "the-access-key" not in text
    with pytest.raises(Exception) as e:  # nothing listens on port 9: a CloudError
        binding.adapter.list_vms()
    assert "the-secret-key" not in str(e.value)


def test_every_provider_entry_builds_without_network(tmp_path):
    """Azure and GCE have no test server here: their adapters are only built (drivers are built lazily,
    at the first call, since both fetch a token when built), never called."""
    clouds = [
        {"name": "az", "provider": "azure", "region": "westeurope", "image": "Canonical:UbuntuServer:18.04-LTS:latest",
         "size": "Standard_B2s", "credentials": {"env": {k: "V" for k in PROVIDERS["azure"].credentials}},
         "options": {"resource_group": "rg", "location": "westeurope", "network": "/subscriptions/s/net",
                     "ssh_public_key": "ssh-ed25519 AAAA"}},
        {"name": "g", "provider": "gce", "region": "europe-west1-b", "image": "debian-12", "size": "e2-medium",
         "credentials": {"env": {"user_id": "V", "key": "V"}}, "options": {"project": "p"}},
    ]
    bindings = load_clouds(_write(tmp_path, {"clouds": clouds}), owner_id="owner-1", environ={"V": "v"})
    assert [type(b.adapter) for b in bindings] == [AzureCloud, GceCloud]
    assert all(b.adapter._driver is None for b in bindings)
    clouds[0]["options"].pop("location")
    with pytest.raises(CloudsConfigError, match=r"clouds\[0\].options.location: required for provider 'azure'"):
        load_clouds(_write(tmp_path, {"clouds": clouds}), owner_id="owner-1", environ={"V": "v"})


def test_the_registry_lists_the_providers():
    assert set(PROVIDERS) >= {"ec2", "openstack", "azure", "gce"}


def test_daaas_serve_once_on_a_clouds_file_launches_tagged_vms(tmp_path, moto_cloud_a, mimic_cloud, capsys):
    """The clouds file through the CLI: `daaas serve --once` lists both clouds and launches the reserve."""
    from cli import main

    owner = "serve-e2e"
    clouds = [mimic_cloud.entry("home", tmp_path, priority=0, quota=1),
              moto_cloud_a.entry("public", tmp_path, priority=5, quota=5, cost_per_vm_hour=0.2)]
    _write(tmp_path, {"clouds": clouds})
    cfg = _write(tmp_path, {"owner_id": owner, "store": "sqlite:///live.db", "log_dir": "logs",
                            "clouds": "clouds.yaml", "pools": [{"name": "mantid", "min_ready": 3, "max_total": 5}]},
                 "vmm.yaml")
    assert main(["serve", "--config", str(cfg), "--once"]) == 0, capsys.readouterr().err
    assert "listed[home=0 public=0]" in capsys.readouterr().out
    home, public = mimic_cloud.adapter_for(owner).list_vms(), moto_cloud_a.adapter_for(owner).list_vms()
    assert (len(home), len(public)) == (1, 2)  # the preferred cloud up to its quota, then the next
    for vm in [*home, *public]:
        assert vm.tags[POOL_TAG] == "mantid" and vm.tags[VM_TAG].startswith("vm-")
    for cloud, vms in ((mimic_cloud.adapter_for(owner), home), (moto_cloud_a.adapter_for(owner), public)):
        for vm in vms:
            cloud.terminate(vm_id=vm.id)

    clouds[1]["credentials"] = {"env": {"access_key": "NOT_SET_ANYWHERE", "secret_key": "NOT_SET_ANYWHERE"}}
    _write(tmp_path, {"clouds": clouds})
    assert main(["serve", "--config", str(cfg), "--once"]) == 2
    err = capsys.readouterr().err
    assert "clouds.yaml" in err and "clouds[1].credentials.env.access_key" in err and "NOT_SET_ANYWHERE" in err
    assert err.count("clouds.yaml") == 1, err  # the file is named once
