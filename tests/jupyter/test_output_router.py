"""The output router without a kernel: which cell each line goes to, labels, batching,
and that memory stays bounded. (test_kernel.py checks the same on a real kernel.)"""

from __future__ import annotations

import sys
import types

import pytest

from rayipy.core.objects import FAILED, PENDING, READY
from rayipy.jupyter import output
from rayipy.jupyter.output import OutputRouter


class FakeStream:
    """An ipykernel OutStream as the router uses it: a per-thread parent, then writes."""

    def __init__(self) -> None:
        self.parent = None
        self.writes: list[tuple] = []

    def set_thread_parent(self, parent):
        old, self.parent = self.parent, parent
        return old

    def reset_thread_parent(self, token):
        self.parent = token

    def write(self, text):
        self.writes.append((self.parent, text))

    def flush(self):
        pass


class FakeRef:
    """A pending ref of ours: the router registers a callback in its object table."""

    def __init__(self, task_id: bytes, state=PENDING, payload=None):
        self.id = task_id + b"\x00\x00"
        self.callbacks = []
        self._runtime = types.SimpleNamespace(objects=types.SimpleNamespace(
            value=lambda oid: (self.state, self.payload),
            add_callback=lambda oid, fn: self.callbacks.append(fn) or True))
        self.state, self.payload = state, payload

    def finish(self, state=READY):
        self.state = state
        for fn in self.callbacks:
            fn()


def cell(msg_id: str) -> dict:
    return {"header": {"msg_id": msg_id, "msg_type": "execute_request"}}


class FakeShell:
    def __init__(self, kernel=True):
        self.kernel = types.SimpleNamespace() if kernel else None
        self.current = None
        self.execution_count = 1

    def get_parent(self):
        return self.current


@pytest.fixture
def streams(monkeypatch):
    """Fake kernel streams, put in place by the test body (pytest's capture puts its own
    back between the setup and the call)."""
    out, err = FakeStream(), FakeStream()

    def install():
        monkeypatch.setattr(sys, "stdout", out)
        monkeypatch.setattr(sys, "stderr", err)
        return out, err
    return install


def task(n: int) -> bytes:
    return b"D" + b"\x01" * 7 + n.to_bytes(8, "big")


def test_a_single_task_prints_unlabelled_into_the_cell_that_submitted_it(streams):
    streams = streams()
    shell = FakeShell()
    router = OutputRouter(shell)
    shell.current = cell("A")
    router.on_submit(task(1), [FakeRef(task(1))])
    shell.current = cell("B")   # cell B runs when the output arrives
    router.on_log([("stdout", "hello\n", "f", task(1))], "pid=7")
    router.on_log([("stderr", "oops\n", "f", task(1))], "pid=7")
    assert streams[0].writes == [(cell("A"), "hello\n")]
    assert streams[1].writes == [(cell("A"), "oops\n")]
    assert streams[0].parent is None  # the I/O thread is not left pinned to the cell


def test_lines_are_labelled_when_the_cell_ran_several_tasks(streams):
    streams = streams()
    shell = FakeShell()
    router = OutputRouter(shell)
    shell.current = cell("A")
    for n in (1, 2):
        router.on_submit(task(n), [FakeRef(task(n))])
    router.on_log([("stdout", "one\ntwo\n", "f", task(1)), ("stdout", "three", "g", task(2))], "pid=7")
    assert streams[0].writes == [(cell("A"), "(f pid=7) one\n(f pid=7) two\n"),
                                 (cell("A"), "(g pid=7) three\n")]


def test_a_second_worker_writing_for_one_task_makes_lines_labelled(streams):
    streams = streams()
    shell = FakeShell()
    router = OutputRouter(shell)
    shell.current = cell("A")
    router.on_submit(task(1), [FakeRef(task(1))])
    router.on_log([("stdout", "first try\n", "f", task(1))], "pid=7")
    router.on_log([("stdout", "retried\n", "f", task(1))], "pid=8")   # the worker died; a retry
    assert [text for _, text in streams[0].writes] == ["first try\n", "(f pid=8) retried\n"]


def test_output_of_unknown_tasks_goes_to_the_current_cell_labelled(streams):
    streams = streams()
    router = OutputRouter(FakeShell())
    router.on_log([("stdout", "stray\n", "f", task(9))], "pid=7")
    assert streams[0].writes == [(None, "(f pid=7) stray\n")]


def test_routing_off_writes_where_the_kernel_writes_now(streams):
    streams = streams()
    shell = FakeShell()
    router = OutputRouter(shell, route=False)
    shell.current = cell("A")
    router.on_submit(task(1), [FakeRef(task(1))])
    router.on_log([("stdout", "x\n", "f", task(1))], "pid=7")
    assert streams[0].writes == [(None, "x\n")]


def test_finished_tasks_are_forgotten_after_the_grace_period(streams, monkeypatch):
    streams = streams()
    clock = [1000.0]
    monkeypatch.setattr(output.time, "monotonic", lambda: clock[0])
    shell = FakeShell()
    router = OutputRouter(shell)
    shell.current = cell("A")
    refs = [FakeRef(task(n)) for n in range(100)]
    for n, ref in enumerate(refs):
        router.on_submit(task(n), [ref])
    assert router.tracked_tasks() == 100
    for ref in refs[:60]:
        ref.finish()
    refs[60].finish(FAILED)
    # Late lines of a finished task still find their cell for a while ...
    router.on_log([("stdout", "late\n", "f", task(3))], "pid=7")
    assert streams[0].writes[-1][0] == cell("A")
    clock[0] += output.GRACE_SECONDS + 1
    router.on_log([], "pid=7")
    assert router.tracked_tasks() == 39         # ... then only the unfinished are kept
    assert router.counts == {"submitted": 100, "done": 60, "failed": 1}


def test_cells_are_remembered_in_a_bounded_lru(streams, monkeypatch):
    streams = streams()
    monkeypatch.setattr(output, "MAX_CELLS", 5)
    shell = FakeShell()
    router = OutputRouter(shell)
    for n in range(20):
        shell.current = cell(f"c{n}")
        router.on_submit(task(n), [FakeRef(task(n))])
    assert len(router._cells) == 5


def test_without_set_thread_parent_stream_messages_are_sent_in_batches(monkeypatch):
    """ipykernel < 7.4: explicit stream messages with the cell's parent, batched."""
    class PlainStream:
        def __init__(self):
            self.writes = []

        def write(self, text):
            self.writes.append(text)

    sent = []
    session = types.SimpleNamespace(send=lambda socket, kind, content, parent, ident:
                                    sent.append((kind, content, parent["header"]["msg_id"], ident)))
    monkeypatch.setattr(sys, "stdout", PlainStream())
    monkeypatch.setattr(sys, "stderr", PlainStream())
    shell = FakeShell()
    shell.kernel = types.SimpleNamespace(session=session, iopub_socket=object())
    router = OutputRouter(shell)
    shell.current = cell("A")
    router.on_submit(task(1), [FakeRef(task(1))])
    for i in range(500):
        router.on_log([("stdout", f"line {i}\n", "f", task(1))], "pid=7")
    router.flush()  # what the batch timer does after SEND_BATCH_SECONDS
    assert len(sent) == 1
    kind, content, parent_id, ident = sent[0]
    assert (kind, content["name"], parent_id, ident) == ("stream", "stdout", "A", b"stream.stdout")
    assert content["text"] == "".join(f"line {i}\n" for i in range(500))
    assert sys.stdout.writes == []


def test_outside_a_kernel_lines_go_to_stdout(streams):
    streams = streams()
    shell = FakeShell(kernel=False)
    router = OutputRouter(shell)
    router.on_submit(task(1), [FakeRef(task(1))])
    router.on_log([("stdout", "plain\n", "f", task(1))], "pid=7")
    assert streams[0].writes == [(None, "plain\n")]
