"""Exceptions across processes: capture on the worker, rebuild on the caller.

An error travels as a Payload of a plain tuple, so the caller can always say what went
wrong even when the exception class itself does not exist or unpickle on its side::

    (pickled exception or None, class name, str(exception), remote traceback text,
     function name, where it ran)
"""

from __future__ import annotations

import pickle
import traceback

from rayipy import exceptions
from rayipy.protocol import serialization
from rayipy.protocol.messages import Payload


def capture_task_error(error: BaseException, function_name: str, where: str) -> Payload:
    """Serialize the exception a task raised, with its traceback as text."""
    tb = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return _pack(error, tb, function_name, where)


def capture_system_error(error: BaseException, function_name: str = "", where: str = "") -> Payload:
    """Serialize an error raised by rayipy itself (crash, cancel): no remote traceback."""
    return _pack(error, "", function_name, where)


def _pack(error: BaseException, tb: str, function_name: str, where: str) -> Payload:
    try:
        pickled = serialization.dumps_inband(error)
    except Exception:
        pickled = None
    record = (pickled, type(error).__qualname__, _safe_str(error), tb, function_name, where)
    return Payload(pickle.dumps(record, protocol=5))


def unpickled_or_none(pickled: bytes | None) -> BaseException | None:
    """The original exception, if it was pickled and unpickles here (its class may not
    exist on this side; the caller then builds one from the class name and text)."""
    if pickled is None:
        return None
    try:
        error: BaseException = pickle.loads(pickled)
        return error
    except Exception:
        return None


def rebuild_error(payload: Payload) -> BaseException:
    """The exception to raise on the caller: a TaskError for task errors, else the system error."""
    pickled, class_name, text, tb, function_name, where = pickle.loads(payload.data)
    cause = unpickled_or_none(pickled)
    if not tb:  # a system error (cancel, crash): raise it as itself
        return cause if cause is not None else exceptions.RayipySystemError(f"{class_name}: {text}")
    if cause is None:
        cause = exceptions.RayipyError(
            f"{class_name}: {text} (the exception class could not be rebuilt here)")
    return exceptions.as_task_error(cause, tb, function_name, where)


def error_class_name(payload: Payload) -> str:
    """The class name of a captured error, without rebuilding the exception."""
    try:
        name: str = pickle.loads(payload.data)[1]
        return name
    except Exception:
        return ""


def _safe_str(error: BaseException) -> str:
    try:
        return str(error)
    except Exception:
        return object.__repr__(error)
