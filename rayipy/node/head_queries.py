"""The head's answers to questions: nodes, resources, status, the state API, the
timeline, autoscaling demand, placement groups, the dashboard's address.

Each ``request_NAME`` answers a driver's or a tool's ``runtime.request("NAME", ...)``
from the head's state, changing nothing (the requests that change state stay in
``node/head.py``, the jobs' in ``node/head_jobs.py``). It runs on the head's one thread,
which owns that state: the head dispatches the requests here.
"""

from __future__ import annotations

import time
from typing import Any

from rayipy.core import state_rows
from rayipy.core.demand import demand_report
from rayipy.core.memory_report import node_memory_figures
from rayipy.core.state import LostNode, Node, shown_resources
from rayipy.core.state_timeline import trace_events
from rayipy.dashboard.snapshot import actor_state, store_figures

# The head (``node/head.py``) holds this object: annotated ``Any`` here, so the two
# modules do not import each other.
Head = Any


class HeadQueries:
    """Questions answered from one head's state (see the module's docstring)."""

    def __init__(self, head: Head) -> None:
        self.head = head

    @staticmethod
    def describe_node(node: Node | LostNode) -> dict[str, Any]:
        """A node as Ray's ``nodes()`` shows it (Ray's field names); a lost one with
        Alive False and why it died."""
        info = node.info
        alive = isinstance(node, Node) and not node.leaving
        described = {
            "NodeID": node.node_id.hex(),
            "Alive": alive,
            "NodeManagerAddress": info.get("ip", "127.0.0.1"),
            "NodeManagerHostname": info.get("hostname", ""),
            "NodeName": info.get("ip", "127.0.0.1"),
            "Resources": shown_resources(node.total),
            "alive": alive,
        }
        if isinstance(node, LostNode):
            described["DeathReason"] = node.why
        return described

    def request_nodes(self, sender: bytes) -> list[dict[str, Any]]:
        live = [self.describe_node(n) for n in self.head.scheduler.nodes.values() if not n.leaving]
        return live + [self.describe_node(n) for n in self.head.scheduler.lost_nodes]

    def request_stores(self, sender: bytes) -> list[str]:
        """The address of every node's object store (a driver looks for its own)."""
        return [n.info["store"] for n in self.head.scheduler.nodes.values()
                if not n.leaving and n.info.get("store")]

    def request_memory(self, sender: bytes) -> dict[str, Any]:
        """For ``memory_summary``: each live node's store (address, and its figures as of
        the agent's last heartbeat), and who each connected owner process is."""
        nodes = [{"node_id": n.node_id.hex(), "address": n.info.get("ip", ""),
                  "hostname": n.info.get("hostname", ""), "store": n.info.get("store", ""),
                  "summary": store_figures(n.info)}
                 for n in self.head.scheduler.nodes.values() if not n.leaving]
        processes = {p.process_id.hex(): {"role": p.role, "pid": p.pid, "node_id": p.node_id.hex()}
                     for p in self.head.peers.values() if p.role in ("driver", "worker")}
        return {"nodes": nodes, "processes": processes}

    def request_cluster_resources(self, sender: bytes) -> dict[str, float]:
        return self.head.scheduler.total_resources()

    def request_available_resources(self, sender: bytes) -> dict[str, float]:
        return self.head.scheduler.available_resources()

    def request_running_tasks(self, sender: bytes) -> list[bytes]:
        """The ids of the sender's tasks running now (first in some worker's queue)."""
        return self.head.scheduler.running_tasks(sender)

    def request_running_since(self, sender: bytes, task_ids: list[bytes]) -> dict[bytes, float]:
        """How long each of these tasks has been running, in seconds, for those that run
        now (at the front of a worker's queue); the others are queued or over. One look
        per worker: cheap enough for a notebook's ObjectRef repr."""
        wanted = set(task_ids)
        now = time.time()
        return {task: now - since for task, since in self.head.history.running_since.values()
                if task in wanted}

    def request_workers(self, sender: bytes) -> list[dict[str, Any]]:
        """Every worker: id, node, pid, direct address, and what it is doing."""
        return self.head.scheduler.describe_workers()

    def request_status(self, sender: bytes) -> dict[str, Any]:
        return {"cluster_id": self.head.cluster_id, "address": self.head.address,
                "uptime": time.time() - self.head.started,
                "nodes": self.request_nodes(sender),
                # per node, what is not in use (`rayipy status` shows used / total)
                "available": {node.node_id.hex(): {k: max(0.0, v) for k, v in
                                                   shown_resources(node.available).items()}
                              for node in self.head.scheduler.nodes.values()},
                # per node, its object store's figures (`rayipy status` shows its use)
                "object_stores": {node.node_id.hex(): store_figures(node.info)
                                  for node in self.head.scheduler.nodes.values()},
                # per node, real memory use: the machine's and each worker's RSS
                "memory_use": {node.node_id.hex(): node_memory_figures(node.info)
                               for node in self.head.scheduler.nodes.values()},
                "tasks": self.head.scheduler.summary(),
                "dropped_messages": dict(self.head.endpoint.dropped),
                "bytes_received": self.head.endpoint.bytes_received,
                # connected / silent (busy, stopped: it keeps everything) / disconnected
                "drivers": self.head.drivers.summary(time.monotonic()),
                "peers": {role: sum(1 for p in self.head.peers.values() if p.role == role)
                          for role in ("driver", "worker", "agent")}}

    # -- autoscaling (rayipy/cluster/adaptive.py polls this) ----------------------------------
    def request_demand(self, sender: bytes) -> dict[str, Any]:
        """What waits for resources, per request, and per live node whether it is busy and
        holds objects someone may still read (``core/demand.py``)."""
        return demand_report(self.head.scheduler)

    # -- placement groups and the dashboard ------------------------------------------------
    def request_placement_groups(self, sender: bytes) -> list[dict[str, Any]]:
        return self.head.scheduler.describe_groups()

    def request_dashboard_url(self, sender: bytes) -> str:
        """The dashboard's "host:port" (Ray's form), or "" when it is not running."""
        return self.head.dashboard_url

    # -- the state API (rayipy.util.state; core/state_rows.py builds the rows) ---------------
    def request_state_list(self, sender: bytes, kind: str, filters: list, limit: int,
                           detail: bool) -> dict[str, Any]:
        """Rows of ``kind`` (tasks, actors, nodes, workers) that pass ``filters``, at most
        ``limit``; ``total``: how many passed. Tasks: live ones, then ended ones newest
        first, of which the head keeps the last ``history_capacity``."""
        filters = state_rows.check_filters(kind, filters)
        limit = state_rows.check_limit(limit)
        listing = state_rows.select(self.state_rows(kind), filters, limit, kind, bool(detail))
        return {"rows": listing.rows, "total": listing.total,
                "history_capacity": self.head.history.capacity,
                "direct_not_listed": self.head.history.direct_dropped}

    def state_rows(self, kind: str) -> list[dict[str, Any]]:
        scheduler = self.head.scheduler
        if kind == "tasks":
            self.head.history.prune(scheduler.workers)
            return state_rows.task_rows(scheduler, self.head.history, time.time())
        if kind == "actors":
            return state_rows.actor_rows(scheduler, actor_state)
        if kind == "workers":
            return state_rows.worker_rows(scheduler, self.head.peers.values())
        if kind == "nodes":
            available = {node.node_id.hex(): {k: max(0.0, v) for k, v in
                                              shown_resources(node.available).items()}
                         for node in scheduler.nodes.values()}
            head_ip = self.head.address.removeprefix("tcp://").rsplit(":", 1)[0]
            return state_rows.node_rows(self.request_nodes(b""), head_ip, available)
        raise ValueError(f"the head lists tasks, actors, nodes and workers, not {kind!r}")

    def request_state_summary(self, sender: bytes, kind: str) -> dict[str, Any]:
        """Ray's ``summarize_tasks`` / ``summarize_actors`` answer."""
        if kind == "tasks":
            live = state_rows.live_task_rows(self.head.scheduler, self.head.history, time.time())
            return state_rows.summarize_tasks(
                live + [state_rows.finished_task_row(r) for r in self.head.history.recent],
                self.head.history.functions)
        if kind == "actors":
            return state_rows.summarize_actors(state_rows.actor_rows(self.head.scheduler, actor_state))
        raise ValueError(f"the head summarizes tasks and actors, not {kind!r}")

    def request_timeline(self, sender: bytes) -> list[dict[str, Any]]:
        """Chrome trace events of the ended tasks the history keeps."""
        ips = {node_id: node.info.get("ip", "") for node_id, node in self.head.scheduler.nodes.items()}
        return trace_events(self.head.history.recent, ips)
