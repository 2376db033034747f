"""The dashboard's picture of the cluster: built from the head's state, then never changed.

``build_snapshot`` is a pure function of the scheduler, the task history and a few facts
only the head knows; it runs on the head's thread (the only thread that may read that
state) and returns a ``Snapshot`` made of fresh plain data (dicts, lists, tuples of
NamedTuples) that nothing modifies afterwards. The HTTP threads read snapshots, never the
head's state; ``tasks_view`` turns a snapshot into the ``/api/tasks`` answer on their side,
so the head's thread only copies the ring buffer of recent tasks.

Times are epoch seconds (``now`` is passed in); ids are hex strings.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

from rayipy.core.state import shown_resources
from rayipy.core.task_counts import OUTCOMES
from rayipy.core.memory_report import node_memory_figures as memory_figures
from rayipy.dashboard.history import Finished, TaskHistory, failure_of, state_of

MAX_ACTORS = 500          # actors listed (every actor is counted)
MAX_FUNCTIONS_SHOWN = 50  # function rows, the busiest first


@dataclass(frozen=True)
class HeadFacts:
    """What the head knows beyond the scheduler's state."""
    cluster_id: str
    address: str                         # the head's tcp:// address
    dashboard_url: str                   # "host:port", Ray's form
    started_at: float                    # epoch seconds
    version: str
    peers: dict = field(default_factory=dict)      # role -> how many are connected
    dropped: dict = field(default_factory=dict)    # why -> messages dropped


@dataclass(frozen=True)
class Snapshot:
    taken_at: float
    status: dict                         # the /api/status answer
    recent: tuple                        # Finished records as plain tuples, oldest first
    recent_capacity: int
    node_addresses: dict                 # node id (bytes) -> its address, for recent tasks
    recent_seq: int = 0                  # records ever appended: the last one's cursor
    failures: tuple = ()                 # (seq, Finished tuple) of the last failures, oldest first


def build_snapshot(scheduler: Any, history: TaskHistory, facts: HeadFacts, now: float) -> Snapshot:
    """Read the scheduler and history (head thread only); return data nobody shares."""
    workers = scheduler.workers
    actors = scheduler.actors
    history.prune(workers)
    node_addresses = {node_id: node.info.get("ip", "") for node_id, node in scheduler.nodes.items()}
    running: list[dict] = []
    in_flight = 0       # calls running on concurrent actors' threads (not listed one by one)
    nodes = []
    for node_id, node in scheduler.nodes.items():
        node_workers = []
        memory = memory_figures(node.info)
        rss = memory.get("workers", {})
        for worker_id in sorted(node.workers, key=lambda w: workers[w].pid if w in workers else 0):
            worker = workers.get(worker_id)
            if worker is None:
                continue
            view = _worker_view(scheduler, history, worker, node_addresses, now)
            view["rss_bytes"] = rss.get(worker.pid)      # None until its agent reports it
            node_workers.append(view)
            if view["task"] is not None:
                running.append(view["task"])
            in_flight += view["calls_in_flight"]
        nodes.append({
            "node_id": node_id.hex(),
            "address": node.info.get("ip", ""),
            "hostname": node.info.get("hostname", ""),
            "alive": True,
            "state": "LEAVING" if node.leaving else "ALIVE",
            "resources": {"total": shown_resources(node.total),
                          "available": shown_resources(node.available)},
            "object_store": store_figures(node.info),
            # Real use, from the agent's heartbeat ({} before it): the machine's memory in
            # use and total; each worker's RSS is in its own row. The ``memory`` resource
            # above is a reservation, not use.
            "memory": {k: v for k, v in memory.items() if k != "workers"},
            "workers": node_workers,
            "workers_starting": node.spawning,
            "tasks_done": history.by_node.get(node_id, 0),
        })
    pipelined = sum(max(0, len(w.queue) - 1) for w in workers.values() if w.actor is None)
    tasks = {
        "queued": sum(len(q) for q in scheduler.ready.values()) + pipelined,
        "running": len(running) + in_flight,
        # The counts of ended tasks: one definition everywhere (rayipy.core.task_counts),
        # kept by the scheduler whether or not a dashboard runs.
        **{name: scheduler.counts.get(name, 0) for name in OUTCOMES},
        "submitted": scheduler.counts.get("submitted", 0),
        "retried": scheduler.counts.get("retried", 0),
    }
    status = {
        "cluster": {
            "cluster_id": facts.cluster_id,
            "address": facts.address.removeprefix("tcp://"),   # as users write it
            "dashboard_url": facts.dashboard_url,
            "version": facts.version,
            "started_at": facts.started_at,
            "uptime_s": max(0.0, now - facts.started_at),
            "drivers": facts.peers.get("driver", 0),
        },
        "now": now,
        "tasks": tasks,
        "resources": _cluster_resources(scheduler.nodes.values()),
        "nodes": nodes,
        "running": sorted(running, key=lambda t: t["started_at"] or 0.0),
        "actors": _actors_view(actors, workers, node_addresses, scheduler.tasks),
        "functions": _functions_view(history),
        "dropped_messages": dict(facts.dropped),
    }
    return Snapshot(now, status, tuple(history.recent), history.capacity, node_addresses,
                    history.appended, tuple(history.failures))


def store_figures(info: dict[str, Any]) -> dict[str, Any]:
    """A node's object store figures (``StoreState.summary()``: ``used`` is the bytes of
    arena handed out, ``capacity``, spilled...) as its agent's last heartbeat gave them;
    before the first, only the capacity it registered with; {} for a node without a
    store. The head's ``status`` answer uses this too."""
    summary = info.get("store_summary")
    if isinstance(summary, dict):
        return dict(summary)
    capacity = info.get("store_capacity")
    return {"capacity": capacity} if isinstance(capacity, int) else {}


def _worker_view(scheduler: Any, history: TaskHistory, worker: Any, node_addresses: dict,
                 now: float) -> dict:
    task = None
    direct, in_flight = history.direct_running.get(worker.worker_id, (None, 0))
    if worker.queue:
        task_id = worker.queue[0]
        record = scheduler.tasks.get(task_id)
        seen = history.running_since.get(worker.worker_id)
        started = seen[1] if seen is not None and seen[0] == task_id else None
        name = record.spec.name if record is not None else "?"
        via = "head"
    elif direct is not None:   # an actor call or a leased task, as of its last heartbeat
        task_id, name, started = direct
        via = "direct"
    if worker.queue or direct is not None:
        task = {
            "task_id": task_id.hex(),
            "name": name,
            "node_id": worker.node_id.hex(),
            "address": node_addresses.get(worker.node_id, ""),
            "worker_pid": worker.pid,
            "started_at": started,
            "running_s": None if started is None else max(0.0, now - started),
            "blocked": worker.state.name == "BLOCKED",
            "via": via,
        }
    actor = None
    if worker.actor is not None:
        record = scheduler.actors.get(worker.actor)
        options = dict(record.creation.options) if record is not None else {}
        actor = {"actor_id": worker.actor.hex(), "class_name": options.get("class_name", "?"),
                 "name": options.get("name") or ""}
    # The scheduler's WorkerStatus by name (IDLE, RUNNING, BLOCKED, ACTOR, LEASED), read
    # without importing core: a leased worker shows as LEASED even while blocked.
    state = "LEASED" if worker.leased_to else worker.state.name
    return {
        "worker_id": worker.worker_id.hex(),
        "pid": worker.pid,
        "state": state,
        "task": task,
        "queued": max(0, len(worker.queue) - 1),
        "calls_in_flight": in_flight,
        "actor": actor,
        "leased_to": worker.leased_to.hex() if worker.leased_to else None,
    }


def _cluster_resources(nodes: Any) -> dict:
    total: dict[str, float] = {}
    available: dict[str, float] = {}
    for node in nodes:
        for name, amount in node.total.items():
            total[name] = total.get(name, 0.0) + amount
        for name, amount in node.available.items():
            available[name] = available.get(name, 0.0) + max(0.0, amount)
    return {"total": shown_resources(total), "available": shown_resources(available)}


def actor_state(actor: Any, tasks: dict) -> str:
    """Ray's actor states: PENDING_CREATION, ALIVE, RESTARTING, DEAD."""
    if actor.dead:
        return "DEAD"
    if actor.worker is None:
        configured = dict(actor.creation.options).get("max_restarts", 0)
        limit = 2**31 if configured == -1 else configured
        return "RESTARTING" if actor.restarts_left < limit else "PENDING_CREATION"
    if actor.creation.task_id in tasks:
        return "PENDING_CREATION"   # placed; its constructor is running
    return "ALIVE"


def _actors_view(actors: dict, workers: dict, node_addresses: dict, tasks: dict) -> dict:
    counts: dict[str, int] = {}
    live: list[tuple] = []
    dead: collections.deque[tuple] = collections.deque(maxlen=MAX_ACTORS)   # the latest deaths
    for actor_id, actor in actors.items():
        state = actor_state(actor, tasks)
        counts[state] = counts.get(state, 0) + 1
        if state == "DEAD":
            dead.append((actor_id, actor, state))
        elif len(live) < MAX_ACTORS:
            live.append((actor_id, actor, state))
    listed = []
    for actor_id, actor, state in live + list(reversed(dead))[:max(0, MAX_ACTORS - len(live))]:
        options = dict(actor.creation.options)
        worker = workers.get(actor.worker) if actor.worker is not None else None
        listed.append({
            "actor_id": actor_id.hex(),
            "class_name": options.get("class_name", "?"),
            "name": options.get("name") or "",
            "state": state,
            "node_id": worker.node_id.hex() if worker is not None else "",
            "address": node_addresses.get(worker.node_id, "") if worker is not None else "",
            "pid": worker.pid if worker is not None else 0,
            "death_cause": actor.dead or "",
        })
    return {"counts": counts, "total": len(actors), "list": listed}


def _functions_view(history: TaskHistory) -> list[dict]:
    rows = sorted(history.functions.items(), key=lambda kv: -kv[1].ended)
    out = []
    for name, stats in rows[:MAX_FUNCTIONS_SHOWN]:
        ended = stats.ended
        out.append({"name": name, "finished": stats.finished, "failed": stats.failed,
                    "cancelled": stats.cancelled,
                    "mean_s": stats.seconds / ended if ended else 0.0})
    return out


def finished_view(item: tuple, node_addresses: dict) -> dict:
    """One ended task (a ``Finished`` record, stored as a plain tuple) as the API shows it."""
    item = Finished(*item)
    return {
        "task_id": item.task_id.hex(),
        "name": item.name,
        "state": state_of(item.status),
        "failure": failure_of(item.status),
        "node_id": item.node_id.hex(),
        "address": node_addresses.get(item.node_id, ""),
        "worker_pid": item.worker_pid,
        "duration_s": item.duration,
        "ended_at": item.ended_at,
    }


def tasks_view(snapshot: Snapshot, limit: int | None = None) -> dict:
    """The /api/tasks answer: running tasks, then the most recent ended ones, newest first."""
    recent = snapshot.recent
    count = len(recent) if limit is None else max(0, min(limit, len(recent)))
    newest = [finished_view(item, snapshot.node_addresses)
              for item in reversed(recent[len(recent) - count:])] if count else []
    running = [dict(task, state="RUNNING") for task in snapshot.status["running"]]
    return {"now": snapshot.taken_at, "running": running, "recent": newest,
            "recent_capacity": snapshot.recent_capacity}
