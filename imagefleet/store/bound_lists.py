"""`column IN (a list bound at execution)`, with a fixed statement text on PostgreSQL.

SQLAlchemy's expanding `IN` renders one placeholder per element at every execution: the
statement is compiled once, but its text is rewritten each time, in each place the list occurs.
The claim's look names the worker's kinds in every probe branch, and that rewriting was about 3%
of a busy PostgreSQL server's CPU (docs/benchmarks.md). On PostgreSQL the list goes as one
array parameter, `column = ANY(:list)`, and the text never changes; SQLite has no arrays and
keeps the expanding `IN`. Either way the parameter's value is a Python list."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal


class InBoundList(ColumnElement[bool]):
    """`column` is one of the list bound as `name`."""

    type = Boolean()
    # A comparison already: no `= 1` after it where booleans are integers (SQLite), which
    # would hide the column from the index.
    _is_implicitly_boolean = True
    inherit_cache = True
    # Its state is its cache key (a custom element without one is compiled on every execution).
    _traverse_internals = [  # noqa: RUF012 (SQLAlchemy reads it from the class)
        ("column", InternalTraversal.dp_clauseelement),
        ("name", InternalTraversal.dp_string),
    ]

    def __init__(self, column: ColumnElement[Any], name: str) -> None:
        self.column = column
        self.name = name


@compiles(InBoundList)
def _expanding(element: InBoundList, compiler: Any, **kw: Any) -> str:
    in_list = element.column.in_(bindparam(element.name, expanding=True))
    return str(compiler.process(in_list, **kw))


@compiles(InBoundList, "postgresql")
def _any_array(element: InBoundList, compiler: Any, **kw: Any) -> str:
    array = bindparam(element.name, type_=ARRAY(element.column.type))
    return f"{compiler.process(element.column, **kw)} = ANY({compiler.process(array, **kw)})"
