"""The plain records that message bodies are made of.

NamedTuples: they pickle as a class reference plus a tuple, which is cheap, and they
read well. User data never appears here unpickled: it travels as a Payload (bytes made
by ``rayipy.protocol.serialization`` plus its out-of-band buffers).
"""

from __future__ import annotations

import pickle
from typing import Any, NamedTuple

from rayipy.protocol.wire import Frame

# TaskResult.status values
# A resource request, as every spec and lease carries it: sorted ((name, amount), ...).
ResourceRequest = tuple[tuple[str, float], ...]

OK = 0
ERROR = 1          # the task raised: values[0] is a serialized TaskError
CANCELLED = 2      # values[0] is a serialized TaskCancelledError
CRASHED = 3        # the worker died and retries ran out: values[0] is a WorkerCrashedError
RETURNED = 4       # a blocked leased worker gave the task back, not run: send it via the head


class Payload(NamedTuple):
    """A serialized value: the pickle stream and its out-of-band buffers."""
    data: bytes
    buffers: tuple[Frame, ...] = ()

    @property
    def nbytes(self) -> int:
        return len(self.data) + sum(memoryview(b).nbytes for b in self.buffers)

    def __reduce__(self) -> tuple[type[Payload], tuple[bytes, tuple[pickle.PickleBuffer, ...]]]:
        # Wrapping each buffer in a PickleBuffer sends it out of band when the message
        # body is pickled with a buffer_callback: a frame of its own, never copied.
        return (Payload, (self.data, tuple(pickle.PickleBuffer(b) for b in self.buffers)))


class TaskSpec(NamedTuple):
    """One call of a function or an actor method, as its owner submits it."""
    task_id: bytes                     # owner process id (8 bytes) + sequence (8 bytes)
    function_id: bytes
    name: str                          # for errors, progress and the dashboard
    args: Payload                      # (args, kwargs) with direct ref args as DepSlot(i)
    dep_values: tuple[Payload | Stored | FetchDep, ...]   # per DepSlot, in slot order
    num_returns: int
    resources: ResourceRequest                   # sorted ((name, amount), ...)
    max_retries: int
    attempt: int = 0
    actor_id: bytes = b""              # set for actor creation and actor method calls
    method: str = ""                   # "__init__" creates the actor; else the method called
    options: tuple[tuple[str, Any], ...] = ()   # sorted (name, value): actor creation options


class TaskResult(NamedTuple):
    """How one task ended, as its worker reports it."""
    task_id: bytes
    status: int                        # OK, ERROR, CANCELLED or CRASHED
    values: tuple[Payload | Stored, ...]   # OK: one per return; else one error Payload
    duration: float                    # seconds the function ran
    where: str                         # "node 1a2b, worker pid 123"
    contains: tuple[tuple[bytes, ...], ...] = ()   # per return: ids of refs inside the value


class DepSlot(NamedTuple):
    """Stands in the task's arguments for the value of its i-th direct ref argument."""
    # The name shadows tuple.index (hence the ignore); renaming it is left for when
    # node/worker.py and node/client.py, which read it, are not being rewritten.
    index: int  # type: ignore[assignment]


class Stored(NamedTuple):
    """A value in a node's object store (``rayipy/node/store_server.py``), in place of its
    bytes: readers on that node map it, readers elsewhere have it pulled to their own
    node's store (or, with no store, read from that one)."""
    object_id: bytes
    size: int                          # bytes of its region (``store_layout``)
    node_id: bytes                     # the node that holds the primary copy
    address: str                       # that node's store, for pulls
    copies: tuple[str, ...] = ()       # other stores known to have pulled a copy


class FetchDep(NamedTuple):
    """In ``TaskSpec.dep_values``, for a large value: the worker fetches it from its owner's
    data port (``GET_OBJECT``) instead of it riding in the spec through the head."""
    object_id: bytes


class Registration(NamedTuple):
    """The first message of every process to the head."""
    role: str                          # "driver", "worker" or "agent"
    process_id: bytes                  # also the process's ZeroMQ identity
    node_id: bytes
    pid: int
    protocol_version: int
    info: dict[str, Any]               # role-specific: resources of an agent, hostname...


class Welcome(NamedTuple):
    """The head's answer to a registration it accepts."""
    cluster_id: str
    head_version: int
    info: dict[str, Any]


class ObjectValue(NamedTuple):
    """An owner's answer to GET_OBJECT: the value, or the error stored for it."""
    ok: bool
    payload: Payload | Stored
