"""HTML for notebooks: ObjectRefs, the cluster, its status. Plain strings, no IPython.

Registered as IPython's ``text/html`` formatters for ObjectRef and ClusterContext by the
extension, so the core classes stay free of display code.
"""

from __future__ import annotations

import html
import time
from typing import Any

from rayipy.core.memory_report import store_figure, store_usage
from rayipy.core.objects import FAILED, PENDING, READY
from rayipy.core.progress import format_seconds
from rayipy.core.memory_report import memory_in_use
from rayipy.protocol.errors import error_class_name

_TABLE = ('<table class="rayipy-table" style="border-collapse: collapse; text-align: left">')
_STATE_COLOURS = {"pending": "#1565c0", "queued": "#1565c0", "running": "#ef6c00", "done": "#2e7d32", "failed": "#c62828", "freed": "#757575"}


def escape(value: Any) -> str:
    return html.escape(str(value))


def plain_address(address: str) -> str:
    """An address as users write it (``rayipy.init(address=...)``, ``rayipy status``, the
    start message): host:port, without the ``tcp://`` of the wire."""
    return address.removeprefix("tcp://")


def _rows(rows: list[tuple[str, Any]]) -> str:
    return "".join(f"<tr><th style='padding-right: 1em'>{escape(k)}</th><td>{v}</td></tr>"
                   for k, v in rows)


def ref_state(ref: Any) -> tuple[str, dict]:
    """('pending' | 'done' | 'failed: ValueError' | 'freed', info) of an ObjectRef, cheaply."""
    runtime = ref._runtime
    if runtime is None:
        return "freed", {}
    state, payload = runtime.objects.value(ref.id)
    info = runtime.objects.info(ref.id)
    if state == PENDING:
        return "pending", info
    if state == READY:
        return "done", info
    if state == FAILED and payload is not None:
        return f"failed: {error_class_name(payload) or 'error'}", info
    return "freed", info


PHASE_TIMEOUT = 0.5   # seconds a repr waits for the head before saying only "pending"


def pending_phase(ref: Any, now: float | None = None) -> str:
    """Where a pending ref's task is: "running for 1.2 s", "queued for 3.4 s" (since this
    process submitted it), or "pending" when that cannot be told. The owner knows when it
    submitted and which of its tasks run on leased workers; the head, which run on its
    workers (one cheap request, ``running_since``)."""
    runtime = ref._runtime
    info = runtime.objects.info(ref.id)
    submitted = info.get("submitted")
    now = time.monotonic() if now is None else now
    if submitted is None:     # not our task (borrowed) or not a task's (put)
        return "pending"
    age = format_seconds(max(0.0, now - submitted))
    task_id = ref.id[:-2]
    try:
        running = runtime.request("running_since", [task_id], timeout=PHASE_TIMEOUT)
    except Exception:
        return f"pending for {age}"
    if task_id in running:
        return f"running for {format_seconds(max(0.0, float(running[task_id])))}"
    if runtime.on_lease(task_id):
        return f"running on a leased worker (submitted {age} ago)"
    return f"queued for {age}"


def object_ref_html(ref: Any) -> str:
    state, info = ref_state(ref)
    if state == "pending":
        state = pending_phase(ref)
    colour = _STATE_COLOURS.get(state.split(":")[0].split(" ")[0], "inherit")
    parts = [f"<code>ObjectRef({escape(ref.hex()[:16])}…)</code>",
             f"<span style='color: {colour}; font-weight: bold'>{escape(state)}</span>"]
    if info.get("task"):
        parts.append(f"task <code>{escape(info['task'])}</code>")
    if info.get("where"):
        parts.append(f"on {escape(info['where'])}")
    if info.get("duration"):
        parts.append(f"in {escape(format_seconds(info['duration']))}")
    return '<span class="rayipy-ref">' + " · ".join(parts) + "</span>"


def _resources(resources: dict[str, float]) -> str:
    shown = []
    for name in sorted(resources, key=lambda n: (n != "CPU", n != "GPU", n)):
        amount = resources[name]
        if name == "memory":   # what tasks may reserve (memory=...), not what they use
            shown.append(f"memory reservation {amount / 2**30:.1f} GiB")
        else:
            shown.append(f"{name} {amount:g}")
    return ", ".join(shown) or "none"


def context_html(address: str, local: bool, cluster_id: str, nodes: list[dict] | None,
                 resources: dict[str, float] | None, dashboard_url: str, connected: bool) -> str:
    kind = "local cluster" if local else "cluster"
    rows: list[tuple[str, Any]] = [("address", f"<code>{escape(address)}</code>"), ("cluster id", escape(cluster_id))]
    if not connected:
        rows.append(("state", "disconnected"))
    if nodes is not None:
        rows.append(("nodes", len(nodes)))
    if resources is not None:
        rows.append(("resources", escape(_resources(resources))))
    if dashboard_url:
        rows.append(("dashboard", f'<a href="{escape(dashboard_url)}" target="_blank">{escape(dashboard_url)}</a>'))
    return (f"<div class='rayipy-cluster'><b>rayipy {kind}</b>{_TABLE}{_rows(rows)}</table></div>")


def status_html(status: dict, workers: list[dict], available: dict[str, float],
                local_counts: dict[str, int], dashboard_url: str) -> str:
    """``%cluster status``: nodes with their resources, object stores and workers, then
    task counts."""
    by_node: dict[str, list[dict]] = {}
    for w in workers:
        by_node.setdefault(w["node_id"], []).append(w)
    stores = status.get("object_stores", {})
    memory = status.get("memory_use", {})
    head = ("<tr><th>node</th><th>address</th><th>resources</th><th>memory in use</th>"
            "<th>object store</th><th>workers</th><th>busy</th><th>actors</th></tr>")
    body = []
    for node in status.get("nodes", []):
        mine = by_node.get(node["NodeID"], [])
        body.append(
            f"<tr><td><code>{escape(node['NodeID'][:8])}</code></td>"
            f"<td>{escape(node.get('NodeManagerAddress', ''))}</td>"
            f"<td>{escape(_resources(node.get('Resources', {})))}</td>"
            f"<td>{escape(memory_in_use(memory.get(node['NodeID']) or {}) or '-')}</td>"
            f"<td>{escape(store_figure(stores.get(node['NodeID']) or {}) or '-')}</td>"
            f"<td>{len(mine)}</td><td>{sum(1 for w in mine if w['tasks'] or w['leased'])}</td>"
            f"<td>{sum(1 for w in mine if w['actor'])}</td></tr>")
    tasks = status.get("tasks", {})
    cluster_rows = [("queued", tasks.get("queued", 0)), ("running", tasks.get("running", 0)),
                    ("finished", tasks.get("finished", 0)), ("failed", tasks.get("failed", 0)),
                    ("cancelled", tasks.get("cancelled", 0))]
    mine_rows = [("submitted", local_counts.get("submitted", 0)),
                 ("pending", max(0, local_counts.get("submitted", 0) - local_counts.get("done", 0)
                                 - local_counts.get("failed", 0) - local_counts.get("cancelled", 0))),
                 ("done", local_counts.get("done", 0)), ("failed", local_counts.get("failed", 0)),
                 ("cancelled", local_counts.get("cancelled", 0))]
    header = (f"<b>rayipy cluster</b> <code>{escape(plain_address(status.get('address', '')))}</code> · "
              f"id {escape(status.get('cluster_id', ''))} · up "
              f"{escape(format_seconds(status.get('uptime', 0.0)))} · available: "
              f"{escape(_resources(available))}")
    if dashboard_url:
        header += f' · <a href="{escape(dashboard_url)}" target="_blank">dashboard</a>'
    counts = "".join(f"<th>{escape(k)}</th>" for k, _ in cluster_rows)
    values = "".join(f"<td>{v}</td>" for _, v in cluster_rows)
    mine_head = "".join(f"<th>{escape(k)}</th>" for k, _ in mine_rows)
    mine_values = "".join(f"<td>{v}</td>" for _, v in mine_rows)
    return (f"<div class='rayipy-status'>{header}"
            f"{_TABLE}{head}{''.join(body)}</table>"
            f"<b>tasks, whole cluster</b> (the head's view){_TABLE}<tr>{counts}</tr><tr>{values}</tr></table>"
            f"<b>tasks of this notebook</b>{_TABLE}<tr>{mine_head}</tr><tr>{mine_values}</tr></table></div>")


def status_text(status: dict, workers: list[dict], local_counts: dict[str, int]) -> str:
    tasks = status.get("tasks", {})
    stores = "".join(f"; node {node_id[:8]} {usage}" for node_id, summary in
                     sorted(status.get("object_stores", {}).items())
                     if (usage := store_usage(summary)))
    stores += "".join(f"; node {node_id[:8]} {usage}" for node_id, figures in
                      sorted(status.get("memory_use", {}).items())
                      if (usage := memory_in_use(figures)))
    return (f"rayipy cluster {plain_address(status.get('address', ''))}: {len(status.get('nodes', []))} node(s), "
            f"{len(workers)} worker(s); cluster tasks queued {tasks.get('queued', 0)}, running "
            f"{tasks.get('running', 0)}, finished {tasks.get('finished', 0)}, failed "
            f"{tasks.get('failed', 0)}, cancelled {tasks.get('cancelled', 0)}; this notebook: "
            f"submitted {local_counts.get('submitted', 0)}, done {local_counts.get('done', 0)}, "
            f"failed {local_counts.get('failed', 0)}, cancelled {local_counts.get('cancelled', 0)}"
            f"{stores}")
