"""Every exception rayipy raises, in one module (Ray's module name).

Errors are named by cause: a task's own exception (TaskError), the caller's waiting ran
out (GetTimeoutError), somebody cancelled the task (TaskCancelledError), the process
running it died (WorkerCrashedError), an actor is gone (ActorDiedError), a value that
arrived would not unpickle (DeserializationError). docs/failures.md says which one each
failure gives, stage by stage.

A task's exception re-raises on the caller as an instance of both TaskError and the
original exception class, so ``except ValueError`` keeps working around ``get``.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, TypeVar, cast

_E = TypeVar("_E", bound=BaseException)


class RayipyError(Exception):
    """Base class of every error raised by rayipy itself."""


class RayipySystemError(RayipyError):
    """The cluster could not do what was asked (a process is unreachable, a protocol error)."""


class SessionLostError(RayipySystemError):
    """The head ended this driver's session: the driver was unreachable (stopped, asleep,
    cut off) for longer than the grace period. The message says what was lost."""


class HeadRestartedError(RayipySystemError):
    """The head restarted while it held this task (queued or running): it may or may not
    have run. Submit it again."""


class NotInitializedError(RayipyError, RuntimeError):
    """An API call that needs a cluster was made before ``rayipy.init()``."""


class SerializationError(RayipyError, TypeError):
    """A value (an argument, a result, a function) could not be pickled; the message names
    the part that failed and says why. A TypeError, as pickling's own errors are."""


class AuthenticationError(RayipyError, ConnectionError):
    """The cluster refused our signature: the password (cluster key) is wrong."""


class ClusterNotFoundError(RayipySystemError, ConnectionError):
    """No rayipy cluster there: nothing answers at the address, or ``init(address="auto")``
    found none started on this machine by ``rayipy start``."""


class ClusterLaunchError(RayipySystemError):
    """A launcher (``rayipy.cluster``: SSH, Slurm) could not start or stop its cluster: the
    message names the host or job and quotes what ``ssh``, ``sbatch`` or ``rayipy start``
    said."""


class ProtocolVersionError(RayipyError):
    """A peer speaks another major version of the wire protocol."""


class GetTimeoutError(RayipyError, TimeoutError):
    """``get`` or ``ObjectRef.result`` ran out of time before the value was ready."""


class TaskCancelledError(RayipyError):
    """The task was cancelled with ``rayipy.cancel`` before it produced a value."""

    def __init__(self, task_name: str = "", detail: str = "") -> None:
        self.task_name = task_name
        msg = f"Task {task_name!r} was cancelled" if task_name else "Task was cancelled"
        super().__init__(msg + (f": {detail}" if detail else "."))

    def __reduce__(self) -> tuple[Callable[..., TaskCancelledError], tuple[Any, ...]]:
        return (_rebuild_plain, (type(self), self.args, self.__dict__))


class WorkerCrashedError(RayipyError):
    """The process running the task died (exit code or signal in the message)."""


class TaskUnschedulableError(RayipyError):
    """No live node could ever run the task (or create the actor): it waited
    ``unschedulable_task_timeout_s`` for one to join (the text names what is missing)."""


class ActorUnschedulableError(TaskUnschedulableError):
    """No live node could ever create the actor (its creation raises this; its calls
    ``ActorDiedError`` saying why)."""


class RayActorError(RayipyError):
    """Something went wrong with an actor: the base of ``ActorDiedError``, as in Ray."""


class ActorDiedError(RayActorError):
    """The actor is dead: killed, crashed, or its constructor failed."""


class ActorAlreadyExistsError(RayipyError, ValueError):
    """An actor of that name already lives in that namespace (``get_if_exists=True``
    returns it instead)."""


class TaskPlacementGroupRemoved(RayipyError):
    """The task waited for a placement group that was removed."""


class ObjectLostError(RayipyError):
    """The object's owner is gone, so its value can no longer be fetched."""


class ObjectStoreFullError(RayipyError):
    """A value could not be stored: larger than the node's object store, or no room left
    after evicting and spilling what could be (the text says what holds the store)."""


class OwnerDiedError(ObjectLostError):
    """The process that created the object (its owner) exited."""


class RuntimeEnvSetupError(RayipyError):
    """A task's ``runtime_env`` could not be set up on its node (a failed ``pip install``,
    a package that could not be fetched): the text carries the installer's own output."""


class RaySystemError(RayipySystemError):
    """Ray's name for system errors, kept for programs written for Ray."""


class DeserializationError(RaySystemError):
    """A value arrived but could not be unpickled here (its class is missing, or its
    ``__setstate__``/``__reduce__`` raised): the message names the object and the task
    that made it; the original error is ``__cause__``."""

    def __init__(self, object_id: str = "", task_name: str = "", detail: str = "") -> None:
        self.object_id = object_id
        self.task_name = task_name
        what = f"ObjectRef({object_id})" if object_id else "a value"
        made_by = f" (the result of task {task_name!r})" if task_name else ""
        super().__init__(f"could not unpickle {what}{made_by}: {detail}")

    def __reduce__(self) -> tuple[Callable[..., DeserializationError], tuple[Any, ...]]:
        return (_rebuild_plain, (type(self), self.args, self.__dict__))


# Ray's names for the same things, so `except ray.exceptions.RayTaskError` ports unchanged.
RayError = RayipyError


# Ray's other exception classes, so that programs written for Ray that name them in an
# ``except`` clause run. rayipy does not raise these: each says what it raises instead.
class ActorUnavailableError(RayActorError):
    """Not raised by rayipy: a call to an actor that is restarting waits for it (or, in
    flight when it died, fails with ``ActorDiedError``, or runs again with
    ``max_task_retries``)."""


class ActorPlacementGroupRemoved(RayipyError):
    """Not raised by rayipy: an actor whose placement group is removed is killed, and its
    calls raise ``ActorDiedError`` naming the group."""


class NodeDiedError(RayipyError):
    """Not raised by rayipy: a task lost with its node is retried, then raises
    ``WorkerCrashedError``; objects held only there raise ``ObjectLostError``."""


class LocalRayletDiedError(RayipyError):
    """Not raised by rayipy: a lost local node agent is restarted (see docs/failures.md)."""


class ObjectFetchTimedOutError(ObjectLostError):
    """Not raised by rayipy: a fetch from a gone node raises ``ObjectLostError``."""


class ObjectFreedError(ObjectLostError):
    """Not raised by rayipy (``free`` is not offered): see ``ObjectLostError``."""


class ObjectReconstructionFailedError(ObjectLostError):
    """Not raised by rayipy: a lost object that cannot be made again raises
    ``ObjectLostError``, saying why."""


class ReferenceCountingAssertionError(ObjectLostError, AssertionError):
    """Not raised by rayipy: see ``ObjectLostError``."""


class OutOfMemoryError(RayipyError):
    """Not raised by rayipy: a worker killed by the system's OOM killer raises
    ``WorkerCrashedError`` naming the signal."""


class OutOfDiskError(RayipyError):
    """Not raised by rayipy: a store that cannot spill raises ``ObjectStoreFullError``."""


class PendingCallsLimitExceeded(RayipyError):
    """Not raised by rayipy: ``max_pending_calls`` is refused when given."""


class AsyncioActorExit(RayipyError):
    """Not raised by rayipy: ``exit_actor()`` in an async actor ends it as in a plain one."""


class UnserializableException(RayipyError):
    """Not raised by rayipy: an exception that cannot be pickled reaches the caller as a
    ``TaskError`` carrying its type name, message and traceback."""


class RpcError(RayipyError):
    """Not raised by rayipy: a lost head raises ``RayipySystemError``."""


class CrossLanguageError(RayipyError):
    """Not raised by rayipy, which runs Python only."""


class ActorHandleNotFoundError(RayipyError, ValueError):
    """Not raised by rayipy: see ``ActorDiedError``."""


class ObjectRefStreamEndOfStreamError(RayipyError):
    """Not raised by rayipy: a generator's stream ends with ``StopIteration``."""


def _rebuild_plain(cls: type[_E], args: tuple[Any, ...], state: dict[str, Any]) -> _E:
    err = cls.__new__(cls)
    err.args = args
    err.__dict__.update(state)
    return err


class TaskError(RayipyError):
    """A task raised an exception; the original is ``cause``, its traceback in the message.

    Instances are made by :func:`as_task_error` and are also instances of the cause's
    class.
    """

    cause: BaseException | None
    remote_traceback: str
    function_name: str
    where: str

    def __str__(self) -> str:
        return format_task_error(self.function_name, self.where, self.remote_traceback)

    def _render_traceback_(self) -> list[str]:
        # IPython calls this to show a compact remote traceback instead of our local frames.
        return [f"\x1b[31m{type(self.cause).__name__}\x1b[0m raised in remote task "
                f"{self.function_name!r} ({self.where}):", self.remote_traceback.rstrip()]

    def __reduce__(self) -> tuple[Callable[..., TaskError], tuple[Any, ...]]:
        return (as_task_error, (self.cause, self.remote_traceback, self.function_name, self.where))


RayTaskError = TaskError

_subclass_cache: dict[type[BaseException], type[TaskError]] = {}
_subclass_lock = threading.Lock()


def format_task_error(function_name: str, where: str, remote_traceback: str) -> str:
    """A TaskError's message."""
    return f"task {function_name!r} failed on {where}, remote {remote_traceback.rstrip()}"


def _task_error_class(cause_cls: type[BaseException]) -> type[TaskError]:
    if not issubclass(cause_cls, Exception):
        # SystemExit, KeyboardInterrupt...: raised on the caller they would stop it (a
        # remote SystemExit would end the driver silently), not report the task's failure.
        return TaskError
    with _subclass_lock:
        cls = _subclass_cache.get(cause_cls)
        if cls is None:
            try:
                # type() makes a subclass of TaskError, which mypy cannot see.
                cls = cast("type[TaskError]",
                           type(f"TaskError({cause_cls.__name__})", (TaskError, cause_cls),
                                {"__module__": "rayipy.exceptions"}))
            except TypeError:
                # A class that refuses subclassing (layout conflicts): plain TaskError.
                cls = TaskError
            _subclass_cache[cause_cls] = cls
        return cls


def _new_instance(cls: type[TaskError], args: tuple[Any, ...]) -> TaskError | None:
    """An instance of ``cls`` made without running any ``__init__`` (a cause class's may
    need arguments we do not have), or None if its bases will not make one.

    ``cls.__new__`` with the cause's args first: C-level fields (OSError.errno...) come
    from them. Some builtin classes have a ``__new__`` of their own that refuses to be
    called for a subclass from Python (MemoryError's: "MemoryError.__new__(TaskError(
    MemoryError)) is not safe"), although instantiating the subclass is fine; for them,
    ``BaseException.__new__`` does what the class's own slot would do for a subclass.
    """
    attempts: tuple[tuple[Callable[..., Any], tuple[Any, ...]], ...] = (
        (cls.__new__, (cls, *args)), (cls.__new__, (cls,)),
        (BaseException.__new__, (cls, *args)))
    for new, new_args in attempts:
        try:
            err = new(*new_args)
        except Exception:
            continue
        if isinstance(err, cls):
            return err
    return None


def as_task_error(cause: BaseException | None, remote_traceback: str, function_name: str,
                  where: str) -> TaskError:
    """Wrap a task's exception so it is both a TaskError and an instance of its own class."""
    if isinstance(cause, TaskError):
        return cause
    cls = _task_error_class(type(cause)) if cause is not None else TaskError
    args = cause.args if cause is not None else (remote_traceback,)
    err = _new_instance(cls, args)
    if err is None:
        # No way to make the subclass (its base's __new__ refuses it): a plain TaskError
        # still names the task and carries the cause; only isinstance(cause class) is lost.
        err = BaseException.__new__(TaskError)
    err.args = args
    if isinstance(cause, OSError):  # C-level fields that args alone do not carry
        for name in ("errno", "strerror", "filename", "filename2"):
            try:
                setattr(err, name, getattr(cause, name))
            except (AttributeError, TypeError):
                pass
    if cause is not None and hasattr(cause, "__dict__"):
        err.__dict__.update(cause.__dict__)
    err.cause = cause
    err.remote_traceback = remote_traceback
    err.function_name = function_name
    err.where = where
    return err
