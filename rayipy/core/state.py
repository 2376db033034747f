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
        # Which GPUs are free, by device id, as fractions (tasks may share a GPU).
        ids = info.get("gpu_ids") or [str(i) for i in range(int(total.get("GPU", 0)))]
        self.gpu_free: dict[str, float] = {str(i): 1.0 for i in ids}
        self.spread_count = 0               # tasks and actors placed here with SPREAD

    def fits(self, request: tuple) -> bool:
        avail = self.available
        for name, amount in request:
            if avail.get(name, 0.0) < amount - 1e-9:
                return False
            if name == "GPU" and self.gpu_free and not self._gpu_choice(amount):
                return False   # enough in sum, but split over devices
        return True

    def load(self) -> float:
        """The share of this node's CPUs in use (0 idle, 1 full): placement prefers low."""
        total = self.total.get("CPU", 0.0)
        return 1.0 - self.available.get("CPU", 0.0) / total if total else 1.0

    def _gpu_choice(self, amount: float) -> list[str]:
        """Devices for a GPU request: whole free devices, or one device with room for a
        fraction. Empty if the request cannot be met by device."""
        if amount >= 1:
            whole = [i for i, free in self.gpu_free.items() if free >= 1 - 1e-9]
            need = int(round(amount))
            return whole[:need] if len(whole) >= need else []
        shared = [i for i, free in self.gpu_free.items() if free >= amount - 1e-9]
        # Fill partly used devices first, so whole devices stay free for whole requests.
        return sorted(shared, key=lambda i: self.gpu_free[i])[:1]

    def assign_gpus(self, amount: float) -> tuple[str, ...]:
        ids = self._gpu_choice(amount)
        share = 1.0 if amount >= 1 else amount
        for i in ids:
            self.gpu_free[i] -= share
        return tuple(ids)

    def release_gpus(self, ids: tuple[str, ...], amount: float) -> None:
        share = 1.0 if amount >= 1 else amount
        for i in ids:
            if i in self.gpu_free:
                self.gpu_free[i] = min(1.0, self.gpu_free[i] + share)

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
        self.gpu_ids: tuple[str, ...] = ()   # the devices its lease holds


class TaskRecord:
    __slots__ = ("spec", "worker", "cancelled", "force")

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec
        self.worker: bytes | None = None
        self.cancelled = False
        self.force = False
