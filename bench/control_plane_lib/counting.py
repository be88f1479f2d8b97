"""SQL counters: inside the server processes (a sitecustomize hook on their PYTHONPATH) and
on one in-process engine (for the floor)."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import event

from imagefleet.store.database import Database

# Counts SQL inside the orchestrator processes. Written as `sitecustomize.py` into a scratch
# folder put on the servers' PYTHONPATH, so the servers run unmodified code: every engine
# they create gets the listeners, and each process rewrites its totals to a JSON file a few
# times a second (and once more at exit) for the benchmark to add up.
COUNTING_HOOK = """
import atexit, json, os, threading

_DIR = os.environ.get("IMAGEFLEET_BENCH_COUNTS")
if _DIR:
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import Pool

    _LOCK = threading.Lock()
    _COUNTS = {
        "statements": 0, "transactions": 0, "commits": 0, "rollbacks": 0, "checkouts": 0,
        "connects": 0,
    }

    def _bump(key):
        with _LOCK:
            _COUNTS[key] += 1

    def _on_execute(conn, cursor, statement, parameters, context, executemany):
        # SQLite's BEGIN [IMMEDIATE] is a cursor execute here; it is counted as a transaction.
        if not statement.startswith("BEGIN"):
            _bump("statements")

    event.listen(Engine, "before_cursor_execute", _on_execute)
    event.listen(Engine, "begin", lambda conn: _bump("transactions"))
    event.listen(Engine, "commit", lambda conn: _bump("commits"))
    event.listen(Engine, "rollback", lambda conn: _bump("rollbacks"))
    event.listen(Pool, "checkout", lambda *args: _bump("checkouts"))
    event.listen(Pool, "connect", lambda *args: _bump("connects"))

    _PATH = os.path.join(_DIR, "counts-%d.json" % os.getpid())

    def _dump():
        with _LOCK:
            data = json.dumps(_COUNTS)
        with open(_PATH + ".tmp", "w") as out:
            out.write(data)
        os.replace(_PATH + ".tmp", _PATH)

    def _loop():
        while True:
            threading.Event().wait(0.2)
            _dump()

    threading.Thread(target=_loop, name="bench-counts", daemon=True).start()
    atexit.register(_dump)
"""


def read_counts(folder: Path) -> Counter[str]:
    """The SQL counters of every server process that wrote into `folder`, added up."""
    total: Counter[str] = Counter()
    for path in folder.glob("counts-*.json"):
        with contextlib.suppress(OSError, ValueError):
            total.update(json.loads(path.read_text()))
    return total


class StatementCounter:
    """The same counters as the server hook, on one in-process engine (for the floor)."""

    def __init__(self, db: Database) -> None:
        self.counts: Counter[str] = Counter()
        engine = db.engine
        event.listen(engine, "before_cursor_execute", self._on_execute)
        event.listen(engine, "begin", lambda conn: self.counts.update(("transactions",)))
        event.listen(engine, "checkout", lambda *args: self.counts.update(("checkouts",)))

    def _on_execute(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not statement.startswith("BEGIN"):
            self.counts["statements"] += 1

    def snapshot(self) -> Counter[str]:
        return Counter(self.counts)
