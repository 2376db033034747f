"""The owner's live generator streams: items into objects, refs out to the consumer.

One ``Stream`` per generator task this process submitted. The I/O thread hands it each
item as it arrives (``Streams.on_item``: the value into an object of ours, as a task's
return value is stored); the consumer's thread asks it for the next ref
(``Stream.next_ref``), waiting with the runtime's ordinary ``wait`` on the item's object
(made pending here if it has not arrived) and on the task's completion object. So a
worker whose task consumes a stream gives its CPU back while it waits, Ctrl-C cancels,
and awaiting works as for any ref.

The registry holds streams weakly: when the ``ObjectRefGenerator`` is dropped, so is its
stream, with the refs of the items nobody took; items that come later are freed as they
arrive. A ``"dynamic"`` stream is held until its task ends: then its items become the
value of the task's one return object (``finish_dynamic``).

What position comes next is decided by ``rayipy.core.generators.StreamState``, under
the stream's lock; the objects themselves live in the runtime's ``ObjectTable``.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Callable

from rayipy import exceptions
from rayipy.core.generators import Failed, StreamState, Stop, WaitFor, Yield, item_id
from rayipy.core.object_ref import ObjectRef
from rayipy.core.objects import PENDING, READY
from rayipy.protocol import serialization
from rayipy.protocol.messages import OK, Payload, TaskResult

STREAMING, DYNAMIC = "streaming", "dynamic"
GENERATOR_OPTION = "generator"       # in TaskSpec.options: ("generator", "streaming"|"dynamic")


def generator_mode(options: tuple) -> str:
    """``"streaming"``, ``"dynamic"`` or ``""`` (not a generator task), from a spec's options."""
    for name, value in options:
        if name == GENERATOR_OPTION:
            return str(value)
    return ""


class Stream:
    """One generator task's items on its owner (see the module docstring)."""

    def __init__(self, runtime: Any, task_id: bytes, completion: ObjectRef, mode: str) -> None:
        self.runtime = runtime
        self.task_id = task_id
        self.completion = completion       # the task's return object: the count, or its error
        self.mode = mode
        self.lock = threading.Lock()
        self.state = StreamState()
        self.refs: dict[int, ObjectRef] = {}   # items arrived or waited for, not handed out

    # -- the consumer (any user thread) ----------------------------------------------------
    def poll(self) -> tuple[str, Any]:
        """One look, without waiting: ("item", ref), ("wait", [refs to wait on]),
        ("stop", None) or ("error", the completion ref whose get raises)."""
        self._note_end()
        with self.lock:
            step = self.state.step()
            if type(step) is Yield:
                return "item", self.refs.pop(step.position)
            if type(step) is Stop:
                self._drop_placeholders()
                return "stop", None
            if type(step) is Failed:
                self._drop_placeholders()
                return "error", self.completion
            assert type(step) is WaitFor
            ref = self._ref_for(step.position)
        return "wait", [ref] if step.end_known else [ref, self.completion]

    def next_ref(self, timeout: float | None = None) -> ObjectRef:
        """The next item's ref, waiting for it; StopIteration at the end."""
        while True:
            what, value = self.poll()
            if what == "item":
                return value
            if what == "stop":
                raise StopIteration
            if what == "error":
                return value
            ready, _ = self.runtime.wait_refs(value, 1, timeout)
            if not ready:
                raise exceptions.GetTimeoutError(
                    f"no next item of the generator within {timeout:g} s")

    def _note_end(self) -> None:
        """If the task has ended, tell the state how (count, or failed)."""
        state, payload = self.runtime.objects.value(self.completion.id)
        if state == PENDING:
            return
        count = None
        if state == READY and type(payload) is Payload:
            count = serialization.loads(payload)
        with self.lock:
            self.state.ended(count if isinstance(count, int) else None)

    def _ref_for(self, index: int) -> ObjectRef:
        """The ref of item ``index``, made pending if the item has not come (lock held)."""
        ref = self.refs.get(index)
        if ref is None:
            oid = item_id(self.task_id, index)
            self.runtime.objects.add_pending(oid, {"task": f"item {index}"})
            ref = self.refs[index] = ObjectRef(oid, self.runtime)
        return ref

    def _drop_placeholders(self) -> None:
        """The stream is over: refs made to wait for items that will not come go (lock held)."""
        self.state.close()
        self.refs.clear()

    # -- the I/O thread ------------------------------------------------------------------
    def take_item(self, index: int) -> bool:
        """An item arrived: True if it is wanted (its object is then pending here)."""
        with self.lock:
            if not self.state.item(index):
                return False
            self._ref_for(index)
            return True


class Streams:
    """Every live stream of this process, by task id."""

    def __init__(self, runtime: Any, store_result: Callable[[TaskResult, tuple], list]) -> None:
        self.runtime = runtime
        self.store_result = store_result
        self._weak: dict[bytes, weakref.ref[Stream]] = {}
        self._dynamic: dict[bytes, Stream] = {}      # held until their task ends

    def open(self, task_id: bytes, completion: ObjectRef, mode: str) -> Stream:
        """A generator task is submitted: before it leaves, so no item finds no stream."""
        stream = Stream(self.runtime, task_id, completion, mode)
        weak = self._weak
        weak[task_id] = weakref.ref(stream, lambda _r, t=task_id: weak.pop(t, None))
        if mode == DYNAMIC:
            self._dynamic[task_id] = stream
        return stream

    def on_item(self, item: TaskResult, index: int) -> list[Callable[[], None]]:
        """I/O thread: item ``index`` of a task of ours came. Returns done-callbacks.

        An item nobody will read (the generator was dropped, or a retry sent it again)
        finds no pending object: storing it then frees what it holds at once (its store
        copy, the counts registered for the refs inside it)."""
        weak = self._weak.get(item.task_id)
        stream = weak() if weak is not None else None
        if stream is not None:
            stream.take_item(index)
        return self.store_result(item, (item_id(item.task_id, index),))

    def finish_dynamic(self, result: TaskResult) -> TaskResult:
        """A ``"dynamic"`` task ended: its return value becomes the generator of its
        items, which that value then holds (as a value holds the refs inside it)."""
        stream = self._dynamic.pop(result.task_id, None)
        if stream is None or result.status != OK:
            return result
        count = serialization.loads(result.values[0])
        refs = []
        with stream.lock:
            stream.state.ended(count)
            while True:
                step = stream.state.step()
                if type(step) is not Yield:   # every item came before the end, on its path
                    break
                refs.append(stream.refs.pop(step.position))
            stream._drop_placeholders()
        from rayipy.generator import DynamicObjectRefGenerator
        payload, contained = serialization.dumps(DynamicObjectRefGenerator(refs),
                                                 "the items of a dynamic generator")
        return result._replace(values=(payload,), contains=(tuple(r.id for r in contained),))

    def is_dynamic(self, task_id: bytes) -> bool:
        return task_id in self._dynamic

