"""What ``rayipy status`` prints, from the head's ``status`` answer (pure formatting).

Laid out like ``ray status``: the nodes (each with its object store's use), the resources
in use out of the total, then the tasks. Kept apart from the command so that it is tested
without a cluster.
"""

from __future__ import annotations

import datetime

from rayipy import units
from rayipy.core.memory_report import store_usage
from rayipy.core.memory_report import memory_in_use

# The order resources are listed in; custom resources follow, by name.
_FIRST = ("CPU", "GPU", "memory")
RESERVED_NOTE = " reserved by tasks (real use: under Nodes)"   # the memory resource's line


def format_bytes(n: float) -> str:
    """A resource's bytes (the ``memory`` resource): two decimals, as this table always had."""
    return units.format_bytes(n, decimals=2)


def format_amount(name: str, amount: float) -> str:
    return format_bytes(amount) if name == "memory" else f"{amount:g}"


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    parts = [f"{days}d"] if days else []
    if days or hours:
        parts.append(f"{hours}h")
    if days or hours or minutes:
        parts.append(f"{minutes}m")
    parts.append(f"{seconds}s")
    return " ".join(parts)


def _ordered(names) -> list[str]:
    names = set(names)
    return [n for n in _FIRST if n in names] + sorted(names - set(_FIRST))


def _usage(total: dict, available: dict) -> list[tuple[str, str]]:
    out = []
    for name in _ordered(total):
        used = total[name] - available.get(name, 0.0)
        out.append((name, f"{format_amount(name, max(0.0, used))}/{format_amount(name, total[name])}"))
    return out


def _where(node: dict) -> str:
    where = node["NodeManagerAddress"]
    if node.get("NodeManagerHostname"):
        where += f" ({node['NodeManagerHostname']})"
    return where


def format_status(status: dict, now: datetime.datetime | None = None,
                  dashboard_url: str = "") -> str:
    """The text of ``rayipy status``: nodes and their object stores, resources used /
    total, tasks."""
    now = now or datetime.datetime.now()
    address = status["address"].removeprefix("tcp://")
    head_ip = address.rpartition(":")[0]
    nodes = [n for n in status["nodes"] if n.get("Alive", True)]
    dead = [n for n in status["nodes"] if not n.get("Alive", True)]
    available = status.get("available", {})
    stores = status.get("object_stores", {})
    memory = status.get("memory_use", {})
    lines = [f"======== rayipy cluster {status['cluster_id']} at {address}: "
             f"{now:%Y-%m-%d %H:%M:%S} (up {format_duration(status['uptime'])}) ========",
             ""]
    if dashboard_url:
        lines += [f"Dashboard: http://{dashboard_url}", ""]
    lines.append(f"Nodes ({len(nodes)} alive)")
    total: dict[str, float] = {}
    free: dict[str, float] = {}
    # The head's node is the one on the head's address (ambiguous when nodes share it).
    on_head_ip = [n for n in nodes if n["NodeManagerAddress"] == head_ip]
    for node in sorted(nodes, key=lambda n: (n["NodeManagerAddress"] != head_ip,
                                             n["NodeManagerAddress"], n["NodeID"])):
        node_total = node["Resources"]
        node_free = available.get(node["NodeID"], node_total)
        for name, amount in node_total.items():
            total[name] = total.get(name, 0.0) + amount
            free[name] = free.get(name, 0.0) + node_free.get(name, 0.0)
        where = _where(node)
        tag = "  head" if on_head_ip == [node] else ""
        usage = ", ".join(f"{used} {name}" for name, used in _usage(node_total, node_free)
                          if name != "memory")
        lines.append(f"  node {node['NodeID'][:8]}  {where}{tag}  {usage}")
        in_use = memory_in_use(memory.get(node["NodeID"]) or {})
        if in_use:
            lines.append(f"      {in_use}")
        store = store_usage(stores.get(node["NodeID"]) or {})
        if store:
            lines.append(f"      {store}")
    if not nodes:
        lines.append("  (no nodes: the head has no node agent)")
    if dead:
        lines += ["", f"Lost nodes ({len(dead)})"]
        for node in dead[-10:]:
            lines.append(f"  node {node['NodeID'][:8]}  {_where(node)}: "
                         f"{node.get('DeathReason', 'gone')}")
    lines += ["", "Resources (in use / total)"]
    # The memory resource is what tasks reserved (memory=...), not what they use: the
    # nodes' lines above say what is used.
    width = max((len(name) for name in total), default=0)
    for name, used in _usage(total, free):
        note = RESERVED_NOTE if name == "memory" else ""
        lines.append(f"  {name:<{width}}  {used}{note}")
    if not total:
        lines.append("  (none)")
    tasks = status.get("tasks", {})
    running = tasks.get("running", 0)
    # Waiting: at the head, or on a worker behind its running task (pipelined).
    queued = tasks.get("queued", 0) + max(0, tasks.get("assigned", 0) - running)
    lines += ["", "Tasks",
              f"  queued {queued}, running {running}, "
              f"finished {tasks.get('finished', 0)}, failed {tasks.get('failed', 0)}, "
              f"cancelled {tasks.get('cancelled', 0)}, retried {tasks.get('retried', 0)}",
              f"  workers {tasks.get('workers', 0)} ({tasks.get('blocked_workers', 0)} blocked "
              f"on nested tasks, {tasks.get('leased_workers', 0)} leased to drivers)"]
    drivers = status.get("peers", {}).get("driver")
    if drivers is not None:
        lines.append(f"  drivers connected: {drivers}")
    dropped = status.get("dropped_messages") or {}
    if dropped:
        lines += ["", "Dropped messages (bad signature, malformed...): " +
                  ", ".join(f"{why}: {n}" for why, n in sorted(dropped.items()))]
    return "\n".join(lines)
