"""Bad-node quarantine: a node whose attempts keep failing stops receiving work.

Cheap GPUs fail in node-shaped ways (a broken driver, a dying card, a full disk): one such node
can fail most of a queue in minutes if it keeps claiming. After `quarantine_failures` failed
attempts within `quarantine_window_seconds` the node is quarantined: its claims are refused
with the reason, it shows as quarantined in the admin API, and a `quarantined` event is logged
for the autoscaler to replace it. Failures that are the job's fault (invalid input) do not count.
An admin can release it.
"""

from __future__ import annotations

from sqlalchemy import Connection

from imagefleet.config import Settings
from imagefleet.protocol import FailureCode
from imagefleet.store import nodes as node_sql
from imagefleet.store.database import Database

# Failure codes that are never the node's fault, as the store's failure counts need them.
JOB_FAULT_CODES = {code.value for code in FailureCode if not code.is_node_fault}


class NodeQuarantined(RuntimeError):
    """The claiming node is quarantined; the message is the reason."""


class NodeHealth:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    def after_failure(
        self, conn: Connection, node_id: str, error_code: FailureCode, now: float
    ) -> bool:
        """Quarantines the node if this failure tipped it over the threshold."""
        threshold = self.settings.quarantine_failures
        if not threshold or not error_code.is_node_fault:
            return False
        window = self.settings.quarantine_window_seconds
        since = max(now - window, node_sql.released_at(conn, node_id) or 0.0)
        failures = node_sql.recent_failures(conn, node_id, since, JOB_FAULT_CODES)
        if failures < threshold:
            return False
        reason = (
            f"{failures} failed attempts in the last {window:.0f}s (threshold {threshold}); "
            f"last error: {error_code.value}"
        )
        return node_sql.quarantine(conn, node_id, reason, now)

    def release(self, node_id: str, now: float, reason: str = "released by an admin") -> bool:
        with self.db.write() as conn:
            return node_sql.release(conn, node_id, reason, now)

    def nodes(self, now: float) -> list[node_sql.NodeRow]:
        with self.db.read() as conn:
            since = now - self.settings.quarantine_window_seconds
            return node_sql.list_nodes(conn, since, JOB_FAULT_CODES)

    def events(self, after_id: int, limit: int) -> list[node_sql.NodeEvent]:
        with self.db.read() as conn:
            return node_sql.events_after(conn, after_id, limit)
