"""Tables that fit the terminal and never cut an identifier.

A rich table squeezed into a narrow terminal truncates cells ("dat_pp_…", "P…"): the very names a
user must type. `print_table` prints a table when it fits the console's width with every cell
whole (only columns marked `wrap` may wrap); otherwise a vertical layout: per row, the identifier cells on one line, then the other
cells as "header value" pairs packed into indented lines. Identifiers are never wrapped or cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

INDENT = "  "


@dataclass(frozen=True)
class Column:
    header: str
    identifier: bool = False  # a name the user types or searches for: shown whole on the row's first line
    justify: str = "left"
    wrap: bool = False  # free text that may wrap inside its cell; every other cell is shown on one line


def _plain(cell: str) -> str:
    return Text.from_markup(cell).plain


def fits(console: Console, table: Table) -> bool:
    """Whether `table` fits with only its wrap columns wrapped (measured unconstrained: rich clamps to the
    console's width, and then cuts cells)."""
    return console.measure(table, options=console.options.update_width(1_000_000)).minimum <= console.width


def print_table(console: Console, columns: Sequence[Column], rows: Sequence[Sequence[str]], title: str = "",
                sections: Sequence[int] = ()) -> None:
    """Cells are rich markup. `sections`: row indexes after which the table draws a separator line."""
    table = Table(title=title or None)
    for column in columns:
        table.add_column(column.header, justify=column.justify, no_wrap=not column.wrap,
                         overflow="fold" if column.wrap else "ellipsis")
    for i, row in enumerate(rows):
        table.add_row(*row, end_section=i in sections)
    if fits(console, table):
        console.print(table)
        return
    if title:
        console.print(f"[italic]{escape(title)}[/]", highlight=False)
    width = max(20, console.width - len(INDENT))
    for row in rows:
        keys = [cell for column, cell in zip(columns, row) if column.identifier and _plain(cell)]
        console.print("  ".join(keys), highlight=False)  # wraps between identifiers, never inside one
        pairs = [f"[dim]{escape(column.header)}[/] {cell}" for column, cell in zip(columns, row)
                 if not column.identifier and _plain(cell).strip()]
        for line in _pack(pairs, width):  # free text may wrap, inside the indent
            console.print(Padding(Text.from_markup(line), (0, 0, 0, len(INDENT))), highlight=False)


def _pack(pairs: list[str], width: int) -> list[str]:
    """Greedily put "header value" pairs on lines of at most `width` cells (a longer pair gets its own line)."""
    lines: list[str] = []
    current, length = [], 0
    for pair in pairs:
        size = Text.from_markup(pair).cell_len
        if current and length + 3 + size > width:
            lines.append(" · ".join(current))
            current, length = [], 0
        length += size + (3 if current else 0)
        current.append(pair)
    if current:
        lines.append(" · ".join(current))
    return lines
