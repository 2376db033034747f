"""The head's scheduling state: which task runs where, and what each node has left.

Pure logic: every method takes an event (tasks submitted, a worker finished, a worker
died...) and returns the instructions the head must carry out. No sockets, no clocks
read except where a timestamp is passed in; tested with plain asserts.

Resources. A node has totals (CPU, GPU, memory, custom) and what is left. A worker
holds a *lease*: the resources of the task it runs, taken from its node when the worker
starts its first task and given back when its queue empties. Tasks with exactly the
same resource request may queue behind the running one on the same worker (pipelining),
so a worker never sits idle waiting for the head between short tasks; how many depends
on how long the function's tasks take (about ``PIPELINE_SECONDS`` of work queued).

Nested tasks. A worker whose task blocks in ``get`` gives back its lease and the tasks
queued behind the blocked one; the node's freed CPU then lets the head start another
worker if tasks are waiting, so a task waiting on its children never starves them.

Around this module: ``state`` holds the records (nodes, workers, tasks), ``instructions``
the actions returned, and two mixins of Scheduler hold the actor part
(``actor_scheduling``) and the worker-lease part (``lease_scheduling``).
"""

from __future__ import annotations

import collections
from typing import Iterable

from rayipy.core.actor_scheduling import Actor, ActorScheduling, actor_died_error
from rayipy.core.instructions import (ActorLocation, CancelRunning, Execute, Fail, KillWorker,
                                      LeaseAnswer, LeaseEnded, Retire, Spawn, Steal)
from rayipy.core.lease_scheduling import LeaseScheduling
from rayipy.core.state import Node, TaskRecord, Worker
from rayipy.protocol.messages import TaskSpec

__all__ = ["Actor", "ActorLocation", "CancelRunning", "Execute", "Fail", "KillWorker",
           "LeaseAnswer", "LeaseEnded", "Retire", "Scheduler", "Spawn", "Steal",
           "actor_died_error"]

PIPELINE_SECONDS = 0.02     # queue about this much work per worker
MAX_PIPELINE = 64
UNKNOWN_DURATION_DEPTH = 2  # one running, one waiting, until durations are known
IDLE_RETIRE_SECONDS = 10.0  # an extra worker idle this long is stopped


def describe_request(request: tuple) -> str:
    return ", ".join(f"{name}={amount:g}" for name, amount in request) or "nothing"


def gpu_amount(request: tuple) -> float:
    return dict(request).get("GPU", 0.0)


def without_gpus(request: tuple) -> tuple:
    """What a worker blocked in ``get`` gives back: its CPUs and the rest, not its GPUs
    (their device ids stay its own, as in Ray)."""
    return tuple(item for item in request if item[0] != "GPU")


def is_spread(spec: TaskSpec) -> bool:
    return ("scheduling_strategy", "SPREAD") in spec.options


class Scheduler(ActorScheduling, LeaseScheduling):
    def __init__(self) -> None:
        self.nodes: dict[bytes, Node] = {}
        self.workers: dict[bytes, Worker] = {}
        self.tasks: dict[bytes, TaskRecord] = {}
        self.ready: dict[tuple, collections.deque[bytes]] = {}   # resource request -> task ids
        self.early_workers: dict[bytes, list] = {}               # node id -> workers seen first
        self.actors: dict[bytes, Actor] = {}
        self.actor_names: dict[str, bytes] = {}
        self.early_locates: dict[bytes, set[bytes]] = {}   # actor id -> callers, before creation
        self.live_owners: set[bytes] = set()               # drivers and workers connected
        self.creating: collections.deque[bytes] = collections.deque()   # actor ids to place
        self.functions: dict[bytes, bytes] = {}
        self.durations: dict[bytes, float] = {}                 # function id -> EWMA seconds
        self.counts = collections.Counter()                     # submitted, finished, failed...

    # -- membership -------------------------------------------------------------------
    def add_node(self, node_id: bytes, agent: bytes, resources: dict[str, float], info: dict) -> list:
        self.nodes[node_id] = Node(node_id, agent, resources, info)
        for worker_id, pid, address in self.early_workers.pop(node_id, []):
            self._attach_worker(worker_id, node_id, pid, address)
        return self.dispatch()

    def add_worker(self, worker_id: bytes, node_id: bytes, pid: int, address: str = "") -> list:
        node = self.nodes.get(node_id)
        if node is None:
            # Its registration overtook its agent's (separate connections): wait for the node.
            self.early_workers.setdefault(node_id, []).append((worker_id, pid, address))
            return []
        self._attach_worker(worker_id, node_id, pid, address)
        return self.dispatch()

    def _attach_worker(self, worker_id: bytes, node_id: bytes, pid: int, address: str) -> None:
        node = self.nodes[node_id]
        node.spawning = max(0, node.spawning - 1)
        node.workers.add(worker_id)
        worker = self.workers[worker_id] = Worker(worker_id, node_id, pid)
        worker.address = address

    def remove_worker(self, worker_id: bytes, error: BaseException, crashed_status: int,
                      cancelled_status: int) -> list:
        """A worker process died: retry what it ran (within max_retries), requeue the rest."""
        worker = self.workers.pop(worker_id, None)
        if worker is None:
            return []
        node = self.nodes.get(worker.node_id)
        if node is not None:
            node.workers.discard(worker_id)
            self._give_back(worker)
            if node.leaving and not node.workers:
                del self.nodes[node.node_id]
        out: list = []
        if worker.leased_to:
            out.append(LeaseEnded(worker.leased_to, worker_id, str(error)))
        if worker.actor is not None:
            return out + self._actor_worker_died(worker, error) + self.dispatch()
        # Back to the front of the queue in their order: walk backwards.
        for position, task_id in reversed(list(enumerate(worker.queue))):
            record = self.tasks.get(task_id)
            if record is None:
                continue
            record.worker = None
            spec = record.spec
            if record.cancelled:
                out.append(self._fail(task_id, cancelled_status, error))
                continue
            if position == 0:  # it was running
                if spec.attempt >= spec.max_retries:
                    out.append(self._fail(task_id, crashed_status, error))
                    continue
                record.spec = spec._replace(attempt=spec.attempt + 1)
                self.counts["retried"] += 1
            self._enqueue_front(task_id)
        return out + self.dispatch()

    def remove_node(self, node_id: bytes) -> list[bytes]:
        """Forget a node; returns its workers, which the caller removes one by one.

        The node stays in the table until its last worker is removed, so that removing
        them can still give back leases; it takes no new work meanwhile.
        """
        node = self.nodes.get(node_id)
        if node is None:
            return []
        node.total = {}
        node.available = {}
        node.leaving = True
        if not node.workers:
            del self.nodes[node_id]
        return list(node.workers)

    # -- tasks --------------------------------------------------------------------------
    def add_function(self, function_id: bytes, data: bytes) -> None:
        self.functions[function_id] = data

    def submit(self, specs: Iterable[TaskSpec]) -> list:
        out: list = []
        for spec in specs:
            self.counts["submitted"] += 1
            if spec.actor_id:
                out.extend(self._submit_actor_spec(spec))
                continue
            if not any(n.could_ever_fit(spec.resources) for n in self.nodes.values()) and self.nodes:
                out.append(self._fail_new(spec, ValueError(self.impossible_message(spec))))
                continue
            self.tasks[spec.task_id] = TaskRecord(spec)
            self.ready.setdefault(spec.resources, collections.deque()).append(spec.task_id)
        return out + self.dispatch()

    def _assign(self, worker: "Worker", task_ids: list) -> "Execute":
        specs = []
        for task_id in task_ids:
            record = self.tasks[task_id]
            record.worker = worker.worker_id
            worker.queue.append(task_id)
            specs.append(self._spec_for(worker, record.spec))
        return Execute(worker.worker_id, specs, self._new_functions(worker, specs))

    def _new_functions(self, worker: "Worker", specs: list) -> list:
        new_functions = []
        for spec in specs:
            fid = spec.function_id
            if fid and fid not in worker.functions:
                worker.functions.add(fid)
                new_functions.append((fid, self.functions.get(fid, b"")))
        return new_functions

    def impossible_message(self, spec: TaskSpec) -> str:
        missing = []
        for name, amount in spec.resources:
            best = max((n.total.get(name, 0.0) for n in self.nodes.values()), default=0.0)
            if best < amount:
                missing.append(f"{name}={amount:g} (the largest node has {best:g})")
        what = f"actor {spec.name[:-9]!r}" if spec.method == "__init__" else f"task {spec.name!r}"
        return (f"{what} asks for {describe_request(spec.resources)}, but no node "
                f"in the cluster has {' and '.join(missing)}. Lower the request or add a node "
                f"that has these resources.")

    def finished(self, worker_id: bytes, task_ids: Iterable[bytes], durations: Iterable[float]) -> list:
        worker = self.workers.get(worker_id)
        for task_id, duration in zip(task_ids, durations):
            record = self.tasks.pop(task_id, None)
            self.counts["finished"] += 1
            if record is not None:
                fid = record.spec.function_id
                old = self.durations.get(fid)
                self.durations[fid] = duration if old is None else 0.8 * old + 0.2 * duration
            if worker is not None:
                try:
                    worker.queue.remove(task_id)
                except ValueError:
                    pass
        if worker is not None and not worker.queue and worker.actor is None and not worker.leased_to:
            self._release_lease(worker)
        return self.dispatch()

    def cancel(self, task_id: bytes, force: bool, cancelled_status: int, error: BaseException) -> list:
        record = self.tasks.get(task_id)
        if record is None:
            return []
        record.cancelled = True
        record.force = force
        if record.worker is None:
            queue = self.ready.get(record.spec.resources)
            if queue is not None:
                try:
                    queue.remove(task_id)
                except ValueError:
                    pass
            return [self._fail(task_id, cancelled_status, error)]
        return [CancelRunning(record.worker, task_id, force)]

    def blocked(self, worker_id: bytes, returned: Iterable[bytes]) -> list:
        worker = self.workers.get(worker_id)
        if worker is None or worker.blocked or worker.actor is not None:
            return []  # an actor's calls stay with it, in order
        worker.blocked = True
        self._take_back(worker, returned)
        if worker.lease is not None:
            self.nodes[worker.node_id].take(without_gpus(worker.lease), -1)
        return self.dispatch()

    def unblocked(self, worker_id: bytes) -> list:
        worker = self.workers.get(worker_id)
        if worker is None or not worker.blocked:
            return []
        if worker.lease is not None:
            if worker.queue or worker.leased_to:
                self.nodes[worker.node_id].take(without_gpus(worker.lease))
            else:
                self._give_back(worker)
                worker.lease = None
        worker.blocked = False
        return []

    def returned(self, worker_id: bytes, task_ids: Iterable[bytes]) -> list:
        worker = self.workers.get(worker_id)
        if worker is None:
            return []
        worker.stealing = False
        self._take_back(worker, task_ids)
        if worker.blocked:
            return self.dispatch()
        if not worker.queue:
            self._release_lease(worker)
        return self.dispatch()

    def drop_owner(self, owner: bytes) -> None:
        """A driver is gone: nobody will read its queued tasks' results; its leases end.

        Its tasks given to workers are forgotten too: large results that went straight to
        it would never be acknowledged (``RESULTS_RECEIVED``) and hold the worker.
        """
        for worker in self.workers.values():
            if worker.actor is None and any(t[:8] == owner for t in worker.queue):
                for task_id in [t for t in worker.queue if t[:8] == owner]:
                    worker.queue.remove(task_id)
                    self.tasks.pop(task_id, None)
                if not worker.queue and not worker.leased_to:
                    self._release_lease(worker)
            if worker.leased_to == owner:
                worker.leased_to = None
                if not worker.queue:
                    self._release_lease(worker)
        for queue in self.ready.values():
            for task_id in [t for t in queue if t[:8] == owner]:
                queue.remove(task_id)
                self.tasks.pop(task_id, None)

    # -- placement ------------------------------------------------------------------------
    def dispatch(self) -> list:
        assigned: dict[bytes, list] = {}
        out: list = self._place_actors() if self.creating else []
        for request, queue in self.ready.items():
            if not queue:
                continue
            depth = self._depth(queue[0])
            while queue:
                record = self.tasks[queue[0]]
                spread = is_spread(record.spec)
                worker = self._pick_worker(request, depth, spread)
                if worker is None:
                    break
                task_id = queue.popleft()
                if worker.lease is None:
                    self._hold(worker, request)
                if spread:
                    self.nodes[worker.node_id].spread_count += 1
                worker.queue.append(task_id)
                record.worker = worker.worker_id
                assigned.setdefault(worker.worker_id, []).append(self._spec_for(worker, record.spec))
            if queue:
                out.extend(self._grow_or_steal(request, queue))
                out.extend(self._revoke_leases())
        for worker_id, specs in assigned.items():
            out.append(Execute(worker_id, specs, self._new_functions(self.workers[worker_id], specs)))
        return out + self._steal_for_idle()

    def _steal_for_idle(self) -> list:
        """Idle workers, nothing left to hand out: take back tasks queued behind others.

        Pipelining guesses how long tasks take; when it guessed wrong (a long task with
        short ones queued behind it), the short ones move to a worker that is free.
        """
        idle = [w for w in self.workers.values() if w.lease is None and not w.blocked
                and w.actor is None and not w.leased_to and not self.nodes[w.node_id].leaving]
        if not idle:
            return []
        victims = sorted((w for w in self.workers.values() if len(w.queue) >= 2 and not w.stealing
                          and not w.blocked and w.actor is None), key=lambda w: -len(w.queue))
        out: list = []
        for victim in victims:
            thief = next((w for w in idle if self.nodes[w.node_id].fits(victim.lease)), None)
            if thief is None:
                continue
            idle.remove(thief)
            victim.stealing = True
            out.append(Steal(victim.worker_id, max(1, (len(victim.queue) - 1 + 1) // 2)))
        return out

    def _pick_worker(self, request: tuple, depth: int, spread: bool = False) -> Worker | None:
        """An idle worker if one fits, on the least loaded node; else the worker with the
        shortest queue of the same request, if shorter than ``depth``. With ``spread``, the
        node that got the fewest SPREAD tasks comes first, idle worker or not."""
        idle = None
        idle_rank: tuple = ()
        best = None
        best_rank: tuple = ()
        for worker in self.workers.values():
            if worker.blocked or worker.stealing or worker.actor is not None or worker.leased_to:
                continue
            node = self.nodes[worker.node_id]
            if node.leaving:
                continue
            if worker.lease is None:
                if node.fits(request):
                    rank = (node.spread_count, 0, node.load()) if spread else (node.load(),)
                    if idle is None or rank < idle_rank:
                        idle, idle_rank = worker, rank
                continue
            n = len(worker.queue)
            if worker.lease == request and n < depth:
                rank = (node.spread_count, 1, n) if spread else (n, node.load())
                if best is None or rank < best_rank:
                    best, best_rank = worker, rank
        if spread and best is not None and (idle is None or best_rank < idle_rank):
            return best
        return idle or best  # an idle worker wins over queueing

    @staticmethod
    def _idle(worker: Worker) -> bool:
        return (worker.lease is None and not worker.blocked and not worker.stealing
                and worker.actor is None and not worker.leased_to)

    def _hold(self, worker: Worker, request: tuple) -> None:
        """The worker takes ``request`` from its node, with GPU devices of its own."""
        node = self.nodes[worker.node_id]
        worker.lease = request
        node.take(request)
        gpus = gpu_amount(request)
        if gpus and node.gpu_free:
            worker.gpu_ids = node.assign_gpus(gpus)

    def _give_back(self, worker: Worker) -> None:
        """Return the worker's lease to its node (a blocked worker gave back all but its
        GPUs already). The caller clears ``worker.lease``."""
        node = self.nodes.get(worker.node_id)
        lease = worker.lease
        if node is not None and lease is not None:
            if worker.blocked:
                node.take(tuple(item for item in lease if item[0] == "GPU"), -1)
            else:
                node.take(lease, -1)
            if worker.gpu_ids:
                node.release_gpus(worker.gpu_ids, gpu_amount(lease))
        worker.gpu_ids = ()

    @staticmethod
    def _spec_for(worker: Worker, spec: TaskSpec) -> TaskSpec:
        """The spec as the worker gets it: with the GPU devices it may use."""
        if not worker.gpu_ids:
            return spec
        return spec._replace(options=spec.options + (("gpu_ids", worker.gpu_ids),))

    def _depth(self, task_id: bytes) -> int:
        duration = self.durations.get(self.tasks[task_id].spec.function_id)
        if duration is None:
            return UNKNOWN_DURATION_DEPTH
        return max(1, min(MAX_PIPELINE, int(PIPELINE_SECONDS / max(duration, 1e-6))))

    def _grow_or_steal(self, request: tuple, queue: collections.deque) -> list:
        """Tasks wait: start workers where resources are free but no worker is idle.

        This is how a node keeps its CPUs busy while some of its workers are blocked in
        ``get`` (they gave their CPU back): as many new workers as free slots, minus the
        workers already idle or starting.
        """
        out: list = []
        cpus = dict(request).get("CPU", 0.0)
        for node in self.nodes.values():
            if not node.fits(request):
                continue
            free_slots = int(node.available.get("CPU", 0.0) / cpus + 1e-9) if cpus else 1
            idle = sum(1 for w in node.workers if self.workers[w].lease is None
                       and not self.workers[w].blocked and self.workers[w].actor is None
                       and not self.workers[w].leased_to)
            actors = sum(1 for w in node.workers if self.workers[w].actor is not None)
            extra_allowed = int(node.total.get("CPU", 0)) + node.max_extra_workers + actors - (
                len(node.workers) + node.spawning)
            count = min(len(queue), free_slots, extra_allowed) - idle - node.spawning
            if count > 0:
                node.spawning += count
                out.append(Spawn(node.agent, count))
        return out

    def _release_lease(self, worker: Worker) -> None:
        if worker.lease is not None:
            self._give_back(worker)
            worker.lease = None

    def _take_back(self, worker: Worker, task_ids: Iterable[bytes]) -> None:
        back = [t for t in task_ids if t in worker.queue]
        for task_id in reversed(back):
            worker.queue.remove(task_id)
            record = self.tasks.get(task_id)
            if record is not None:
                record.worker = None
                self._enqueue_front(task_id)

    def _enqueue_front(self, task_id: bytes) -> None:
        record = self.tasks[task_id]
        self.ready.setdefault(record.spec.resources, collections.deque()).appendleft(task_id)

    def _fail(self, task_id: bytes, status: int, error: BaseException) -> Fail:
        record = self.tasks.pop(task_id)
        self.counts["failed"] += 1
        return Fail(record.spec, status, error)

    def _fail_new(self, spec: TaskSpec, error: BaseException) -> Fail:
        from rayipy.protocol.messages import ERROR
        self.counts["failed"] += 1
        return Fail(spec, ERROR, error)

    def tick(self, now: float) -> list:
        """Called about once a second: retire extra workers idle for a while."""
        out: list = []
        for node in self.nodes.values():
            pool = [self.workers[w] for w in node.workers if self.workers[w].actor is None]
            surplus = len(pool) - int(node.total.get("CPU", 0))
            for worker in pool:
                if worker.lease is not None or worker.blocked or worker.queue or worker.leased_to:
                    worker.idle_since = None
                    continue
                if worker.idle_since is None:
                    worker.idle_since = now
                elif surplus > 0 and now - worker.idle_since > IDLE_RETIRE_SECONDS:
                    surplus -= 1
                    node.workers.discard(worker.worker_id)
                    del self.workers[worker.worker_id]
                    out.append(Retire(node.agent, worker.worker_id))
        return out

    # -- reporting --------------------------------------------------------------------------
    def summary(self) -> dict:
        running = sum(1 for w in self.workers.values() if w.queue)
        return {
            "queued": sum(len(q) for q in self.ready.values()),
            "running": running,
            "assigned": sum(len(w.queue) for w in self.workers.values()),
            "workers": len(self.workers),
            "blocked_workers": sum(1 for w in self.workers.values() if w.blocked),
            "leased_workers": sum(1 for w in self.workers.values() if w.leased_to),
            **self.counts,
        }
