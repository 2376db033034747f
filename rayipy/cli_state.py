"""The text of ``rayipy list``, ``rayipy summary`` and ``rayipy timeline``: rows as an
aligned table, JSON or YAML, and summaries as tables. Pure: data in, text out (the
commands in ``cli.py`` ask the head through ``rayipy.util.state``'s building blocks).
"""

from __future__ import annotations

import json
from typing import Any, Sequence

FORMATS = ("table", "json", "yaml")
MAX_CELL = 60      # a table's cell is cut beyond this (json and yaml keep everything)


def format_rows(rows: Sequence[dict[str, Any]], fmt: str, kind: str, total: int) -> str:
    """Rows as ``fmt``; a table says how many of how many matched."""
    if fmt == "json":
        return json.dumps(list(rows), indent=2, default=str)
    if fmt == "yaml":
        return to_yaml(list(rows))
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}: use {', '.join(FORMATS)}")
    head = f"{len(rows)} {kind}" + (f" (of {total} matching; raise --limit to see more)"
                                    if total > len(rows) else "")
    if not rows:
        return head
    columns = list(rows[0])
    return head + "\n\n" + table(columns, [[cell(row.get(c)) for c in columns] for row in rows])


def format_summary(summary: dict[str, Any], kind: str, fmt: str) -> str:
    """``summarize_tasks`` / ``summarize_actors``'s answer as ``fmt``."""
    if fmt == "json":
        return json.dumps(summary, indent=2, default=str)
    if fmt == "yaml":
        return to_yaml(summary)
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}: use {', '.join(FORMATS)}")
    cluster = summary["cluster"]
    entries = list(cluster["summary"].values())
    if kind == "tasks":
        head = (f"{cluster['total_tasks']} task(s), of which {cluster['total_actor_tasks']} "
                f"actor call(s) and {cluster['total_actor_scheduled']} actor creation(s)")
        columns = ["func_or_class_name", "type", "state_counts"]
    else:
        head = f"{cluster['total_actors']} actor(s)"
        columns = ["class_name", "state_counts"]
    if not entries:
        return head
    rows = [[cell(e[c]) if c != "state_counts" else
             ", ".join(f"{state}: {n}" for state, n in e[c].items()) for c in columns]
            for e in entries]
    return head + "\n\n" + table([c.upper() for c in columns], rows)


def table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, two spaces apart; numbers right-aligned."""
    widths = [max(len(columns[i]), *(len(r[i]) for r in rows)) for i in range(len(columns))]
    numeric = [all(_is_number(r[i]) for r in rows) for i in range(len(columns))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(widths[i]) if numeric[i] else c.ljust(widths[i])
                         for i, c in enumerate(cells)).rstrip()

    return "\n".join([line([c.upper() for c in columns])] + [line(r) for r in rows])


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        text = f"{value:.3f}"
    elif isinstance(value, dict):
        text = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in value.items())
    else:
        text = str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= MAX_CELL else text[:MAX_CELL - 3] + "..."


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return text == "-"
    return True


def to_yaml(value: Any, indent: int = 0) -> str:
    """A small YAML writer for plain data (dicts, lists, scalars): no dependency on PyYAML.
    Strings are written as JSON strings, which YAML reads."""
    pad = "  " * indent
    if isinstance(value, dict):
        if not value:
            return pad + "{}"
        lines = []
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{_scalar(str(key))}:")
                lines.append(to_yaml(item, indent + 1))
            else:
                lines.append(f"{pad}{_scalar(str(key))}: {to_yaml(item).strip()}")
        return "\n".join(lines)
    if isinstance(value, list):
        if not value:
            return pad + "[]"
        lines = []
        for item in value:
            text = to_yaml(item, indent + 1).lstrip()
            lines.append(f"{pad}- {text}")
        return "\n".join(lines)
    return pad + _scalar(value)


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))
