"""The scheduler's records of nodes, workers and tasks (state only, no decisions).

Two words with one meaning each:

- an *allocation* is what a worker holds from its node: the resources of the task it
  runs (or of its actor, or of the lease below), taken when it starts and given back
  when it has nothing left to run;
- a *lease* is a worker lent to a driver, which sends it tasks directly
  (``Worker.leased_to``; the driver's side is ``rayipy.core.leases``).
"""

from __future__ import annotations

import collections
import enum
from typing import Any, NamedTuple

from rayipy.core.runtime_env import is_env_marker
from rayipy.protocol.messages import TaskSpec

# Workers beyond num_cpus, for tasks blocked on nested tasks: one per 100 MiB of the
# node's memory (an idle worker takes about 30 MiB), at least 32.
MIN_EXTRA_WORKERS = 32
MEMORY_PER_EXTRA_WORKER = 100 * 2**20

Request = tuple[tuple[str, float], ...]
"""A resource request, sorted by name: (("CPU", 1.0), ("GPU", 0.5))."""

# Each node has 1 of a resource named after it, which a task pinned to the node asks a
# thousandth of (``NodeAffinitySchedulingStrategy``), as Ray's ``node:<ip>``. It is the
# scheduler's device, not something the user has: never shown (``shown_resources``).
AFFINITY_PREFIX = "node:"
AFFINITY_SHARE = 0.001


def affinity_resource(node_id: bytes) -> str:
    return AFFINITY_PREFIX + node_id.hex()


def shown_resources(resources: dict[str, float]) -> dict[str, float]:
    """Resources as users see them: without the nodes' own (``affinity_resource``)."""
    return {name: amount for name, amount in resources.items()
            if not name.startswith(AFFINITY_PREFIX) and not is_env_marker(name)}


class Node:
    """A host's resources (totals and what is left), its workers, and its GPU devices."""

    def __init__(self, node_id: bytes, agent: bytes, total: dict[str, float],
                 info: dict[str, Any]) -> None:
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

    def fits(self, request: Request) -> bool:
        """Whether what is left here covers ``request`` (GPUs: by device, too)."""
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
        """Take devices for ``amount`` GPUs; returns their ids."""
        ids = self._gpu_choice(amount)
        share = 1.0 if amount >= 1 else amount
        for i in ids:
            self.gpu_free[i] -= share
        return tuple(ids)

    def release_gpus(self, ids: tuple[str, ...], amount: float) -> None:
        """Give back devices taken by ``assign_gpus(amount)``."""
        share = 1.0 if amount >= 1 else amount
        for i in ids:
            if i in self.gpu_free:
                self.gpu_free[i] = min(1.0, self.gpu_free[i] + share)

    def could_ever_fit(self, request: Request) -> bool:
        """Whether this node's totals cover ``request`` (when nothing else runs)."""
        total = self.total
        for name, amount in request:   # a loop, not all(genexpr): no generator per call
            if total.get(name, 0.0) < amount - 1e-9:
                return False
        return True

    def take(self, request: Request, sign: int = 1) -> None:
        """Subtract ``request`` from what is left (``sign=-1``: add it back, but not a
        resource the node no longer has: a removed placement group's)."""
        available = self.available
        if sign > 0:
            for name, amount in request:
                available[name] = available.get(name, 0.0) - amount
            return
        total = self.total
        for name, amount in request:
            if name in total:
                available[name] = available.get(name, 0.0) + amount


class LostNode(NamedTuple):
    """A node that is gone, as ``nodes()`` still lists it (Ray lists dead nodes too)."""
    node_id: bytes
    total: dict[str, float]
    info: dict[str, Any]
    why: str


class WorkerStatus(enum.Enum):
    """What a worker does now: the one answer to "may it take this task?".

    ``IDLE`` is the only state that may take a task, an actor or a lease. The dashboard
    shows these names (a blocked worker that is leased shows as ``LEASED``).
    """
    IDLE = "idle"          # in the pool, no allocation, nothing queued
    RUNNING = "running"    # in the pool, holds an allocation, runs the head of its queue
    BLOCKED = "blocked"    # its task waits in ``get``: gave back its allocation but the GPUs
    ACTOR = "actor"        # serves one actor (``actor``) for the rest of its life
    LEASED = "leased"      # lent to a driver (``leased_to``), which sends it tasks directly


class Worker:
    """One worker process as the scheduler sees it.

    ``state`` says what it does; the other fields are data that state refers to. A
    blocked worker keeps ``leased_to``: blocking does not end its lease, and it goes back
    to ``LEASED`` when its task resumes. Two requests may be in flight to or about a
    worker; they are not states, since the worker may block before the answer comes:
    ``steal_pending`` (the head asked it to give back queued tasks, no ``RETURNED`` yet)
    and ``recall_pending`` (the head asked its lease holder to give it back).
    """

    __slots__ = ("worker_id", "node_id", "pid", "state", "queue", "allocation", "gpu_ids",
                 "functions", "actor", "address", "idle_since", "leased_to", "steal_pending",
                 "recall_pending", "long_task", "seen_task", "seen_since", "calls", "retiring",
                 "env")

    def __init__(self, worker_id: bytes, node_id: bytes, pid: int) -> None:
        self.worker_id = worker_id
        self.node_id = node_id
        self.pid = pid
        self.state = WorkerStatus.IDLE
        self.queue: collections.deque[bytes] = collections.deque()   # task ids, running first
        self.allocation: Request | None = None    # what it holds from its node
        self.gpu_ids: tuple[str, ...] = ()        # the devices its allocation holds
        self.functions: set[bytes] = set()        # function ids it has been sent
        self.actor: bytes | None = None           # the actor it serves (state ACTOR)
        self.address = ""                   # where callers reach it directly (actor calls)
        self.idle_since: float | None = None
        self.leased_to: bytes | None = None       # the driver it is lent to
        self.steal_pending = False
        self.recall_pending = False
        # Its running task ran long (``Scheduler.tick``): nothing queues behind it while
        # it runs that task.
        self.long_task: bytes | None = None
        self.seen_task: bytes | None = None       # the running task the last tick saw...
        self.seen_since = 0.0                     # ...and since when
        # ``max_calls``: function id -> tasks of it given to this worker; once one reaches
        # its limit the worker is ``retiring``: it takes nothing more and is replaced once
        # its queue is done.
        self.calls: dict[bytes, int] = {}
        self.retiring = False
        # The runtime_env key it was started for ("": a pool worker): it takes only
        # tasks whose request carries that environment (``runtime_env.env_of``).
        self.env = ""


class TaskRecord:
    """A task the head placed or will place: its spec, its worker, whether it was cancelled."""

    __slots__ = ("spec", "worker", "cancelled", "force")

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec
        self.worker: bytes | None = None
        self.cancelled = False
        self.force = False
