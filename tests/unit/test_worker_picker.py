"""WorkerPicker (one scan per run of tasks) answers as ``_pick_worker`` (one scan per task).

Random clusters: several nodes with different sizes and loads, workers in every state,
queues of every length, two requests. For each, a run of tasks is placed the way
``Scheduler._place`` places them, and before each placement the picker's choice is
compared with what ``_pick_worker`` says for the same state.
"""

from __future__ import annotations

import random

import pytest

from rayipy.core.scheduler import Scheduler
from rayipy.core.state import TaskRecord, WorkerStatus
from rayipy.protocol.messages import Payload, TaskSpec

IDLE, RUNNING, BLOCKED = WorkerStatus.IDLE, WorkerStatus.RUNNING, WorkerStatus.BLOCKED
CPU1 = (("CPU", 1.0),)
CPU2 = (("CPU", 2.0),)
GPU1 = (("CPU", 1.0), ("GPU", 1.0))
BLOCKS = b"blocks"   # a function seen to block in get: nothing queues behind its tasks


def blocking_task(s: Scheduler, task_id: bytes) -> bytes:
    """Record ``task_id`` as a task of the blocking function."""
    s.tasks[task_id] = TaskRecord(TaskSpec(task_id, BLOCKS, "b", Payload(b""), (), 1, CPU1, 0))
    return task_id


def random_cluster(rng: random.Random) -> Scheduler:
    s = Scheduler()
    s.blocking.add(BLOCKS)
    for n in range(rng.randint(1, 4)):
        node_id = b"node-%d" % n
        s.add_node(node_id, b"agent-%d" % n, {"CPU": float(rng.randint(1, 8)),
                                              "GPU": float(rng.randint(0, 2))}, {})
        for w in range(rng.randint(0, 6)):
            s.add_worker(b"w-%d-%d" % (n, w), node_id, 100 * n + w)
    for worker in list(s.workers.values()):
        node = s.nodes[worker.node_id]
        roll = rng.random()
        request = rng.choice([CPU1, CPU2, GPU1])
        if roll < 0.5 and node.fits(request):
            s._allocate(worker, request, RUNNING)
            worker.queue.extend(b"q%d" % i for i in range(rng.randint(1, 6)))
            if rng.random() < 0.3:
                worker.queue[-1] = blocking_task(s, worker.worker_id + b"-last")
            worker.steal_pending = rng.random() < 0.2
            # ran long (nothing queues behind it until it ends), or retiring (max_calls)
            worker.long_task = rng.choice([None, worker.queue[0], b"ended"])
            worker.retiring = rng.random() < 0.1
        elif roll < 0.6:
            worker.state = BLOCKED
    for node in s.nodes.values():
        node.leaving = rng.random() < 0.15
    return s


@pytest.mark.parametrize("seed", range(200))
def test_picker_answers_as_pick_worker_task_after_task(seed):
    rng = random.Random(seed)
    s = random_cluster(rng)
    request = rng.choice([CPU1, CPU2, GPU1])
    depth = rng.randint(1, 8)
    picker = s._picker(request, depth)
    for n in range(60):
        expected = s._pick_worker(request, depth)
        got = picker.pick()
        assert got is expected, (seed, n)
        if got is None:
            break
        if got.state is IDLE:
            s._allocate(got, request, RUNNING)
        if rng.random() < 0.3:
            got.queue.append(blocking_task(s, b"t%d" % n))
            picker.close(got)
        else:
            got.queue.append(b"t%d" % n)
    else:
        pytest.fail("60 tasks always found room: the cluster is too large for the test")


def test_picker_skips_a_worker_running_long_or_retiring():
    s = Scheduler()
    s.add_node(b"n", b"a", {"CPU": 4.0}, {})
    for name in (b"long", b"retiring", b"open"):
        s.add_worker(name, b"n", 1)
        s._allocate(s.workers[name], CPU1, RUNNING)
        s.workers[name].queue.append(name + b"-task")
    s.workers[b"long"].long_task = b"long-task"
    s.workers[b"retiring"].retiring = True
    picker = s._picker(CPU1, 3)
    assert [picker.pick() for _ in range(3)] == [s.workers[b"open"], s.workers[b"open"], None]
    assert s._pick_worker(CPU1, 3) is s.workers[b"open"]
