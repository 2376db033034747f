"""What the scheduler tells the head to do: plain records, one per kind of action.

The scheduler returns lists of these; the head carries each out (``Head.carry_out``).
"""

from __future__ import annotations

from typing import NamedTuple

from rayipy.protocol.messages import TaskSpec


class Execute(NamedTuple):
    worker: bytes
    specs: list
    functions: list          # [(function_id, bytes)] the worker has not seen yet


class Fail(NamedTuple):
    task: TaskSpec
    status: int              # messages.CANCELLED / CRASHED / ERROR
    error: BaseException


class CancelRunning(NamedTuple):
    worker: bytes
    task_id: bytes
    force: bool


class Spawn(NamedTuple):
    agent: bytes
    count: int


class Steal(NamedTuple):
    worker: bytes
    count: int


class KillWorker(NamedTuple):
    agent: bytes
    worker: bytes


class Retire(NamedTuple):
    """Stop an extra worker that has been idle a while (it was started for nested tasks)."""
    agent: bytes
    worker: bytes


class LeaseAnswer(NamedTuple):
    """To a driver that asked for a worker lease: the worker (address ""  = none free)."""
    owner: bytes
    request: tuple
    worker: bytes
    address: str


class LeaseEnded(NamedTuple):
    """To a lease holder: give the worker back (why "") or it died (why says how)."""
    owner: bytes
    worker: bytes
    why: str


class ActorLocation(NamedTuple):
    """Tell callers where an actor is (address), or that it is gone (why)."""
    actor_id: bytes
    to: tuple
    address: str
    why: str = ""
    restarting: bool = False
