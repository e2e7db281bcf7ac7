"""How client commands print: an aligned table of chosen columns, or the API's JSON as it came."""

from __future__ import annotations

import json
from collections.abc import Sequence

import click


def cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ",".join(cell(v) for v in value) or "-"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def fields_of(item: dict, columns: Sequence[str] | None = None) -> str:
    """One object as `key: value` lines (all of its keys, or `columns`)."""
    keys = columns or [k for k in item if k != "events"]
    width = max(len(k) for k in keys)
    return "\n".join(f"{k.ljust(width)}  {cell(item.get(k))}" for k in keys)


def emit(output: str, data: object, text: str) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True) if output == "json" else text)
