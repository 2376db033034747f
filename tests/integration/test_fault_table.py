"""The fault table: what the user sees when a task or an actor call fails at each stage.

Each row makes one thing go wrong (an exception, ``os._exit(1)``, SIGSEGV, a MemoryError)
at one stage of a call's life: pickling its arguments on the caller, unpickling them in
the worker, running, pickling its result in the worker, unpickling that on the caller.
It checks the exact error ``get`` (or ``.remote``) raises, then that the cluster still
serves: a plain task answers, every lost worker is replaced, and an actor that survived
still answers. ``docs/failures.md`` is this table in prose; its test ids are these.

Exits and crashes on the caller's own side (the driver) end the caller's own process:
nothing rayipy can report, so they are not rows.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import numpy as np
import pytest

import rayipy
from rayipy.exceptions import (ActorDiedError, DeserializationError, SerializationError,
                               TaskCancelledError, TaskError, WorkerCrashedError)

from helpers import wait_until

TIMEOUT = 30


def act(action: str) -> None:
    """Make ``action`` go wrong here and now."""
    if action == "raise":
        raise ValueError("fault-table error")
    if action == "exit":
        os._exit(1)
    if action == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    if action == "memory":
        np.empty(2 ** 62, dtype=np.uint8)   # numpy's MemoryError subclass, at once
    if action == "interrupt":
        raise KeyboardInterrupt


def act_on_load(action: str) -> None:
    """What unpickling a ``FailsToUnpickle`` calls."""
    act(action)


class FailsToPickle:
    """Goes wrong while it is pickled."""

    def __init__(self, action: str) -> None:
        self.action = action

    def __reduce__(self) -> Any:
        act(self.action)
        raise AssertionError("unreachable")


class FailsToUnpickle:
    """Pickles fine; goes wrong while it is unpickled."""

    def __init__(self, action: str) -> None:
        self.action = action

    def __reduce__(self) -> Any:
        return (act_on_load, (self.action,))


def body(stage: str, action: str, arg: Any = None) -> Any:
    if stage == "run":
        act(action)
    if stage == "pickle-result":
        return FailsToPickle(action)
    if stage == "unpickle-result":
        return FailsToUnpickle(action)
    return "ok"


@rayipy.remote(max_retries=0)
def task(stage: str, action: str, arg: Any = None) -> Any:
    return body(stage, action, arg)


@rayipy.remote
class Victim:
    def method(self, stage: str, action: str, arg: Any = None) -> Any:
        return body(stage, action, arg)


@rayipy.remote
def ping() -> str:
    return "pong"


CRASH_EXIT = (WorkerCrashedError, r"exit code 1|code 1")
CRASH_SEGV = (WorkerCrashedError, r"SIGSEGV")
ACTOR_DIED = (ActorDiedError, r"died|dead")

# (stage, action) -> (the error a task raises, its message pattern); an actor call raises
# the same, except where its process dies (ActorDiedError).
TABLE: dict[tuple[str, str], tuple[type[BaseException], str | None]] = {
    ("pickle-args", "unpicklable"): (SerializationError, r"argument 2 of (task|Victim.method).*lock"),
    ("pickle-args", "raise"): (SerializationError, r"argument 2 of (task|Victim.method).*fault-table error"),
    ("pickle-args", "memory"): (MemoryError, r"Unable to allocate"),
    ("unpickle-args", "raise"): (TaskError, r"ValueError: fault-table error"),
    ("unpickle-args", "exit"): CRASH_EXIT,
    ("unpickle-args", "segfault"): CRASH_SEGV,
    ("unpickle-args", "memory"): (TaskError, r"MemoryError"),
    ("run", "raise"): (TaskError, r"ValueError: fault-table error"),
    ("run", "exit"): CRASH_EXIT,
    ("run", "segfault"): CRASH_SEGV,
    ("run", "memory"): (TaskError, r"MemoryError"),
    ("run", "interrupt"): (TaskError, r"KeyboardInterrupt"),
    ("pickle-result", "raise"): (TaskError, r"return value 0 of .*fault-table error"),
    ("pickle-result", "exit"): CRASH_EXIT,
    ("pickle-result", "segfault"): CRASH_SEGV,
    ("pickle-result", "memory"): (TaskError, r"MemoryError"),
    ("unpickle-result", "raise"): (DeserializationError, r"ValueError: fault-table error"),
    ("unpickle-result", "memory"): (MemoryError, r"Unable to allocate"),
    ("unpickle-result", "interrupt"): (KeyboardInterrupt, None),
}
DIES = {"exit", "segfault"}


def call(kind: str, stage: str, action: str) -> tuple[Any, Any]:
    """Start the row's call; returns (its ref, the actor or None)."""
    arg: Any = None
    if stage == "pickle-args":
        arg = threading.Lock() if action == "unpicklable" else FailsToPickle(action)
    elif stage == "unpickle-args":
        arg = FailsToUnpickle(action)
    if kind == "task":
        return task.remote(stage, action, arg), None
    actor = Victim.remote()
    rayipy.get(actor.method.remote("none", "none"), timeout=TIMEOUT)   # it is up
    try:
        return actor.method.remote(stage, action, arg), actor
    except BaseException:
        rayipy.kill(actor)
        raise


def workers() -> int:
    return rayipy.cluster_status()["peers"]["worker"]


@pytest.fixture(scope="module")
def pool(cluster):
    wait_until(lambda: workers() >= 2, timeout=TIMEOUT)
    return workers()


@pytest.mark.parametrize("kind", ["task", "actor"])
@pytest.mark.parametrize("stage,action", list(TABLE), ids=[f"{s}-{a}" for s, a in TABLE])
def test_fault(pool, kind, stage, action):
    expected, pattern = TABLE[stage, action]
    if os.environ.get("RAYIPY_FAULT_TABLE_PRINT"):   # to write docs/failures.md
        pattern = None
    if kind == "actor" and action in DIES:
        expected, pattern = ACTOR_DIED
    actor = None
    try:
        with pytest.raises(expected, match=pattern) as info:
            ref, actor = call(kind, stage, action)
            rayipy.get(ref, timeout=TIMEOUT)
        err = info.value
        if os.environ.get("RAYIPY_FAULT_TABLE_PRINT"):
            print(f"\nROW {kind} {stage} {action}: {type(err).__name__}: {str(err)[:300]!r}")
        if isinstance(err, TaskError):
            assert err.function_name.endswith("task" if kind == "task" else "method")
            assert not isinstance(err, TaskCancelledError)
        if action == "memory":
            assert isinstance(err, MemoryError)
        if action == "interrupt" and stage == "run":
            assert isinstance(err.cause, KeyboardInterrupt)
        if stage == "unpickle-result" and action != "interrupt":   # names the object
            assert ref.hex() in str(err) + "".join(getattr(err, "__notes__", []))
        if isinstance(err, DeserializationError):
            assert isinstance(err.__cause__, ValueError)
        # The cluster serves on: the actor if it lived, a task, a full pool of workers.
        if actor is not None and action not in DIES:
            assert rayipy.get(actor.method.remote("none", "none"), timeout=TIMEOUT) == "ok"
    finally:
        if actor is not None:
            rayipy.kill(actor)
    assert rayipy.get(ping.remote(), timeout=TIMEOUT) == "pong"
    # A lost worker is replaced (more may run for a while: extra ones retire when idle).
    wait_until(lambda: workers() >= pool, timeout=TIMEOUT,
               message=f"{workers()} workers, not {pool}, after the fault")
