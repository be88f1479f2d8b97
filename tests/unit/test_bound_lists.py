"""store/bound_lists.py: one array parameter on PostgreSQL, SQLite's expanding IN elsewhere,
and neither compiled again per execution nor hidden from an index."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, MetaData, String, Table, create_engine, event, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from imagefleet.store.bound_lists import InBoundList

things = Table("things", MetaData(), Column("id", String(8), primary_key=True))
BY_IDS = select(things.c.id).where(InBoundList(things.c.id, "ids")).order_by(things.c.id)


def test_on_postgresql_the_list_is_one_array_parameter() -> None:
    text = str(BY_IDS.compile(dialect=postgresql.psycopg.dialect()))  # type: ignore[attr-defined]
    assert "things.id = ANY(%(ids)s::VARCHAR(8)[])" in text
    assert "POSTCOMPILE" not in text


def test_on_sqlite_it_is_an_in_list_the_primary_key_can_answer() -> None:
    text = str(BY_IDS.compile(dialect=sqlite.dialect()))
    assert "WHERE things.id IN (__[POSTCOMPILE_ids])" in text
    assert "= 1" not in text  # `(id IN (...)) = 1` would hide the column from its index
    engine = create_engine("sqlite://")
    sent: list[tuple[str, Any]] = []
    event.listen(engine, "before_cursor_execute", lambda *a: sent.append((a[2], a[3])))
    with engine.begin() as conn:
        things.create(conn)
        conn.execute(insert(things), [{"id": i} for i in ("a", "b", "c")])
        sent.clear()
        assert conn.execute(BY_IDS, {"ids": ["c", "a", "z"]}).scalars().all() == ["a", "c"]
        statement, parameters = sent[0]
        plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
        assert any("USING" in str(row) and "INDEX" in str(row) for row in plan), plan


def test_the_element_has_a_cache_key() -> None:
    first = InBoundList(things.c.id, "ids")
    assert first._generate_cache_key() == InBoundList(things.c.id, "ids")._generate_cache_key()
    assert first._generate_cache_key() != InBoundList(things.c.id, "other")._generate_cache_key()


def test_the_claims_look_and_candidates_read_have_no_expanding_parameter_on_postgresql() -> None:
    """Every expanding parameter is rendered again at each execution, once per place it occurs
    (a literal `IN` list is one too): the claim's statements, run for every claim, have none."""
    from imagefleet.store.claim_candidates import _rows_by_id
    from imagefleet.store.claim_probes import _blocks_and_probes

    shapes = (("priority", 8), ("owner", 1), ("combo", 2), ("checkpoint", 2))
    dialect = postgresql.psycopg.dialect()  # type: ignore[attr-defined]
    for vram in (False, True):
        for statement in (_blocks_and_probes(shapes, vram), _rows_by_id(vram)):
            assert "POSTCOMPILE" not in str(statement.compile(dialect=dialect))
