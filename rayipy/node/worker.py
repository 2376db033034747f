"""A worker process: the main thread runs tasks, the runtime's I/O thread talks to the head.

Tasks arrive in batches (the head queues a few behind the running one so the worker
never waits for it between short tasks). The main thread runs them in order; results
go back through the I/O thread, batched when several finish close together.

Cancelling a running task sends SIGINT to the main thread, so it is interrupted even
inside ``time.sleep`` or a blocking ``get``; ``force=True`` kills the process instead.
What a task prints is captured and streamed to the process that submitted it.
"""

from __future__ import annotations

import argparse
import collections
import contextvars
import inspect
import io
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from rayipy import exceptions
from rayipy.dashboard.direct_work import DirectWork
from rayipy.node import gpus, lifetime
from rayipy.node.actor_host import make_host
from rayipy.node.client import PINNED, Runtime
from rayipy.node.data_port import is_large
from rayipy.node.direct import DirectInbox
from rayipy.transport.stream import StreamConnection
from rayipy.core.objects import owner_of
from rayipy.core.task_context import CURRENT_TASK
from rayipy.protocol import errors, serialization
from rayipy.protocol.kinds import Kind
from rayipy.protocol.messages import (CANCELLED, ERROR, OK, RETURNED, DepSlot, FetchDep, TaskResult,
                                      TaskSpec)

log = logging.getLogger("rayipy.worker")

# The caller of the direct call the main thread is running, if it is one.
DIRECT_CALLER: contextvars.ContextVar[StreamConnection | None] = contextvars.ContextVar(
    "rayipy_caller")

RESULT_BATCH_SECONDS = 0.005
LOW_QUEUE = 2
# Cancels kept for calls not here yet. Most are of calls that ended before the cancel came
# and never will come; a call still on its way is milliseconds behind its cancel, not
# thousands of cancels.
CANCELS_KEPT = 4096


class TaskOutput(io.TextIOBase):
    """sys.stdout / sys.stderr of a worker: text goes to the owner of the running task."""

    def __init__(self, worker: "Worker", stream: str) -> None:
        self.worker = worker
        self.stream = stream

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if text:
            self.worker.add_output(self.stream, text)
        return len(text)

    def flush(self) -> None:
        pass

    @property
    def encoding(self) -> str:
        return "utf-8"

    def isatty(self) -> bool:
        return False


class Worker:
    def __init__(self, runtime: Runtime, ip: str) -> None:
        self.runtime = runtime
        self.queue: collections.deque[TaskSpec] = collections.deque()
        self.lock = threading.Lock()            # guards queue and current
        # Calls straight from callers (actor calls); also where the main thread waits.
        self.inbox = DirectInbox(runtime.signer, ip)
        runtime.info["direct"] = self.inbox.address
        self.reply_to: dict[bytes, StreamConnection] = {}   # direct call's task id -> its caller
        self.owner_addresses: dict[bytes, str] = {}   # owner -> its data port (from EXECUTE)
        self.deferred: list[TaskSpec] = []      # calls that came before the constructor ran
        self.cancelled: dict[bytes, None] = {}  # cancelled before they reached us (remember)
        self.host_done: collections.deque[TaskResult] = collections.deque()
        self.functions: dict[bytes, Any] = {}
        self.pickled_functions: dict[bytes, bytes] = {}
        self.current: TaskSpec | None = None
        self.current_since = 0.0                # epoch seconds, for the dashboard
        self.direct_work = DirectWork()         # calls that bypass the head, for the dashboard
        self.host_in_flight = 0                 # calls handed to a concurrent actor's host
        self.actor: Any = None                  # the actor instance this worker serves
        self.actor_error: BaseException | None = None   # why its constructor failed
        self.serves_actor = False               # set by the first actor spec we receive
        self.host: Any = None                   # runs a concurrent actor's calls (actor_host)
        self.cancel_requested: bytes | None = None
        self.interruptible: bytes | None = None   # the task whose code runs right now
        self.results: list[TaskResult] = []
        self.batch_started = 0.0
        self.output: dict[tuple, list] = {}     # (owner, stream, task name, task id) -> [text]
        self.output_lock = threading.Lock()
        self.label = f"pid={os.getpid()}"
        self.where = (f"node {runtime.node_id.hex()[:8]} ({runtime.info.get('ip', '?')}), "
                      f"worker pid {os.getpid()}")
        runtime.attach_worker(self)

    def handlers(self) -> dict:
        return {Kind.EXECUTE: self.on_execute, Kind.CANCEL: self.on_cancel,
                Kind.STEAL: self.on_steal}

    def while_blocked(self) -> None:
        self.return_direct_tasks()

    # -- I/O thread side ----------------------------------------------------------------
    def on_execute(self, body: tuple) -> None:
        specs, functions, owner_addresses = body
        self.owner_addresses.update(owner_addresses)
        for function_id, data in functions:
            self.pickled_functions[function_id] = data
        if specs and specs[0].actor_id:
            self.serves_actor = True
        with self.lock:
            if self.runtime.blocked and not self.serves_actor:
                # Sent before the head heard that our task blocks: they would wait behind it.
                self.runtime.send(Kind.RETURNED, ([s.task_id for s in specs],))
                return
            self.queue.extend(specs)
        self.inbox.waker.wake()

    def on_cancel(self, body: tuple) -> None:
        task_id, force = body
        with self.lock:
            for waiting in (self.queue, self.deferred):
                for spec in waiting:
                    if spec.task_id == task_id:
                        waiting.remove(spec)
                        self.reply_to.pop(task_id, None)  # answered through the head instead
                        self.direct_work.dropped(task_id)
                        self.report(self.cancelled_result(spec, "cancelled before it started"))
                        return
            running = self.current is not None and self.current.task_id == task_id
            if not running:
                # Not here yet: a direct call may still sit in the inbox. Cancel it on arrival.
                remember(self.cancelled, task_id)
                return
        if force:
            os.kill(os.getpid(), signal.SIGKILL)
        self.cancel_requested = task_id
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    def on_steal(self, body: tuple) -> None:
        given = self.take_queued(body[0])
        self.runtime.send(Kind.RETURNED, (given,))

    def hand_back_queued(self) -> list[bytes]:
        """Our task blocks in get: give back what waits behind it, so it can run elsewhere.

        Tasks the head sent go back to the head (the ids returned); tasks a lease holder
        sent go back to it. An actor's calls must run here, in order: they stay."""
        if self.serves_actor:
            return []
        self.return_direct_tasks()
        return self.take_queued(len(self.queue))

    def return_direct_tasks(self) -> None:
        """Main thread, while our task is blocked: hand leased tasks back to their sender."""
        for caller, (specs, functions) in self.inbox.drain():
            self.pickled_functions.update(functions)
            self.accept_calls(caller, specs)
        with self.lock:
            # A task sent to this worker by name must run here: it stays.
            direct = [s for s in self.queue if s.task_id in self.reply_to
                      and PINNED not in s.options]
            for spec in direct:
                self.queue.remove(spec)
        for spec in direct:
            self.finish(TaskResult(spec.task_id, RETURNED, (), 0.0, self.where, ()))
        if direct:
            self.inbox.flush()

    def take_queued(self, count: int) -> list[bytes]:
        with self.lock:
            taken, kept = [], []
            while self.queue and len(taken) < count:
                spec = self.queue.pop()
                if PINNED in spec.options:  # sent to this worker by name: it stays
                    kept.append(spec)
                else:
                    taken.append(spec.task_id)
            self.queue.extend(reversed(kept))
            return taken

    def flush_output(self, final: bool = False) -> None:
        """Send complete lines of task output; with ``final``, partial lines too."""
        with self.output_lock:
            chunks, self.output = self.output, {}
            by_owner: dict[bytes, list] = {}
            for key, parts in chunks.items():
                owner, stream, task, task_id = key
                text = "".join(parts)
                cut = len(text) if final else text.rfind("\n") + 1
                if cut < len(text):
                    self.output[key] = [text[cut:]]
                if cut:
                    # The task id lets the owner route the text (a notebook: to the cell
                    # that submitted the task).
                    by_owner.setdefault(owner, []).append((stream, text[:cut], task, task_id))
        for owner, lines in by_owner.items():
            self.runtime.send(Kind.LOG, (owner, lines, self.label))

    # -- main thread side -----------------------------------------------------------------
    def add_output(self, stream: str, text: str) -> None:
        spec = CURRENT_TASK.get(None) or self.current
        if spec is None:
            sys.__stderr__.write(text)
            return
        with self.output_lock:
            key = (owner_of(spec.task_id), stream, spec.name, spec.task_id)
            self.output.setdefault(key, []).append(text)

    def run_forever(self) -> None:
        while True:
            try:
                if not self.step():
                    return
            except KeyboardInterrupt:
                # A cancel that arrived just after its task ended: nothing to interrupt.
                self.cancel_requested = None

    def step(self) -> bool:
        """Run the next task or call, if any; False when the worker should exit."""
        if self.queue or self.results or self.inbox.has_replies() or self.host_done:
            calls = self.inbox.drain()
        else:
            calls = self.inbox.wait(1000)
        if self.runtime.stopped:
            return False
        for caller, (specs, functions) in calls:
            self.pickled_functions.update(functions)
            self.accept_calls(caller, specs)
        while self.host_done:
            self.host_in_flight -= 1
            self.finish(self.host_done.popleft())
        with self.lock:
            spec = self.queue.popleft() if self.queue else None
            if spec is not None and spec.task_id in self.cancelled:
                del self.cancelled[spec.task_id]
                self.finish(self.cancelled_result(spec, "cancelled before it started"))
                spec = None
            # Set under the lock: a cancel must find the task either queued or running.
            # Since first, then current: the heartbeat reads current first, so a new task
            # is never paired with the previous one's start time.
            self.current_since = time.time()
            self.current = spec
            more_waiting = bool(self.queue)
        if spec is not None and self.host is not None and spec.method != "__init__":
            self.current = None
            self.host_in_flight += 1
            self.host.submit(spec)  # a concurrent actor: its host hands back each result
        elif spec is not None:
            if not self.results and not self.inbox.has_replies():
                self.batch_started = time.perf_counter()
            self.finish(self.run(spec))
            if spec.method == "__init__":
                self.release_deferred()
        # Send at once when our queue runs low (latency, and the head refills it on each
        # result); otherwise in batches, which saves a wake-up and a message per task.
        if (self.results or self.inbox.has_replies()) and (
                len(self.queue) < LOW_QUEUE or not more_waiting
                or time.perf_counter() - self.batch_started > RESULT_BATCH_SECONDS):
            self.send_results()
        return True

    def accept_calls(self, caller: bytes, specs: list) -> None:
        """Calls that came straight from a caller (actor calls, or tasks on a lease): run
        here, answered on the same socket."""
        if specs[0].actor_id:
            self.serves_actor = True
        for spec in specs:
            self.reply_to[spec.task_id] = caller
        self.direct_work.accepted(specs)
        constructed = (self.actor is not None or self.actor_error is not None
                       or not specs[0].actor_id)
        with self.lock:
            if constructed:
                self.queue.extend(specs)
            else:  # the head's message with the constructor is still on its way
                self.deferred.extend(specs)

    def release_deferred(self) -> None:
        with self.lock:
            self.queue.extendleft(reversed(self.deferred))
            self.deferred = []

    def finish(self, result: TaskResult) -> None:
        caller = self.reply_to.pop(result.task_id, None)
        if caller is None:
            self.results.append(result)
        else:
            self.inbox.add_reply(caller, result)
            self.direct_work.finished(result)

    def heartbeat_body(self) -> tuple:
        """I/O thread: what ran here without the head seeing it (for the dashboard)."""
        return self.direct_work.heartbeat(self.current, self.current_since, self.host_in_flight)

    def host_finished(self, result: TaskResult) -> None:
        """From a concurrent actor's threads: the main thread sends it."""
        self.host_done.append(result)
        self.inbox.waker.wake()

    def borrow_in_reply(self, object_id: bytes, delta: int, borrower: bytes) -> bool:
        """While running a direct call, borrow registrations travel with its reply."""
        caller = DIRECT_CALLER.get(None)
        if caller is None:
            return False
        self.inbox.add_borrow(caller, (object_id, delta, borrower))
        return True

    def send_results(self) -> None:
        results, self.results = self.results, []
        self.flush_output(final=True)
        via_head = []
        for result in results:
            # Large values go straight to their owner, not through the head (data_port.py).
            address = self.owner_addresses.get(owner_of(result.task_id))
            if address and is_large(result):
                self.runtime.send_to(address, Kind.RESULTS, (self.runtime.process_id, [result]))
            else:
                via_head.append(result)
        if via_head:
            self.runtime.send(Kind.TASK_DONE, (via_head,))
        self.inbox.flush()

    def report(self, result: TaskResult) -> None:
        self.runtime.send(Kind.TASK_DONE, ([result],))

    def cancelled_result(self, spec: TaskSpec, detail: str) -> TaskResult:
        error = exceptions.TaskCancelledError(spec.name, detail)
        return TaskResult(spec.task_id, CANCELLED, (errors.capture_system_error(error, spec.name),),
                          0.0, self.where, ())

    def function(self, spec: TaskSpec) -> Any:
        fn = self.functions.get(spec.function_id)
        if fn is None:
            try:
                fn = serialization.loads_function(self.pickled_functions[spec.function_id])
            except ImportError as e:
                raise type(e)(
                    f"the worker could not load {spec.name!r}: {e}. Workers import a function's "
                    f"module by name: make it importable on every node (install it or put it "
                    f"on PYTHONPATH), or define the function in __main__ or a notebook cell, "
                    f"which is shipped by value.") from None
            self.functions[spec.function_id] = fn
            del self.pickled_functions[spec.function_id]
        return fn

    def callable_for(self, spec: TaskSpec) -> Any:
        """The function a task runs: a remote function, an actor's class, or its method."""
        if not spec.actor_id or spec.method == "__init__":
            return self.function(spec)
        if self.actor_error is not None:
            raise self.actor_error  # every call fails as the constructor did
        return getattr(self.actor, spec.method)

    def prepare(self, spec: TaskSpec) -> tuple:
        fn = self.callable_for(spec)
        args, kwargs = serialization.loads(spec.args)
        if spec.dep_values:
            values = [self.runtime.fetch_value(p.object_id) if type(p) is FetchDep
                      else serialization.loads(p) for p in spec.dep_values]
            if type(args) is DepSlot:   # large arguments, held by the caller (client.submit)
                args, kwargs = values[args.index]
            args = [values[a.index] if type(a) is DepSlot else a for a in args]
            kwargs = {k: values[v.index] if type(v) is DepSlot else v for k, v in kwargs.items()}
        return fn, args, kwargs

    def become_actor(self, spec: TaskSpec, instance: Any) -> None:
        self.actor = instance
        if self.host is None:  # a restart reuses no host: this is a new process
            self.host = make_host(type(instance), dict(spec.options), self.run, self.run_async,
                                  self.host_finished)

    def call_with_retries(self, spec: TaskSpec) -> Any:
        """Call the task's function; rerun it on exceptions it was told to retry."""
        retry_on = dict(spec.options).get("retry_exceptions") if spec.options else None
        attempt = spec.attempt
        while True:
            fn, args, kwargs = self.prepare(spec)  # fresh arguments for every attempt
            try:
                return fn(*args, **kwargs)
            except Exception as e:
                if retry_on is None or attempt >= spec.max_retries or not _retryable(e, retry_on):
                    raise
                attempt += 1

    def run(self, spec: TaskSpec) -> TaskResult:
        start = time.perf_counter()
        token = CURRENT_TASK.set(spec)
        caller = DIRECT_CALLER.set(self.reply_to.get(spec.task_id))
        gpu_ids = dict(spec.options).get("gpu_ids") if spec.options else None
        shown = gpus.use(gpu_ids) if gpu_ids is not None else None
        try:
            try:
                self.interruptible = spec.task_id
                try:
                    value = self.call_with_retries(spec)
                finally:
                    self.interruptible = None
                if spec.method == "__init__":
                    self.become_actor(spec, value)
                    value = None
            finally:
                self.current = None
                CURRENT_TASK.reset(token)
                DIRECT_CALLER.reset(caller)
                if shown is not None and spec.method != "__init__":
                    gpus.restore(shown)  # an actor keeps its devices; a task gives them back
            return self.pack_returns(spec, value, time.perf_counter() - start)
        except KeyboardInterrupt:
            if self.cancel_requested == spec.task_id:
                self.cancel_requested = None
                return self.cancelled_result(spec, "interrupted while running")
            return self.error_result(spec, exceptions.TaskCancelledError(spec.name, "interrupted"), start)
        except lifetime.Stopping:
            raise   # the worker is being stopped: no result, the task is retried elsewhere
        except BaseException as e:  # noqa: BLE001 -- a task's error is its result
            return self.error_result(spec, e, start)

    def interrupt(self, signum: int, frame: Any) -> None:
        """SIGINT, sent by ``on_cancel``: interrupt only the task it was meant for. The
        signal races that task's end; arriving later it would hit the next task, or the
        loop between two tasks (losing the one just taken), so then it is dropped."""
        if self.cancel_requested is not None and self.cancel_requested == self.interruptible:
            raise KeyboardInterrupt

    async def run_async(self, spec: TaskSpec) -> TaskResult:
        """A call of an async actor, on its event loop; sync methods run there directly."""
        start = time.perf_counter()
        CURRENT_TASK.set(spec)  # each asyncio task has its own context
        try:
            fn, args, kwargs = self.prepare(spec)
            value = fn(*args, **kwargs)
            if inspect.isawaitable(value):
                value = await value
            return self.pack_returns(spec, value, time.perf_counter() - start)
        except lifetime.Stopping:
            raise
        except BaseException as e:  # noqa: BLE001 -- a call's error is its result
            return self.error_result(spec, e, start)

    def error_result(self, spec: TaskSpec, error: BaseException, start: float) -> TaskResult:
        if spec.method == "__init__":
            self.actor_error = error
        payload = errors.capture_task_error(_strip_our_frames(error), spec.name, self.where)
        return TaskResult(spec.task_id, ERROR, (payload,), time.perf_counter() - start, self.where, ())

    def pack_returns(self, spec: TaskSpec, value: Any, duration: float) -> TaskResult:
        if spec.num_returns == 1:
            values = (value,)
        else:
            try:
                values = tuple(value)
            except TypeError:
                values = ()
            if len(values) != spec.num_returns:
                raise ValueError(f"task {spec.name!r} declared num_returns={spec.num_returns} "
                                 f"but returned {_count(value)}")
        payloads, contains = [], []
        owner = owner_of(spec.task_id)
        for i, v in enumerate(values):
            # A snapshot: the value is sent after the next task has started, and that task
            # may change an array this one returned (a buffer reused from task to task).
            payload, refs = serialization.dumps(v, f"return value {i} of {spec.name}")
            payloads.append(payload)
            contains.append(tuple(r.id for r in refs))
            for ref in refs:
                # The receiver will hold this ref inside its value: register it first.
                if owner_of(ref.id) != owner:
                    self.runtime.route_borrow(ref.id, 1, owner)
        return TaskResult(spec.task_id, OK, tuple(payloads), duration, self.where,
                          tuple(contains) if any(contains) else ())


def remember(ids: dict, item: bytes, keep: int = CANCELS_KEPT) -> None:
    """Add ``item`` to ``ids`` (a dict used as an ordered set), forgetting the oldest
    beyond ``keep``."""
    ids[item] = None
    if len(ids) > keep:
        del ids[next(iter(ids))]


def _retryable(error: Exception, retry_on: Any) -> bool:
    """``retry_exceptions``: True for any exception, or pickled exception classes."""
    if retry_on is True:
        return True
    return isinstance(error, serialization.loads_inband(retry_on))


def _count(value: Any) -> str:
    try:
        return f"{len(value)} values"
    except TypeError:
        return f"a single {type(value).__name__}"


def _strip_our_frames(error: BaseException) -> BaseException:
    """Drop the worker's own frames from the top of the traceback, and frames that ask
    to be hidden (``__tracebackhide__``, as IPython and pytest do): users should see
    their code only."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None and (
            tb.tb_frame.f_code.co_filename == __file__
            or tb.tb_frame.f_locals.get("__tracebackhide__")):
        tb = tb.tb_next
    error.__traceback__ = tb
    return error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rayipy.node.worker")
    parser.add_argument("--head", required=True)
    parser.add_argument("--node-id", required=True)
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--ip", default="127.0.0.1")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("RAYIPY_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s worker %(levelname)s %(message)s")
    lifetime.die_with_parent()
    lifetime.exit_on_sigterm()
    lifetime.precise_timers()
    key = bytes.fromhex(os.environ.pop("RAYIPY_CLUSTER_KEY"))
    runtime = Runtime("worker", args.head, key, node_id=bytes.fromhex(args.node_id),
                      process_id=bytes.fromhex(args.worker_id), info={"ip": args.ip})
    worker = Worker(runtime, args.ip)
    signal.signal(signal.SIGINT, worker.interrupt)
    sys.stdout = TaskOutput(worker, "stdout")
    sys.stderr = TaskOutput(worker, "stderr")
    try:
        runtime.start()
        worker.run_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        runtime.close()
        worker.inbox.close()
    return 0


if __name__ == "__main__":
    # `python -m rayipy.node.worker` runs this file as the module `__main__`. Run main()
    # of the module imported under its own name instead, so nothing here exists twice
    # (a second copy is how get_runtime_context() once read an empty task context).
    from rayipy.node import worker as _worker
    sys.exit(_worker.main())
