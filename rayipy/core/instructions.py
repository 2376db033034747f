"""What the scheduler tells the head to do: plain records, one per kind of action.

The scheduler returns lists of these; the head carries each out through a table keyed
by type (``Head.carriers``), which has an entry for every type in ``INSTRUCTION_TYPES``.
The set is closed: a new instruction needs a carrier, and a test checks that it has one.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Union, get_args

from rayipy.core.state import Request
from rayipy.protocol.messages import TaskSpec


class Execute(NamedTuple):
    """Send tasks to a worker (it queues them behind what it runs)."""
    worker: bytes
    specs: list[TaskSpec]
    functions: list[tuple[bytes, bytes]]   # (function_id, bytes) the worker has not seen yet


class Fail(NamedTuple):
    """Tell a task's owner that it failed, with the error it gets from ``get``."""
    task: TaskSpec
    status: int              # messages.CANCELLED / CRASHED / ERROR
    error: BaseException


class CancelRunning(NamedTuple):
    """Ask a worker to cancel a task it has (running or queued). ``direct``: its caller
    sent it straight to the worker (an actor call, a leased task), not through us.
    ``recursive``: the worker cancels the tasks the running one submitted too."""
    worker: bytes
    task_id: bytes
    force: bool
    direct: bool = False
    recursive: bool = True


class Spawn(NamedTuple):
    """Ask a node agent to start ``number`` more workers (with ``runtime_env``, a
    resolved environment: workers of that environment only)."""
    agent: bytes
    number: int
    runtime_env: dict[str, Any] | None = None


class Steal(NamedTuple):
    """Ask a worker to give back up to ``number`` tasks queued behind its running one."""
    worker: bytes
    number: int


class KillWorker(NamedTuple):
    """Kill a worker at once (its actor was killed)."""
    agent: bytes
    worker: bytes


class Retire(NamedTuple):
    """Stop an extra worker that has been idle a while (it was started for nested tasks)."""
    agent: bytes
    worker: bytes


class LeaseAnswer(NamedTuple):
    """To a driver that asked for a worker lease: the worker (address ""  = none free)."""
    owner: bytes
    request: Request
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
    to: tuple[bytes, ...]
    address: str
    why: str = ""
    restarting: bool = False


class ForgetPeer(NamedTuple):
    """A process is gone with its node: stop talking to it (and drop what it sends)."""
    process_id: bytes


class Warn(NamedTuple):
    """Show a warning about a task on its owner's driver (as the task's output)."""
    task: TaskSpec
    text: str


Instruction = Union[Execute, Fail, CancelRunning, Spawn, Steal, KillWorker, Retire,
                    LeaseAnswer, LeaseEnded, ActorLocation, ForgetPeer, Warn]

INSTRUCTION_TYPES: tuple[type, ...] = get_args(Instruction)
