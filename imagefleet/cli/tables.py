"""Tables the way every listing command prints them: a header row, one row per item."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table
from rich.text import Text

# Wide enough that ids and hashes are not folded when the output goes to a pipe or a file
# (Rich assumes 80 columns there).
PIPE_WIDTH = 160


def console() -> Console:
    terminal = Console()
    return terminal if terminal.is_terminal else Console(width=PIPE_WIDTH)


def print_table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, empty: str) -> None:
    """Prints the rows under a header row, or the `empty` sentence when there are none."""
    rows = list(rows)
    out = console()
    if not rows:
        out.print(Text(empty))
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for header in headers:
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))  # as text: a prompt's [x] is no markup
    out.print(table)


def when(moment: datetime | float | None) -> str:
    """A UTC time to the second, or '-' when it has not happened."""
    if moment is None:
        return "-"
    if isinstance(moment, float | int):
        moment = datetime.fromtimestamp(moment, UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
