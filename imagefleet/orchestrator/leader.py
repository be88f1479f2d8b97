"""Leader election through the database: an expiring lease row, taken and renewed by
compare-and-set, so exactly one orchestrator replica runs the autoscaler at a time.

Works the same on SQLite and PostgreSQL (a conditional UPDATE, else an INSERT that loses on the
primary key). A leader that stops renewing (killed, partitioned from the database) loses the
lease after `ttl` seconds and another replica takes over at its next try; one that stops
cleanly releases it so the next takes over at once. Clocks of the replicas are compared, so
they must agree to well within the lease (NTP does that).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket

from imagefleet.store import pools as pool_sql
from imagefleet.store.database import Database, retry_conflicts

log = logging.getLogger("imagefleet.leader")
AUTOSCALER_LEASE = "autoscaler"


def replica_id() -> str:
    """Names this replica in the API (`decided_by`): host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class LeaderLease:
    def __init__(self, db: Database, ttl: float, holder: str | None = None) -> None:
        self.db = db
        self.ttl = ttl
        self.holder = holder or replica_id()
        self.leading = False

    @retry_conflicts
    def try_lead(self, now: float) -> bool:
        """Takes or renews the lease; True while this replica holds it."""
        with self.db.write() as conn:
            leading = pool_sql.acquire_lease(conn, AUTOSCALER_LEASE, self.holder, now, self.ttl)
        if leading != self.leading:
            log.info(
                "%s %s the autoscaler lease",
                self.holder,
                "took" if leading else "lost",
            )
        self.leading = leading
        return leading

    def release(self) -> None:
        if not self.leading:
            return
        with self.db.write() as conn:
            pool_sql.release_lease(conn, AUTOSCALER_LEASE, self.holder)
        self.leading = False
