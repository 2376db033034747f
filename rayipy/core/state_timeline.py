"""``rayipy.timeline()``: recent tasks as a Chrome trace, from the head's task history.

The Trace Event Format that chrome://tracing and Perfetto (ui.perfetto.dev) read: a JSON
list of events. Each ended task that ran is a complete event (``"ph": "X"``) with ``ts``
(its start) and ``dur`` in microseconds; ``pid`` is its node (a small number, named by
a ``process_name`` metadata event: "node 10.0.0.7 (1a2b3c4d)"), ``tid`` the worker's
process id (named "worker pid N"), ``name`` the task's name, ``cat`` its type
(``NORMAL_TASK``...) and ``args`` its id, state, and error if it failed. Tasks that
never ran (cancelled while queued) have no place on a worker and are left out. Pure.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from rayipy.core.state_rows import error_type, task_type


def trace_events(records: Iterable[Sequence[Any]], node_ips: dict[bytes, str]
                 ) -> list[dict[str, Any]]:
    """Chrome trace events for ended tasks (``TaskHistory`` records: ``history.Finished``'s
    fields in order), by start time. ``node_ips`` maps a node id to its address, for the
    process names."""
    events: list[dict[str, Any]] = []
    nodes: dict[bytes, int] = {}
    threads: set[tuple[int, int]] = set()
    # Only what ran somewhere: a start time, and a worker.
    ran = sorted((r for r in records if r[11] and r[4]), key=lambda r: (r[11], r[6]))
    for (task_id, name, status, node_id, worker_pid, duration, ended_at, worker_id, actor_id,
         method, error, started_at, direct) in ran:
        if node_id not in nodes:
            nodes[node_id] = len(nodes) + 1
            where = node_ips.get(node_id, "")
            label = f"node {where} ({node_id.hex()[:8]})" if where else f"node {node_id.hex()[:8]}"
            events.append({"ph": "M", "name": "process_name", "pid": nodes[node_id], "tid": 0,
                           "args": {"name": label}})
        pid = nodes[node_id]
        if (pid, worker_pid) not in threads:
            threads.add((pid, worker_pid))
            events.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": worker_pid,
                           "args": {"name": f"worker pid {worker_pid}"}})
        kind = task_type(actor_id, method)
        args = {"task_id": task_id.hex(), "state": "FINISHED" if status == 0 else "FAILED",
                "worker_id": worker_id.hex(), "via": "direct" if direct else "head"}
        if actor_id:
            args["actor_id"] = actor_id.hex()
        if error:
            args["error_type"] = error_type(status, error)
            args["error"] = error
        events.append({"ph": "X", "name": name, "cat": kind, "pid": pid, "tid": worker_pid,
                       "ts": started_at * 1e6, "dur": duration * 1e6, "args": args})
    return events
