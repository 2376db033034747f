"""The runtime of a process that submits tasks: the driver, and every worker.

A ``Runtime`` is a thin loop around parts that each own one thing, given to each other
at construction:

- ``ObjectTable`` (``core/objects.py``): this process's objects, values and counts;
- ``OwnerState`` (``core/owner.py``): the tasks it owns, their routes, retries, cancels;
- ``HeadLink`` (``head_link.py``): the socket to the head, the outbox, requests;
- ``DataPort`` (``data_port.py``): large values straight between processes;
- ``DirectCalls`` (``direct_calls.py``): calls straight to workers' inboxes;
- ``ObjectAccess`` (``object_access.py``): put, get, wait, fetching and answering values.

One background I/O thread owns the sockets. User threads never touch them: they queue
(``HeadLink.send``) and wake the I/O thread through a pipe; only direct calls are written
by the thread that makes them (under the connection's lock). The I/O thread sends what
is queued in batches, receives results, output and requests, and fills the ObjectTable,
so values arrive while the user's thread (a notebook kernel) is idle.

The owner's decisions are made by ``OwnerState`` under ``_owner_lock``; the commands it
returns are carried out under the same lock (so sends leave in the order decided), and
the done-callbacks that completing a task releases run after it is let go.

A worker adds its task queue on top (``rayipy.node.worker``, through ``attach_worker``):
its main thread runs tasks, and tasks may submit tasks and ``get`` them through this
same runtime.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import sys
import threading
import time
from typing import Any, Callable, Protocol

from rayipy import exceptions
from rayipy.core.object_ref import ObjectRef, current_runtime, set_runtime
from rayipy.core.lineage import Lineage, Remake
from rayipy.core.liveness import STALL_SECONDS
from rayipy.core.message_faults import MessageFaults
from rayipy.core.objects import PENDING, READY, ObjectTable
from rayipy.core.task_context import CURRENT_TASK, JOB_NAMESPACE, current_job
from rayipy.core.owner import (PINNED, AskLease, CancelRemote, Complete, LocateActor,
                               OwnerCommand, OwnerState, ReturnLease, Route, SendToHead,
                               SendToWorker)
from rayipy.node import connection, interrupts
from rayipy.node.data_port import DIRECT_RESULT_BYTES, DataPort
from rayipy.node.direct_calls import DirectCalls
from rayipy.node.head_link import HeadLink
from rayipy.node.object_access import ObjectAccess, run_callback
from rayipy.node.store_client import STORE_MIN_BYTES
from rayipy.node.streams import STREAMING, Streams, generator_mode
from rayipy.node.task_logs import TaskLogs
from rayipy.protocol import errors, serialization
from rayipy.protocol.kinds import Kind
from rayipy.protocol.messages import (OK, DepSlot, FetchDep, Payload, Registration, Stored,
                                      TaskResult, TaskSpec, Welcome)
from rayipy.protocol.wire import PROTOCOL_VERSION, Message, Signer
from rayipy.transport.endpoint import Waker
from rayipy.transport.poll_set import PollSet

__all__ = ["PINNED", "Runtime", "WorkerHooks", "new_process_id"]

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 1.0
HEAD_SILENCE_LIMIT = 10.0       # no word from the head this long (while we ran): it is gone
SESSION_CHECK_SECONDS = 5.0     # after a stall, calls wait this long at most for the head's word
INTERRUPT_GRACE_SECONDS = 3.0   # Ctrl-C in get/wait: tasks still running then are killed
BLOCKED_SLICE_SECONDS = 0.05    # a blocked worker looks for tasks to hand back this often


def new_process_id(prefix: bytes) -> bytes:
    # 8 bytes; a ZeroMQ identity must not start with a zero byte.
    return prefix[:1] + os.urandom(7)


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


class Runtime:
    """The sockets-owning I/O thread plus the synchronous API the user's threads call."""

    def __init__(self, role: str, head_address: str, key: bytes, node_id: bytes = b"",
                 process_id: bytes | None = None, info: dict | None = None,
                 store_address: str = "") -> None:
        self.role = role
        self.head_address = head_address
        self.process_id = process_id or new_process_id(b"D" if role == "driver" else b"W")
        self.node_id = node_id
        self.info = info or {}
        self.driver_namespace: str | None = None   # a driver's, set by init (Ray's job namespace)
        self.signer = Signer(key)
        self.waker = Waker()
        self.objects = ObjectTable(self.process_id)
        self.owner = OwnerState()
        self._owner_lock = threading.Lock()
        self._function_bytes: dict[bytes, bytes] = {}       # ours, by id
        self._seq = itertools.count(1)
        self.head = HeadLink(head_address, self.signer, self.process_id, self.waker,
                             HEAD_SILENCE_LIMIT)
        self.data_port: DataPort | None = None              # bound in start()
        self.direct = DirectCalls(self.signer, self.waker, self._handle, self._function_bytes)
        self.access = ObjectAccess(self.objects, self.head, self.waker, self.send_to, self,
                                   self.next_task_id, self.signer, store_address)
        self.lineage = Lineage()             # finished tasks that may remake lost values
        self._lineage_lock = threading.Lock()
        self.access.on_stored_freed = self._stored_freed
        self.streams = Streams(self, self.access.store_result)   # generator tasks' items
        self._poll = PollSet()
        self._carriers: dict[type, Callable[[Any, list], bool]] = {
            SendToHead: self._send_to_head, SendToWorker: self._send_to_worker,
            Complete: self._complete, AskLease: self._ask_lease, ReturnLease: self._return_lease,
            LocateActor: self._locate_actor, CancelRemote: self._cancel_remote,
        }
        # Handler errors are counted per source; their tracebacks logged once a while
        # per kind (a peer repeating a malformed message must not fill the log).
        self._faults = MessageFaults(log, collections.Counter())
        self._handlers: dict[Kind, Callable[[Any], None]] = {
            Kind.WELCOME: self._on_welcome,
            Kind.REFUSED: self._on_refused,
            Kind.AUTH_FAILED: self._on_auth_failed,
            Kind.HEARTBEAT: lambda body: None,
            Kind.SHUTDOWN: self._on_shutdown,
            Kind.REPLY: self.head.on_reply,
            Kind.LOG: self._on_log,
            Kind.TASK_DONE: self._on_task_done,
            Kind.CALL_DONE: self._on_call_done,
            Kind.RESULTS: self._on_results,
            Kind.ACTOR_LOCATION: self._on_actor_location,
            Kind.LEASE: self._on_lease,
            Kind.LEASE_ENDED: self._on_lease_ended,
            Kind.GET_OBJECT: self.access.on_get_object,
            Kind.OBJECT_VALUE: self.access.on_object_value,
            Kind.BORROW: self.access.on_borrow,
            Kind.OBJECT_COPY: self.access.on_object_copy,
            Kind.GENERATOR_ITEM: self._on_generator_item,
        }
        self.task_logs = TaskLogs(self.info.get("ip", ""))   # task output reaching us
        # Hooks for a front end (the Jupyter layer sets them; None in scripts):
        # on_submit(task_id, refs) runs on the submitting thread before the task leaves;
        # on_slow_wait(refs) runs when a get has blocked slow_wait_seconds, and may return
        # a function to call when the get ends (a progress display).
        self.on_submit: Callable[[bytes, list[ObjectRef]], None] | None = None
        self.on_slow_wait: Callable[[list[ObjectRef]], Callable[[], None] | None] | None = None
        self.slow_wait_seconds = 1.0
        self.interrupt_grace: float | None = INTERRUPT_GRACE_SECONDS
        # Tasks the last interrupted get/wait cancelled (None: none since it was read).
        self.cancelled_on_interrupt: int | None = None
        self.worker: WorkerHooks | None = None
        self._blocked_depth = 0                             # threads of a worker in get/wait
        # A worker's running task cancelled with recursive=False: its interrupted get
        # leaves the tasks it waited on running (``cancel_waited``).
        self.keep_children_of: bytes | None = None
        self.welcome: Welcome | None = None
        self.lost: BaseException | None = None
        self._connected = threading.Event()
        self._connect_error: BaseException | None = None
        # After a stall (this process was stopped, or the I/O thread starved of the GIL),
        # the I/O thread asks the head whether our session stands; calls wait for that
        # answer (``check_alive``), so the first call after a long stop meets the truth
        # (resumed, or "session lost"), not a connection half torn down.
        self._io_turn = time.monotonic()
        self._session_checked = threading.Event()
        self._session_checked.set()
        self._session_check_deadline = 0.0
        self._stopping = False
        self._head_away = False      # the head fell silent; we wait for it to restart
        self._thread = threading.Thread(target=self._io_loop, name=f"rayipy-io-{role}", daemon=True)
        self.access.io_thread = self._thread

    def attach_worker(self, worker: WorkerHooks) -> None:
        """Make this the runtime of a worker process (before ``start``)."""
        self._handlers.update(worker.handlers())
        self.access.borrow_in_reply = worker.borrow_in_reply
        self.worker = worker

    @property
    def blocked(self) -> bool:
        """A thread of this process waits in ``get``/``wait`` (a worker's task blocks)."""
        return self._blocked_depth > 0

    @property
    def stopped(self) -> bool:
        """The cluster is gone or this runtime was closed."""
        return self.lost is not None or self._stopping

    # -- lifecycle ----------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> Welcome:
        # Bound here, then owned by the I/O thread (starting it is the hand-over).
        ip = self.info.get("ip") or _ip_toward(self.head_address)
        self.task_logs.own_ip = ip
        self.data_port = DataPort(ip, self.signer, self.waker, self._handle, self.head.send)
        self.info["data"] = self.data_port.address
        self.head.greeting = self._registration
        self._thread.start()
        self.send(*self._registration())
        if not self._connected.wait(timeout):
            self.close()
            raise exceptions.RayipySystemError(
                f"no answer from the rayipy head at {self.head_address} within {timeout:g} s: "
                f"is the cluster running there, and is the address right?")
        if self._connect_error is not None:
            self.close()
            raise self._connect_error
        set_runtime(self)
        assert self.welcome is not None
        return self.welcome

    def _registration(self) -> tuple[Kind, Registration]:
        """Our REGISTER (again to a restarted head: a worker's ``info`` then names the
        actor it hosts, which that head gets back, and every owner's names the workers
        it holds on lease)."""
        info = dict(self.info)
        with self._owner_lock:
            leases = self.owner.leases_held()
        if leases:
            # A restarted head knows no lease: these workers are ours until we give them
            # back (``LeaseScheduling.leases_declared``).
            info["leases"] = leases
        return Kind.REGISTER, Registration(self.role, self.process_id, self.node_id,
                                           os.getpid(), PROTOCOL_VERSION, info)

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

    def check_alive(self) -> None:
        if time.monotonic() - self._io_turn > STALL_SECONDS or not self._session_checked.is_set():
            self._wait_session_checked()
        if isinstance(self.lost, exceptions.SessionLostError):
            raise exceptions.SessionLostError(str(self.lost))
        if self.lost is not None:
            raise exceptions.RayipySystemError(f"the cluster is unreachable: {self.lost}")
        if self._stopping:
            raise exceptions.NotInitializedError(
                "rayipy was shut down; call rayipy.init() to start or connect again")

    def _wait_session_checked(self) -> None:
        """This process was stopped, or its I/O thread has not turned for a while: wait
        (a few seconds at most) until it has turned since and heard whether the head
        still holds our session."""
        deadline = time.monotonic() + SESSION_CHECK_SECONDS + STALL_SECONDS
        while not self.stopped and self._thread.is_alive() and time.monotonic() < deadline:
            if time.monotonic() - self._io_turn <= STALL_SECONDS and self._session_checked.is_set():
                return
            self._session_checked.wait(0.01)

    # -- sending (any thread) -------------------------------------------------------------
    def send(self, kind: Kind, body: Any) -> None:
        """Queue a message for the head."""
        self.head.send(kind, body)

    def send_to(self, address: str, kind: Kind, body: Any) -> None:
        """Queue a message for another process's data port."""
        assert self.data_port is not None
        self.data_port.send_to(address, kind, body)

    def request(self, name: str, *args: Any, timeout: float = 30.0) -> Any:
        """Ask the head ``name(*args)`` (its ``request_*`` methods) and wait for the answer."""
        self.check_alive()
        return self.head.request(name, args, timeout)

    # -- tasks (any thread) -----------------------------------------------------------------
    def next_task_id(self) -> bytes:
        return self.process_id + next(self._seq).to_bytes(8, "big")

    @property
    def namespace(self) -> str | None:
        """The namespace the calling code runs in: a driver's own; in a worker, that of
        the task or actor running."""
        job = self.job
        return job[0] if job is not None else None

    @property
    def job(self) -> tuple[str, str] | None:
        """The job the calling code runs in, (namespace, job id): a driver's own (its id
        is the driver's process id, hex); in a worker, that of the task or actor running
        (``task_context.current_job``)."""
        if self.role == "driver":
            if self.driver_namespace is None:
                return None
            return (self.driver_namespace, self.process_id.hex())
        return current_job()

    def new_actor_id(self) -> bytes:
        return self.next_task_id()

    def ensure_function(self, function_id: bytes, pickled: bytes) -> None:
        if function_id not in self._function_bytes:
            self._function_bytes[function_id] = pickled
            self.send(Kind.FUNCTION, (function_id, pickled))

    def submit(self, function_id: bytes, name: str, args: tuple, kwargs: dict, num_returns: int,
               resources: tuple, max_retries: int, actor_id: bytes = b"",
               method: str = "", options: tuple = (), keep_alive: tuple = (),
               worker: tuple[bytes, str] | None = None) -> list[ObjectRef]:
        """Queue one task; returns its ObjectRefs at once.

        ``worker`` (worker id, direct address) sends the task straight to that worker,
        which runs it there whatever else it does (used to run a cell on every worker).
        A generator task (``("generator", mode)`` in ``options``) returns, for
        ``"streaming"``, an ``ObjectRefGenerator`` in place of its one ref.
        """
        self.check_alive()
        task_id = self.next_task_id()
        deps: list[ObjectRef] = []
        if args and any(isinstance(a, ObjectRef) for a in args):
            args = tuple(_slot(a, deps) for a in args)
        if kwargs and any(isinstance(v, ObjectRef) for v in kwargs.values()):
            kwargs = {k: _slot(v, deps) for k, v in kwargs.items()}
        payload, contained = serialization.dumps_arguments(args, kwargs, name, snapshot=False)
        if (payload.buffers or len(payload.data) > STORE_MIN_BYTES) and not actor_id \
                and worker is None and payload.nbytes > self._implicit_put_bytes():
            # Large arguments are put, as Ray does: into the node's object store, where
            # the worker maps them, or else kept here for the worker to fetch from our data
            # port (``FetchDep``); in the spec they would cross the head, two hops instead
            # of one. Actor calls go straight to their worker anyway, and a restarted
            # actor's constructor needs its arguments again.
            deps.append(self.access.put_payload(payload, contained))
            payload = Payload(serialization.dumps_inband((DepSlot(len(deps) - 1), None)))
        elif payload.buffers:
            payload = serialization.freeze(payload)
        if num_returns == 1:
            return_ids: tuple[bytes, ...] = (task_id + b"\x00\x00",)
        else:
            return_ids = tuple(task_id + i.to_bytes(2, "big") for i in range(max(num_returns, 1)))
        info = {"task": name, "submitted": time.monotonic()}   # reprs: "queued for 3.2 s"
        refs = []
        for oid in return_ids:
            self.objects.add_pending(oid, info)
            refs.append(ObjectRef(oid, self))
        if deps or contained or keep_alive:
            pinned = tuple(r.id for r in deps) + tuple(r.id for r in contained) + tuple(keep_alive)
            self.objects.pin(pinned)
        else:
            pinned = ()
        # Read before the namespace joins the options: most calls have none of their own.
        mode = generator_mode(options) if options else ""
        if not actor_id or method == "__init__":   # an actor's calls run in the actor's
            job = self.job
            if job is not None:
                options = options + ((JOB_NAMESPACE, job),)
        handed: list = refs
        if mode:
            # Open before the task leaves: its first item may come at once.
            stream = self.streams.open(task_id, refs[0], mode)
            if mode == STREAMING:
                from rayipy.generator import ObjectRefGenerator
                handed = [ObjectRefGenerator(stream)]
        spec = TaskSpec(task_id, function_id, name, payload, (), num_returns, resources, max_retries,
                        0, actor_id, method, options)
        if self.on_submit is not None:
            try:
                self.on_submit(task_id, refs)
            except Exception:
                log.exception("the on_submit hook raised")
        parent = b""
        if self.role == "worker":
            running = CURRENT_TASK.get()
            parent = running.task_id if running is not None else b""
        with self._owner_lock:
            callbacks = self._carry_out(self.owner.submit(spec, return_ids, pinned, not deps,
                                                          worker, parent))
        _run_all(callbacks)
        if deps:
            self._when_ready(deps, spec)
        return handed

    def _implicit_put_bytes(self) -> int:
        """Arguments larger than this are put (``submit``): with a store on our node, as
        small as a stored value may be; otherwise only those too large for the head's path."""
        return STORE_MIN_BYTES if self.access.store() is not None else DIRECT_RESULT_BYTES

    def _when_ready(self, deps: list[ObjectRef], spec: TaskSpec) -> None:
        """Send ``spec`` once every direct ref argument has its value: inlined if small,
        else named for the worker to fetch from its holder (``FetchDep``)."""
        remaining = [len(deps)]
        lock = threading.Lock()

        def one_ready(_ref: ObjectRef) -> None:
            with lock:
                remaining[0] -= 1
                if remaining[0]:
                    return
            values: list = []
            for dep in deps:
                state, payload = self.objects.value(dep.id)
                if state != READY:
                    if payload is None:
                        payload = errors.capture_system_error(exceptions.ObjectLostError(
                            f"{dep!r}, an argument of {spec.name!r}, was freed or lost"))
                    self._owner_event(self.owner.arguments_failed, spec.task_id, payload)
                    return
                assert payload is not None
                if type(payload) is Stored or payload.nbytes <= DIRECT_RESULT_BYTES:
                    values.append(payload)   # the bytes, or where they are stored
                else:
                    values.append(FetchDep(dep.id))
            self._owner_event(self.owner.arguments_ready, spec.task_id, tuple(values))

        for dep in deps:
            dep.add_done_callback(one_ready)

    def waiting_for_arguments(self) -> list[TaskSpec]:
        """Our tasks that have not left (``OwnerState.waiting_for_arguments``)."""
        with self._owner_lock:
            return self.owner.waiting_for_arguments()

    def cancel(self, ref: ObjectRef, force: bool, recursive: bool = True) -> None:
        self.cancel_task(ref.id[:16], force, recursive)

    def cancel_task(self, task_id: bytes, force: bool, recursive: bool = True) -> bool:
        """Cancel one of our tasks; True if it is an actor call."""
        with self._owner_lock:
            route = self.owner.route_of(task_id)
            callbacks = self._carry_out(self.owner.cancel(task_id, force, recursive))
        _run_all(callbacks)
        return route is Route.ACTOR

    def cancel_children(self, parent: bytes, force: bool) -> bool:
        """A worker's task ``parent`` is cancelled with ``recursive``: cancel the tasks it
        submitted (and, through their workers, theirs). True if there were any."""
        with self._owner_lock:
            commands = self.owner.cancel_children(parent, force)
            callbacks = self._carry_out(commands)
        _run_all(callbacks)
        return bool(commands)

    def cancel_waited(self, object_ids: list[bytes]) -> None:
        """Ctrl-C while get/wait waited on these: cancel the tasks of ours that make them.

        The user wants the work they were waiting for stopped, not left running unseen
        (a notebook kernel lives on after the interrupt). Tasks still running after
        ``interrupt_grace`` seconds (code that ignores the interrupt) are killed with
        ``force``, except actor calls: killing one would kill the actor and its state.
        """
        tasks = list(dict.fromkeys(oid[:16] for oid in object_ids
                                   if self.objects.owns(oid) and self.objects.state(oid) == PENDING))
        self.cancelled_on_interrupt = len(tasks)   # what a notebook says instead of a traceback
        if not tasks or self.stopped:
            return
        running = CURRENT_TASK.get()
        if running is not None and running.task_id == self.keep_children_of:
            return   # the interrupt is a cancel(recursive=False) of our task: they go on
        plain = [t for t in tasks if not self.cancel_task(t, False)]
        grace = self.interrupt_grace
        if plain and grace is not None:
            timer = threading.Timer(grace, self._force_cancel, (plain,))
            timer.daemon = True
            timer.start()

    def _force_cancel(self, task_ids: list[bytes]) -> None:
        if self.stopped:
            return
        for task_id in task_ids:
            self.cancel_task(task_id, True)   # nothing for a task that has ended

    def on_actor_gone(self, actor_id: bytes, why: str, restarting: bool = False) -> None:
        """The actor is dead (or restarting): fail the calls that will not reach it."""
        self._owner_event(self.owner.actor_gone, actor_id, why, restarting)

    def on_lease(self, task_id: bytes) -> bool:
        """The task runs on a worker lent to us (the head does not count it as running)."""
        with self._owner_lock:
            return self.owner.on_lease(task_id)

    def task_counts(self) -> dict[str, int]:
        """This process's own tasks: in flight, of those on leased workers (the head does
        not see them), done, failed and cancelled (``OwnerState.counts``)."""
        with self._owner_lock:
            return self.owner.counts()

    # -- objects (any thread; see object_access.py) ------------------------------------------
    def put(self, value: Any) -> ObjectRef:
        return self.access.put(value)

    def value_or_error(self, object_id: bytes) -> tuple[bool, Any]:
        return self.access.value_or_error(object_id)

    def request_values(self, object_ids: list[bytes]) -> None:
        self.access.request_values(object_ids)

    def on_ref_rebuilt(self, object_id: bytes) -> None:
        self.access.on_ref_rebuilt(object_id)

    def fetch_value(self, object_id: bytes) -> Any:
        return self.access.fetch_value(object_id)

    def route_borrow(self, object_id: bytes, delta: int, borrower: bytes) -> None:
        self.access.route_borrow(object_id, delta, borrower)

    def wait_refs(self, refs: list[ObjectRef], num_returns: int, timeout: float | None,
                  raise_timeout: bool = False, fetch_local: bool = False) -> tuple[list, list]:
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
        if fetch_local:
            for ref in ready:
                state, payload = self.objects.value(ref.id)
                if state == READY and type(payload) is Stored:
                    self.access.fetch_to_node(payload)
        return ready, not_ready

    def get_values(self, refs: list[ObjectRef], timeout: float | None) -> list:
        ids = [r.id for r in refs]
        pending = [oid for oid in ids if self.objects.state(oid) == PENDING]
        if pending:
            self.check_alive()
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
                assert payload is not None
                try:
                    values.append(self.access.load(payload, oid))
                except exceptions.ObjectLostError:
                    if not self._remake(oid):
                        raise
                    return self.get_values(refs, timeout)   # wait for the new values
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
        worker = self.worker
        if worker is None:
            n = self.direct.wait_on(object_ids, need, deadline, self.objects, lambda: self.stopped)
            if n is not None:
                return n
            return self.objects.wait(object_ids, need, deadline)
        self._blocked_depth += 1
        if self._blocked_depth == 1:
            self.send(Kind.BLOCKED, (worker.hand_back_queued(),))
        on_main_thread = threading.current_thread() is threading.main_thread()
        try:
            while True:
                slice_end = time.monotonic() + BLOCKED_SLICE_SECONDS
                n = self.objects.wait(object_ids, need,
                                      slice_end if deadline is None else min(deadline, slice_end))
                if n >= need or (deadline is not None and time.monotonic() >= deadline):
                    return n
                if on_main_thread:
                    worker.while_blocked()
        finally:
            self._blocked_depth -= 1
            if self._blocked_depth == 0:
                self.send(Kind.UNBLOCKED, ())

    # -- carrying out the owner's commands (the owner lock held) ------------------------------
    def _owner_event(self, event: Callable[..., list[OwnerCommand]], *args: Any) -> None:
        with self._owner_lock:
            callbacks = self._carry_out(event(*args))
        _run_all(callbacks)

    def _carry_out(self, commands: list[OwnerCommand]) -> list[Callable[[], None]]:
        """Carry out the owner's commands in order; returns the done-callbacks to run once
        the owner lock is let go."""
        callbacks: list[Callable[[], None]] = []
        carriers = self._carriers
        for_head = False
        for command in commands:
            for_head |= carriers[type(command)](command, callbacks)
        if for_head:
            # Once per batch, and only for the head's outbox: a direct call is written by
            # this thread, and a result handled here needs no turn of the I/O loop.
            self.waker.wake()
        return callbacks

    # Each carrier returns True when it queued something for the head.
    def _send_to_head(self, command: SendToHead, callbacks: list) -> bool:
        self.head.submit(command.spec)
        return True

    def _send_to_worker(self, command: SendToWorker, callbacks: list) -> bool:
        self.direct.send_call(command.address, command.spec)
        return False

    def _ask_lease(self, command: AskLease, callbacks: list) -> bool:
        self.head.outbox.append((Kind.LEASE_REQUEST, (command.request,)))
        return True

    def _return_lease(self, command: ReturnLease, callbacks: list) -> bool:
        self.head.outbox.append((Kind.LEASE_RETURN, (command.worker,)))
        return True

    def _locate_actor(self, command: LocateActor, callbacks: list) -> bool:
        self.head.outbox.append((Kind.LOCATE_ACTOR, (command.actor_id,)))
        return True

    def _cancel_remote(self, command: CancelRemote, callbacks: list) -> bool:
        self.head.outbox.append((Kind.CANCEL, tuple(command)))
        return True

    def _complete(self, command: Complete, callbacks: list) -> bool:
        result, spec = command.result, command.spec
        self.direct.forget(result.task_id)
        keep, stored = False, []
        # Per task: most values are not stored, and the check is a C-level scan.
        if result.status == OK and Stored in map(type, result.values) and spec is not None:
            stored = [oid for oid, value in zip(command.return_ids, result.values)
                      if type(value) is Stored]
            # Recorded before the values are stored: a value nobody wants is freed at
            # once, and its lineage then lets the arguments go.
            keep = self.lineage.keeps(spec, command.named_worker)
        if keep:
            assert spec is not None
            with self._lineage_lock:
                self.lineage.record(Remake(spec, command.return_ids, command.pinned), stored)
        elif command.pinned:
            # Before the result wakes the caller: the arguments' stored copies are freed
            # first (refs dropped since count: an implicit put's died with the submit), so
            # the caller's next put finds their room, whose pages are warm.
            self.access.carry_out(self.objects.process_releases())
            self.access.carry_out(self.objects.unpin(command.pinned))   # wakes if it sends
        if spec is not None and spec.options and self.streams.is_dynamic(result.task_id):
            result = self.streams.finish_dynamic(result)   # its value: the items' refs
        callbacks.extend(self.access.store_result(result, command.return_ids))
        return False

    def _stored_freed(self, object_ids: list[bytes]) -> None:
        """Stored values of ours were freed: the lineage of their tasks may go."""
        with self._lineage_lock:
            release = self.lineage.freed(object_ids)
        if release:
            self.access.carry_out(self.objects.unpin(release))

    def _remake(self, object_id: bytes) -> bool:
        """A stored value of ours was lost with its node: run its task again, if its
        lineage is kept and its retries allow (Ray's object reconstruction)."""
        if not self.objects.owns(object_id):
            return False
        with self._lineage_lock:
            remake, release = self.lineage.take(object_id)
        if release:
            self.access.carry_out(self.objects.unpin(release))
        if remake is None:
            return False
        log.warning("ObjectRef(%s) was lost with the node that held it: running %r again "
                    "(attempt %d of %d) to make it again", object_id.hex(), remake.spec.name,
                    remake.spec.attempt + 1, remake.spec.max_retries + 1)
        self.objects.reset_pending(remake.return_ids)
        self._owner_event(self.owner.submit, remake.spec, remake.return_ids, remake.pinned, True)
        return True

    # -- the I/O thread ---------------------------------------------------------------------------
    def _io_loop(self) -> None:
        head, data_port, direct, poll = self.head, self.data_port, self.direct, self._poll
        assert data_port is not None
        head.open(poll)
        data_port.open(poll)
        poll.register(self.waker.fd)
        next_beat = time.monotonic() + HEARTBEAT_SECONDS
        try:
            while not self._stopping:
                head.flush()
                data_port.before_poll()
                events = poll.poll(direct.poll_ms)
                self._turn(time.monotonic())
                if self.waker.fd in events:
                    self.waker.clear()
                if head.socket in events:
                    head.receive(self._handle)
                data_port.after_poll(events)
                direct.after_poll(events, poll)
                self.access.carry_out(self.objects.process_releases())
                self.access.flush_store_releases()
                if self.worker is not None:
                    self.worker.flush_output()
                now = time.monotonic()
                self._owner_event(self.owner.tick, now)
                self.task_logs.tick(now)
                if now >= next_beat:
                    next_beat = now + HEARTBEAT_SECONDS
                    if not self._beat(now):
                        break
            head.flush()
            self.task_logs.close()
        except Exception as e:  # never die silently: callers waiting must hear about it
            log.exception("rayipy I/O thread failed")
            self._lose(exceptions.RayipySystemError(f"the I/O thread failed: {e!r}"))
        finally:
            self._session_checked.set()   # nobody waits for a check that will not come
            head.close()
            data_port.close()
            direct.close()
            self.access.close()
            self.waker.close()

    def _turn(self, now: float) -> None:
        """Each turn of the I/O loop: after a stall, ask the head whether our session
        stands before anyone trusts it (``check_alive`` waits for the answer)."""
        if self.head.silence.turn(now) and self._connected.is_set():
            log.info("this process did not run for a while (stopped, asleep, or the GIL "
                     "held): checking our session with the head")
            self._session_checked.clear()
            self._session_check_deadline = now + SESSION_CHECK_SECONDS
            self.head.ask("session", ()).add_done_callback(
                lambda _: self._session_checked.set())
        elif not self._session_checked.is_set() and now > self._session_check_deadline:
            # No answer: the head's silence, now counted again, decides (``_beat``).
            self._session_checked.set()
        self._io_turn = now

    def _beat(self, now: float) -> bool:
        """Once a second: heartbeat, idle connections; False when the head is gone."""
        assert self.data_port is not None
        self.data_port.close_idle(now)
        body = self.worker.heartbeat_body() if self.worker is not None else ()
        self.head.outbox.append((Kind.HEARTBEAT, body))
        if self._connected.is_set() and self.head.silence.gone(now):
            # A head that keeps a journal may come back: wait for it that long.
            wait = float(self.welcome.info.get("head_restart_wait_s", 0)) if self.welcome else 0.0
            silent = self.head.silence.silent(now)
            if silent <= HEAD_SILENCE_LIMIT + wait:
                if not self._head_away:
                    self._head_away = True
                    log.warning("no word from the head at %s for %.0f s: waiting up to %g s "
                                "more for it to restart", self.head_address, silent, wait)
                return True
            self._lose(exceptions.RayipySystemError(
                f"no word from the head at {self.head_address} for {silent:.0f} s"
                + (f" (it was not restarted within head_restart_wait_s={wait:g} s)" if wait
                   else "")))
            return False
        return True

    def _handle(self, message: Message, source: Any) -> None:
        """Run the handler of one message that came (from the head, a data port or a
        direct connection); a handler's error is logged and counted, never fatal."""
        handler = self._handlers.get(message.kind)
        if handler is None:
            source.dropped["unexpected kind"] += 1
            return
        try:
            handler(message.body)
        except Exception:
            source.dropped["handler error"] += 1
            self._faults.handler_failed(message.kind, None)

    def _lose(self, error: BaseException) -> None:
        self.lost = error
        payload = errors.capture_system_error(error)
        for fn in self.objects.fail_all_pending(payload):
            run_callback(fn)
        self.head.fail_requests(error)
        self._session_checked.set()
        if not self._connected.is_set():
            self._connect_error = error
            self._connected.set()

    # -- handlers (I/O thread) --------------------------------------------------------------------
    def _on_welcome(self, body: Welcome) -> None:
        previous, self.welcome = self.welcome, body
        self._head_away = False
        if previous is not None and previous.info.get("head_started") != body.info.get(
                "head_started"):
            self._head_restarted()
        self._connected.set()

    def _head_restarted(self) -> None:
        """We registered again with a head that restarted: the tasks we gave the old
        one go to it again within their retries, or fail saying so (actor calls and
        leased tasks went straight to their workers, which live on: they carry on)."""
        log.warning("the head at %s restarted; this process registered with it again, and "
                    "sends it again the tasks it held that have retries left",
                    self.head_address)
        error = exceptions.HeadRestartedError(
            f"the head at {self.head_address} restarted while this task was in its hands "
            f"(queued or running), and it had no retries left (max_retries), or it created "
            f"an actor: it may or may not have run; submit it again if that is safe")
        # Our functions first: the ones sent just before it died may never have reached
        # its journal, and the tasks sent again below need them (a function the head
        # has already is not written again).
        for function_id, pickled in list(self._function_bytes.items()):
            self.head.outbox.append((Kind.FUNCTION, (function_id, pickled)))
        with self._owner_lock:
            callbacks = self._carry_out(self.owner.head_restarted(error))
        self.waker.wake()
        _run_all(callbacks)

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
        if len(body) > 1 and body[1]:   # the head dropped our session: what we lost
            self._lose(exceptions.SessionLostError(body[1]))
        else:
            self._lose(exceptions.RayipySystemError(f"the cluster shut down ({body[0]})"))
        self._stopping = True

    def _on_log(self, body: tuple) -> None:
        _owner, lines, label = body
        self.task_logs.received(lines, label, time.monotonic())

    def _on_task_done(self, body: tuple) -> None:
        self._results(body[0])

    def _on_call_done(self, body: tuple) -> None:
        results, borrows = body
        # Registrations first: the results release pins that the borrows must outlive.
        for object_id, delta, borrower in borrows:
            self.access.route_borrow(object_id, delta, borrower)
        self._results(results)

    def _on_generator_item(self, body: tuple) -> None:
        items, borrows = body
        # Registrations first, as for a call's reply: the item holds what they count.
        for object_id, delta, borrower in borrows:
            self.access.route_borrow(object_id, delta, borrower)
        callbacks = []
        for item, index in items:
            callbacks.extend(self.streams.on_item(item, index))
        _run_all(callbacks)

    def _on_results(self, body: tuple) -> None:
        worker_id, results = body
        self._results(results)
        self.send(Kind.RESULTS_RECEIVED,
                  (worker_id, [(r.task_id, r.duration, r.status) for r in results]))

    def _results(self, results: list[TaskResult]) -> None:
        now = time.monotonic()
        with self._owner_lock:
            callbacks = []
            for result in results:
                callbacks.extend(self._carry_out(self.owner.finished(result, now)))
        _run_all(callbacks)

    def _on_actor_location(self, body: tuple) -> None:
        actor_id, address, why, restarting = body
        if address:
            self._owner_event(self.owner.actor_located, actor_id, address)
        else:
            with self._owner_lock:
                last = self.owner.actors.address_of(actor_id)
            if last:
                self.direct.read_now(last)   # its answers sent before it died count first
            self._owner_event(self.owner.actor_gone, actor_id, why, restarting)

    def _on_lease(self, body: tuple) -> None:
        request, worker, address = body
        self._owner_event(self.owner.lease_granted, request, worker, address, time.monotonic())

    def _on_lease_ended(self, body: tuple) -> None:
        worker, why = body
        if why:   # it died: retry, as the head would have
            self._owner_event(self.owner.lease_lost, worker, why)
            # A dead worker borrows nothing. Counts it registered in the reply of a call
            # it never finished are lost, while its releases (sent through the head,
            # which forwards them before it tells us) arrived: forget what it left.
            self.access.carry_out(self.objects.drop_borrower_everywhere(worker))
        else:     # the head wants it back: we return it once nothing is in flight
            self._owner_event(self.owner.lease_revoked, worker)


def _run_all(callbacks: list[Callable[[], None]]) -> None:
    for fn in callbacks:
        run_callback(fn)


def _slot(value: Any, deps: list) -> Any:
    if isinstance(value, ObjectRef):
        deps.append(value)
        return DepSlot(len(deps) - 1)
    return value


def _ip_toward(head_address: str) -> str:
    """Where processes on the head's network reach us: our address on the route to it."""
    try:
        host, port = connection.parse_address(head_address)
        return "127.0.0.1" if connection.is_loopback(host) else connection.local_ip_toward(host, port)
    except (OSError, ValueError):
        return "127.0.0.1"
