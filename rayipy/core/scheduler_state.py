"""The scheduler's shared state, and the steps every part of the scheduler takes on it.

``Scheduler`` is built in layers; each class defines every attribute it reads or
inherits it from the class below, so no part reads state it does not declare:

    SchedulerState      the records (nodes, workers, tasks, queues, owners) and the shared
          |             steps: a worker's allocation, picking a worker, failing a task
    ActorScheduling     actors: placing them, where they are, names, restarts, deaths
    LeaseScheduling     workers lent to drivers
          \\  /
    Scheduler           the events the head reports; tasks: dispatch, pipelining, stealing

A worker's ``state`` (``WorkerStatus``) changes only here and in those parts:
IDLE -> RUNNING (a task), ACTOR (an actor) or LEASED (a driver's lease), via
``_allocate``; RUNNING -> IDLE when its queue empties, via ``_free_allocation``;
RUNNING or LEASED -> BLOCKED while its task waits in ``get``, and back (or to IDLE
if nothing is left) when it resumes.
"""

from __future__ import annotations

import abc
import collections
import heapq
import operator
from typing import Callable

from rayipy.core.instructions import Execute, Fail, Instruction, Spawn
from rayipy.core.runtime_env import env_of, env_spec_of
from rayipy.core.state import LostNode, Node, Request, TaskRecord, Worker, WorkerStatus
from rayipy.core.task_counts import FAILED, outcome
from rayipy.protocol.messages import ERROR, TaskSpec

IDLE, RUNNING, BLOCKED = WorkerStatus.IDLE, WorkerStatus.RUNNING, WorkerStatus.BLOCKED

LOST_NODES_KEPT = 100       # nodes() lists this many gone nodes, with Alive False, as Ray

_function_id = operator.attrgetter("function_id")


def takes_queue(worker: Worker) -> bool:
    """Whether a task may queue behind what ``worker`` runs: not when its running task
    has run long (``Worker.long_task``), nor once it retires after ``max_calls``."""
    if worker.retiring:
        return False
    long_task = worker.long_task
    return long_task is None or not worker.queue or worker.queue[0] != long_task


def describe_request(request: Request) -> str:
    """"CPU=1, GPU=0.5" (or "nothing"), for error messages."""
    return ", ".join(f"{name}={amount:g}" for name, amount in request) or "nothing"


def gpu_amount(request: Request) -> float:
    """How many GPUs ``request`` asks for."""
    return dict(request).get("GPU", 0.0)


def without_gpus(request: Request) -> Request:
    """What a worker blocked in ``get`` gives back: its CPUs and the rest, not its GPUs
    (their device ids stay its own, as in Ray)."""
    return tuple(item for item in request if item[0] != "GPU")


class SchedulerState(abc.ABC):
    """The records every part of the scheduler reads, and the steps they share."""

    def __init__(self) -> None:
        self.nodes: dict[bytes, Node] = {}
        self.workers: dict[bytes, Worker] = {}
        self.tasks: dict[bytes, TaskRecord] = {}
        self.ready: dict[Request, collections.deque[bytes]] = {}   # request -> task ids
        self.functions: dict[bytes, bytes] = {}
        self.durations: dict[bytes, float] = {}                 # function id -> EWMA seconds
        # Functions whose tasks were seen to block in get or wait: nothing queues behind
        # one (it may wait for a task that would then wait behind it).
        self.blocking: set[bytes] = set()
        self.counts: collections.Counter[str] = collections.Counter()   # submitted, failed...
        self.live_owners: set[bytes] = set()    # drivers and workers connected (may own work)
        self.drivers: set[bytes] = set()        # the drivers among them
        self.lost_nodes: collections.deque[LostNode] = collections.deque(maxlen=LOST_NODES_KEPT)
        # request -> whether no node could ever run it, for as long as the nodes stay the
        # same (``_nodes_changed`` forgets it; so does a change in their number, for
        # callers that fill ``nodes`` themselves).
        self._nowhere: dict[Request, bool] = {}
        self._nowhere_nodes = 0
        # (node id, runtime_env key) -> workers of that environment asked for, not yet
        # registered (``Node.spawning`` counts the pool's).
        self.env_spawning: dict[tuple[bytes, str], int] = {}

    @abc.abstractmethod
    def dispatch(self) -> list[Instruction]:
        """Place what waits on the workers free for it (``Scheduler`` defines it)."""

    # -- a worker's allocation ----------------------------------------------------------------
    def _allocate(self, worker: Worker, request: Request, state: WorkerStatus) -> None:
        """An idle worker takes ``request`` from its node, with GPU devices of its own,
        and enters ``state`` (RUNNING, ACTOR or LEASED)."""
        node = self.nodes[worker.node_id]
        worker.allocation = request
        worker.state = state
        node.take(request)
        gpus = gpu_amount(request)
        if gpus and node.gpu_free:
            worker.gpu_ids = node.assign_gpus(gpus)

    def _free_allocation(self, worker: Worker) -> None:
        """Give the worker's allocation back to its node; a running worker becomes idle.

        A blocked worker gave back all but its GPUs already, so it returns only those, and
        stays blocked until its task resumes.
        """
        node = self.nodes.get(worker.node_id)
        allocation = worker.allocation
        if node is not None and allocation is not None:
            if worker.state is BLOCKED:
                node.take(tuple(item for item in allocation if item[0] == "GPU"), -1)
            else:
                node.take(allocation, -1)
            if worker.gpu_ids:
                node.release_gpus(worker.gpu_ids, gpu_amount(allocation))
        worker.allocation = None
        worker.gpu_ids = ()
        if worker.state is RUNNING:
            self._become_idle(worker)

    @staticmethod
    def _become_idle(worker: Worker) -> None:
        # A steal asked of it is moot: it has nothing queued (its answer, if any, is empty).
        worker.state = IDLE
        worker.steal_pending = False

    def _free_allocation_if_done(self, worker: Worker) -> None:
        """A pool worker with nothing queued gives back its allocation (actors and leased
        workers keep theirs: they run what comes straight to them)."""
        if not worker.queue and worker.state is not WorkerStatus.ACTOR and not worker.leased_to:
            self._free_allocation(worker)

    # -- placement ------------------------------------------------------------------------
    def _pick_worker(self, request: Request, depth: int, spread: bool = False) -> Worker | None:
        """An idle worker if one fits, on the least loaded node; else the running worker
        with the shortest queue of the same request, if shorter than ``depth``. With
        ``spread``, the node that got the fewest SPREAD tasks comes first, idle or not."""
        idle = None
        idle_rank: tuple[float, ...] = ()
        best = None
        best_rank: tuple[float, ...] = ()
        rank: tuple[float, ...]
        env = env_of(request)
        for worker in self.workers.values():
            state = worker.state
            if state is IDLE and worker.env == env:
                node = self.nodes[worker.node_id]
                if not node.leaving and node.fits(request):
                    rank = (node.spread_count, 0, node.load()) if spread else (node.load(),)
                    if idle is None or rank < idle_rank:
                        idle, idle_rank = worker, rank
            elif state is RUNNING and not worker.steal_pending and takes_queue(worker):
                n = len(worker.queue)
                if worker.allocation == request and n < depth and not self._ends_blocking(worker):
                    node = self.nodes[worker.node_id]
                    if node.leaving:
                        continue
                    rank = (node.spread_count, 1, n) if spread else (n, node.load())
                    if best is None or rank < best_rank:
                        best, best_rank = worker, rank
        if spread and best is not None and (idle is None or best_rank < idle_rank):
            return best
        return idle or best  # an idle worker wins over queueing

    def _picker(self, request: Request, depth: int) -> WorkerPicker:
        """A ``WorkerPicker`` for a run of non-SPREAD tasks asking for ``request``."""
        return WorkerPicker(self.workers, self.nodes, request, depth,
                            self._ends_blocking if self.blocking else None)

    def _ends_blocking(self, worker: Worker) -> bool:
        """The last task queued on ``worker`` is of a function known to block: a task
        queued behind it could be the one it waits for (and new workers would be started,
        one per blocked task, until that one ran)."""
        if not self.blocking or not worker.queue:
            return False
        record = self.tasks.get(worker.queue[-1])
        return record is not None and record.spec.function_id in self.blocking

    def _assign(self, worker: Worker, task_ids: list[bytes]) -> Execute:
        """Queue ``task_ids`` on ``worker``; the Execute that sends them."""
        specs = []
        for task_id in task_ids:
            record = self.tasks[task_id]
            record.worker = worker.worker_id
            worker.queue.append(task_id)
            specs.append(self._spec_for(worker, record.spec))
        return Execute(worker.worker_id, specs, self._new_functions(worker, specs))

    def _new_functions(self, worker: Worker, specs: list[TaskSpec]) -> list[tuple[bytes, bytes]]:
        """The (id, bytes) of the specs' functions this worker has not been sent yet."""
        new_functions = []
        sent = worker.functions
        # Each distinct id once, in the specs' order (a batch is mostly one function).
        for fid in dict.fromkeys(map(_function_id, specs)):
            if fid and fid not in sent:
                sent.add(fid)
                new_functions.append((fid, self.functions.get(fid, b"")))
        return new_functions

    @staticmethod
    def _spec_for(worker: Worker, spec: TaskSpec) -> TaskSpec:
        """The spec as the worker gets it: with the GPU devices it may use."""
        if not worker.gpu_ids:
            return spec
        return spec._replace(options=spec.options + (("gpu_ids", worker.gpu_ids),))

    def _take_back(self, worker: Worker, task_ids: list[bytes]) -> None:
        """Tasks a worker gave back, unstarted: to the front of the ready queue, in order."""
        # Sets, not deque searches: a deep pipeline gives back hundreds at once.
        queued = set(worker.queue)
        back = list(dict.fromkeys(t for t in task_ids if t in queued))
        if not back:
            return
        gone = set(back)
        kept = [t for t in worker.queue if t not in gone]
        worker.queue.clear()
        worker.queue.extend(kept)
        for task_id in reversed(back):
            record = self.tasks.get(task_id)
            if record is not None:
                record.worker = None
                self._enqueue_front(task_id)

    def _enqueue_front(self, task_id: bytes) -> None:
        request = self.tasks[task_id].spec.resources
        queue = self.ready.get(request)
        if queue is None:
            queue = self.ready[request] = collections.deque()
        queue.appendleft(task_id)

    # -- runtime environments: workers started for one ---------------------------------------
    def _env_worker_started(self, node_id: bytes, env: str) -> None:
        """A worker of environment ``env`` registered on the node."""
        key = (node_id, env)
        left = self.env_spawning.get(key, 0) - 1
        if left > 0:
            self.env_spawning[key] = left
        else:
            self.env_spawning.pop(key, None)

    def _spawn_for_env(self, node: Node, count: int, spec: TaskSpec) -> Spawn:
        """Ask ``node`` for ``count`` workers of ``spec``'s environment."""
        env = env_spec_of(spec.options)
        assert env is not None, "a request with an environment marker comes with its spec"
        key = (node.node_id, env["key"])
        self.env_spawning[key] = self.env_spawning.get(key, 0) + count
        return Spawn(node.agent, count, env)

    def _grow_env(self, request: Request, queue: collections.deque[bytes]) -> list[Instruction]:
        """Tasks of an environment wait and no worker of it is free: start workers of
        it where the resources are free (as many as free slots, less the idle and the
        starting ones of that environment), within the node's limit of processes."""
        out: list[Instruction] = []
        env = env_of(request)
        spec = self.tasks[queue[0]].spec
        cpus = dict(request).get("CPU", 0.0)
        for node in self.nodes.values():
            if node.leaving or not node.fits(request):
                continue
            free_slots = int(node.available.get("CPU", 0.0) / cpus + 1e-9) if cpus else 1
            idle = sum(1 for w in node.workers
                       if self.workers[w].state is IDLE and self.workers[w].env == env)
            starting = self.env_spawning.get((node.node_id, env), 0)
            actors = sum(1 for w in node.workers if self.workers[w].state is WorkerStatus.ACTOR)
            room = int(node.total.get("CPU", 0)) + node.max_extra_workers + actors - (
                len(node.workers) + node.spawning + sum(
                    n for (node_id, _), n in self.env_spawning.items() if node_id == node.node_id))
            count = min(len(queue), free_slots, room + idle + starting) - idle - starting
            if count > 0:
                out.append(self._spawn_for_env(node, count, spec))
        return out

    # -- failing tasks ----------------------------------------------------------------------
    def impossible_message(self, spec: TaskSpec) -> str:
        """Why no node could ever run ``spec``, and what to do about it."""
        missing = []
        for name, amount in spec.resources:
            best = max((n.total.get(name, 0.0) for n in self.nodes.values()), default=0.0)
            if best < amount:
                missing.append(f"{name}={amount:g} (the largest node has {best:g})")
        what = f"actor {spec.name[:-9]!r}" if spec.method == "__init__" else f"task {spec.name!r}"
        return (f"{what} asks for {describe_request(spec.resources)}, but no node "
                f"in the cluster has {' and '.join(missing)}. Lower the request or add a node "
                f"that has these resources.")

    def _fits_nowhere(self, spec: TaskSpec) -> bool:
        """No node could ever run ``spec`` (without nodes yet, it waits: not "nowhere").

        Asked for every task submitted, so the answer is kept per request until a node
        joins or leaves (``_nodes_changed``)."""
        nodes = self.nodes
        if self._nowhere_nodes != len(nodes):
            self._nodes_changed()
        request = spec.resources
        answer = self._nowhere.get(request)
        if answer is None:
            answer = self._nowhere[request] = bool(nodes) and not any(
                n.could_ever_fit(request) for n in nodes.values())
        return answer

    def _nodes_changed(self) -> None:
        """A node joined or left (or lost its resources): forget what could fit where."""
        self._nowhere.clear()
        self._nowhere_nodes = len(self.nodes)

    def _fail(self, task_id: bytes, status: int, error: BaseException) -> Fail:
        """Forget a known task; the Fail that tells its owner."""
        record = self.tasks.pop(task_id)
        self.counts[outcome(status) or FAILED] += 1
        return Fail(record.spec, status, error)

    def _fail_new(self, spec: TaskSpec, error: BaseException) -> Fail:
        """Refuse a task as it arrives (it was never recorded)."""
        self.counts["failed"] += 1
        return Fail(spec, ERROR, error)


class WorkerPicker:
    """Where ``SchedulerState._pick_worker`` would send each of a run of tasks, for one
    request and without SPREAD, with the workers scanned once per run, not once per task.

    Its answers are the same, task after task, provided the caller gives each picked
    worker the task (allocating it if it was idle) and changes nothing else meanwhile:

    - first the idle workers that fit, least loaded node first (ties: the order of
      ``workers``). Placing a task only takes resources, so once no idle worker fits,
      none will for the rest of the run;
    - then the running workers with this request and room (queue shorter than
      ``depth``, and its last task not of a blocking function: ``ends_blocking``),
      shortest queue first, then least loaded node, then the order of ``workers``. No
      allocation happens in this phase, so node loads stay fixed and a heap of (queue
      length, load, position) gives each answer.

    A task of a blocking function closes its worker's queue: the caller says so with
    ``close``.
    """

    __slots__ = ("workers", "nodes", "request", "depth", "ends_blocking", "idle", "heap",
                 "closed")

    def __init__(self, workers: dict[bytes, Worker], nodes: dict[bytes, Node], request: Request,
                 depth: int, ends_blocking: Callable[[Worker], bool] | None = None) -> None:
        self.workers = workers
        self.nodes = nodes
        self.request = request
        self.depth = depth
        self.ends_blocking = ends_blocking
        env = env_of(request)
        self.idle: list[Worker] | None = [
            w for w in workers.values()
            if w.state is IDLE and w.env == env and not nodes[w.node_id].leaving]
        self.heap: list[tuple[int, float, int, Worker]] | None = None
        self.closed: set[bytes] = set()   # worker ids given a blocking task during the run

    def pick(self) -> Worker | None:
        """The worker for the next task (which the caller then gives it), or None."""
        idle = self.idle
        if idle:
            best = None
            best_load = 0.0
            request = self.request
            for worker in idle:
                node = self.nodes[worker.node_id]
                if node.fits(request):
                    load = node.load()
                    if best is None or load < best_load:
                        best, best_load = worker, load
            if best is not None:
                idle.remove(best)
                return best
        self.idle = None
        heap = self.heap
        if heap is None:
            heap = self.heap = self._running()
        closed = self.closed
        while heap and closed and heap[0][3].worker_id in closed:
            heapq.heappop(heap)
        if not heap:
            return None
        n, load, position, worker = heap[0]
        if n + 1 < self.depth:
            heapq.heapreplace(heap, (n + 1, load, position, worker))
        else:
            heapq.heappop(heap)
        return worker

    def close(self, worker: Worker) -> None:
        """``worker`` was just given a task of a blocking function: nothing goes behind it."""
        self.closed.add(worker.worker_id)

    def _running(self) -> list[tuple[int, float, int, Worker]]:
        heap = []
        request, depth, nodes = self.request, self.depth, self.nodes
        ends_blocking, closed = self.ends_blocking, self.closed
        for position, worker in enumerate(self.workers.values()):
            if (worker.state is RUNNING and not worker.steal_pending
                    and worker.allocation == request and len(worker.queue) < depth
                    and takes_queue(worker)):
                if worker.worker_id in closed or (ends_blocking and ends_blocking(worker)):
                    continue
                node = nodes[worker.node_id]
                if not node.leaving:
                    heap.append((len(worker.queue), node.load(), position, worker))
        heapq.heapify(heap)
        return heap
