"""Unit tests of rayipy.protocol.errors and rayipy.exceptions: errors across processes."""

from __future__ import annotations

import errno
import pickle

import numpy as np
import pytest

from rayipy import exceptions
from rayipy.exceptions import TaskCancelledError, TaskError, WorkerCrashedError, as_task_error
from rayipy.protocol import errors
from rayipy.protocol.messages import Payload


class HttpError(Exception):
    """A user exception with its own constructor arguments and attributes."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(code, detail)
        self.code = code
        self.detail = detail


class Unrebuildable(Exception):
    """Pickles, but cannot unpickle: __init__ needs two arguments, args holds one."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")


class Final(Exception):
    """A class that refuses subclassing (so no TaskError subclass can be made)."""

    def __init_subclass__(cls, **kwargs):
        raise TypeError("Final may not be subclassed")


def failing_user_function(error: BaseException):
    raise error


def raised(error: BaseException) -> BaseException:
    try:
        failing_user_function(error)
    except BaseException as e:  # noqa: BLE001
        return e
    raise AssertionError("unreachable")


def ship(error: BaseException, function_name: str = "my_task", where: str = "node ab, pid 7"):
    """capture on the worker, bytes in between, rebuild on the caller."""
    payload = errors.capture_task_error(raised(error), function_name, where)
    assert isinstance(payload, Payload) and payload.buffers == ()
    return errors.rebuild_error(Payload(bytes(payload.data)))


# -- task errors --------------------------------------------------------------------
@pytest.mark.parametrize("error", [
    ValueError("bad value"), KeyError("missing"), ZeroDivisionError("division by zero"),
    RuntimeError(), TypeError("t", 2)])
def test_builtin_errors_rebuild_as_task_error_and_their_class(error):
    rebuilt = ship(error)
    assert isinstance(rebuilt, TaskError)
    assert isinstance(rebuilt, type(error))
    assert type(rebuilt).__name__ == f"TaskError({type(error).__name__})"
    assert rebuilt.args == error.args
    assert type(rebuilt.cause) is type(error) and rebuilt.cause.args == error.args


def test_message_carries_function_name_where_and_traceback():
    rebuilt = ship(ValueError("bad value"), "compute", "node 1a2b, worker pid 99")
    text = str(rebuilt)
    assert text.startswith("task 'compute' failed on node 1a2b, worker pid 99, remote Traceback")
    assert "in failing_user_function" in text
    assert "raise error" in text
    assert text.rstrip().endswith("ValueError: bad value")
    assert rebuilt.function_name == "compute"
    assert rebuilt.where == "node 1a2b, worker pid 99"
    assert "failing_user_function" in rebuilt.remote_traceback


def test_can_be_caught_as_the_original_class():
    with pytest.raises(KeyError):
        raise ship(KeyError("k"))
    with pytest.raises(exceptions.RayTaskError):
        raise ship(KeyError("k"))


def test_os_error_keeps_its_subclass_and_errno():
    rebuilt = ship(FileNotFoundError(errno.ENOENT, "No such file or directory"))
    assert isinstance(rebuilt, FileNotFoundError) and isinstance(rebuilt, TaskError)
    assert rebuilt.errno == errno.ENOENT
    assert rebuilt.strerror == "No such file or directory"


def test_os_error_keeps_its_filename():
    error = FileNotFoundError(errno.ENOENT, "No such file or directory", "data.csv")
    rebuilt = ship(error)
    assert rebuilt.filename == "data.csv"
    assert rebuilt.errno == errno.ENOENT and rebuilt.args == error.args


def test_user_exception_keeps_args_and_attributes():
    rebuilt = ship(HttpError(404, "not found"))
    assert isinstance(rebuilt, HttpError) and isinstance(rebuilt, TaskError)
    assert rebuilt.args == (404, "not found")
    assert (rebuilt.code, rebuilt.detail) == (404, "not found")
    assert "HttpError: (404, 'not found')" in str(rebuilt)


def test_unrebuildable_class_still_gives_a_task_error_naming_it():
    rebuilt = ship(Unrebuildable(500, "boom"), "f")
    assert isinstance(rebuilt, TaskError)
    assert not isinstance(rebuilt, Unrebuildable)
    assert "Unrebuildable: 500: boom" in str(rebuilt)
    assert "task 'f' failed" in str(rebuilt)
    assert "Unrebuildable" in str(rebuilt.cause)
    assert "could not be rebuilt here" in str(rebuilt.cause)


def test_unpicklable_exception_still_gives_a_task_error_naming_it():
    import threading
    error = ValueError("holds a lock", threading.Lock())
    rebuilt = ship(error)
    assert isinstance(rebuilt, TaskError) and not isinstance(rebuilt, ValueError)
    assert "ValueError" in str(rebuilt.cause)
    assert "ValueError: ('holds a lock'" in str(rebuilt)


def test_exception_holding_a_large_array_is_rebuilt():
    rebuilt = ship(ValueError("bad rows", np.zeros(1000)))
    assert isinstance(rebuilt, ValueError)
    assert np.array_equal(rebuilt.args[1], np.zeros(1000))


def test_class_refusing_subclassing_gives_plain_task_error():
    rebuilt = ship(Final("x"))
    assert type(rebuilt) is TaskError
    assert isinstance(rebuilt.cause, Final)
    assert "Final: x" in str(rebuilt)


def test_task_error_raised_again_by_a_parent_task_stays_one_task_error():
    child = ship(ValueError("deep"), "child")
    parent = ship(child, "parent")
    assert isinstance(parent, ValueError) and isinstance(parent, TaskError)
    assert type(parent).__mro__.count(TaskError) == 1
    assert "ValueError: deep" in str(parent)


# -- system errors ------------------------------------------------------------------
def test_cancelled_error_rebuilds_as_itself():
    payload = errors.capture_system_error(TaskCancelledError("train", "by the user"))
    rebuilt = errors.rebuild_error(payload)
    assert type(rebuilt) is TaskCancelledError
    assert not isinstance(rebuilt, TaskError)
    assert str(rebuilt) == "Task 'train' was cancelled: by the user"
    assert rebuilt.task_name == "train"


def test_worker_crashed_error_rebuilds_as_itself():
    rebuilt = errors.rebuild_error(errors.capture_system_error(
        WorkerCrashedError("worker pid 12 died (signal 9)"), "f", "node 1"))
    assert type(rebuilt) is WorkerCrashedError
    assert str(rebuilt) == "worker pid 12 died (signal 9)"


def test_unrebuildable_system_error_becomes_rayipy_system_error():
    rebuilt = errors.rebuild_error(errors.capture_system_error(Unrebuildable(1, "x")))
    assert type(rebuilt) is exceptions.RayipySystemError
    assert str(rebuilt) == "Unrebuildable: 1: x"


def test_cancelled_error_default_message_and_pickle():
    error = TaskCancelledError()
    assert str(error) == "Task was cancelled."
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is TaskCancelledError
    assert str(again) == "Task was cancelled." and again.task_name == ""


def test_error_whose_str_raises_is_still_captured():
    class NoStr(Exception):
        def __str__(self):
            raise RuntimeError("no str")
    payload = errors.capture_system_error(NoStr(), "f", "w")
    _, class_name, text, tb, function_name, where = pickle.loads(payload.data)
    assert (class_name, tb, function_name, where) == (
        "test_error_whose_str_raises_is_still_captured.<locals>.NoStr", "", "f", "w")
    assert "NoStr object at 0x" in text
    assert type(errors.rebuild_error(payload)).__name__ == "NoStr"


# -- TaskError itself -------------------------------------------------------------------
def test_task_error_pickles_round_trip():
    rebuilt = ship(HttpError(503, "busy"), "fetch", "node 9")
    again = pickle.loads(pickle.dumps(rebuilt))
    assert type(again) is type(rebuilt)
    assert isinstance(again, HttpError) and isinstance(again, TaskError)
    assert again.args == (503, "busy") and again.code == 503
    assert (again.function_name, again.where) == ("fetch", "node 9")
    assert again.remote_traceback == rebuilt.remote_traceback
    assert str(again) == str(rebuilt)


def test_render_traceback_returns_lines():
    rebuilt = ship(KeyError("k"), "lookup", "node 3")
    lines = rebuilt._render_traceback_()
    assert isinstance(lines, list) and len(lines) == 2
    assert all(isinstance(line, str) for line in lines)
    assert "KeyError" in lines[0] and "'lookup'" in lines[0] and "node 3" in lines[0]
    assert lines[1] == rebuilt.remote_traceback.rstrip()
    assert lines[1].endswith("KeyError: 'k'")


def test_as_task_error_reuses_subclasses_and_keeps_task_errors():
    a = as_task_error(ValueError("a"), "tb a", "f", "w")
    b = as_task_error(ValueError("b"), "tb b", "g", "w")
    assert type(a) is type(b)
    assert as_task_error(a, "other", "h", "x") is a


def test_as_task_error_without_cause():
    error = as_task_error(None, "Traceback: text\n", "f", "here")
    assert type(error) is TaskError and error.cause is None
    assert str(error) == "task 'f' failed on here, remote Traceback: text"


def test_format_task_error():
    assert exceptions.format_task_error("f", "w", "tb\n\n") == "task 'f' failed on w, remote tb"


def test_exception_hierarchy_and_ray_aliases():
    assert exceptions.RayError is exceptions.RayipyError
    assert exceptions.RayTaskError is TaskError
    assert issubclass(exceptions.GetTimeoutError, TimeoutError)
    assert issubclass(exceptions.AuthenticationError, ConnectionError)
    assert issubclass(exceptions.NotInitializedError, RuntimeError)
    assert issubclass(exceptions.OwnerDiedError, exceptions.ObjectLostError)
    assert issubclass(exceptions.RaySystemError, exceptions.RayipySystemError)
    # Every error rayipy raises is in this module; serialization's is a TypeError too.
    assert issubclass(exceptions.SerializationError, exceptions.RayipyError)
    assert issubclass(exceptions.SerializationError, TypeError)


@pytest.mark.parametrize("cause", [SystemExit(3), KeyboardInterrupt(), GeneratorExit()])
def test_a_remote_exit_or_interrupt_does_not_stop_the_caller(cause):
    # Raised on the driver, a TaskError that is also a SystemExit would end it silently.
    err = errors.rebuild_error(errors.capture_task_error(cause, "f", "node x"))
    assert isinstance(err, TaskError) and isinstance(err, Exception)
    assert not isinstance(err, type(cause)) and isinstance(err.cause, type(cause))


class OwnNew(Exception):
    """A class whose own __new__ refuses its subclasses, as MemoryError's does."""

    def __new__(cls, *args):
        if cls is not OwnNew:
            raise TypeError(f"OwnNew.__new__({cls.__name__}) is not safe")
        return super().__new__(cls, *args)


def _array_memory_error() -> MemoryError:
    """numpy's MemoryError subclass, as a failed allocation raises it."""
    try:
        np.empty(2 ** 62, dtype=np.uint8)
    except MemoryError as e:
        return e
    raise AssertionError("numpy allocated 4 EiB")


@pytest.mark.parametrize("make", [lambda: MemoryError("no room"), _array_memory_error],
                         ids=["MemoryError", "numpy-ArrayMemoryError"])
def test_memory_error_rebuilds_as_task_error_and_memory_error(make):
    # MemoryError.__new__ refuses to be called for a subclass ("is not safe").
    error = make()
    rebuilt = ship(error, "allocate")
    assert isinstance(rebuilt, TaskError) and isinstance(rebuilt, MemoryError)
    assert isinstance(rebuilt, type(error))
    assert rebuilt.args == error.args and rebuilt.function_name == "allocate"
    assert "allocate" in str(rebuilt)


def test_class_whose_new_refuses_subclasses_still_gives_a_task_error_naming_the_task():
    rebuilt = ship(OwnNew("x"), "picky")
    assert isinstance(rebuilt, TaskError) and isinstance(rebuilt.cause, OwnNew)
    assert rebuilt.function_name == "picky" and "picky" in str(rebuilt)
    assert pickle.loads(pickle.dumps(rebuilt)).function_name == "picky"


def test_deserialization_error_names_object_and_task_and_pickles():
    err = exceptions.DeserializationError("ab12", "make_value", "ValueError: bad state")
    assert isinstance(err, exceptions.RaySystemError)
    assert "ObjectRef(ab12)" in str(err) and "'make_value'" in str(err)
    again = pickle.loads(pickle.dumps(err))
    assert (again.object_id, again.task_name, str(again)) == ("ab12", "make_value", str(err))
