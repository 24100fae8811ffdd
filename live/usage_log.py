"""Usage logs: JSON lines in core.events' schema, one file per UTC day, each opening with a `run` event.

`daaas report --from-logs LOGDIR` merges every `*.jsonl` of the directory by time, so a day's file and
a restarted VMM's lines read as one log. Each line is flushed at once: a SIGKILL loses nothing written.
"""
from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from core.events import RUN, Event


class UsageLog:
    """Appends events to `log_dir/usage-YYYY-MM-DD.jsonl` (the day of each event's `t`, UTC)."""

    def __init__(self, log_dir: str | Path, run_details: dict[str, Any]):
        self.dir = Path(log_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._run = dict(run_details, time_base="unix")
        self._day: str | None = None
        self._fh = None

    def path_for(self, t: float) -> Path:
        day = dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d")
        return self.dir / f"usage-{day}.jsonl"

    def write(self, event: Event) -> None:
        self._file(event.t).write(event.to_json() + "\n")
        self._fh.flush()

    def emit(self, t: float, kind: str, *, pool: str | None = None, cloud: str | None = None,
             vm: str | None = None, user: str | None = None, **details: Any) -> None:
        self.write(Event(t=t, kind=kind, pool=pool, cloud=cloud, vm=vm, user=user, details=details))

    def _file(self, t: float):
        path = self.path_for(t)
        if self._day != path.name:
            if self._fh is not None:
                self._fh.close()
            fresh = not path.exists() or path.stat().st_size == 0
            self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open across writes
            self._day = path.name
            if fresh:  # the report reads the clouds, pools and time base from a run header
                day0 = dt.datetime.strptime(path.name[6:16], "%Y-%m-%d").replace(tzinfo=dt.UTC).timestamp()
                head = Event(t=t, kind=RUN, details=dict(self._run, start=max(day0, self._run.get("start", day0))))
                self._fh.write(head.to_json() + "\n")
                self._fh.flush()
                os.fsync(self._fh.fileno())
        return self._fh

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
