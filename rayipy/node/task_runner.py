"""Running one task or actor call in a worker: its function, arguments, retries, result.

``TaskRunner.run`` is what the worker's main thread (and a threaded actor's threads) does
with a spec: load the function (cached), unpickle the arguments and fetch large ones,
call it (again on exceptions it was told to retry), and pickle the return values into a
``TaskResult``; an exception becomes an ``ERROR`` result. ``run_async`` does the same on
an async actor's event loop. What runs next, and where a result goes, the worker decides
(``rayipy.core.worker_state``).

Cancelling a running task sends SIGINT to the main thread, so it is interrupted even
inside ``time.sleep`` or a blocking ``get``. ``interrupt`` is that signal's handler: it
raises only while the code of the task the cancel was meant for runs.

A generator task (``num_returns="streaming"`` or ``"dynamic"``) is iterated inside that
same interruptible stretch (``stream_items``): each value is packed as a return value
is (a large one into the node's store) and handed to ``send_item`` at once, and the
task's own result is the number of items sent. An exception inside the generator is
sent as the item at its position.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import time
from typing import Any, Callable

from rayipy import exceptions
from rayipy.core.generators import MAX_ITEMS, item_id
from rayipy.core.objects import owner_of
from rayipy.core import task_context
from rayipy.core.task_context import CURRENT_TASK
from rayipy.node import actor_exit, gpus, lifetime
from rayipy.node.streams import generator_mode
from rayipy.protocol import errors, serialization
from rayipy.protocol.messages import CANCELLED, ERROR, OK, DepSlot, FetchDep, TaskResult, TaskSpec

# The caller of the direct call this thread runs, if it is one: borrow registrations made
# while it runs travel with its reply (``Worker.borrow_in_reply``).
DIRECT_CALLER: contextvars.ContextVar[Any] = contextvars.ContextVar("rayipy_caller",
                                                                   default=None)

# The arguments of a call without any, as every caller pickles them
# (``serialization.NO_ARGUMENTS``): compared, not unpickled, so a no-argument call skips
# ``pickle.loads`` and the tuple and dict it would build.
NO_ARGUMENTS = serialization.NO_ARGUMENTS.data
# The payload of ``None``, the most common return value, made once: a Payload is immutable.
# (Return ids are the task id and a 2-byte index, as ``Runtime.submit`` makes them.)
NONE_PAYLOAD = serialization.dumps(None)[0]
# Builds a TaskResult without the NamedTuple's own ``__new__`` (Python code): per task only.
_make = tuple.__new__


class TaskRunner:
    """Runs specs in this process; holds the functions loaded and the actor served."""

    def __init__(self, runtime: Any, where: str, code_done: Callable[[bytes], None],
                 became_actor: Callable[[TaskSpec, Any], None]) -> None:
        self.runtime = runtime                  # for fetch_value and route_borrow
        self.where = where
        self.code_done = code_done              # a task's code returned (before packing)
        self.became_actor = became_actor        # the constructor returned this instance
        self.functions: dict[bytes, Any] = {}
        self.pickled_functions: dict[bytes, bytes] = {}   # filled by the I/O thread
        self.actor: Any = None                  # the actor instance this worker serves
        self.actor_error: BaseException | None = None    # why its constructor failed
        self.cancel_requested: bytes | None = None
        self.interruptible: bytes | None = None  # the task whose code runs right now
        # Why this worker's runtime_env could not be set up: every task fails with it.
        self.env_error: BaseException | None = None
        # Where a generator task's items go: set by the worker (its caller's connection,
        # or the head); (spec, item as a one-value TaskResult, index from 1).
        self.send_item: Callable[[TaskSpec, TaskResult, int], None] | None = None

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
            task_context.function_names[spec.function_id] = (
                f"{getattr(fn, '__module__', '?')}."
                f"{getattr(fn, '__qualname__', getattr(fn, '__name__', '?'))}")
        return fn

    def callable_for(self, spec: TaskSpec) -> Any:
        """The function a task runs: a remote function, an actor's class, or its method."""
        if not spec.actor_id or spec.method == "__init__":
            return self.function(spec)
        if self.actor_error is not None:
            raise self.actor_error  # every call fails as the constructor did
        if spec.method == actor_exit.TERMINATE_METHOD:
            return actor_exit.terminate   # every actor has it, as in Ray
        return getattr(self.actor, spec.method)

    def prepare(self, spec: TaskSpec) -> tuple:
        fn = self.callable_for(spec)
        payload = spec.args
        if payload.data == NO_ARGUMENTS and not payload.buffers:
            return fn, (), {}   # a fresh dict each call: the function may keep or change it
        args, kwargs = serialization.loads(payload)
        if spec.dep_values:
            load = self.runtime.access.load
            values = [self.runtime.fetch_value(p.object_id) if type(p) is FetchDep
                      else load(p) for p in spec.dep_values]
            if type(args) is DepSlot:   # large arguments, held by the caller (client.submit)
                args, kwargs = values[args.index]
            args = [values[a.index] if type(a) is DepSlot else a for a in args]
            kwargs = {k: values[v.index] if type(v) is DepSlot else v for k, v in kwargs.items()}
        return fn, args, kwargs

    def call_with_retries(self, spec: TaskSpec) -> Any:
        """Call the task's function; rerun it on exceptions it was told to retry."""
        if self.env_error is not None:
            raise self.env_error
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

    def run(self, spec: TaskSpec, caller: Any) -> TaskResult:
        """Run a task on this thread. ``caller``: its direct caller (None: the head's)."""
        start = time.perf_counter()
        token = CURRENT_TASK.set(spec)
        caller_token = DIRECT_CALLER.set(caller)
        gpu_ids = dict(spec.options).get("gpu_ids") if spec.options else None
        shown = gpus.use(gpu_ids) if gpu_ids is not None else None
        try:
            try:
                self.interruptible = spec.task_id
                try:
                    if self.cancel_requested == spec.task_id:
                        # Its SIGINT came before it could be interrupted, and was dropped.
                        raise KeyboardInterrupt
                    value = self.call_with_retries(spec)
                    if spec.options and generator_mode(spec.options):
                        value = self.stream_items(spec, value)
                finally:
                    self.interruptible = None
                if spec.method == "__init__":
                    self.actor = value
                    self.became_actor(spec, value)
                    value = None
            finally:
                self.code_done(spec.task_id)
                CURRENT_TASK.reset(token)
                DIRECT_CALLER.reset(caller_token)
                if shown is not None and spec.method != "__init__":
                    gpus.restore(shown)  # an actor keeps its devices; a task gives them back
            return self.pack_returns(spec, value, time.perf_counter() - start)
        except KeyboardInterrupt as e:
            if self.cancel_requested == spec.task_id:
                self.cancel_requested = None
                return self.cancelled_result(spec)
            # Nobody cancelled it: the task raised it itself, which is its error.
            return self.error_result(spec, e, start)
        except lifetime.Stopping:
            raise   # the worker is being stopped: no result, the task is retried elsewhere
        except BaseException as e:  # noqa: BLE001 -- a task's error is its result
            return self.error_result(spec, e, start)

    async def run_async(self, spec: TaskSpec) -> TaskResult:
        """A call of an async actor, on its event loop; sync methods run there directly."""
        start = time.perf_counter()
        CURRENT_TASK.set(spec)  # each asyncio task has its own context
        try:
            fn, args, kwargs = self.prepare(spec)
            value = fn(*args, **kwargs)
            if spec.options and generator_mode(spec.options):
                if inspect.isasyncgen(value):
                    value = await self.stream_async_items(spec, value)
                else:
                    value = self.stream_items(spec, value)
            elif inspect.isawaitable(value):
                value = await value
            return self.pack_returns(spec, value, time.perf_counter() - start)
        except lifetime.Stopping:
            raise
        except BaseException as e:  # noqa: BLE001 -- a call's error is its result
            return self.error_result(spec, e, start)

    def stream_items(self, spec: TaskSpec, generator: Any) -> int:
        """Run a generator task's generator, sending each value as it comes; returns how
        many items were sent (an exception it raised is the last)."""
        if not inspect.isgenerator(generator):
            raise TypeError(f"{spec.name!r} was called with num_returns="
                            f"{generator_mode(spec.options)!r} but returned "
                            f"{type(generator).__name__}, not a generator: write it with "
                            f"`yield`, or use an int num_returns")
        index = 0
        try:
            for value in generator:
                index += 1
                self.send_one(spec, index, value)
        except (KeyboardInterrupt, lifetime.Stopping):
            # Cancelled, or the worker stops: no count, the task's end says why. The
            # interrupt may have landed while an item was sent, outside the generator:
            # close it now, so that its own `finally` runs, not at garbage collection.
            with contextlib.suppress(Exception):
                generator.close()
            raise
        except Exception as e:  # noqa: BLE001 -- the generator's error is its next item
            index += 1
            self.send_error(spec, index, e)
        return index

    async def stream_async_items(self, spec: TaskSpec, generator: Any) -> int:
        """``stream_items`` for an async generator (an async actor's method)."""
        index = 0
        try:
            async for value in generator:
                index += 1
                self.send_one(spec, index, value)
        except (KeyboardInterrupt, lifetime.Stopping):
            raise
        except Exception as e:  # noqa: BLE001 -- the generator's error is its next item
            index += 1
            self.send_error(spec, index, e)
        return index

    def send_one(self, spec: TaskSpec, index: int, value: Any) -> None:
        """Pack one yielded value as a return value is packed, and send it."""
        if index > MAX_ITEMS:
            raise ValueError(f"{spec.name!r} yielded more than {MAX_ITEMS} values")
        oid = item_id(spec.task_id, index)
        payload, refs = serialization.dumps(value, f"value {index} yielded by {spec.name}",
                                            snapshot=False)
        kept = self.runtime.access.keep(oid, payload, spec.name) if payload.buffers else payload
        contains: tuple = ()
        if refs:
            owner = owner_of(spec.task_id)
            for ref in refs:
                if owner_of(ref.id) != owner:
                    self.runtime.route_borrow(ref.id, 1, owner)
            contains = (tuple(r.id for r in refs),)
        assert self.send_item is not None
        self.send_item(spec, _make(TaskResult, (spec.task_id, OK, (kept,), 0.0, self.where,
                                                contains)), index)

    def send_error(self, spec: TaskSpec, index: int, error: BaseException) -> None:
        payload = errors.capture_task_error(_strip_our_frames(error), spec.name, self.where)
        assert self.send_item is not None
        self.send_item(spec, TaskResult(spec.task_id, ERROR, (payload,), 0.0, self.where, ()),
                       index)

    def interrupt(self, signum: int, frame: Any) -> None:
        """SIGINT, sent for a cancel: interrupt only the task it was meant for. The signal
        races that task's end; arriving later it would hit the next task, or the loop
        between two tasks (losing the one just taken), so then it is dropped."""
        if self.cancel_requested is not None and self.cancel_requested == self.interruptible:
            raise KeyboardInterrupt

    def cancelled_result(self, spec: TaskSpec) -> TaskResult:
        error = exceptions.TaskCancelledError(spec.name, "interrupted while running")
        return TaskResult(spec.task_id, CANCELLED,
                          (errors.capture_system_error(error, spec.name),), 0.0, self.where, ())

    def error_result(self, spec: TaskSpec, error: BaseException, start: float) -> TaskResult:
        if spec.method == "__init__":
            self.actor_error = error
        payload = errors.capture_task_error(_strip_our_frames(error), spec.name, self.where)
        return TaskResult(spec.task_id, ERROR, (payload,), time.perf_counter() - start,
                          self.where, ())

    def pack_returns(self, spec: TaskSpec, value: Any, duration: float) -> TaskResult:
        """The task's result: its return value(s) pickled. Refs inside them are registered
        for the owner first (it will hold them inside the value)."""
        # Pickled now, a snapshot: the value is sent after the next task has started, and
        # that task may change an array this one returned (a buffer reused task to task).
        # A large one goes into the node's object store (``keep``: one copy), else its
        # buffers are copied here.
        if spec.num_returns == 1:
            # Most tasks: one value, with no ref inside. Kept short, it runs per task.
            if value is None:
                return _make(TaskResult, (spec.task_id, OK, (NONE_PAYLOAD,), duration,
                                          self.where, ()))
            payload, refs = serialization.dumps(value, f"return value 0 of {spec.name}",
                                                snapshot=False)
            kept = self.runtime.access.keep(spec.task_id + b"\x00\x00", payload, spec.name) \
                if payload.buffers else payload
            if not refs:
                return _make(TaskResult, (spec.task_id, OK, (kept,), duration, self.where, ()))
            payloads, inside = [kept], [refs]
        else:
            try:
                values = tuple(value)
            except TypeError:
                values = ()
            if len(values) != spec.num_returns:
                raise ValueError(f"task {spec.name!r} declared num_returns={spec.num_returns} "
                                 f"but returned {_count(value)}")
            payloads, inside = [], []
            keep = self.runtime.access.keep
            for i, v in enumerate(values):
                payload, refs = serialization.dumps(v, f"return value {i} of {spec.name}",
                                                    snapshot=False)
                payloads.append(keep(spec.task_id + i.to_bytes(2, "big"), payload, spec.name))
                inside.append(refs)
        owner = owner_of(spec.task_id)
        for refs in inside:
            for ref in refs:
                if owner_of(ref.id) != owner:
                    self.runtime.route_borrow(ref.id, 1, owner)
        contains = tuple(tuple(r.id for r in refs) for refs in inside)
        return TaskResult(spec.task_id, OK, tuple(payloads), duration, self.where,
                          contains if any(contains) else ())


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
    """Drop the runner's own frames from the top of the traceback, and frames that ask
    to be hidden (``__tracebackhide__``, as IPython and pytest do): users should see
    their code only."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None and (
            tb.tb_frame.f_code.co_filename == __file__
            or tb.tb_frame.f_locals.get("__tracebackhide__")):
        tb = tb.tb_next
    error.__traceback__ = tb
    return error
