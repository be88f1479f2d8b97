"""Wakes this process's waiting claims when any replica queues work (PostgreSQL LISTEN).

The same listener, on the events channel, wakes progress streams (orchestrator/events.py):
there each notification's payload names the job, and `on_work` runs after every (re)connect
because events committed while not listening were never heard.

One dedicated connection per process listens on the work channel from a daemon thread and calls
back on every notification with what the job needs (its WorkHint, or None: anything). If the
connection drops (database restart) it reconnects with backoff; claims fall back to their
slow re-check timer meanwhile, so nothing is missed for long.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy.engine import make_url

from imagefleet.store.database import WORK_CHANNEL, WorkHint

log = logging.getLogger("imagefleet.store.listener")


class WorkListener:
    def __init__(
        self,
        url: str,
        on_work: Callable[[WorkHint | None], None],
        *,
        channel: str = WORK_CHANNEL,
        on_payload: Callable[[str], None] | None = None,
    ) -> None:
        self.url = url
        self.on_work = on_work
        self.channel = channel
        self.on_payload = on_payload
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"listen-{channel}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        import psycopg

        conninfo = _conninfo(self.url)
        delay = 0.5
        while not self._stop.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {self.channel}")
                    delay = 0.5
                    self.on_work(None)  # anything queued while we were not listening
                    while not self._stop.is_set():
                        for notify in conn.notifies(timeout=0.25, stop_after=1):
                            if self.on_payload is not None:
                                self.on_payload(notify.payload)
                            else:
                                self.on_work(WorkHint.decode(notify.payload))
            except Exception as exc:
                if self._stop.is_set():
                    return
                log.warning("work listener lost its connection (%s); retrying in %.1fs", exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)


def _conninfo(url: str) -> str:
    """A libpq connection string from a SQLAlchemy URL."""
    parsed = make_url(url)
    parts = {
        "host": parsed.host,
        "port": parsed.port,
        "dbname": parsed.database,
        "user": parsed.username,
        "password": parsed.password,
    }
    return " ".join(f"{k}={v}" for k, v in parts.items() if v is not None)
