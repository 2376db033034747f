"""The text of ``rayipy.memory_summary()`` and ``rayipy memory``: what holds memory in
the nodes' object stores, and the one-line figure of a store's use that ``rayipy status``,
``%cluster status`` and the dashboard show. Pure: data in, text out.

The data come from three places, gathered by ``rayipy/node/memory_listing.py``:

- each node's store: its ``StoreState.summary()`` (figures) and ``listing()`` (objects);
- the head: who each owner process is (role, pid, node), while it is connected;
- the calling process's ``ObjectTable``: for the objects it owns, how many ObjectRefs it
  holds, how many of its pending tasks need them, and how many processes borrow them,
  which is what tells a notebook user what to ``del``.

"Used" is always ``summary["used"]``: the bytes of arena the store has handed out
(whole pages), so it can exceed the sum of the objects' sizes by up to a page each.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from rayipy.units import format_bytes

#: The event counts of a store's summary (``StoreState.counts``); a missing one counts as 0.
COUNTS = ("evicted", "spilled", "restored", "pulled")


class Owner(NamedTuple):
    """An owner process as the head knows it."""
    role: str        # "driver" or "worker"
    pid: int
    node_id: str     # hex


class LocalRefs(NamedTuple):
    """The calling process's counts for one object it owns (``ObjectTable.reference_counts``)."""
    local_refs: int      # live ObjectRefs in this process
    pinned_by_tasks: int  # pending tasks of ours that take it as an argument
    borrowers: int       # other processes that hold a ref to it


class NodeMemory(NamedTuple):
    """One node's store: its figures, its objects, and why the listing is missing if it is."""
    node_id: str                      # hex
    address: str                      # the node's IP
    hostname: str
    summary: dict[str, Any]           # StoreState.summary(); {} if none is known yet
    objects: list[dict[str, Any]]     # StoreState.listing() entries
    problem: str = ""                 # the store could not be asked (the figures are the
    #                                   head's, up to a second old, and no objects are listed)


class MemoryData(NamedTuple):
    """Everything the report shows."""
    nodes: list[NodeMemory]
    owners: dict[str, Owner]            # owner process id (hex) -> who it is
    local: dict[str, LocalRefs]         # object id (hex) -> counts, for objects we own
    me: str = ""                        # the calling process's id (hex)
    inline_objects: int = 0             # our objects small enough to live in our own memory
    inline_bytes: int = 0


def store_figure(summary: dict[str, Any]) -> str:
    """A store's use: ``310.0 MiB / 7.0 GiB, 2 spilled (200.0 MiB)``; ``""`` when there
    are no figures at all (an agent without a store)."""
    if not summary or "capacity" not in summary:
        return ""
    if "used" not in summary:
        return f"{format_bytes(summary['capacity'])} (no figures yet)"
    text = f"{format_bytes(summary['used'])} / {format_bytes(summary['capacity'])}"
    spilled = summary.get("spilled_objects", 0)
    if spilled:
        text += f", {spilled} spilled ({format_bytes(summary.get('spilled_bytes', 0))})"
    return text


def store_usage(summary: dict[str, Any]) -> str:
    """One node's store in a line: ``object store 310.0 MiB / 7.0 GiB, 2 spilled
    (200.0 MiB)``; ``""`` when there are no figures at all."""
    figure = store_figure(summary)
    return f"object store {figure}" if figure else ""


def format_memory(data: MemoryData, stats_only: bool = False) -> str:
    """The whole report: per node its store's figures, then (unless ``stats_only``) its
    objects, largest first."""
    lines: list[str] = []
    nodes = sorted(data.nodes, key=lambda n: (n.address, n.node_id))
    count = sum(len(n.objects) for n in nodes)
    lines.append(f"======== Object stores: {len(nodes)} node(s), {count} object(s) ========")
    if not nodes:
        lines.append("(no node has an object store: the head has no node agent)")
    for node in nodes:
        lines.append("")
        lines += _node_figures(node)
        if not stats_only:
            lines += _node_objects(node, data)
    if not stats_only:
        lines += _local_note(data)
    return "\n".join(lines)


def _node_figures(node: NodeMemory) -> list[str]:
    where = node.address + (f" ({node.hostname})" if node.hostname else "")
    out = [f"Node {node.node_id[:8]}  {where}"]
    s = node.summary
    if node.problem:
        out.append(f"  (could not list its objects: {node.problem})")
    if not s or "used" not in s:
        out.append("  no figures from its store yet")
        return out
    capacity = s.get("capacity", 0)
    share = f" ({s['used'] / capacity:.1%})" if capacity else ""
    out.append(f"  used {format_bytes(s['used'])} of {format_bytes(capacity)}{share}: "
               f"primary copies {format_bytes(s.get('primary_bytes', 0))}, "
               f"secondary copies {format_bytes(s.get('secondary_bytes', 0))}")
    out.append(f"  spilled to disk: {s.get('spilled_objects', 0)} object(s), "
               f"{format_bytes(s.get('spilled_bytes', 0))}")
    out.append("  since start: " + ", ".join(f"{s.get(name, 0)} {name}" for name in COUNTS))
    return out


_HEADERS = ("object id", "size", "where", "copy", "readers", "owner", "refs here", "made at")


def _node_objects(node: NodeMemory, data: MemoryData) -> list[str]:
    if node.problem:
        return []
    if not node.objects:
        return ["  (no objects)"]
    rows = [_object_row(o, data) for o in
            sorted(node.objects, key=lambda o: (-int(o.get("size", 0)), o.get("object_id", "")))]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(_HEADERS)]
    last = len(_HEADERS) - 1

    def line(cells: tuple[str, ...]) -> str:
        # the size right-aligned, the call site (the last column) unpadded
        padded = [c.rjust(widths[i]) if i == 1 else c.ljust(widths[i])
                  for i, c in enumerate(cells[:last])]
        return "  " + "  ".join(padded + [cells[last]])

    return ["", line(_HEADERS)] + [line(r) for r in rows]


def _object_row(o: dict[str, Any], data: MemoryData) -> tuple[str, ...]:
    object_id = str(o.get("object_id", ""))
    state = str(o.get("state", ""))
    if state == "sealed":
        where = "memory"
    elif state == "spilled":
        where = f"spilled: {o.get('spill_path', '')}"
    else:
        where = state          # creating, pulling, restoring: on its way
    copy = "primary" if o.get("primary") else "secondary"
    return (object_id, format_bytes(int(o.get("size", 0))), where, copy,
            str(o.get("readers", 0)), _owner(str(o.get("owner", "")), data),
            _refs(data.local.get(object_id)), str(o.get("site", "")) or "?")


def _owner(owner: str, data: MemoryData) -> str:
    if owner and owner == data.me:
        return "this process"
    known = data.owners.get(owner)
    if known is None:
        return f"{owner[:8]} (gone)" if owner else "?"
    return f"{known.role} pid {known.pid}"


def _refs(counts: LocalRefs | None) -> str:
    if counts is None:
        return "-"
    parts = [f"{counts.local_refs} ref(s)"]
    if counts.pinned_by_tasks:
        parts.append(f"{counts.pinned_by_tasks} task(s)")
    if counts.borrowers:
        parts.append(f"{counts.borrowers} borrower(s)")
    return ", ".join(parts)


def _local_note(data: MemoryData) -> list[str]:
    if not data.me:
        return []
    listed = {str(o.get("object_id")) for n in data.nodes for o in n.objects}
    held = sum(1 for oid, c in data.local.items() if oid in listed and c.local_refs)
    out = ["", f"This process owns {held} of the objects above with live refs: an object is "
               f"freed once no ref to it is left (del it), no pending task needs it and no "
               f"other process borrows it."]
    if data.inline_objects:
        out.append(f"It also keeps {data.inline_objects} small object(s) in its own memory "
                   f"({format_bytes(data.inline_bytes)}), outside the stores.")
    return out


def node_memory_figures(info: dict[str, Any]) -> dict[str, Any]:
    """A node's last memory figures from its info (``{}`` before its first heartbeat, or
    from an agent that does not send them), checked for shape: what the network sent."""
    use = info.get("memory_use")
    if not isinstance(use, dict):
        return {}
    workers = use.get("workers")
    return {"used": int(use.get("used", 0) or 0), "total": int(use.get("total", 0) or 0),
            "workers": {int(pid): int(rss) for pid, rss in workers.items()}
            if isinstance(workers, dict) else {}}


def memory_in_use(figures: dict[str, Any]) -> str:
    """A node's real memory use, from its agent (sampled by ``rayipy.node.memory_use``): the machine's
    memory in use, and its workers' resident memory (RSS); "" before its first figures."""
    if not figures.get("total"):
        return ""
    text = (f"memory in use {format_bytes(figures['used'])} / "
            f"{format_bytes(figures['total'])}")
    workers = figures.get("workers") or {}
    if workers:
        text += (f"; workers' RSS {format_bytes(sum(workers.values()))} "
                 f"({len(workers)} workers, largest {format_bytes(max(workers.values()))})")
    return text
