"""Ray's state API (``ray.util.state``): what the cluster runs and holds, as rows.

    from rayipy.util.state import list_tasks, summarize_tasks
    list_tasks(filters=[("state", "=", "FAILED")], limit=10)

Each ``list_*`` returns a list of rows, dicts with Ray's field names (read them as
``row["state"]`` or ``row.state``); ``detail=True`` gives every field, otherwise Ray's
default columns. ``filters`` is Ray's: a list of ``(key, predicate, value)`` with
predicate ``"="`` or ``"!="``, the value compared as a string (states and other enum-like
fields without regard to case). ``limit`` caps the rows (Ray's default 100); when more
matched, a warning says how many.

Where the rows come from:

- tasks, actors, nodes, workers: the head (``request_state_list``, rows built by
  ``rayipy/core/state_rows.py``). Ended tasks are the head's record of the last
  ``RECENT_CAPACITY`` (10,000) tasks, those it scheduled and those that went straight
  to a worker (actor calls, tasks on a lease), which workers report in their heartbeat,
  so those appear up to a second after they end (and at most 500 per worker per second
  one by one; ``summarize_tasks`` counts them all). Tasks whose arguments are not ready
  have not left their owner, so only the process that owns them lists them
  (``PENDING_ARGS_AVAIL``).
- objects: each node's object store (values of 100 KiB or more) and, for the calling
  process, the small values it keeps in its own memory.

The calls need ``rayipy.init()`` first (or run inside a task); the ``rayipy list``,
``rayipy summary`` and ``rayipy timeline`` commands ask a cluster from the shell.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import TYPE_CHECKING, Any

from rayipy.core import state_rows
from rayipy.core.state_rows import check_filters, check_limit, select
from rayipy.dashboard.history import RECENT_CAPACITY
from rayipy.node.store_client import list_store

if TYPE_CHECKING:
    from rayipy.node.client import Runtime

__all__ = ["list_tasks", "list_actors", "list_objects", "list_nodes", "list_workers",
           "get_task", "get_actor", "summarize_tasks", "summarize_actors", "StateRow",
           "RECENT_CAPACITY", "DEFAULT_LIMIT"]

DEFAULT_LIMIT = 100          # Ray's
DEFAULT_TIMEOUT = 30.0       # seconds, Ray's
LIST_STORE_TIMEOUT = 10.0    # for one node's store to list its objects


class StateRow(dict):
    """A row: a dict with Ray's field names, whose fields also read as attributes
    (``row.state``), as Ray's ``TaskState`` and friends do."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"this row has no field {name!r}: it has "
                                 f"{', '.join(self)}") from None


# -- lists -----------------------------------------------------------------------------------------
def list_tasks(address: str | None = None, filters: list | None = None,
               limit: int = DEFAULT_LIMIT, timeout: float = DEFAULT_TIMEOUT,
               detail: bool = False) -> list[StateRow]:
    """Tasks: running and queued ones first, then ended ones, newest first.

    Fields: task_id, attempt_number, name, state, type (NORMAL_TASK, ACTOR_TASK,
    ACTOR_CREATION_TASK), func_or_class_name, actor_id, node_id, worker_id, worker_pid,
    error_type (Ray's: TASK_EXECUTION_EXCEPTION, TASK_CANCELLED, WORKER_DIED,
    ACTOR_DIED...; the default columns end here), error_message ("ClassName: text"),
    start_time_ms, end_time_ms (epoch milliseconds), duration_s, and via ("head", or
    "direct" for actor calls and tasks on a lease). States: PENDING_ARGS_AVAIL (only the
    caller's own), PENDING_NODE_ASSIGNMENT, SUBMITTED_TO_WORKER, RUNNING,
    RUNNING_IN_RAY_GET, FINISHED, FAILED. Ended tasks: the head keeps the last
    ``RECENT_CAPACITY``; older ones are counted by ``summarize_tasks`` only."""
    runtime, filters, limit = _checked(address, "tasks", filters, limit)
    answer = _ask_head(runtime, "tasks", filters, limit, detail, timeout)
    own = [state_rows.owner_pending_row(spec) for spec in runtime.waiting_for_arguments()]
    own_listing = select(own, filters, limit, "tasks", detail)
    rows = own_listing.rows + answer["rows"]
    total = own_listing.total + answer["total"]
    return _finish("tasks", rows[:limit], total, limit)


def list_actors(address: str | None = None, filters: list | None = None,
                limit: int = DEFAULT_LIMIT, timeout: float = DEFAULT_TIMEOUT,
                detail: bool = False) -> list[StateRow]:
    """Actors, live and dead: actor_id, class_name, state (PENDING_CREATION, ALIVE,
    RESTARTING, DEAD), name, node_id, pid, ray_namespace (the default columns end here),
    is_detached, death_cause, required_resources, worker_id, max_restarts, num_restarts."""
    runtime, filters, limit = _checked(address, "actors", filters, limit)
    answer = _ask_head(runtime, "actors", filters, limit, detail, timeout)
    return _finish("actors", answer["rows"], answer["total"], limit)


def list_nodes(address: str | None = None, filters: list | None = None,
               limit: int = DEFAULT_LIMIT, timeout: float = DEFAULT_TIMEOUT,
               detail: bool = False) -> list[StateRow]:
    """Nodes, live and the last 100 gone: node_id, node_ip, is_head_node, state (ALIVE,
    DEAD), node_name, resources_total (the default columns end here),
    resources_available, hostname, death_cause."""
    runtime, filters, limit = _checked(address, "nodes", filters, limit)
    answer = _ask_head(runtime, "nodes", filters, limit, detail, timeout)
    return _finish("nodes", answer["rows"], answer["total"], limit)


def list_workers(address: str | None = None, filters: list | None = None,
                 limit: int = DEFAULT_LIMIT, timeout: float = DEFAULT_TIMEOUT,
                 detail: bool = False) -> list[StateRow]:
    """Worker processes and connected drivers: worker_id, is_alive, worker_type (WORKER,
    DRIVER), node_id, ip, pid (the default columns end here), state (IDLE, RUNNING,
    BLOCKED, ACTOR, LEASED; DRIVER), actor_id, tasks_queued, leased_to. Only live
    processes are listed."""
    runtime, filters, limit = _checked(address, "workers", filters, limit)
    answer = _ask_head(runtime, "workers", filters, limit, detail, timeout)
    return _finish("workers", answer["rows"], answer["total"], limit)


def list_objects(address: str | None = None, filters: list | None = None,
                 limit: int = DEFAULT_LIMIT, timeout: float = DEFAULT_TIMEOUT,
                 detail: bool = False) -> list[StateRow]:
    """Objects: every object in the nodes' object stores (values of 100 KiB or more),
    largest first, then the small values the calling process owns (kept in its own
    memory; other processes' small values are not listed).

    Fields: object_id, object_size (bytes), reference_type (PINNED_IN_MEMORY: in a store;
    LOCAL_REFERENCE: a small value here), call_site (where it was made: the file and line
    of the put, or the task's name), type (its owner: DRIVER or WORKER), pid (the owner's),
    ip (the default columns end here), node_id, task_status, store_state (in memory,
    spilled...), primary_copy, readers, owner_id."""
    runtime, filters, limit = _checked(address, "objects", filters, limit)
    rows = object_rows(runtime, timeout)
    listing = select(rows, filters, limit, "objects", detail)
    return _finish("objects", listing.rows, listing.total, limit)


def get_task(id: str | bytes, address: str | None = None,
             timeout: float = DEFAULT_TIMEOUT) -> StateRow | None:
    """The task with this id (hex, as ``list_tasks`` gives it, or an ObjectRef's task:
    ``ref.task_id()``), with every field; None if the head does not know it (never
    submitted, or older than the last ``RECENT_CAPACITY``)."""
    rows = list_tasks(address, [("task_id", "=", _hex(id))], 1, timeout, detail=True)
    return rows[0] if rows else None


def get_actor(id: str | bytes, address: str | None = None,
              timeout: float = DEFAULT_TIMEOUT) -> StateRow | None:
    """The actor with this id (hex), with every field; None if there is none."""
    rows = list_actors(address, [("actor_id", "=", _hex(id))], 1, timeout, detail=True)
    return rows[0] if rows else None


# -- summaries -------------------------------------------------------------------------------------
def summarize_tasks(address: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> dict:
    """Ray's answer: ``{"cluster": {"summary": {name: {"func_or_class_name", "type",
    "state_counts": {state: n}}}, "total_tasks", "total_actor_tasks",
    "total_actor_scheduled", "summary_by": "func_name"}}``, busiest first. FINISHED and
    FAILED count every task since the head started (not only the last
    ``RECENT_CAPACITY``)."""
    runtime = _runtime(address)
    return runtime.request("state_summary", "tasks", timeout=_timeout(timeout))


def summarize_actors(address: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> dict:
    """Ray's answer: ``{"cluster": {"summary": {class_name: {"class_name",
    "state_counts": {state: n}}}, "total_actors", "summary_by": "class"}}``."""
    runtime = _runtime(address)
    return runtime.request("state_summary", "actors", timeout=_timeout(timeout))


# -- the timeline ----------------------------------------------------------------------------------
def timeline(filename: str | None = None) -> list[dict] | None:
    """The recent tasks as a Chrome trace (Ray's ``ray.timeline``): complete events
    (``"ph": "X"``, ``ts`` and ``dur`` in microseconds) with ``pid`` a node, ``tid`` a
    worker's process id, ``name`` the task's name. Written as JSON to ``filename`` if
    given (open it in chrome://tracing or ui.perfetto.dev), else returned as a list.
    It covers the ended tasks the head keeps (the last ``RECENT_CAPACITY``)."""
    if filename is not None and not isinstance(filename, str):
        raise TypeError(f"filename must be a path (str) or None, got {filename!r}")
    events = _runtime(None).request("timeline", timeout=DEFAULT_TIMEOUT)
    if filename is None:
        return events
    with open(filename, "w") as f:
        json.dump(events, f)
    return None


# -- building blocks (the command line uses them too) ---------------------------------------------
def object_rows(runtime: Runtime, timeout: float = DEFAULT_TIMEOUT,
                own_objects: bool = True) -> list[StateRow]:
    """Every object of every node's store, largest first; with ``own_objects``, then the
    small values this process keeps in its own memory."""
    answer = runtime.request("memory", timeout=_timeout(timeout))
    owners = answer["processes"]
    rows: list[StateRow] = []
    for node in answer["nodes"]:
        if not node["store"]:
            continue
        try:
            _, objects = list_store(node["store"], runtime.signer,
                                    min(LIST_STORE_TIMEOUT, _timeout(timeout)))
        except (ConnectionError, TimeoutError, OSError) as e:
            warnings.warn(f"the object store of node {node['node_id'][:8]} could not list "
                          f"its objects: {e}", stacklevel=3)
            continue
        for o in objects:
            owner = owners.get(str(o.get("owner", "")), {})
            rows.append(StateRow(
                object_id=o["object_id"], object_size=int(o.get("size", 0)),
                reference_type="PINNED_IN_MEMORY", call_site=o.get("site") or "",
                type=str(owner.get("role", "")).upper(), pid=owner.get("pid", 0),
                ip=node["address"], node_id=node["node_id"], task_status="FINISHED",
                store_state=str(o.get("state", "")), primary_copy=bool(o.get("primary")),
                readers=int(o.get("readers", 0)), owner_id=str(o.get("owner", ""))))
    rows.sort(key=lambda r: (-r["object_size"], r["object_id"]))
    if own_objects:
        me = runtime.process_id.hex()
        listed = {r["object_id"] for r in rows}
        for object_id, size in runtime.objects.inline_values():
            if object_id.hex() in listed:
                continue
            rows.append(StateRow(
                object_id=object_id.hex(), object_size=size, reference_type="LOCAL_REFERENCE",
                call_site="", type=runtime.role.upper(), pid=os.getpid(),
                ip=runtime.info.get("ip", ""), node_id=runtime.node_id.hex(),
                task_status="FINISHED", store_state="in owner's memory", primary_copy=True,
                readers=0, owner_id=me))
    return rows


def _checked(address: str | None, kind: str, filters: Any, limit: Any
             ) -> tuple[Runtime, list, int]:
    runtime = _runtime(address)
    return runtime, check_filters(kind, filters), check_limit(limit)


def _ask_head(runtime: Runtime, kind: str, filters: list, limit: int, detail: Any,
              timeout: float) -> dict:
    if not isinstance(detail, bool):
        raise TypeError(f"detail must be True or False, got {detail!r}")
    return runtime.request("state_list", kind, filters, limit, detail,
                           timeout=_timeout(timeout))


def _finish(kind: str, rows: list[dict], total: int, limit: int) -> list[StateRow]:
    if total > len(rows):
        warnings.warn(f"{total} {kind} match; showing {len(rows)} (limit={limit}): raise "
                      f"limit, or narrow them with filters", stacklevel=3)
    return [StateRow(row) for row in rows]


def _runtime(address: str | None) -> Runtime:
    from rayipy.session import require_runtime
    if address not in (None, "auto"):
        raise ValueError(f"the state API asks the cluster this process is connected to; "
                         f"to ask the cluster at {address!r}, call rayipy.init(address="
                         f"{address!r}) first, or use `rayipy list --address {address}`")
    return require_runtime()


def _timeout(timeout: Any) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
    return float(timeout)


def _hex(id: str | bytes) -> str:
    if isinstance(id, bytes):
        return id.hex()
    if isinstance(id, str):
        return id.lower()
    raise TypeError(f"an id is a hex string (as list_tasks gives it), got {id!r}")

