"""Where the machine's CPU went during a measurement: the server processes, PostgreSQL's
backends for this run's database, the benchmark itself, and everything else."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bench.control_plane_lib.stack import (
    PG_ADMIN_URL,
)

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float:
    """utime + stime of one process in seconds; 0 when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _postgres_pids(database: str | None) -> list[int]:
    """The PostgreSQL backends connected to this run's own database: other sessions' use of
    the same server is not ours to count."""
    if database is None:
        return []
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        rows = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,)
        ).fetchall()
    return [int(row[0]) for row in rows]


def _machine_busy() -> float:
    """CPU seconds spent not idle, all cores together, since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLOCK_TICKS


@dataclass
class CpuSample:
    """Where the machine's CPU went between two samples, in CPU seconds."""

    machine: float
    server: float
    postgres: float
    bench: float

    @property
    def other(self) -> float:
        """Everything else on the machine: other people's tests, the OS."""
        return max(0.0, self.machine - self.server - self.postgres - self.bench)


class CpuMeter:
    """Samples CPU time of the server processes, PostgreSQL, this process and the machine, so
    a result says where the time went and how much of it other processes took. PostgreSQL
    counts the backends of this run's database; those that start and end between the two
    samples are missed (see "new conns/job") and land in "other"."""

    def __init__(self, server_pids: list[int], database: str | None) -> None:
        self.server_pids = [p for pid in server_pids for p in (pid, *_children(pid))]
        self.database = database
        self.start, self.start_pg = self._sample()
        self.started_at = time.perf_counter()

    def _sample(self) -> tuple[CpuSample, dict[int, float]]:
        times = os.times()
        postgres = {pid: _proc_cpu(pid) for pid in _postgres_pids(self.database)}
        sample = CpuSample(
            machine=_machine_busy(),
            server=sum(_proc_cpu(pid) for pid in self.server_pids),
            postgres=0.0,
            bench=times.user + times.system,
        )
        return sample, postgres

    def stop(self) -> tuple[CpuSample, float]:
        """CPU seconds used since the start, and the wall seconds elapsed."""
        end, end_pg = self._sample()
        used = CpuSample(
            machine=end.machine - self.start.machine,
            server=end.server - self.start.server,
            # A backend born meanwhile counts whole; one gone meanwhile is lost.
            postgres=sum(cpu - self.start_pg.get(pid, 0.0) for pid, cpu in end_pg.items()),
            bench=end.bench - self.start.bench,
        )
        return used, time.perf_counter() - self.started_at
