"""The scheduler's records of nodes, workers and tasks (state only, no decisions)."""

from __future__ import annotations

import collections

from rayipy.protocol.messages import TaskSpec

# Workers beyond num_cpus, for tasks blocked on nested tasks: one per 100 MiB of the
# node's memory (an idle worker takes about 30 MiB), at least 32.
MIN_EXTRA_WORKERS = 32
MEMORY_PER_EXTRA_WORKER = 100 * 2**20


class Node:
    def __init__(self, node_id: bytes, agent: bytes, total: dict[str, float], info: dict) -> None:
        self.node_id = node_id
        self.agent = agent
        self.total = dict(total)
        self.available = dict(total)
        self.info = info
        self.workers: set[bytes] = set()
        # The agent starts one worker per CPU by itself; more only when the head asks.
        self.spawning = int(total.get("CPU", 0))
        self.leaving = False
        self.max_extra_workers = max(MIN_EXTRA_WORKERS,
                                     int(total.get("memory", 0) // MEMORY_PER_EXTRA_WORKER))

    def fits(self, request: tuple) -> bool:
        avail = self.available
        for name, amount in request:
            if avail.get(name, 0.0) < amount - 1e-9:
                return False
        return True

    def could_ever_fit(self, request: tuple) -> bool:
        total = self.total
        return all(total.get(name, 0.0) >= amount - 1e-9 for name, amount in request)

    def take(self, request: tuple, sign: int = 1) -> None:
        for name, amount in request:
            self.available[name] = self.available.get(name, 0.0) - sign * amount


class Worker:
    def __init__(self, worker_id: bytes, node_id: bytes, pid: int) -> None:
        self.worker_id = worker_id
        self.node_id = node_id
        self.pid = pid
        self.queue: collections.deque[bytes] = collections.deque()   # task ids, running first
        self.lease: tuple | None = None
        self.blocked = False
        self.functions: set[bytes] = set()
        self.stealing = False
        self.actor: bytes | None = None     # a worker given to an actor serves only it
        self.address = ""                   # where callers reach it directly (actor calls)
        self.idle_since: float | None = None
        self.leased_to: bytes | None = None # a driver sending tasks to it directly
        self.revoking = False


class TaskRecord:
    __slots__ = ("spec", "worker", "cancelled", "force")

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec
        self.worker: bytes | None = None
        self.cancelled = False
        self.force = False
