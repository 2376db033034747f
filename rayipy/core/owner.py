"""The owner's side of tasks: what this process submitted and has not heard the end of.

Every driver and worker owns the tasks it submits (a task's id starts with its owner's
process id). ``OwnerState`` decides where each task goes, keeps what it needs until it
ends (its spec for a retry, the objects its arguments pin), and decides what a cancel, a
lease's end or an actor's death means for it:

- a plain task goes through the head, or straight to a worker lent to us while we run
  tasks one at a time (``rayipy.core.leases``); tasks whose placement the head must
  decide (SPREAD, GPUs) always go through the head;
- an actor call goes straight to its actor's worker, after this caller's earlier calls
  to it (``rayipy.core.actor_routes``); creating an actor goes through the head;
- a task sent to one worker by name (``%%remote --all``) goes there and stays (``PINNED``).

A task whose ref arguments are not ready yet is known here (it counts as pending, it can
be cancelled) but has not left: ``arguments_ready`` sends it.

When the head restarts (``head_restarted``), the tasks it held are sent to the new one
again within their retries, and the leases held are declared to it (``leases_held``) in
this process's registration; its first result of a task is taken, a second dropped.

Pure: each method is an event and returns the commands to carry out, in order (the
NamedTuples below, a closed set). No sockets, no threads, no clock but the ``now``
passed in. The runtime (``rayipy.node.client``) holds one lock around a call and the
carrying out of its commands, so sends leave in the order decided here.
"""

from __future__ import annotations

import collections
import enum
from typing import Any, NamedTuple, Union

from rayipy import exceptions
from rayipy.core.actor_routes import ActorRoutes, Failed, Locate, Requeued, RouteStep, Send
from rayipy.core.leases import LeaseBook
from rayipy.protocol import errors
from rayipy.protocol.messages import (CANCELLED, CRASHED, ERROR, OK, RETURNED, FetchDep, Payload,
                                      ResourceRequest, TaskResult, TaskSpec)

PINNED = ("pinned", True)       # in TaskSpec.options: sent to one named worker, stays there


# -- commands ------------------------------------------------------------------------------
class SendToHead(NamedTuple):
    """Queue the spec for the head (``SUBMIT``)."""
    spec: TaskSpec


class SendToWorker(NamedTuple):
    """Write the spec on our connection to a worker's direct inbox (``CALL``)."""
    address: str
    spec: TaskSpec


class AskLease(NamedTuple):
    """Ask the head to lend us a worker for this resource request (``LEASE_REQUEST``)."""
    request: ResourceRequest


class ReturnLease(NamedTuple):
    """Give a lent worker back to the head (``LEASE_RETURN``)."""
    worker: bytes


class LocateActor(NamedTuple):
    """Ask the head where an actor is (``LOCATE_ACTOR``)."""
    actor_id: bytes


class CancelRemote(NamedTuple):
    """Tell the head (and through it the worker) to cancel a task that has left
    (``CANCEL``): ``actor_id`` for an actor call, ``worker`` for a task sent straight
    to a worker, else both empty."""
    task_id: bytes
    force: bool
    actor_id: bytes
    worker: bytes
    recursive: bool = True   # its worker cancels the tasks it submitted too (as Ray)


class Complete(NamedTuple):
    """The task has ended: store its result in its return objects and unpin what its
    arguments held (or keep it as lineage, ``core/lineage.py``)."""
    result: TaskResult
    return_ids: tuple[bytes, ...]
    pinned: tuple[bytes, ...]
    spec: TaskSpec | None = None       # for lineage: how to run it again
    named_worker: bool = False         # it was sent to one named worker (never rerun)


OwnerCommand = Union[SendToHead, SendToWorker, AskLease, ReturnLease, LocateActor,
                     CancelRemote, Complete]


class Route(enum.Enum):
    """Which way a task went (or will go, while its arguments are not ready)."""
    HEAD = "head"          # SUBMIT to the head, which places it
    LEASE = "lease"        # CALL to a worker lent to us
    ACTOR = "actor"        # CALL to its actor's worker, in this caller's order
    WORKER = "worker"      # CALL to one worker named by the caller (PINNED)


class Task:
    """One task in flight: everything needed until it ends, and again for a retry."""

    __slots__ = ("spec", "return_ids", "pinned", "route", "worker", "address", "sent",
                 "cancelled", "parent")

    def __init__(self, spec: TaskSpec, return_ids: tuple[bytes, ...], pinned: tuple[bytes, ...], route: Route,
                 worker: bytes, address: str, parent: bytes = b"") -> None:
        self.spec = spec
        self.return_ids = return_ids
        self.pinned = pinned              # object ids held until the task ends
        self.route = route
        self.worker = worker              # Route.WORKER: the named worker's id...
        self.address = address            # ... and its direct inbox
        self.sent = False                 # it has left this process
        self.cancelled = False            # a cancel went out after it
        self.parent = parent              # in a worker: the task that submitted it


def needs_head_placement(spec: TaskSpec) -> bool:
    """Nodes to spread over, GPU devices to assign, a placement group bundle or a node to
    pin to, or calls to count for ``max_calls`` (the head retires the worker after them):
    only the head can decide."""
    options = spec.options
    if options:   # every task has some (its namespace): answered once per set of options
        try:
            by_options = _HEAD_OPTIONS.get(options)
        except TypeError:   # a value that is not hashable (a runtime_env's dict)
            by_options = _head_options(options)
        if by_options is None:
            if len(_HEAD_OPTIONS) > 1024:
                _HEAD_OPTIONS.clear()
            by_options = _HEAD_OPTIONS[options] = _head_options(options)
        if by_options:
            return True
    head_only = _HEAD_PLACED.get(spec.resources)
    if head_only is None:   # a request seen for the first time (a program has a handful)
        if len(_HEAD_PLACED) > 1024:
            _HEAD_PLACED.clear()
        # GPUs, a placement group's bundle or a node: resources only the head can place.
        head_only = _HEAD_PLACED[spec.resources] = any(
            name == "GPU" or "_group_" in name or name.startswith("node:")
            for name, _ in spec.resources)
    return head_only


def _head_options(options: tuple[Any, ...]) -> bool:
    """Options only the head can act on: SPREAD, and ``max_calls`` (it counts them)."""
    return (("scheduling_strategy", "SPREAD") in options
            or any(name == "max_calls" for name, _ in options))


_HEAD_PLACED: dict[ResourceRequest, bool] = {}
_HEAD_OPTIONS: dict[tuple[Any, ...], bool] = {}


class OwnerState:
    """The tasks one process owns and has not seen end; see the module docstring."""

    def __init__(self) -> None:
        self._tasks: dict[bytes, Task] = {}
        self._via_head = 0                # tasks of ours the head has now
        self.leases = LeaseBook()
        self.actors = ActorRoutes()
        self.outcomes: collections.Counter[int] = collections.Counter()   # ended, by status

    # -- events ------------------------------------------------------------------------
    def submit(self, spec: TaskSpec, return_ids: tuple[bytes, ...], pinned: tuple[bytes, ...], ready: bool,
               worker: tuple[bytes, str] | None = None, parent: bytes = b"") -> list[OwnerCommand]:
        """A new task. ``ready``: its ref arguments have their values (else wait for
        ``arguments_ready``). ``worker`` (id, direct address): send it to that worker and
        no other. ``parent``: the task of this worker that submits it (for a recursive
        cancel of that task, ``cancel_children``)."""
        worker_id, address = worker or (b"", "")
        if worker_id:
            route = Route.WORKER
            spec = spec._replace(options=spec.options + (PINNED,))
        elif spec.actor_id and spec.method != "__init__":
            route = Route.ACTOR
        else:
            route = Route.HEAD   # or a lease: decided when it leaves
        task = self._tasks[spec.task_id] = Task(spec, return_ids, pinned, route, worker_id,
                                                   address, parent)
        out: list[OwnerCommand] = []
        if route is Route.ACTOR:
            out = self._steps(self.actors.reserve(spec.actor_id, spec.task_id))
        elif spec.actor_id:
            self.actors.created(spec.actor_id)   # the head tells its creator where it lands
        if ready:
            out.extend(self._send(task))
        return out

    def arguments_ready(self, task_id: bytes, dep_values: tuple[Payload | FetchDep, ...]) -> list[OwnerCommand]:
        """Every ref argument of a waiting task has its value (or the name to fetch it by)."""
        task = self._tasks.get(task_id)
        if task is None or task.sent:   # cancelled meanwhile
            return []
        task.spec = task.spec._replace(dep_values=dep_values)
        return self._send(task)

    def arguments_failed(self, task_id: bytes, error: Payload) -> list[OwnerCommand]:
        """A ref argument of a waiting task failed or was lost: so does the task."""
        task = self._tasks.get(task_id)
        if task is None or task.sent:
            return []
        out = self._give_up_place(task)
        return out + self._end(task, TaskResult(task_id, ERROR, (error,), 0.0, "", ()))

    def finished(self, result: TaskResult, now: float) -> list[OwnerCommand]:
        """A result came (through the head, on a direct connection, or to our data port)."""
        task_id = result.task_id
        if result.status == RETURNED:
            # A blocked leased worker handed it back unrun: through the head this time.
            worker = self.leases.worker_of(task_id)
            task = self._tasks.get(task_id)
            if self.leases.handed_back(task_id) is None or task is None or worker is None:
                return []
            self.leases.revoke(worker)   # it is blocked: no more tasks for it for now
            return self._to_head(task)
        task = self._tasks.get(task_id)
        if task is None:
            return []   # ended already (cancelled here, or a duplicate)
        self.leases.finished(task_id, now)
        if result.status == CANCELLED and not result.values:
            # Answered by its worker at the cancel, before the call came (which it drops):
            # the worker had not seen its name.
            error = exceptions.TaskCancelledError(task.spec.name, "cancelled before it started")
            result = result._replace(values=(errors.capture_system_error(error, task.spec.name),))
        return self._end(task, result)

    def cancel(self, task_id: bytes, force: bool, recursive: bool = True) -> list[OwnerCommand]:
        """Cancel one of our tasks: at once if it has not left, else where it went
        (``recursive``: its worker cancels the tasks it submitted too)."""
        task = self._tasks.get(task_id)
        if task is None:
            return []
        spec = task.spec
        if not task.sent:
            error = exceptions.TaskCancelledError(spec.name, "cancelled before it was sent")
            return self._give_up_place(task) + self._fail(task, CANCELLED, error)
        task.cancelled = True
        worker = b""
        if task.route is Route.LEASE:
            worker = self.leases.worker_of(task_id) or b""
        elif task.route is Route.WORKER:
            worker = task.worker
        actor_id = spec.actor_id if task.route is Route.ACTOR else b""
        return [CancelRemote(task_id, force, actor_id, worker, recursive)]

    def cancel_children(self, parent: bytes, force: bool) -> list[OwnerCommand]:
        """Our task ``parent`` is cancelled with ``recursive``: cancel the tasks it
        submitted that have not ended, and, through their workers, theirs."""
        out: list[OwnerCommand] = []
        for task_id in [t for t, task in self._tasks.items() if task.parent == parent]:
            out.extend(self.cancel(task_id, force, True))
        return out

    def lease_granted(self, request: ResourceRequest, worker: bytes, address: str,
                      now: float) -> list[OwnerCommand]:
        if not worker:
            self.leases.denied(request)
            return []
        if self.leases.granted(request, worker, address, now):
            return []
        return [ReturnLease(worker)]   # one came meanwhile: we want no second

    def lease_revoked(self, worker: bytes) -> list[OwnerCommand]:
        """The head wants the worker back: it goes once nothing of ours runs there."""
        self.leases.revoke(worker)
        return []

    def lease_lost(self, worker: bytes, why: str) -> list[OwnerCommand]:
        """The leased worker died: retry what ran there, as the head would have."""
        out: list[OwnerCommand] = []
        for spec in self.leases.lost(worker):
            task = self._tasks.get(spec.task_id)
            if task is None:
                continue
            if task.cancelled:
                out.extend(self._fail(task, CANCELLED, exceptions.TaskCancelledError(
                    spec.name, "its worker was killed (force=True)")))
            elif spec.attempt < spec.max_retries:
                task.spec = spec._replace(attempt=spec.attempt + 1)
                out.extend(self._to_head(task))
            else:
                out.extend(self._fail(task, CRASHED, exceptions.WorkerCrashedError(why)))
        return out

    def actor_located(self, actor_id: bytes, address: str) -> list[OwnerCommand]:
        return self._steps(self.actors.located(actor_id, address))

    def actor_gone(self, actor_id: bytes, why: str, restarting: bool) -> list[OwnerCommand]:
        """The actor's worker died (``restarting``: a new one is coming, and calls in
        flight with ``max_task_retries`` left go to it)."""
        return self._steps(self.actors.lost(actor_id, why, restarting))

    def tick(self, now: float) -> list[OwnerCommand]:
        """Often (each turn of the I/O loop): leases to give back."""
        return [ReturnLease(worker) for worker in self.leases.to_return(now)]

    # -- questions -----------------------------------------------------------------------
    def head_restarted(self, no_retries_left: BaseException) -> list[OwnerCommand]:
        """The head restarted: the tasks it was given are lost with it (queued there, or
        running on a worker whose result may or may not come). As Ray's owners do with
        lost tasks, each with retries left goes to the new head again, counted as a
        retry (as a worker's crash counts); its first result is taken, a later one (its
        worker lived on and finished it too) is dropped as a duplicate (``finished``).
        A task with no retries left fails with ``no_retries_left``; a cancelled one as
        cancelled; an actor's creation fails too (the journal brings the actor itself
        back, and running its constructor again would make a second one).
        Tasks on a lease, actor calls and tasks not sent yet go on. Requests for leases
        the old head never answered are forgotten (``LeaseBook.head_restarted``)."""
        self.leases.head_restarted()
        out: list[OwnerCommand] = []
        for task in list(self._tasks.values()):
            if task.route is not Route.HEAD or not task.sent:
                continue
            spec = task.spec
            if task.cancelled:
                out.extend(self._fail(task, CANCELLED, exceptions.TaskCancelledError(
                    spec.name, "the head restarted after the cancel")))
            elif spec.actor_id or spec.attempt >= spec.max_retries:
                out.extend(self._fail(task, CRASHED, no_retries_left))
            else:
                # Still counted in _via_head: it goes to the head again.
                task.spec = spec._replace(attempt=spec.attempt + 1)
                out.append(SendToHead(task.spec))
        return out

    def leases_held(self) -> list[tuple[bytes, ResourceRequest]]:
        """(worker, resource request) of each lease we hold: declared to a restarted head
        when we register again, so it does not give those workers to anyone else."""
        return self.leases.held()

    def route_of(self, task_id: bytes) -> Route | None:
        task = self._tasks.get(task_id)
        return None if task is None else task.route

    def pending(self, task_id: bytes) -> bool:
        return task_id in self._tasks

    def on_lease(self, task_id: bytes) -> bool:
        """The task runs on a worker lent to us (the head does not see it)."""
        return self.leases.worker_of(task_id) is not None

    def waiting_for_arguments(self) -> list[TaskSpec]:
        """Our tasks that have not left, their ref arguments not ready (the state API's
        ``PENDING_ARGS_AVAIL``)."""
        return [task.spec for task in self._tasks.values() if not task.sent]

    def counts(self) -> dict[str, int]:
        """Our tasks: in flight, of those on leased workers, then by outcome as
        ``rayipy.core.task_counts`` defines them: done (returned), failed (raised or
        lost), cancelled."""
        failed = sum(n for status, n in self.outcomes.items() if status not in (OK, CANCELLED))
        return {"pending": len(self._tasks), "on_lease": self.leases.inflight_count(),
                "done": self.outcomes[OK], "failed": failed,
                "cancelled": self.outcomes[CANCELLED]}

    # -- inside ----------------------------------------------------------------------------
    def _send(self, task: Task) -> list[OwnerCommand]:
        spec = task.spec
        if task.route is Route.WORKER:
            task.sent = True
            return [SendToWorker(task.address, spec)]
        if task.route is Route.ACTOR:
            return self._steps(self.actors.fill(spec.actor_id, spec))
        if spec.actor_id or needs_head_placement(spec):
            return self._to_head(task)
        lease = self.leases.route(spec, head_busy=self._via_head > 0)
        if lease.direct:
            task.route = Route.LEASE
            task.sent = True
            return [SendToWorker(lease.direct, spec)]
        out: list[OwnerCommand] = [AskLease(spec.resources)] if lease.ask else []
        return out + self._to_head(task)

    def _to_head(self, task: Task) -> list[OwnerCommand]:
        task.route = Route.HEAD
        task.sent = True
        self._via_head += 1
        return [SendToHead(task.spec)]

    def _steps(self, steps: list[RouteStep]) -> list[OwnerCommand]:
        """What the actor routes decided, as commands."""
        out: list[OwnerCommand] = []
        for step in steps:
            if type(step) is Send:
                task = self._tasks.get(step.spec.task_id)
                if task is not None:
                    task.sent = True
                out.append(SendToWorker(step.address, step.spec))
            elif type(step) is Failed:
                task = self._tasks.get(step.task_id)
                if task is not None:
                    out.extend(self._fail(task, CRASHED, exceptions.ActorDiedError(
                        f"the actor is dead: {step.why}")))
            elif type(step) is Locate:
                out.append(LocateActor(step.actor_id))
            elif type(step) is Requeued:
                task = self._tasks.get(step.spec.task_id)
                if task is not None:   # waits for the restarted actor; cancelled here till then
                    task.spec = step.spec
                    task.sent = False
        return out

    def _give_up_place(self, task: Task) -> list[OwnerCommand]:
        if task.route is not Route.ACTOR:
            return []
        return self._steps(self.actors.drop(task.spec.actor_id, task.spec.task_id))

    def _fail(self, task: Task, status: int, error: BaseException) -> list[OwnerCommand]:
        payload = errors.capture_system_error(error)
        return self._end(task, TaskResult(task.spec.task_id, status, (payload,), 0.0, "", ()))

    def _end(self, task: Task, result: TaskResult) -> list[OwnerCommand]:
        del self._tasks[task.spec.task_id]
        if task.route is Route.HEAD and task.sent:
            self._via_head -= 1
        out: list[OwnerCommand] = []
        if task.route is Route.ACTOR:
            self.actors.finished(task.spec.task_id)
            if not task.sent:
                # It had not left (say its first attempt answered while it waited to go
                # again to a restarted actor): its place in the FIFO goes too.
                out = self._steps(self.actors.drop(task.spec.actor_id, task.spec.task_id))
        self.outcomes[result.status] += 1
        return [Complete(result, task.return_ids, task.pinned, task.spec,
                         task.route is Route.WORKER)] + out

