"""The twin's record of a VM and the policy's view of it: the view carries every field, by name."""
from __future__ import annotations

import dataclasses

from core.snapshot import Vm, VmState
from twin.model import _VmRec


def test_a_vm_record_gives_the_view_its_fields_by_name():
    rec = _VmRec("vm1", "mantid", "aws", 10.0, set())
    rec.state, rec.ready_at, rec.owner, rec.allocated_at = VmState.ALLOCATED, 20.0, "alice", 30.0
    rec.last_input_at, rec.last_busy_at, rec.cpu, rec.warned_at, rec.drained = 40.0, 35.0, 95.0, 41.0, True
    expected = Vm(id="vm1", pool="mantid", cloud="aws", state=VmState.ALLOCATED, created_at=10.0, ready_at=20.0,
                  owner="alice", allocated_at=30.0, last_input_at=40.0, last_busy_at=35.0, cpu_percent=95.0,
                  io_bytes_per_s=0.0, warned_at=41.0, drained=True)
    assert rec.vm == expected
    assert [f.name for f in dataclasses.fields(Vm)][-4:] == ["cpu_percent", "io_bytes_per_s", "warned_at", "drained"]
