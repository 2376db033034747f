"""The runtime of a process that submits tasks: the driver, and every worker.

One background I/O thread owns the process's socket to the head. User threads never
touch it: they append to ``outbox`` (a deque) and wake the I/O thread through a pipe.
The I/O thread sends what is queued in batches, receives results, output and requests,
and fills the ObjectTable, so values arrive while the user's thread (a notebook kernel)
is idle.

A worker adds its task queue on top (see ``rayipy.node.worker``): its main thread runs
tasks, and tasks may submit tasks and ``get`` them through this same runtime.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import sys
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Protocol

import zmq

from rayipy import exceptions
from rayipy.core.actor_routes import ActorRoutes
from rayipy.core.leases import LeaseBook
from rayipy.node.data_port import DIRECT_RESULT_BYTES, DataPort, _run_callback
from rayipy.node import interrupts
from rayipy.node.direct_calls import DirectCalls
from rayipy.core.object_ref import ObjectRef, current_runtime, set_runtime
from rayipy.core.objects import PENDING, READY, Effect, ObjectTable
from rayipy.protocol import errors, serialization
from rayipy.protocol.kinds import Kind
from rayipy.protocol.messages import (ERROR, OK, RETURNED, DepSlot, FetchDep, ObjectValue, Payload,
                                      Registration, TaskResult, TaskSpec, Welcome)
from rayipy.protocol.wire import PROTOCOL_VERSION, Signer
from rayipy.transport.endpoint import Endpoint, Waker
from rayipy.transport.stream import StreamConnection, StreamListener

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 1.0
HEAD_SILENCE_LIMIT = 10.0       # no word from the head this long: the cluster is gone
BLOCKED_SLICE_SECONDS = 0.05    # a blocked worker looks for tasks to hand back this often
INTERRUPT_GRACE_SECONDS = 3.0   # Ctrl-C in get/wait: tasks still running then are killed
PINNED = ("pinned", True)       # in TaskSpec.options: sent to one named worker, stays there


def new_process_id(prefix: bytes) -> bytes:
    # 8 bytes; a ZeroMQ identity must not start with a zero byte.
    return prefix[:1] + os.urandom(7)


class TaskLogPrinter:
    """Prints output streamed from tasks on this process's own stdout/stderr, labelled."""

    def __call__(self, lines: list, label: str) -> None:
        for stream, text, task, *_ in lines:
            out = sys.stderr if stream == "stderr" else sys.stdout
            prefix = f"({task} {label}) "
            body = "".join(prefix + line for line in text.splitlines(keepends=True))
            if not body.endswith("\n"):
                body += "\n"
            try:
                out.write(body)
                out.flush()
            except Exception:
                pass


class WorkerHooks(Protocol):
    """What a worker process adds to its runtime (``rayipy.node.worker.Worker``)."""

    def handlers(self) -> dict[Kind, Callable[[Any], None]]:
        """The message kinds only a worker handles (run on the I/O thread)."""

    def hand_back_queued(self) -> list[bytes]:
        """Its task blocks in ``get``: the ids of queued tasks it gives back to the head."""

    def while_blocked(self) -> None:
        """Main thread, every ``BLOCKED_SLICE_SECONDS`` while its task is blocked."""

    def flush_output(self) -> None:
        """I/O thread, at each turn of its loop: send the task output gathered so far."""

    def borrow_in_reply(self, object_id: bytes, delta: int, borrower: bytes) -> bool:
        """True if the registration rides with the reply of the direct call running now."""

    def heartbeat_body(self) -> tuple:
        """I/O thread, once a second: what ran without the head (for the dashboard)."""


class Runtime(DirectCalls, DataPort):
    """Sockets-owning I/O thread plus the synchronous API the user's threads call."""

    def __init__(self, role: str, head_address: str, key: bytes, node_id: bytes = b"",
                 process_id: bytes | None = None, info: dict | None = None) -> None:
        self.role = role
        self.head_address = head_address
        self.process_id = process_id or new_process_id(b"D" if role == "driver" else b"W")
        self.node_id = node_id
        self.info = info or {}
        self.signer = Signer(key)
        self.objects = ObjectTable(self.process_id)
        self.outbox: collections.deque = collections.deque()
        self.waker = Waker()
        self.context = zmq.Context()
        self._seq = itertools.count(1)
        self._requests: dict[int, Future] = {}
        self._request_ids = itertools.count(1)
        self._inflight: dict[bytes, tuple] = {}   # task id -> (pinned ids, return ids)
        self._outcomes: collections.Counter = collections.Counter()   # our finished tasks by status
        self._sent_functions: set[bytes] = set()
        self._handlers: dict[Kind, Callable] = {
            Kind.WELCOME: self._on_welcome,
            Kind.REFUSED: self._on_refused,
            Kind.AUTH_FAILED: self._on_auth_failed,
            Kind.HEARTBEAT: lambda body: None,
            Kind.TASK_DONE: self._on_task_done,
            Kind.GET_OBJECT: self._on_get_object,
            Kind.OBJECT_VALUE: self._on_object_value,
            Kind.BORROW: self._on_borrow,
            Kind.REPLY: self._on_reply,
            Kind.LOG: self._on_log,
            Kind.SHUTDOWN: self._on_shutdown,
            Kind.ACTOR_LOCATION: self._on_actor_location,
            Kind.CALL_DONE: self._on_call_done,
            Kind.LEASE: self._on_lease,
            Kind.LEASE_ENDED: self._on_lease_ended,
            Kind.RESULTS: self._on_results,
        }
        self._data_addresses: dict[bytes, str] = {}        # requester -> its data port
        # The data port (data_port.py): bound in start(), then the I/O thread's
        self.data_port: StreamListener | None = None
        self._data_in: dict[int, StreamConnection] = {}             # fd -> from another process
        self._data_out: dict[str, tuple[StreamConnection, float]] = {}   # address -> ours, last use
        self._unwritten: dict[StreamConnection, list[tuple]] = {}   # (kind, body) sent on it
        self.on_log: Callable[[list, str], None] = TaskLogPrinter()
        # Hooks for a front end (the Jupyter layer sets them; None in scripts):
        # on_submit(task_id, refs) runs on the submitting thread before the task leaves;
        # on_slow_wait(refs) runs when a get has blocked slow_wait_seconds, and may return
        # a function to call when the get ends (a progress display).
        self.on_submit: Callable[[bytes, list[ObjectRef]], None] | None = None
        self.on_slow_wait: Callable[[list[ObjectRef]], Callable[[], None] | None] | None = None
        self.slow_wait_seconds = 1.0
        self.interrupt_grace: float | None = INTERRUPT_GRACE_SECONDS
        self._pinned: dict[bytes, bytes] = {}               # task id -> worker sent to by name
        self.welcome: Welcome | None = None
        self._connected = threading.Event()
        self._connect_error: BaseException | None = None
        self._stopping = False
        self._closed = threading.Event()
        self._last_heard = time.monotonic()
        self.lost: BaseException | None = None
        self.blocked_depth = 0
        self.on_block: Callable[[], list] | None = None     # worker: tasks to hand back
        # worker: borrow registrations made during a direct call go with its reply
        self.borrow_hook: Callable[[bytes, int, bytes], bool] | None = None
        self.while_blocked: Callable[[], None] | None = None   # worker: hand back lease tasks
        self.heartbeat_body: Callable[[], tuple] | None = None  # worker: its direct work
        self.leases = LeaseBook()
        self._via_head: set[bytes] = set()                  # our tasks in flight via the head
        self._function_bytes: dict[bytes, bytes] = {}       # for leased workers
        self._functions_at: dict[str, set[bytes]] = {}      # address -> function ids sent
        self._cancelled: set[bytes] = set()
        self.actor_routes = ActorRoutes(self._queue_call, self._fail_call,
                                        lambda actor_id: self.send(Kind.LOCATE_ACTOR, (actor_id,)))
        # Connections to workers' direct inboxes, by address (direct_calls.py)
        self._direct: dict[str, StreamConnection] = {}
        self._direct_lock = threading.Lock()
        self._watched: dict[int, int] = {}                  # I/O thread: plain fd -> poll flags
        self._sent_on: dict[bytes, StreamConnection] = {}   # direct call in flight -> its connection
        self._poll_ms = 100                                 # the I/O thread's poll timeout
        self._thread = threading.Thread(target=self._io_loop, name=f"rayipy-io-{role}", daemon=True)

    def attach_worker(self, worker: WorkerHooks) -> None:
        """Make this the runtime of a worker process (before ``start``)."""
        self._handlers.update(worker.handlers())
        self.on_block = worker.hand_back_queued
        self.while_blocked = worker.while_blocked
        self.idle_work = worker.flush_output
        self.borrow_hook = worker.borrow_in_reply
        self.heartbeat_body = worker.heartbeat_body

    @property
    def blocked(self) -> bool:
        """A thread of this process waits in ``get``/``wait`` (a worker's task blocks)."""
        return self.blocked_depth > 0

    @property
    def stopped(self) -> bool:
        """The cluster is gone or this runtime was closed."""
        return self.lost is not None or self._stopping

    # -- lifecycle ----------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> Welcome:
        # Bound here, then owned by the I/O thread (starting it is the hand-over).
        ip = self.info.get("ip") or _ip_toward(self.head_address)
        self.data_port = StreamListener(ip, self.signer)
        self.info["data"] = self.data_port.address
        self._thread.start()
        registration = Registration(self.role, self.process_id, self.node_id, os.getpid(),
                                    PROTOCOL_VERSION, self.info)
        self.send(Kind.REGISTER, registration)
        if not self._connected.wait(timeout):
            self.close()
            raise exceptions.RayipySystemError(
                f"no answer from the rayipy head at {self.head_address} within {timeout:g} s: "
                f"is the cluster running there, and is the address right?")
        if self._connect_error is not None:
            self.close()
            raise self._connect_error
        set_runtime(self)
        return self.welcome

    def close(self) -> None:
        if current_runtime() is self:
            set_runtime(None)
            if self.role == "driver":
                interrupts.uninstall()
        if not self._stopping:
            self._stopping = True
            self.waker.wake()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(5)

    # -- sending (any thread) -------------------------------------------------------------
    def send(self, kind: Kind, body: Any) -> None:
        self.outbox.append((kind, body))
        self.waker.wake()

    def _carry_out(self, effects: list[Effect]) -> None:
        for effect in effects:
            if effect.what == "borrow":
                oid, delta = effect.arg
                self.route_borrow(oid, delta, self.process_id)
            elif effect.what == "fetch":
                self.send(Kind.GET_OBJECT, (effect.arg, self.process_id))
            elif effect.what == "actor_gone":
                # The last handle to an actor we created is gone, everywhere.
                self.send(Kind.KILL_ACTOR, (effect.arg, "no handle to it is left"))

    def route_borrow(self, object_id: bytes, delta: int, borrower: bytes) -> None:
        if self.objects.owns(object_id):
            self._carry_out(self.objects.add_borrower(object_id, borrower, delta))
        elif self.borrow_hook is None or not self.borrow_hook(object_id, delta, borrower):
            self.send(Kind.BORROW, ([(object_id, delta)], borrower))

    # -- ids --------------------------------------------------------------------------------
    def next_task_id(self) -> bytes:
        return self.process_id + next(self._seq).to_bytes(8, "big")

    # -- functions and tasks ------------------------------------------------------------------
    def ensure_function(self, function_id: bytes, pickled: bytes) -> None:
        if function_id not in self._sent_functions:
            self._sent_functions.add(function_id)
            self._function_bytes[function_id] = pickled
            self.send(Kind.FUNCTION, (function_id, pickled))

    def submit(self, function_id: bytes, name: str, args: tuple, kwargs: dict, num_returns: int,
               resources: tuple, max_retries: int, actor_id: bytes = b"",
               method: str = "", options: tuple = (), keep_alive: tuple = (),
               worker: tuple[bytes, str] | None = None) -> list[ObjectRef]:
        """Queue one task; returns its ObjectRefs at once.

        ``worker`` (worker id, direct address) sends the task straight to that worker,
        which runs it there whatever else it does (used to run a cell on every worker).
        """
        self._check_alive()
        task_id = self.next_task_id()
        deps: list[ObjectRef] = []
        if any(isinstance(a, ObjectRef) for a in args):
            args = tuple(_slot(a, deps) for a in args)
        if kwargs and any(isinstance(v, ObjectRef) for v in kwargs.values()):
            kwargs = {k: _slot(v, deps) for k, v in kwargs.items()}
        payload, contained = serialization.dumps_arguments(args, kwargs, name)
        if payload.nbytes > DIRECT_RESULT_BYTES and not actor_id and worker is None:
            # Large arguments stay here, and the worker fetches them from our data port
            # (``FetchDep``), as Ray puts them in its object store: in the spec they would
            # cross the head, two hops instead of one. Actor calls go straight to their
            # worker anyway, and a restarted actor's constructor needs its arguments again.
            deps.append(self._put_payload(payload, contained))
            payload = Payload(serialization.dumps_inband((DepSlot(len(deps) - 1), None)))
        return_ids = [task_id + i.to_bytes(2, "big") for i in range(max(num_returns, 1))]
        info = {"task": name}
        refs = []
        for oid in return_ids:
            self.objects.add_pending(oid, info)
            refs.append(ObjectRef(oid, self))
        dep_ids = [r.id for r in deps]
        pinned = dep_ids + [r.id for r in contained] + list(keep_alive)
        self.objects.pin(pinned)
        self._inflight[task_id] = (pinned, return_ids)
        if worker is not None:
            options = options + (PINNED,)
        spec = TaskSpec(task_id, function_id, name, payload, (), num_returns, resources, max_retries,
                        0, actor_id, method, options)
        if worker is not None:
            self._pinned[task_id] = worker[0]
            send = lambda ready: self._queue_call(worker[1], ready)  # noqa: E731
        elif actor_id and method != "__init__":
            # An actor call: straight to the actor's worker, after this caller's earlier calls.
            slot = self.actor_routes.reserve(actor_id)
            send = lambda ready: self.actor_routes.fill(actor_id, slot, ready)  # noqa: E731
        elif actor_id:  # creating an actor: only the head places actors
            send = self._queue_to_head
        else:
            send = self._queue_spec
        if self.on_submit is not None:
            try:
                self.on_submit(task_id, refs)
            except Exception:
                log.exception("the on_submit hook raised")
        if deps:
            self._when_ready(deps, spec, send)
        else:
            send(spec)
        return refs

    def _queue_spec(self, spec: TaskSpec) -> None:
        """A task: to our leased worker when we run tasks one at a time, else to the head."""
        if spec.options and ("scheduling_strategy", "SPREAD") in spec.options or any(
                name == "GPU" for name, _ in spec.resources):
            # Placement matters (nodes to spread over, GPU devices to assign): the head decides.
            self._queue_to_head(spec)
            return
        route = self.leases.route(spec, head_busy=bool(self._via_head))
        if route.direct:
            self._queue_call(route.direct, spec)
            return
        if route.ask:
            self.outbox.append((Kind.LEASE_REQUEST, (spec.resources,)))
        self._queue_to_head(spec)

    def _queue_to_head(self, spec: TaskSpec) -> None:
        self._via_head.add(spec.task_id)
        self.outbox.append(("spec", spec))
        self.waker.wake()

    def _when_ready(self, deps: list[ObjectRef], spec: TaskSpec, send: Callable) -> None:
        """Send ``spec`` once every direct ref argument has its value: inlined if small,
        else named for the worker to fetch from its holder (``FetchDep``)."""
        remaining = [len(deps)]
        lock = threading.Lock()

        def one_ready(_ref: ObjectRef) -> None:
            with lock:
                remaining[0] -= 1
                if remaining[0]:
                    return
            values = []
            for dep in deps:
                state, payload = self.objects.value(dep.id)
                if state != READY:
                    self._fail_task_locally(spec, payload, dep)
                    return
                values.append(payload if payload.nbytes <= DIRECT_RESULT_BYTES else FetchDep(dep.id))
            send(spec._replace(dep_values=tuple(values)))

        for dep in deps:
            dep.add_done_callback(one_ready)

    def _fail_task_locally(self, spec: TaskSpec, payload: Payload | None, dep: ObjectRef) -> None:
        if payload is None:
            payload = errors.capture_system_error(exceptions.ObjectLostError(
                f"{dep!r}, an argument of {spec.name!r}, was freed or lost"))
        self._finish(TaskResult(spec.task_id, ERROR, (payload,), 0.0, "", ()))

    def put(self, value: Any) -> ObjectRef:
        self._check_alive()
        if isinstance(value, ObjectRef):
            raise TypeError("put() of an ObjectRef is not allowed: pass the ref itself instead")
        payload, contained = serialization.dumps(value, "the value given to put()")
        return self._put_payload(payload, contained)

    def _put_payload(self, payload: Payload, contained: list[ObjectRef]) -> ObjectRef:
        oid = self.next_task_id() + b"\x00\x00"
        self._carry_out(self.objects.add_ready(oid, payload, [r.id for r in contained]))
        return ObjectRef(oid, self)

    def new_actor_id(self) -> bytes:
        return self.next_task_id()

    def cancel(self, ref: ObjectRef, force: bool) -> None:
        self.cancel_task(ref.id[:16], force)

    def cancel_task(self, task_id: bytes, force: bool) -> bytes | None:
        """Cancel one of our tasks; returns its actor's id if it is an actor call."""
        self._cancelled.add(task_id)
        where, actor_id = self.actor_routes.cancel(task_id)
        if where != "local":  # the head knows the task, or the worker it went to
            worker = self.leases.worker_of(task_id) or self._pinned.get(task_id)
            self.send(Kind.CANCEL, (task_id, force, actor_id, worker))
        return actor_id

    def cancel_waited(self, object_ids: list[bytes]) -> None:
        """Ctrl-C while get/wait waited on these: cancel the tasks of ours that make them.

        The user wants the work they were waiting for stopped, not left running unseen
        (a notebook kernel lives on after the interrupt). Tasks still running after
        ``interrupt_grace`` seconds (code that ignores the interrupt) are killed with
        ``force``, except actor calls: killing one would kill the actor and its state.
        """
        tasks = list(dict.fromkeys(oid[:16] for oid in object_ids
                                   if self.objects.owns(oid) and self.objects.state(oid) == PENDING))
        if not tasks or self._stopping or self.lost is not None:
            return
        plain = [t for t in tasks if self.cancel_task(t, False) is None]
        grace = self.interrupt_grace
        if plain and grace is not None:
            timer = threading.Timer(grace, self._force_cancel, (plain,))
            timer.daemon = True
            timer.start()

    def _force_cancel(self, task_ids: list[bytes]) -> None:
        if self._stopping or self.lost is not None:
            return
        for task_id in task_ids:
            if task_id in self._inflight:
                self.cancel_task(task_id, True)

    # -- values -----------------------------------------------------------------------------
    def on_ref_rebuilt(self, object_id: bytes) -> None:
        effects = self.objects.on_ref_rebuilt(object_id)
        if effects:
            self._carry_out(effects)

    def request_values(self, object_ids: list[bytes]) -> None:
        effects = self.objects.need_fetch(object_ids)
        if effects:
            self._carry_out(effects)

    def fetch_value(self, object_id: bytes) -> Any:
        """Fetch a value we hold no ref to (a task's large argument) from its owner, as a
        borrower for as long as it takes; raises its error if it has one."""
        self.on_ref_rebuilt(object_id)
        ref = ObjectRef(object_id, self, counted=True)
        self.request_values([object_id])
        self.objects.wait([object_id], 1, None)
        ok, value = self.value_or_error(object_id)
        del ref
        # Give the borrow back now, not at the I/O thread's next turn: until the owner
        # hears, it keeps the value, and its memory cannot serve the next one.
        self.waker.wake()
        if not ok:
            raise value
        return value

    def value_or_error(self, object_id: bytes) -> tuple[bool, Any]:
        state, payload = self.objects.value(object_id)
        if state == READY:
            return True, serialization.loads(payload)
        if state == PENDING:
            raise exceptions.RayipySystemError("value_or_error() on a pending object")
        if payload is None:
            return False, exceptions.ObjectLostError(
                f"ObjectRef({object_id.hex()}) was freed, or its owner is gone")
        return False, errors.rebuild_error(payload)

    def wait_refs(self, refs: list[ObjectRef], num_returns: int, timeout: float | None,
                  raise_timeout: bool = False) -> tuple[list, list]:
        ids = [r.id for r in refs]
        pending = [oid for oid in ids if self.objects.state(oid) == PENDING]
        if pending:
            self.request_values(pending)
            deadline = None if timeout is None else time.monotonic() + timeout
            need = num_returns - (len(ids) - len(pending))
            try:
                self._wait_for(pending, need, deadline)
            except KeyboardInterrupt:
                self.cancel_waited(pending)
                raise
        ready, not_ready = [], []
        for ref in refs:
            if len(ready) < num_returns and self.objects.state(ref.id) != PENDING:
                ready.append(ref)
            else:
                not_ready.append(ref)
        if raise_timeout and len(ready) < num_returns:
            raise exceptions.GetTimeoutError(f"{num_returns - len(ready)} object(s) not ready "
                                             f"after {timeout:g} s")
        return ready, not_ready

    def get_values(self, refs: list[ObjectRef], timeout: float | None) -> list:
        ids = [r.id for r in refs]
        pending = [oid for oid in ids if self.objects.state(oid) == PENDING]
        if pending:
            self._check_alive()
            self.request_values(pending)
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                n = self._wait_watched(refs, pending, deadline)
            except KeyboardInterrupt:
                self.cancel_waited(pending)
                raise
            if n < len(pending):
                raise exceptions.GetTimeoutError(
                    f"get() timed out after {timeout:g} s: {len(pending) - n} of {len(ids)} "
                    f"object(s) not ready yet")
        values = []
        for oid in ids:
            state, payload = self.objects.value(oid)
            if state == READY:
                values.append(serialization.loads(payload))
                continue
            if state == PENDING:  # lost the race with a shutdown
                raise exceptions.RayipySystemError("the cluster went away while waiting")
            if payload is None:
                raise exceptions.ObjectLostError(
                    f"ObjectRef({oid.hex()}) was freed, or the process that owned it is gone")
            raise errors.rebuild_error(payload)
        return values

    def _wait_watched(self, refs: list[ObjectRef], pending: list[bytes],
                      deadline: float | None) -> int:
        """Wait for all of ``pending``; past ``slow_wait_seconds``, tell ``on_slow_wait``."""
        hook = self.on_slow_wait
        if hook is None:
            return self._wait_for(pending, len(pending), deadline)
        first = time.monotonic() + self.slow_wait_seconds
        n = self._wait_for(pending, len(pending), first if deadline is None else min(first, deadline))
        if n >= len(pending) or (deadline is not None and time.monotonic() >= deadline):
            return n
        try:
            done = hook(refs)
        except Exception:  # a display that fails must not fail the get
            log.exception("the on_slow_wait hook raised")
            done = None
        try:
            return self._wait_for(pending, len(pending), deadline)
        finally:
            if done is not None:
                done()

    def _wait_for(self, object_ids: list[bytes], need: int, deadline: float | None) -> int:
        """Wait until ``need`` of the objects are ready or the deadline passes.

        A worker tells the head first, so its CPU can serve other tasks, and while it
        waits keeps handing back tasks that lease holders send it meanwhile.
        """
        if self.on_block is None:
            n = self.wait_on_direct(object_ids, need, deadline)
            if n is not None:
                return n
            return self.objects.wait(object_ids, need, deadline)
        self.blocked_depth += 1
        if self.blocked_depth == 1:
            self.send(Kind.BLOCKED, (self.on_block(),))
        on_main_thread = threading.current_thread() is threading.main_thread()
        try:
            while True:
                slice_end = time.monotonic() + BLOCKED_SLICE_SECONDS
                n = self.objects.wait(object_ids, need,
                                      slice_end if deadline is None else min(deadline, slice_end))
                if n >= need or (deadline is not None and time.monotonic() >= deadline):
                    return n
                if self.while_blocked is not None and on_main_thread:
                    self.while_blocked()
        finally:
            self.blocked_depth -= 1
            if self.blocked_depth == 0:
                self.send(Kind.UNBLOCKED, ())

    # -- requests to the head ----------------------------------------------------------------
    def request(self, name: str, *args: Any, timeout: float = 30.0) -> Any:
        self._check_alive()
        request_id = next(self._request_ids)
        fut: Future = Future()
        self._requests[request_id] = fut
        self.send(Kind.REQUEST, (request_id, name, args))
        try:
            ok, value = fut.result(timeout)
        except TimeoutError:
            raise exceptions.RayipySystemError(
                f"the head did not answer {name!r} within {timeout:g} s") from None
        finally:
            self._requests.pop(request_id, None)
        if not ok:
            raise value
        return value

    def task_counts(self) -> dict[str, int]:
        """This process's own tasks: in flight, of those on leased workers (the head does
        not see them), finished (OK) and failed (any other outcome)."""
        outcomes = dict(self._outcomes)   # a copy: the I/O thread adds to it
        done = outcomes.pop(OK, 0)
        return {"pending": len(self._inflight), "on_lease": self.leases.inflight_count(),
                "done": done, "failed": sum(outcomes.values())}

    def _check_alive(self) -> None:
        if self.lost is not None:
            raise exceptions.RayipySystemError(f"the cluster is unreachable: {self.lost}")
        if self._stopping:
            raise exceptions.NotInitializedError(
                "rayipy was shut down; call rayipy.init() to start or connect again")

    # -- the I/O thread ---------------------------------------------------------------------------
    def _io_loop(self) -> None:
        endpoint = Endpoint(self.context, zmq.DEALER, self.signer, self.process_id)
        self.endpoint = endpoint
        endpoint.connect(self.head_address)
        poller = self._poller = zmq.Poller()
        poller.register(endpoint.socket, zmq.POLLIN)
        poller.register(self.waker.fd, zmq.POLLIN)
        for fd in self.data_port.filenos():
            poller.register(fd, zmq.POLLIN)
        next_beat = time.monotonic() + HEARTBEAT_SECONDS
        try:
            while not self._stopping:
                self._flush(endpoint)
                self.watch_data_out()
                events = dict(poller.poll(self._poll_ms))
                if self.waker.fd in events:
                    self.waker.clear()
                if endpoint.socket in events:
                    self._drain(endpoint)
                self.poll_data(events)
                self._poll_direct(events)
                self._carry_out(self.objects.process_releases())
                self.idle_work()
                for worker in self.leases.to_return(time.monotonic()):
                    self.outbox.append((Kind.LEASE_RETURN, (worker,)))
                now = time.monotonic()
                if now >= next_beat:
                    next_beat = now + HEARTBEAT_SECONDS
                    self.close_idle_data_out(now)
                    self.release_idle_memory()
                    self.outbox.append((Kind.HEARTBEAT, self.heartbeat_body()
                                        if self.heartbeat_body is not None else ()))
                    if self._connected.is_set() and now - self._last_heard > HEAD_SILENCE_LIMIT:
                        self._lose(exceptions.RayipySystemError(
                            f"no word from the head at {self.head_address} for "
                            f"{HEAD_SILENCE_LIMIT:g} s"))
                        break
            self._flush(endpoint)
        except Exception as e:  # never die silently: callers waiting must hear about it
            log.exception("rayipy I/O thread failed")
            self._lose(exceptions.RayipySystemError(f"the I/O thread failed: {e!r}"))
        finally:
            endpoint.close()
            self.close_data()
            for direct in self._direct.values():
                direct.close()
            self._direct.clear()
            self.context.term()
            self.waker.close()
            self._closed.set()

    def _watch(self, fd: int, flags: int) -> None:
        """I/O thread: poll a plain socket for ``flags`` from now on (0: not at all)."""
        if self._watched.get(fd, 0) == flags:
            return
        if flags:
            self._poller.register(fd, flags)
            self._watched[fd] = flags
        else:
            self._poller.unregister(fd)
            del self._watched[fd]

    def idle_work(self) -> None:
        """Hook for periodic work on the I/O thread (workers flush task output)."""

    def _drain(self, endpoint: Endpoint) -> None:
        socket = endpoint.socket
        for _ in range(1000):  # bounded, so sending is never starved
            if not socket.poll(0, zmq.POLLIN):
                return
            _, message = endpoint.recv()
            if message is None:
                continue
            self._last_heard = time.monotonic()
            self._handle(message, endpoint)

    def _handle(self, message: Any, source: Any) -> None:
        handler = self._handlers.get(message.kind)
        if handler is None:
            source.dropped["unexpected kind"] += 1
            return
        try:
            handler(message.body)
        except Exception:
            source.dropped["handler error"] += 1
            log.exception("error handling %s", message.kind.name)

    def _flush(self, endpoint: Endpoint) -> None:
        outbox = self.outbox
        specs: list = []
        while outbox:
            item = outbox.popleft()
            kind = item[0]
            if kind == "spec":
                specs.append(item[1])
                continue
            if kind == "to":
                self.send_data(item[1], item[2], item[3])
                continue
            if specs:
                endpoint.send(Kind.SUBMIT, (specs,))
                specs = []
            endpoint.send(kind, item[1])
        if specs:
            endpoint.send(Kind.SUBMIT, (specs,))

    def _lose(self, error: BaseException) -> None:
        self.lost = error
        payload = errors.capture_system_error(error)
        for fn in self.objects.fail_all_pending(payload):
            _run_callback(fn)
        for fut in list(self._requests.values()):
            if not fut.done():
                fut.set_result((False, error))
        if not self._connected.is_set():
            self._connect_error = error
            self._connected.set()

    # -- handlers (I/O thread) --------------------------------------------------------------------
    def _on_welcome(self, body: Welcome) -> None:
        self.welcome = body
        self._connected.set()

    def _on_refused(self, body: tuple) -> None:
        self._connect_error = exceptions.ProtocolVersionError(body[0])
        self._connected.set()

    def _on_auth_failed(self, body: Any) -> None:
        self._connect_error = exceptions.AuthenticationError(
            f"the rayipy head at {self.head_address} rejected our signature: the password "
            f"(cluster key) is wrong. Use the password printed by `rayipy start --head`.")
        self._stopping = True
        self._connected.set()

    def _on_shutdown(self, body: tuple) -> None:
        self._lose(exceptions.RayipySystemError(f"the cluster shut down ({body[0]})"))
        self._stopping = True

    def _on_task_done(self, body: tuple) -> None:
        for result in body[0]:
            self._finish(result)

    def _finish(self, result: TaskResult) -> None:
        self._sent_on.pop(result.task_id, None)
        if result.status == RETURNED:
            # A blocked leased worker handed it back unrun: through the head this time.
            worker = self.leases.worker_of(result.task_id)
            spec = self.leases.handed_back(result.task_id)
            if spec is not None:
                self.leases.revoke(worker)  # it is blocked: no more tasks for it for now
                self._via_head.add(spec.task_id)
                self.send("spec", spec)
            return
        self._via_head.discard(result.task_id)
        self._pinned.pop(result.task_id, None)
        self.leases.finished(result.task_id, time.monotonic())
        self._cancelled.discard(result.task_id)
        entry = self._inflight.pop(result.task_id, None)
        if entry is None:
            return
        self._outcomes[result.status] += 1
        pinned, return_ids = entry
        callbacks: list = []
        info = {"where": result.where, "duration": result.duration}
        ok = result.status == OK
        for i, oid in enumerate(return_ids):
            payload = result.values[i] if ok else result.values[0]
            contains = result.contains[i] if ok and result.contains else ()
            cbs, waiting, effects = self.objects.fulfill(oid, ok, payload, contains, True, info)
            callbacks.extend(cbs)
            self._carry_out(effects)
            for requester in waiting:
                self._send_value(oid, ObjectValue(ok, payload), requester)
        self._carry_out(self.objects.unpin(pinned))
        for fn in callbacks:
            _run_callback(fn)

    def _on_borrow(self, body: tuple) -> None:
        changes, borrower = body
        for object_id, delta in changes:
            self._carry_out(self.objects.add_borrower(object_id, borrower, delta))

    def _on_reply(self, body: tuple) -> None:
        request_id, ok, value = body
        fut = self._requests.get(request_id)
        if fut is not None and not fut.done():
            fut.set_result((ok, value))

    def _on_log(self, body: tuple) -> None:
        _owner, lines, label = body
        self.on_log(lines, label)


def _slot(value: Any, deps: list) -> Any:
    if isinstance(value, ObjectRef):
        deps.append(value)
        return DepSlot(len(deps) - 1)
    return value


def _ip_toward(head_address: str) -> str:
    """Where processes on the head's network reach us: our address on the route to it."""
    from rayipy.node import connection
    try:
        host, port = connection.parse_address(head_address)
        return "127.0.0.1" if connection.is_loopback(host) else connection.local_ip_toward(host, port)
    except (OSError, ValueError):
        return "127.0.0.1"
