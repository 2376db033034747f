"""The head's scheduling state: which task runs where, and what each node has left.

Pure logic: every method takes an event (tasks submitted, a worker finished, a worker
died...) and returns the instructions the head must carry out. No sockets, no clocks
read except where a timestamp is passed in; tested with plain asserts.

Resources. A node has totals (CPU, GPU, memory, custom) and what is left. A worker
holds an *allocation*: the resources of the task it runs, taken from its node when the
worker starts its first task and given back when its queue empties. Tasks with exactly
the same resource request may queue behind the running one on the same worker
(pipelining), so a worker never sits idle waiting for the head between short tasks; how
many depends on how long the function's tasks take (about ``PIPELINE_SECONDS`` of work
queued, at most ``MAX_PIPELINE`` tasks, or ``DEEP_PIPELINE`` when their arguments are
small). Tiny tasks need the deep queue: a worker batches its results for up to 5 ms, and
with less work than that queued its queue runs low first, so it reports, and the head
refills, one task per message. A *lease* is something else: a worker lent to a driver
(``lease_scheduling``).

Pipelining is a guess, and a task must never stay behind an unknown-length or long one
while a worker could take it. A task queued behind another goes back to the front of
the ready queue (``Steal``), where the next free worker takes it in submission order,
as soon as the guess that put it there fails: when the first durations of a function
are measured and say its queue was too deep (``_trim_unknown``: while a function's
duration is unknown, one task waits behind each running one); when the task it waits
behind has run ``LONG_TASK_SECONDS`` (``tick``; nothing queues there until that task
ends); and when a worker falls idle with nothing left to hand out (``_steal_for_idle``).

``max_calls`` (a task option): a worker given the Nth task of such a function takes
nothing more, and once its queue is done it is retired (``Retire``); its agent starts a
replacement, as Ray replaces the worker after N calls.

Nested tasks. A worker whose task blocks in ``get`` gives back its allocation (all but
its GPUs) and the tasks queued behind the blocked one; the node's freed CPU then lets
the head start another worker if tasks are waiting, so a task waiting on its children
never starves them. Its function is remembered as blocking (``blocking``), and from then
on no task is queued behind one of that function's tasks: the task queued behind could
be the one it waits for, and each such wait costs a new worker process.

Around this module: ``state`` holds the records (nodes, workers and their
``WorkerStatus``, tasks), ``instructions`` the actions returned, ``scheduler_state`` the
shared records and steps, and ``actor_scheduling`` and ``lease_scheduling`` the actor
and lease parts this class builds on (the layers are drawn in ``scheduler_state``).
"""

from __future__ import annotations

import collections
import itertools
from typing import Any, Iterable

from rayipy.core.actor_scheduling import Actor, ActorScheduling, actor_died_error
from rayipy.core import placement
from rayipy.core.instructions import (ActorLocation, CancelRunning, Execute, Fail, ForgetPeer,
                                      Instruction, KillWorker, LeaseAnswer, LeaseEnded, Retire,
                                      Spawn, Steal, Warn)
from rayipy.core.lease_scheduling import LeaseScheduling
from rayipy.core.objects import owner_of
from rayipy.core.placement_scheduling import PlacementScheduling
from rayipy.core.runtime_env import env_of
from rayipy.core.scheduler_state import (WorkerPicker, describe_request, gpu_amount, takes_queue,
                                        without_gpus)
from rayipy.core.state import (AFFINITY_PREFIX, LostNode, Node, Request, TaskRecord, Worker,
                               WorkerStatus, affinity_resource, shown_resources)
from rayipy.core.strategies import SOFT_AFFINITY
from rayipy.core.task_counts import (CANCELLED_COUNT, FAILED, FINISHED, OUTCOMES, DirectTally,
                                     outcome)
from rayipy.core.unschedulable import (UnschedulableWatch, failure_text, missing_resources,
                                       warning_text)
from rayipy.exceptions import (ActorUnschedulableError, TaskCancelledError, TaskUnschedulableError,
                               WorkerCrashedError)
from rayipy.protocol.messages import CANCELLED, CRASHED, OK, Payload, TaskSpec

__all__ = ["Actor", "ActorLocation", "CancelRunning", "Execute", "Fail", "ForgetPeer",
           "Instruction", "KillWorker", "LeaseAnswer", "LeaseEnded", "Retire", "Scheduler",
           "Spawn", "Steal", "Warn", "actor_died_error", "describe_request", "gpu_amount",
           "without_gpus"]

PIPELINE_SECONDS = 0.02     # queue about this much work per worker
MAX_PIPELINE = 64           # tasks queued per worker at most...
DEEP_PIPELINE = 1024        # ...or this many when their arguments are small:
SMALL_ARGS_BYTES = 64 * 1024   # no more bytes queued (64 MiB) than 64 tasks of 1 MiB
UNKNOWN_DURATION_DEPTH = 2  # one running, one waiting, until durations are known
LONG_TASK_SECONDS = 0.5     # a task running this long has nothing queued behind it
IDLE_RETIRE_SECONDS = 10.0  # an extra worker idle this long is stopped

IDLE, RUNNING, BLOCKED = WorkerStatus.IDLE, WorkerStatus.RUNNING, WorkerStatus.BLOCKED
ACTOR, LEASED = WorkerStatus.ACTOR, WorkerStatus.LEASED


def is_spread(spec: TaskSpec) -> bool:
    return ("scheduling_strategy", "SPREAD") in spec.options


def max_calls(spec: TaskSpec) -> int:
    """The task's ``max_calls`` (0: no limit)."""
    for name, value in spec.options:
        if name == "max_calls":
            return int(value)
    return 0


def _names_group(request: Request) -> bool:
    """Whether ``request`` asks for a placement group's resources."""
    return any(placement.is_group_resource(name) for name, _ in request)


def _what(spec: TaskSpec) -> str:
    """"task 'f'" or "actor 'A'", for messages."""
    return f"actor {spec.name[:-9]!r}" if spec.method == "__init__" else f"task {spec.name!r}"


def args_bytes(spec: TaskSpec) -> int:
    """The bytes of a spec's arguments, its inline dependency values included."""
    return spec.args.nbytes + sum(d.nbytes for d in spec.dep_values if isinstance(d, Payload))


class Scheduler(ActorScheduling, LeaseScheduling, PlacementScheduling):
    """Events in, instructions out: the head's whole scheduling state."""

    def __init__(self) -> None:
        super().__init__()
        self.direct = DirectTally()     # what workers' heartbeats reported of direct work
        # node id -> (worker id, pid, address, env, actor) of workers that registered before it
        self.early_workers: dict[bytes, list[tuple[bytes, int, str, str, bytes | None]]] = {}
        # Work that no live node could ever run (all nodes gone, or the ones it needs):
        # warned about, then failed, by ``tick`` (``core/unschedulable.py``).
        self.unschedulable = UnschedulableWatch()

    # -- membership -------------------------------------------------------------------
    def add_node(self, node_id: bytes, agent: bytes, resources: dict[str, float],
                 info: dict[str, Any]) -> list[Instruction]:
        self.nodes[node_id] = Node(node_id, agent, {**resources, affinity_resource(node_id): 1.0},
                                   info)
        self._nodes_changed()
        out: list[Instruction] = []
        for worker_id, pid, address, env, actor in self.early_workers.pop(node_id, []):
            out.extend(self._attach_worker(worker_id, node_id, pid, address, env, actor))
        return out + self.dispatch()

    def add_worker(self, worker_id: bytes, node_id: bytes, pid: int,
                   address: str = "", env: str = "",
                   actor: bytes | None = None) -> list[Instruction]:
        """A worker registered; ``env``: the runtime_env key it serves ("": the pool);
        ``actor``: the actor it hosts (it registers again with a restarted head)."""
        node = self.nodes.get(node_id)
        if node is None:
            # Its registration overtook its agent's (separate connections): wait for the node.
            self.early_workers.setdefault(node_id, []).append((worker_id, pid, address, env,
                                                               actor))
            return []
        return self._attach_worker(worker_id, node_id, pid, address, env, actor) + self.dispatch()

    def _attach_worker(self, worker_id: bytes, node_id: bytes, pid: int, address: str,
                       env: str = "", actor: bytes | None = None) -> list[Instruction]:
        node = self.nodes[node_id]
        if env:
            self._env_worker_started(node_id, env)
        else:
            node.spawning = max(0, node.spawning - 1)
        node.workers.add(worker_id)
        worker = self.workers[worker_id] = Worker(worker_id, node_id, pid)
        worker.address = address
        worker.env = env
        return self.adopt_actor(worker, actor) if actor is not None else []

    def owner_joined(self, process_id: bytes, driver: bool) -> None:
        """A driver or a worker connected: it may own tasks, objects and actors."""
        self.live_owners.add(process_id)
        if driver:
            self.drivers.add(process_id)

    def owner_left(self, process_id: bytes) -> list[Instruction]:
        """A driver or worker is gone. A driver's queued tasks, leases and (not detached)
        actors go with it, and the workers that frees take what waits."""
        self.live_owners.discard(process_id)
        if process_id not in self.drivers:
            return []
        self.drivers.discard(process_id)
        self.drop_owner(process_id)
        return (self.drop_owner_actors(process_id) + self.owner_groups_gone(process_id)
                + self.dispatch())

    def worker_died(self, worker_id: bytes, why: str) -> list[Instruction]:
        """A worker process died (its agent saw it exit, or its node is gone)."""
        self.live_owners.discard(worker_id)
        worker = self.workers.get(worker_id)
        if worker is None:
            for waiting in self.early_workers.values():   # died before its node registered
                waiting[:] = [w for w in waiting if w[0] != worker_id]
            return []
        crash = WorkerCrashedError(f"the worker process (pid {worker.pid}) died: {why}")
        return self.remove_worker(worker_id, crash, CRASHED, CANCELLED)

    def remove_worker(self, worker_id: bytes, error: BaseException, crashed_status: int,
                      cancelled_status: int) -> list[Instruction]:
        """A worker process died: retry what it ran (within max_retries), requeue the rest.

        Its running task fails with ``error`` and ``crashed_status`` once out of retries;
        its cancelled tasks fail as cancelled (``cancelled_status``).
        """
        worker = self.workers.pop(worker_id, None)
        if worker is None:
            return []
        node = self.nodes.get(worker.node_id)
        if node is not None:
            node.workers.discard(worker_id)
            self._free_allocation(worker)
            if node.leaving and not node.workers:
                del self.nodes[node.node_id]
                self._nodes_changed()
        out: list[Instruction] = []
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
                out.append(self._fail(task_id, cancelled_status, TaskCancelledError(
                    detail="its worker was killed (force=True)")))
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
        them can still free their allocations; it takes no new work meanwhile.
        """
        node = self.nodes.get(node_id)
        if node is None:
            return []
        node.total = {}
        node.available = {}
        node.leaving = True
        if not node.workers:
            del self.nodes[node_id]
        self._nodes_changed()
        return list(node.workers)

    def node_lost(self, node_id: bytes, why: str) -> list[Instruction]:
        """A node is gone (its agent left, or fell silent): its workers die with it.

        ``nodes()`` keeps listing it, dead, in ``lost_nodes``. A node already leaving is
        left alone (its agent's goodbye and its silence may both arrive).
        """
        node = self.nodes.get(node_id)
        if node is None or node.leaving:
            return []
        self.lost_nodes.append(LostNode(node_id, shown_resources(node.total), node.info, why))
        self.groups_lost_node(node_id)
        out: list[Instruction] = []
        for worker_id in self.remove_node(node_id):
            out.append(ForgetPeer(worker_id))
            out.extend(self.worker_died(worker_id, why))
        return out

    # -- tasks --------------------------------------------------------------------------
    def add_function(self, function_id: bytes, data: bytes) -> None:
        self.functions[function_id] = data

    def submit(self, specs: Iterable[TaskSpec]) -> list[Instruction]:
        out: list[Instruction] = []
        tasks, ready = self.tasks, self.ready
        submitted = 0
        # A batch mostly asks for one request: its checks and its queue, looked up once a run.
        request: Request | None = None
        queue: collections.deque[bytes] | None = None
        for spec in specs:
            submitted += 1
            if spec.attempt:
                # Its owner retries it (its leased worker died, or it remakes a lost
                # value): counted with the retries made here.
                self.counts["retried"] += 1
            if spec.options and SOFT_AFFINITY in spec.options:
                spec = self._soft_affinity(spec)
            if spec.actor_id:
                out.extend(self._submit_actor_spec(spec))
                continue
            if spec.resources != request or queue is None:
                if self._fits_nowhere(spec):
                    out.append(self._fail_new(spec, ValueError(self.impossible_message(spec))))
                    continue
                request = spec.resources
                queue = ready.get(request)
                if queue is None:
                    queue = ready[request] = collections.deque()
            tasks[spec.task_id] = TaskRecord(spec)
            queue.append(spec.task_id)
        self.counts["submitted"] += submitted
        return out + self.dispatch()

    def adopt_tasks(self, worker_id: bytes, specs: list[TaskSpec]) -> list[Instruction]:
        """After a head restart: ``worker`` lived on holding these tasks (running or queued
        there), and their owners sent them again. They are recorded as given to it, as
        ``dispatch`` would have, so its resources, their results, a cancel and its death
        work as for any task. Nothing is sent: it has them (or their results are on their
        way). A worker that cannot take tasks now (an actor's, a leased one) leaves them
        to be scheduled as any task (``core/head_recovery.py``)."""
        if not specs:
            return []
        worker = self.workers.get(worker_id)
        if worker is None or worker.state not in (IDLE, RUNNING, BLOCKED) or worker.leased_to:
            return self.submit(specs)
        if worker.state is IDLE:
            self._allocate(worker, specs[0].resources, RUNNING)
        for spec in specs:
            record = self.tasks[spec.task_id] = TaskRecord(spec)
            record.worker = worker_id
            worker.queue.append(spec.task_id)
            worker.functions.add(spec.function_id)
            if spec.attempt:
                self.counts["retried"] += 1   # as ``submit`` counts a task sent again
        self.counts["submitted"] += len(specs)
        return self.dispatch()

    def finished(self, worker_id: bytes, task_ids: Iterable[bytes], durations: Iterable[float],
                 statuses: Iterable[int] | None = None) -> list[Instruction]:
        """A worker's results. ``statuses`` (protocol statuses, one per task; None: all
        ``OK``) decide which count each adds to (``rayipy.core.task_counts``).

        Only tasks the head knows are counted, and a direct call the worker answered
        through the head because it was cancelled before it ran (the head never had it, and
        the worker's own direct counts leave it out); any other unknown id is a late
        result of a task already counted (failed here, or retried elsewhere)."""
        worker = self.workers.get(worker_id)
        queue = worker.queue if worker is not None else None
        pop, means = self.tasks.pop, self.durations
        count = 0
        not_ok: list[tuple[bool, int]] = []     # (known, status) of results other than OK
        # The mean of a run of same-function results is kept here and stored once, the
        # same value as storing it after each (the same float operations, in order).
        run: bytes | None = None
        mean: float | None = None
        learned: list[bytes] | None = None   # functions measured for the first time
        for task_id, duration, status in zip(task_ids, durations,
                                             itertools.repeat(OK) if statuses is None else statuses):
            record = pop(task_id, None)
            if status != OK:
                not_ok.append((record is not None, status))
            elif record is not None:
                count += 1
            if record is not None:
                fid = record.spec.function_id
                if fid != run:
                    if run is not None and mean is not None:
                        means[run] = mean
                    run, mean = fid, means.get(fid)
                    if mean is None:
                        learned = (learned or []) + [fid]
                mean = duration if mean is None else 0.8 * mean + 0.2 * duration
            if queue is not None:
                if queue and queue[0] == task_id:   # results come in queue order
                    queue.popleft()
                else:
                    try:
                        queue.remove(task_id)
                    except ValueError:
                        pass
        if run is not None and mean is not None:
            means[run] = mean
        self.counts[FINISHED] += count
        for known, status in not_ok:
            kind = outcome(status)
            if kind is not None and (known or kind == CANCELLED_COUNT):
                self.counts[kind] += 1
        out: list[Instruction] = self._trim_unknown(learned) if learned else []
        if worker is not None and not worker.queue:
            self._free_allocation_if_done(worker)
            if worker.retiring:
                out.extend(self._retire(worker))
        return out + self.dispatch() if out else self.dispatch()

    def _trim_unknown(self, functions: list[bytes]) -> list[Instruction]:
        """These functions' first durations are in: where a task of one waits behind
        another beyond the depth they call for (it was queued while the duration was
        unknown), take the excess back, to run on the next free worker instead."""
        out: list[Instruction] = []
        for fid in set(functions):
            duration = self.durations.get(fid)
            if duration is None:
                continue
            depth = max(1, int(PIPELINE_SECONDS / max(duration, 1e-6)))
            if depth >= UNKNOWN_DURATION_DEPTH:
                continue
            for worker in self.workers.values():
                queue = worker.queue
                if (worker.state is RUNNING and len(queue) > depth and not worker.steal_pending
                        and self._function_of(queue[-1]) == fid):
                    worker.steal_pending = True
                    out.append(Steal(worker.worker_id, len(queue) - depth))
        return out

    def _function_of(self, task_id: bytes) -> bytes | None:
        record = self.tasks.get(task_id)
        return record.spec.function_id if record is not None else None

    def _retire(self, worker: Worker) -> list[Instruction]:
        """A worker that ran its ``max_calls`` is done with its queue: stop it (its agent
        starts a fresh one). Its death, when the agent reports it, finds nothing here."""
        node = self.nodes.get(worker.node_id)
        del self.workers[worker.worker_id]
        if node is None:
            return []
        node.workers.discard(worker.worker_id)
        return [Retire(node.agent, worker.worker_id)]

    def cancel(self, task_id: bytes, force: bool, cancelled_status: int,
               error: BaseException, recursive: bool = True) -> list[Instruction]:
        """Cancel a task sent through the head: fail it if it waits here, else ask its worker."""
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
        return [CancelRunning(record.worker, task_id, force, False, recursive)]

    def cancel_requested(self, task_id: bytes, force: bool, actor_id: bytes,
                         leased_worker: bytes, recursive: bool = True) -> list[Instruction]:
        """An owner cancels a task, wherever it sent it: to an actor's worker, to a worker
        leased to it, or through the head. ``recursive``: its worker cancels the tasks
        the task submitted too."""
        if actor_id:
            return self.cancel_actor_call(actor_id, task_id, force)
        if leased_worker:
            if leased_worker not in self.workers:
                return []
            return [CancelRunning(leased_worker, task_id, force, True, recursive)]
        return self.cancel(task_id, force, CANCELLED,
                           TaskCancelledError(detail="cancelled before it started"), recursive)

    def blocked(self, worker_id: bytes, returned: list[bytes]) -> list[Instruction]:
        """A worker's task waits in ``get``: it gives back its allocation (not its GPUs)
        and the tasks queued behind it (``returned``)."""
        worker = self.workers.get(worker_id)
        if worker is None or worker.state is BLOCKED or worker.state is ACTOR:
            return []  # an actor's calls stay with it, in order
        worker.state = BLOCKED
        self._take_back(worker, returned)
        if worker.queue:   # what remains: the blocked task (and tasks sent to it by name)
            record = self.tasks.get(worker.queue[0])
            if record is not None:
                self.blocking.add(record.spec.function_id)
        if worker.allocation is not None:
            self.nodes[worker.node_id].take(without_gpus(worker.allocation), -1)
        return self.dispatch()

    def unblocked(self, worker_id: bytes) -> list[Instruction]:
        """A blocked worker's task resumes: it takes its allocation back, if it has work."""
        worker = self.workers.get(worker_id)
        if worker is None or worker.state is not BLOCKED:
            return []
        if worker.allocation is not None and (worker.queue or worker.leased_to):
            self.nodes[worker.node_id].take(without_gpus(worker.allocation))
        else:
            self._free_allocation(worker)   # still BLOCKED: its GPUs only
        if worker.leased_to:
            worker.state = LEASED
        elif worker.allocation is not None:
            worker.state = RUNNING
        else:
            self._become_idle(worker)
        return []

    def returned(self, worker_id: bytes, task_ids: list[bytes]) -> list[Instruction]:
        """A worker gave back unstarted tasks (asked to by a Steal, or sent while blocked)."""
        worker = self.workers.get(worker_id)
        if worker is None:
            return []
        worker.steal_pending = False
        self._take_back(worker, task_ids)
        if worker.state is not BLOCKED:
            self._free_allocation_if_done(worker)
        return self.dispatch()

    def drop_owner(self, owner: bytes) -> None:
        """A driver is gone: nobody will read its queued tasks' results; its leases end.

        Its tasks given to workers are forgotten too: large results that went straight to
        it would never be acknowledged (``RESULTS_RECEIVED``) and hold the worker.
        """
        for worker in self.workers.values():
            if worker.state is not ACTOR and self._drop_from(worker.queue, owner):
                self._free_allocation_if_done(worker)
            if worker.leased_to == owner:
                self._end_lease(worker)
        for queue in self.ready.values():
            self._drop_from(queue, owner)

    def _drop_from(self, queue: collections.deque[bytes], owner: bytes) -> bool:
        """Forget ``owner``'s tasks in ``queue`` (kept in one pass, not one removal each:
        queues may hold thousands); whether it had any."""
        kept = [t for t in queue if t[:8] != owner]
        if len(kept) == len(queue):
            return False
        for task_id in queue:
            if task_id[:8] == owner:
                self.tasks.pop(task_id, None)
        queue.clear()
        queue.extend(kept)
        return True

    # -- placement ------------------------------------------------------------------------
    def _soft_affinity(self, spec: TaskSpec) -> TaskSpec:
        """A task pinned to a node with ``soft=True`` runs elsewhere if that node is gone
        or could never run it, as in Ray."""
        pinned = next(name for name, _ in spec.resources if name.startswith(AFFINITY_PREFIX))
        others = tuple(item for item in spec.resources if item[0] != pinned)
        node = next((n for n in self.nodes.values()
                     if not n.leaving and affinity_resource(n.node_id) == pinned), None)
        if node is not None and node.could_ever_fit(others):
            return spec
        return spec._replace(resources=others)

    def dispatch(self) -> list[Instruction]:
        if self.groups_waiting:
            self._place_groups()
        assigned: dict[bytes, list[TaskSpec]] = {}
        out: list[Instruction] = self._place_actors() if self.creating else []
        for request, queue in self.ready.items():
            if not queue:
                continue
            self._place(request, queue, assigned)
            if queue:
                out.extend(self._grow_env(request, queue) if env_of(request) else
                           self._grow_or_steal(request, queue))
                out.extend(self._recall_leases())
        for worker_id, specs in assigned.items():
            out.append(Execute(worker_id, specs, self._new_functions(self.workers[worker_id], specs)))
        return out + self._steal_for_idle()

    def _place(self, request: Request, queue: collections.deque[bytes],
               assigned: dict[bytes, list[TaskSpec]]) -> None:
        """Hand the tasks of ``queue`` (all asking for ``request``) to workers, in order,
        until none has room; each worker's specs go into ``assigned``.

        Each task goes where ``_pick_worker`` would send it. A run of tasks without
        SPREAD asks a ``WorkerPicker``, which scans the workers once for the run; a SPREAD
        task asks ``_pick_worker`` itself, and the run after it gets a fresh picker.
        """
        tasks = self.tasks
        depth = self._depth(queue[0])
        picker: WorkerPicker | None = None
        while queue:
            task_id = queue[0]
            record = tasks[task_id]
            spec = record.spec
            spread = bool(spec.options) and is_spread(spec)
            worker: Worker | None
            if spread:
                worker = self._pick_worker(request, depth, True)
                picker = None   # it may have taken an idle worker: the picker's view is stale
            else:
                if picker is None:
                    picker = self._picker(request, depth)
                worker = picker.pick()
            if worker is None:
                break
            queue.popleft()
            if worker.state is IDLE:
                self._allocate(worker, request, RUNNING)
            if spread:
                self.nodes[worker.node_id].spread_count += 1
            worker.queue.append(task_id)
            if picker is not None and self.blocking and spec.function_id in self.blocking:
                picker.close(worker)
            if spec.options and self._count_call(worker, spec) and picker is not None:
                picker.close(worker)
            record.worker = worker_id = worker.worker_id
            specs = assigned.get(worker_id)
            if specs is None:
                specs = assigned[worker_id] = []
            specs.append(self._spec_for(worker, spec) if worker.gpu_ids else spec)

    @staticmethod
    def _count_call(worker: Worker, spec: TaskSpec) -> bool:
        """Count a task of a function with ``max_calls`` given to ``worker``; True once it
        reaches the limit (the worker then retires: ``Worker.retiring``)."""
        limit = max_calls(spec)
        if not limit:
            return False
        fid = spec.function_id
        calls = worker.calls[fid] = worker.calls.get(fid, 0) + 1
        if calls >= limit:
            worker.retiring = True
        return worker.retiring

    def _steal_for_idle(self) -> list[Instruction]:
        """Idle workers, nothing left to hand out: take back tasks queued behind others.

        Pipelining guesses how long tasks take; when it guessed wrong (a long task with
        short ones queued behind it), the short ones move to a worker that is free.
        """
        idle = [w for w in self.workers.values()
                if w.state is IDLE and not self.nodes[w.node_id].leaving]
        if not idle:
            return []
        victims = sorted((w for w in self.workers.values() if w.state is RUNNING
                          and len(w.queue) >= 2 and not w.steal_pending),
                         key=lambda w: -len(w.queue))
        out: list[Instruction] = []
        for victim in victims:
            allocation = victim.allocation
            assert allocation is not None   # RUNNING holds one
            thief = next((w for w in idle if w.env == victim.env
                          and self.nodes[w.node_id].fits(allocation)), None)
            if thief is None:
                continue
            idle.remove(thief)
            victim.steal_pending = True
            out.append(Steal(victim.worker_id, max(1, (len(victim.queue) - 1 + 1) // 2)))
        return out

    def _depth(self, task_id: bytes) -> int:
        spec = self.tasks[task_id].spec
        duration = self.durations.get(spec.function_id)
        if duration is None:
            return UNKNOWN_DURATION_DEPTH
        limit = DEEP_PIPELINE if args_bytes(spec) <= SMALL_ARGS_BYTES else MAX_PIPELINE
        return max(1, min(limit, int(PIPELINE_SECONDS / max(duration, 1e-6))))

    def _grow_or_steal(self, request: Request, queue: collections.deque[bytes]) -> list[Instruction]:
        """Tasks wait: start workers where resources are free but no worker is idle.

        This is how a node keeps its CPUs busy while some of its workers are blocked in
        ``get`` (they gave their CPU back): as many new workers as free slots, minus the
        workers already idle or starting.
        """
        out: list[Instruction] = []
        cpus = dict(request).get("CPU", 0.0)
        for node in self.nodes.values():
            if not node.fits(request):
                continue
            free_slots = int(node.available.get("CPU", 0.0) / cpus + 1e-9) if cpus else 1
            states = [self.workers[w].state for w in node.workers]
            idle = sum(1 for w in node.workers
                       if self.workers[w].state is IDLE and not self.workers[w].env)
            actors = states.count(ACTOR)
            extra_allowed = int(node.total.get("CPU", 0)) + node.max_extra_workers + actors - (
                len(node.workers) + node.spawning)
            count = min(len(queue), free_slots, extra_allowed) - idle - node.spawning
            if count > 0:
                node.spawning += count
                out.append(Spawn(node.agent, count))
        return out

    def tick(self, now: float) -> list[Instruction]:
        """Called about once a second: retire extra workers idle for a while, take back
        what waits behind a task that runs long, and warn about, then fail, work that no
        live node could ever run."""
        out: list[Instruction] = self._watch_unschedulable(now)
        for node in self.nodes.values():
            pool = [self.workers[w] for w in node.workers if self.workers[w].state is not ACTOR]
            surplus = len(pool) - int(node.total.get("CPU", 0))
            for worker in pool:
                if worker.state is not IDLE:
                    worker.idle_since = None
                    if worker.state is RUNNING:
                        out.extend(self._watch_running(worker, now))
                    continue
                if worker.idle_since is None:
                    worker.idle_since = now
                elif surplus > 0 and now - worker.idle_since > IDLE_RETIRE_SECONDS:
                    surplus -= 1
                    node.workers.discard(worker.worker_id)
                    del self.workers[worker.worker_id]
                    out.append(Retire(node.agent, worker.worker_id))
        return out

    def _watch_unschedulable(self, now: float) -> list[Instruction]:
        """Queued tasks and actor creations whose request no live node could ever fit:
        each owner is warned once per request, then the work fails after the timeout.
        Requests for a placement group's resources are left alone: a pending group
        keeps its work waiting on purpose."""
        waiting = [r for r, q in self.ready.items() if q and not _names_group(r)]
        creating: dict[Request, list[bytes]] = {}
        for actor_id in self.creating:
            actor = self.actors.get(actor_id)
            if actor is not None and not actor.dead and not _names_group(actor.creation.resources):
                creating.setdefault(actor.creation.resources, []).append(actor_id)
        watch = self.unschedulable
        if not waiting and not creating and not watch.since:
            return []
        live = [n for n in self.nodes.values() if not n.leaving]
        verdict = watch.check(now, [*waiting, *creating],
                              lambda r: any(n.could_ever_fit(r) for n in live))
        out: list[Instruction] = []
        for request in verdict.warn:
            out.extend(self._warn_unschedulable(request, creating.get(request, []),
                                                now - verdict.waited[request]))
        for request in verdict.fail:
            out.extend(self._fail_unschedulable(request, creating.get(request, []),
                                                now - verdict.waited[request]))
        return out

    def _unschedulable_work(self, request: Request, actor_ids: list[bytes]) -> list[TaskSpec]:
        """The specs of the queued tasks and actor creations that ask for ``request``."""
        specs = [self.tasks[t].spec for t in self.ready.get(request, ()) if t in self.tasks]
        for actor_id in actor_ids:
            specs.append(self.actors[actor_id].creation)
        return specs

    def _warn_unschedulable(self, request: Request, actor_ids: list[bytes],
                            waited: float) -> list[Instruction]:
        by_owner: dict[bytes, list[TaskSpec]] = {}
        for spec in self._unschedulable_work(request, actor_ids):
            by_owner.setdefault(owner_of(spec.task_id), []).append(spec)
        missing = missing_resources(request, self.nodes)
        timeout = self.unschedulable.timeout
        return [Warn(specs[0], warning_text(_what(specs[0]), request, missing, len(specs) - 1,
                                            waited, timeout))
                for specs in by_owner.values()]

    def _fail_unschedulable(self, request: Request, actor_ids: list[bytes],
                            waited: float) -> list[Instruction]:
        missing = missing_resources(request, self.nodes)
        out: list[Instruction] = []
        queue = self.ready.pop(request, collections.deque())
        for task_id in queue:
            record = self.tasks.get(task_id)
            if record is not None:
                error = TaskUnschedulableError(failure_text(_what(record.spec), request, missing,
                                                            waited))
                out.append(self._fail(task_id, CRASHED, error))
        for actor_id in actor_ids:
            actor = self.actors[actor_id]
            message = failure_text(_what(actor.creation), request, missing, waited)
            actor.dead = f"it cannot be created: {message}"
            self._forget_name(actor)
            self.creating.remove(actor_id)
            if actor.creation.task_id in self.tasks:
                out.append(self._fail(actor.creation.task_id, CRASHED,
                                      ActorUnschedulableError(message)))
            out.append(ActorLocation(actor_id, tuple(actor.subscribers), "", actor.dead))
        return out

    def _watch_running(self, worker: Worker, now: float) -> list[Instruction]:
        """Pipelining guessed the running task short; once it has run ``LONG_TASK_SECONDS``
        the tasks behind it go back (``Steal``) to run elsewhere, and nothing queues
        behind it until it ends (``takes_queue``)."""
        running = worker.queue[0] if worker.queue else None
        if running != worker.seen_task:
            worker.seen_task, worker.seen_since = running, now
            return []
        if (running is None or now - worker.seen_since < LONG_TASK_SECONDS
                or worker.long_task == running):
            return []
        worker.long_task = running
        if len(worker.queue) < 2 or worker.steal_pending:
            return []
        worker.steal_pending = True
        return [Steal(worker.worker_id, len(worker.queue) - 1)]

    def direct_reported(self, worker_id: bytes,
                        counts: dict[str, tuple[int, int, int, float]]) -> None:
        """A worker's heartbeat: its cumulative counts of direct work (actor calls, leased
        tasks), which never pass through here one by one; what is new joins the counts."""
        done, failed, cancelled = self.direct.new(worker_id, counts)
        self.counts[FINISHED] += done
        self.counts[FAILED] += failed
        self.counts[CANCELLED_COUNT] += cancelled
        self.direct.prune(self.workers)

    # -- reporting --------------------------------------------------------------------------
    def summary(self) -> dict[str, int]:
        """The head's task figures: queued, running... and the counts of tasks that ended,
        defined once in ``rayipy.core.task_counts`` (finished, failed, cancelled, with
        actor calls and leased tasks), plus submitted and retried."""
        running = sum(1 for w in self.workers.values() if w.queue)
        return {
            "queued": sum(len(q) for q in self.ready.values()),
            "running": running,
            "assigned": sum(len(w.queue) for w in self.workers.values()),
            "workers": len(self.workers),
            "blocked_workers": sum(1 for w in self.workers.values() if w.state is BLOCKED),
            "leased_workers": sum(1 for w in self.workers.values() if w.leased_to),
            **{name: 0 for name in OUTCOMES},
            **self.counts,
        }

    def describe_workers(self) -> list[dict[str, Any]]:
        """Every worker: id, node, pid, direct address, and what it is doing."""
        return [{"worker_id": w.worker_id, "node_id": w.node_id.hex(), "pid": w.pid,
                 "address": w.address, "actor": w.state is ACTOR, "blocked": w.state is BLOCKED,
                 "tasks": len(w.queue), "leased": bool(w.leased_to)}
                for w in self.workers.values()]

    def running_tasks(self, owner: bytes) -> list[bytes]:
        """The ids of ``owner``'s tasks running now (first in some worker's queue)."""
        return [w.queue[0] for w in self.workers.values()
                if w.queue and owner_of(w.queue[0]) == owner]

    def total_resources(self) -> dict[str, float]:
        """The cluster's resources: every node's totals, summed."""
        total: dict[str, float] = {}
        for node in self.nodes.values():
            for name, amount in node.total.items():
                total[name] = total.get(name, 0.0) + amount
        return shown_resources(total)

    def available_resources(self) -> dict[str, float]:
        """What is free now, summed over nodes (only names with something free)."""
        total: dict[str, float] = {}
        for node in self.nodes.values():
            for name, amount in node.available.items():
                total[name] = total.get(name, 0.0) + max(0.0, amount)
        return {k: v for k, v in shown_resources(total).items() if v > 0}
