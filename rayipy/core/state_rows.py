"""The state API's rows, filters and summaries (``rayipy.util.state``), with Ray's names.

Pure: records in, plain dicts out. The head builds task, actor, worker and node rows
from its scheduler and its ``TaskHistory`` (``task_rows`` and friends, called on the
head's thread, which owns that state); the caller's side adds object rows from the
nodes' stores and applies nothing twice. Filters, limits and summaries are applied
where the rows are built, so the head sends only what was asked for.

Task states, as Ray names them, and what each means here:

- ``PENDING_ARGS_AVAIL``: its ref arguments are not ready; it has not left its owner
  (listed only by the process that owns it: the head never sees it);
- ``PENDING_NODE_ASSIGNMENT``: at the head, waiting for a worker (or an actor for a place);
- ``SUBMITTED_TO_WORKER``: queued on a worker behind the task it runs (pipelining);
- ``RUNNING``, and ``RUNNING_IN_RAY_GET`` while its worker waits in ``get``;
- ``FINISHED``, ``FAILED``: ended (the head keeps the last ``RECENT_CAPACITY``).

Ray's other states (``PENDING_OBJ_STORE_MEM_AVAIL``, ``PENDING_ARGS_FETCH``...) have no
counterpart: those steps happen inside a worker, which reports them as ``RUNNING``.
"""

from __future__ import annotations

import pickle
from typing import Any, Iterable, NamedTuple, Sequence

OK, ERROR, CANCELLED, CRASHED = 0, 1, 2, 3    # rayipy.protocol.messages' statuses

NORMAL_TASK, ACTOR_TASK, ACTOR_CREATION_TASK = "NORMAL_TASK", "ACTOR_TASK", "ACTOR_CREATION_TASK"

TASK_STATES = ("PENDING_ARGS_AVAIL", "PENDING_NODE_ASSIGNMENT", "SUBMITTED_TO_WORKER",
               "RUNNING", "RUNNING_IN_RAY_GET", "FINISHED", "FAILED")
ACTOR_STATES = ("PENDING_CREATION", "ALIVE", "RESTARTING", "DEAD")

#: The columns of each kind of row: ``detail=False`` gives the first ones, Ray's default
#: columns; ``detail=True`` all. Filters may name any of them.
COLUMNS: dict[str, tuple[str, ...]] = {
    "tasks": ("task_id", "attempt_number", "name", "state", "type", "func_or_class_name",
              "actor_id", "node_id", "worker_id", "worker_pid", "error_type",
              "error_message", "start_time_ms", "end_time_ms", "duration_s", "via"),
    "actors": ("actor_id", "class_name", "state", "name", "node_id", "pid", "ray_namespace",
               "is_detached", "death_cause", "required_resources", "worker_id",
               "max_restarts", "num_restarts"),
    "objects": ("object_id", "object_size", "reference_type", "call_site", "type", "pid",
                "ip", "node_id", "task_status", "store_state", "primary_copy", "readers",
                "owner_id"),
    "nodes": ("node_id", "node_ip", "is_head_node", "state", "node_name", "resources_total",
              "resources_available", "hostname", "death_cause"),
    "workers": ("worker_id", "is_alive", "worker_type", "node_id", "ip", "pid",
                "state", "actor_id", "tasks_queued", "leased_to"),
}
DEFAULT_COLUMNS: dict[str, int] = {"tasks": 11, "actors": 7, "objects": 7, "nodes": 6,
                                   "workers": 6}
PREDICATES = ("=", "!=")
#: Keys compared without regard to case (Ray does so for states).
CASELESS = {"state", "type", "error_type", "reference_type", "worker_type", "task_status",
            "is_alive", "is_head_node", "is_detached", "primary_copy", "store_state", "via"}
MAX_ERROR_TEXT = 500

Filter = tuple[str, str, str]


class Listing(NamedTuple):
    """Rows after filters and limit, and how many matched before the limit."""
    rows: list[dict[str, Any]]
    total: int


# -- filters and limits --------------------------------------------------------------------
def check_filters(kind: str, filters: Any) -> list[Filter]:
    """Ray's filters, checked: a list of ``(key, predicate, value)`` with predicate "=" or
    "!="; the value is compared as a string. ValueError naming what is valid otherwise."""
    columns = columns_of(kind)
    if filters is None:
        return []
    if isinstance(filters, (str, bytes)) or not isinstance(filters, (list, tuple)):
        raise ValueError(f"filters must be a list of (key, predicate, value) tuples, got "
                         f"{filters!r}")
    out: list[Filter] = []
    for item in filters:
        if not isinstance(item, (list, tuple)) or len(item) != 3:
            raise ValueError(f"a filter is a (key, predicate, value) tuple, got {item!r}")
        key, predicate, value = item
        if key not in columns:
            raise ValueError(f"cannot filter {kind} by {key!r}: the keys are "
                             f"{', '.join(columns)}")
        if predicate not in PREDICATES:
            raise ValueError(f"unknown predicate {predicate!r} in filter {tuple(item)!r}: use "
                             f"{' or '.join(repr(p) for p in PREDICATES)}")
        out.append((key, predicate, _as_text(key, value)))
    return out


def parse_filter(text: str) -> tuple[str, str, str]:
    """``KEY=VALUE`` or ``KEY!=VALUE`` (the command line's form) as a filter tuple."""
    if "!=" in text:
        key, value = text.split("!=", 1)
        predicate = "!="
    elif "=" in text:
        key, value = text.split("=", 1)
        predicate = "="
    else:
        raise ValueError(f"a filter is KEY=VALUE or KEY!=VALUE, got {text!r}")
    key = key.strip()
    if not key:
        raise ValueError(f"a filter needs a key before its predicate, got {text!r}")
    return key, predicate, value.strip()


def check_limit(limit: Any) -> int:
    """A positive int (Ray's default is 100)."""
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ValueError(f"limit must be an int >= 1, got {limit!r}")
    return limit


def _as_text(key: str, value: Any) -> str:
    if isinstance(value, bytes):
        value = value.hex()
    text = str(value)
    return text.lower() if key in CASELESS else text


def matches(row: dict[str, Any], filters: Sequence[Filter]) -> bool:
    """Whether ``row`` passes every filter (values compared as strings)."""
    for key, predicate, value in filters:
        equal = _as_text(key, row.get(key, "")) == value
        if equal != (predicate == "="):
            return False
    return True


def select(rows: Iterable[dict[str, Any]], filters: Sequence[Filter], limit: int,
           kind: str, detail: bool) -> Listing:
    """Rows that pass ``filters``, the first ``limit`` of them, with Ray's default columns
    unless ``detail``."""
    kept: list[dict[str, Any]] = []
    total = 0
    keep = None if detail else COLUMNS[kind][:DEFAULT_COLUMNS[kind]]
    for row in rows:
        if filters and not matches(row, filters):
            continue
        total += 1
        if len(kept) < limit:
            kept.append(row if keep is None else {k: row.get(k) for k in keep})
    return Listing(kept, total)


def columns_of(kind: str) -> tuple[str, ...]:
    try:
        return COLUMNS[kind]
    except KeyError:
        raise ValueError(f"unknown resource {kind!r}: the state API lists "
                         f"{', '.join(COLUMNS)}") from None


# -- tasks -------------------------------------------------------------------------------------
def task_type(actor_id: bytes, method: str) -> str:
    if not actor_id:
        return NORMAL_TASK
    return ACTOR_CREATION_TASK if method == "__init__" else ACTOR_TASK


def error_text(values: Sequence[Any]) -> str:
    """"ClassName: message" of a failed result's error payload (``protocol.errors``'s
    record: its class name and text are plain strings; the exception itself stays
    pickled), "" when there is none."""
    try:
        record = pickle.loads(values[0].data)
        text = f"{record[1]}: {record[2]}"
    except Exception:
        return ""
    return text if len(text) <= MAX_ERROR_TEXT else text[:MAX_ERROR_TEXT - 3] + "..."


def error_type(status: int, error: str) -> str:
    """Ray's ``error_type`` for a failed task ("" for one that did not fail)."""
    if status == OK:
        return ""
    if status == CANCELLED:
        return "TASK_CANCELLED"
    if status == CRASHED:
        return "WORKER_DIED"
    if error.startswith(("ActorDiedError", "RayActorError")):
        return "ACTOR_DIED"
    if error.startswith("ActorUnavailableError"):
        return "ACTOR_UNAVAILABLE"
    if error.startswith("TaskUnschedulableError"):
        return "TASK_UNSCHEDULABLE_ERROR"
    return "TASK_EXECUTION_EXCEPTION"


def finished_task_row(item: Sequence[Any]) -> dict[str, Any]:
    """One ended task (a ``TaskHistory`` record, ``history.Finished``'s fields in order)."""
    (task_id, name, status, node_id, pid, duration, ended_at, worker_id, actor_id, method,
     error, started_at, direct) = item
    return {
        "task_id": task_id.hex(), "attempt_number": 0, "name": name,
        "state": "FINISHED" if status == OK else "FAILED",
        "type": task_type(actor_id, method), "func_or_class_name": name,
        "actor_id": actor_id.hex() if actor_id else "",
        "node_id": node_id.hex(), "worker_id": worker_id.hex(), "worker_pid": pid,
        "error_type": error_type(status, error), "error_message": error,
        "start_time_ms": round(started_at * 1000) if started_at else None,
        "end_time_ms": round(ended_at * 1000),
        "duration_s": duration, "via": "direct" if direct else "head",
    }


def live_task_rows(scheduler: Any, history: Any, now: float) -> list[dict[str, Any]]:
    """The tasks the head holds now (running first, then queued on workers, then waiting
    for one), and the direct calls workers said they run at their last heartbeat."""
    running: list[dict[str, Any]] = []
    queued: list[dict[str, Any]] = []
    seen: set[bytes] = set()
    for worker in scheduler.workers.values():
        for i, task_id in enumerate(worker.queue):
            record = scheduler.tasks.get(task_id)
            if record is None:
                continue
            seen.add(task_id)
            if i == 0:
                state = "RUNNING_IN_RAY_GET" if worker.state.name == "BLOCKED" else "RUNNING"
                since = history.running_since.get(worker.worker_id)
                started = since[1] if since is not None and since[0] == task_id else None
                running.append(_live_row(record.spec, state, worker, started, now))
            else:
                queued.append(_live_row(record.spec, "SUBMITTED_TO_WORKER", worker, None, now))
        direct = history.direct_running.get(worker.worker_id)
        if direct is not None and direct[0] is not None and not worker.queue:
            task_id, name, started = direct[0]
            row = _live_row(None, "RUNNING", worker, started, now)
            row.update(task_id=task_id.hex(), name=name, func_or_class_name=name, via="direct",
                       type=ACTOR_TASK if worker.actor is not None else NORMAL_TASK,
                       actor_id=worker.actor.hex() if worker.actor is not None else "")
            running.append(row)
    pending = [_live_row(record.spec, "PENDING_NODE_ASSIGNMENT", None, None, now)
               for task_id, record in scheduler.tasks.items() if task_id not in seen]
    return running + queued + pending


def _live_row(spec: Any, state: str, worker: Any, started: float | None,
              now: float) -> dict[str, Any]:
    row: dict[str, Any] = {
        "task_id": "", "attempt_number": 0, "name": "", "state": state, "type": NORMAL_TASK,
        "func_or_class_name": "", "actor_id": "",
        "node_id": worker.node_id.hex() if worker is not None else "",
        "worker_id": worker.worker_id.hex() if worker is not None else "",
        "worker_pid": worker.pid if worker is not None else 0,
        "error_type": "", "error_message": "",
        "start_time_ms": round(started * 1000) if started else None, "end_time_ms": None,
        "duration_s": max(0.0, now - started) if started else None, "via": "head",
    }
    if spec is not None:
        row.update(task_id=spec.task_id.hex(), attempt_number=spec.attempt, name=spec.name,
                   func_or_class_name=spec.name, type=task_type(spec.actor_id, spec.method),
                   actor_id=spec.actor_id.hex() if spec.actor_id else "")
    return row


def owner_pending_row(spec: Any) -> dict[str, Any]:
    """A task its owner holds until its ref arguments are ready (``PENDING_ARGS_AVAIL``)."""
    return _live_row(spec, "PENDING_ARGS_AVAIL", None, None, 0.0)


def task_rows(scheduler: Any, history: Any, now: float) -> list[dict[str, Any]]:
    """Every task the head knows: live ones, then ended ones, newest first."""
    return live_task_rows(scheduler, history, now) + [
        finished_task_row(item) for item in reversed(history.recent)]


def summarize_tasks(rows: Iterable[dict[str, Any]], functions: dict[str, Any] | None = None
                    ) -> dict[str, Any]:
    """Ray's ``summarize_tasks`` answer: per name, its type and a count per state.

    ``functions`` (``TaskHistory.functions``: finished and failed per name since the head
    started, direct work included) replaces the counts of ended tasks, which the rows
    have only for the last ``RECENT_CAPACITY``."""
    summary: dict[str, dict[str, Any]] = {}
    for row in rows:
        name = row["func_or_class_name"]
        entry = summary.setdefault(name, {"func_or_class_name": name, "type": row["type"],
                                          "state_counts": {}})
        if functions is not None and row["state"] in ("FINISHED", "FAILED"):
            continue
        counts = entry["state_counts"]
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    for name, stats in (functions or {}).items():
        entry = summary.setdefault(name, {"func_or_class_name": name, "type": "",
                                          "state_counts": {}})
        if stats.finished:
            entry["state_counts"]["FINISHED"] = stats.finished
        # Ray's state API shows a cancelled task as FAILED (its error says cancelled).
        if stats.failed + stats.cancelled:
            entry["state_counts"]["FAILED"] = stats.failed + stats.cancelled
    for entry in summary.values():
        if not entry["type"]:   # its tasks all left the record: judge by its name
            entry["type"] = (ACTOR_CREATION_TASK if entry["func_or_class_name"].endswith(
                ".__init__") else NORMAL_TASK)
    entries = sorted(summary.values(), key=lambda e: -sum(e["state_counts"].values()))
    total = sum(sum(e["state_counts"].values()) for e in entries)
    actor_tasks = sum(sum(e["state_counts"].values()) for e in entries if e["type"] == ACTOR_TASK)
    created = sum(sum(e["state_counts"].values()) for e in entries
                  if e["type"] == ACTOR_CREATION_TASK)
    return {"cluster": {"summary": {e["func_or_class_name"]: e for e in entries},
                        "total_tasks": total, "total_actor_tasks": actor_tasks,
                        "total_actor_scheduled": created, "summary_by": "func_name"}}


# -- actors, workers, nodes --------------------------------------------------------------------
def actor_rows(scheduler: Any, state_of: Any) -> list[dict[str, Any]]:
    """Every actor the head knows (live and dead). ``state_of(actor, tasks)`` gives Ray's
    actor state (``dashboard.snapshot.actor_state``)."""
    out = []
    for actor_id, actor in scheduler.actors.items():
        options = dict(actor.creation.options)
        worker = scheduler.workers.get(actor.worker) if actor.worker is not None else None
        configured = options.get("max_restarts", 0)
        limit = 2**31 if configured == -1 else configured
        out.append({
            "actor_id": actor_id.hex(), "class_name": options.get("class_name", "?"),
            "state": state_of(actor, scheduler.tasks), "name": options.get("name") or "",
            "node_id": worker.node_id.hex() if worker is not None else "",
            "pid": worker.pid if worker is not None else 0,
            "ray_namespace": options.get("namespace") or "",
            "is_detached": options.get("lifetime") == "detached",
            "death_cause": actor.dead or "",
            "required_resources": dict(actor.creation.resources),
            "worker_id": worker.worker_id.hex() if worker is not None else "",
            "max_restarts": configured, "num_restarts": max(0, limit - actor.restarts_left),
        })
    return out


def summarize_actors(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Ray's ``summarize_actors`` answer: per class, a count per state."""
    summary: dict[str, dict[str, Any]] = {}
    total = 0
    for row in rows:
        entry = summary.setdefault(row["class_name"], {"class_name": row["class_name"],
                                                       "state_counts": {}})
        entry["state_counts"][row["state"]] = entry["state_counts"].get(row["state"], 0) + 1
        total += 1
    return {"cluster": {"summary": summary, "total_actors": total, "summary_by": "class"}}


def worker_rows(scheduler: Any, peers: Iterable[Any]) -> list[dict[str, Any]]:
    """Every worker the scheduler has, then every connected driver (Ray lists both)."""
    ips = {node_id: node.info.get("ip", "") for node_id, node in scheduler.nodes.items()}
    out = []
    for worker in scheduler.workers.values():
        out.append({
            "worker_id": worker.worker_id.hex(), "is_alive": True, "worker_type": "WORKER",
            "node_id": worker.node_id.hex(), "ip": ips.get(worker.node_id, ""),
            "pid": worker.pid,
            "state": "LEASED" if worker.leased_to else worker.state.name,
            "actor_id": worker.actor.hex() if worker.actor is not None else "",
            "tasks_queued": len(worker.queue),
            "leased_to": worker.leased_to.hex() if worker.leased_to else "",
        })
    for peer in peers:
        if peer.role != "driver":
            continue
        out.append({
            "worker_id": peer.process_id.hex(), "is_alive": True, "worker_type": "DRIVER",
            "node_id": peer.node_id.hex(), "ip": peer.info.get("ip", ""), "pid": peer.pid,
            "state": "DRIVER", "actor_id": "", "tasks_queued": 0, "leased_to": "",
        })
    return out


def node_rows(described: Iterable[dict[str, Any]], head_ip: str,
              available: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """Nodes as the head's ``nodes`` request describes them (Ray's ``nodes()`` fields)."""
    out = []
    head_seen = False
    for node in described:
        ip = node.get("NodeManagerAddress", "")
        is_head = bool(node["Alive"]) and ip == head_ip and not head_seen
        head_seen = head_seen or is_head
        out.append({
            "node_id": node["NodeID"], "node_ip": ip, "is_head_node": is_head,
            "state": "ALIVE" if node["Alive"] else "DEAD",
            "node_name": node.get("NodeName", ip), "resources_total": node["Resources"],
            "resources_available": available.get(node["NodeID"], {}),
            "hostname": node.get("NodeManagerHostname", ""),
            "death_cause": node.get("DeathReason", ""),
        })
    return out
