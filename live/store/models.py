"""SQLAlchemy 2.0 models of the store. The Alembic revisions in migrations/ create the same schema.

Each VM follows one state machine (core.snapshot.VmState: requested -> booting -> ready -> allocated ->
reclaiming -> gone) and every change is a row of `vm_transitions`. An allocation's `active_vm` is the
VM id while the allocation holds and NULL after: its UNIQUE constraint is what guarantees that no VM
is ever allocated to two users, whatever the process does.
"""
from __future__ import annotations

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class VmRow(Base):
    __tablename__ = "vms"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # daaas's id, the VM_TAG value
    pool: Mapped[str] = mapped_column(String(128))
    cloud: Mapped[str] = mapped_column(String(128))
    cloud_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(String(64), nullable=True)  # why it launched, or left
    probe: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)
    ready_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    allocated_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_input_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_busy_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    cpu_percent: Mapped[float] = mapped_column(Float, default=0.0)
    io_bytes_per_s: Mapped[float] = mapped_column(Float, default=0.0)
    warned_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    drained: Mapped[bool] = mapped_column(Boolean, default=False)
    terminate_sent_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    gone_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # One live row per cloud VM; gone rows keep their ids (providers may reuse them later).
    __table_args__ = (Index("uq_vms_live_cloud_id", "cloud", "cloud_id", unique=True,
                            sqlite_where=text("state != 'gone'"), postgresql_where=text("state != 'gone'")),)


class Transition(Base):
    __tablename__ = "vm_transitions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    vm_id: Mapped[str] = mapped_column(ForeignKey("vms.id"), index=True)
    from_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_state: Mapped[str] = mapped_column(String(16))
    at: Mapped[float] = mapped_column(Float)
    reason: Mapped[str | None] = mapped_column(String(128), nullable=True)


class UserRow(Base):
    __tablename__ = "users"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    first_seen_at: Mapped[float] = mapped_column(Float)


class RequestRow(Base):
    __tablename__ = "requests"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    pool: Mapped[str] = mapped_column(String(128))
    user: Mapped[str] = mapped_column(ForeignKey("users.name"))
    location: Mapped[str] = mapped_column(String(64), default="home")
    announced: Mapped[bool] = mapped_column(Boolean, default=False)  # its `request` event is logged
    state: Mapped[str] = mapped_column(String(16), index=True)  # pending, assigned, released, ended, cancelled
    requested_at: Mapped[float] = mapped_column(Float)
    vm_id: Mapped[str | None] = mapped_column(ForeignKey("vms.id"), nullable=True)
    assigned_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Allocation(Base):
    __tablename__ = "allocations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("requests.id"), unique=True)
    vm_id: Mapped[str] = mapped_column(ForeignKey("vms.id"), index=True)
    # The VM id while the allocation holds, NULL once it ends: UNIQUE, so one holder per VM.
    active_vm: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    user: Mapped[str] = mapped_column(String(128))
    at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    end_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)


class HealthSampleRow(Base):
    __tablename__ = "health_samples"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cloud: Mapped[str] = mapped_column(String(128))
    at: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(8))  # "api" or "boot"
    ok: Mapped[bool] = mapped_column(Boolean)
    duration_s: Mapped[float] = mapped_column(Float, default=0.0)
    call: Mapped[str | None] = mapped_column(String(32), nullable=True)
    __table_args__ = (Index("ix_health_cloud_at", "cloud", "at"),)


class CloudHealthRow(Base):
    """The policy's view of one cloud (core.health.CloudHealth), so a restarted or newly elected VMM
    keeps a backoff and its length instead of trusting a failing cloud again."""

    __tablename__ = "cloud_health"
    cloud: Mapped[str] = mapped_column(String(128), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    since: Mapped[float | None] = mapped_column(Float, nullable=True)  # NULL: -inf (never changed)
    backoff_s: Mapped[float] = mapped_column(Float)
    until: Mapped[float | None] = mapped_column(Float, nullable=True)  # NULL: -inf
    probe_sent: Mapped[bool] = mapped_column(Boolean)
    verdict: Mapped[str] = mapped_column(String(16))
    probe_at: Mapped[float | None] = mapped_column(Float, nullable=True)  # NULL: -inf


class LeakCandidate(Base):
    """A cloud VM carrying our owner tag that the store does not know; deleted on the second sighting."""

    __tablename__ = "leak_candidates"
    cloud: Mapped[str] = mapped_column(String(128), primary_key=True)
    cloud_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    first_seen_at: Mapped[float] = mapped_column(Float)
    passes: Mapped[int] = mapped_column(Integer, default=1)
