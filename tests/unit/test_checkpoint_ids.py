"""The replica's cache of the checkpoints a sha256 names (`orchestrator.checkpoint_ids`): the
same answer as the read it replaces, in the worker's order, and a read only for the sha256s not
seen lately."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from imagefleet.orchestrator.checkpoint_ids import CachedCheckpointIds
from imagefleet.store import claim_candidates as claim_sql
from imagefleet.store.database import Database
from imagefleet.store.models import Model, register_model


def test_the_cache_answers_as_the_read_does_and_reads_only_what_it_has_not_seen(
    db: Database, model: Model
) -> None:
    with db.write() as conn:
        other = register_model(
            conn,
            name="other",
            kind="checkpoint",
            source="/m/o",
            sha256="e" * 64,
            size_bytes=1,
            now=1.0,
        )
        register_model(
            conn, name="lora", kind="lora", source="/m/l", sha256="f" * 64, size_bytes=1, now=1.0
        )
    clock = [0.0]
    cached = CachedCheckpointIds(fresh_seconds=10.0, clock=lambda: clock[0])
    reads: list[str] = []  # the parameters of each read of the models

    def count(conn: Any, cursor: Any, statement: str, parameters: Any, *rest: Any) -> None:
        if "FROM models" in statement:
            reads.append(str(parameters))

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        with db.read() as conn:
            shas = ["f" * 64, "0" * 64, "e" * 64, "d" * 64]  # a LoRA, unknown, then checkpoints
            assert cached(conn, shas, 2) == claim_sql.checkpoint_ids(conn, shas, 2)
            assert cached(conn, shas, 2) == [other.id, model.id]
            assert cached(conn, shas, 1) == [other.id]
            assert len(reads) == 2  # the uncached read beside it, and the cache's first
            assert cached(conn, ["d" * 64, "1" * 64], 2) == [model.id]
            assert len(reads) == 3 and "d" * 64 not in reads[-1] and "1" * 64 in reads[-1]
            clock[0] = 10.0
            assert cached(conn, ["d" * 64], 2) == [model.id]
            assert len(reads) == 4  # aged out: read again
            assert cached(conn, [], 2) == [] and cached(conn, ["d" * 64], 0) == []
            assert len(reads) == 4
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
