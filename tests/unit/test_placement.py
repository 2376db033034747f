"""Unit tests of placement over nodes: load balance, SPREAD, GPU devices, leaving nodes."""

from __future__ import annotations

from rayipy.core.scheduler import Execute, Scheduler
from rayipy.core.state import Node
from rayipy.protocol.messages import Payload, TaskSpec

OWNER = b"O" * 8
A, B = b"node-a", b"node-b"


def spec(n: int, resources=(("CPU", 1.0),), spread: bool = False) -> TaskSpec:
    options = (("scheduling_strategy", "SPREAD"),) if spread else ()
    return TaskSpec(OWNER + n.to_bytes(8, "big"), b"f", f"t{n}", Payload(b""), (), 1,
                    resources, 3, options=options)


def cluster(nodes: dict) -> Scheduler:
    """nodes: node id -> (resources, worker count)."""
    s = Scheduler()
    s.add_function(b"f", b"code")
    for node_id, (resources, count) in nodes.items():
        s.add_node(node_id, b"agent-" + node_id, resources, {})
        for i in range(count):
            s.add_worker(node_id + b"-w%d" % i, node_id, 100 + i)
    return s


def where(out: list, s: Scheduler) -> list[bytes]:
    """The node of each placed task, in placement order."""
    return [s.workers[x.worker].node_id for x in out if isinstance(x, Execute) for _ in x.specs]


def gpus_of(out: list) -> list:
    return [dict(sp.options).get("gpu_ids") for x in out if isinstance(x, Execute) for sp in x.specs]


def test_idle_workers_on_the_least_loaded_node_go_first():
    s = cluster({A: ({"CPU": 2.0}, 2), B: ({"CPU": 2.0}, 2)})
    nodes = []
    for n in range(4):   # one at a time: each goes where the fewest CPUs are in use
        nodes += where(s.submit([spec(n)]), s)
    assert sorted(nodes[:2]) == [A, B] and sorted(nodes[2:]) == [A, B]


def test_spread_alternates_between_nodes_even_when_one_is_bigger():
    s = cluster({A: ({"CPU": 4.0}, 4), B: ({"CPU": 1.0}, 1)})
    out = s.submit([spec(n, resources=(), spread=True) for n in range(4)])
    nodes = where(out, s)
    assert nodes.count(A) == 2 and nodes.count(B) == 2


def test_gpu_tasks_get_distinct_devices_and_give_them_back():
    s = cluster({A: ({"CPU": 4.0, "GPU": 2.0}, 3)})
    gpu1 = (("CPU", 1.0), ("GPU", 1.0))
    out = s.submit([spec(1, gpu1), spec(2, gpu1), spec(3, gpu1)])
    # Two run at once on two devices; the third queues behind one of them, on its device.
    assert sorted(gpus_of(out)) == [("0",), ("0",), ("1",)]
    idle = next(w for w in s.workers.values() if not w.queue)
    assert idle.gpu_ids == () and s.nodes[A].available["GPU"] == 0.0
    for worker in list(s.workers.values()):
        if worker.queue:
            s.finished(worker.worker_id, list(worker.queue), [0.1] * len(worker.queue))
    assert s.nodes[A].gpu_free == {"0": 1.0, "1": 1.0}
    assert all(w.gpu_ids == () for w in s.workers.values())


def test_fractional_gpus_share_one_device_before_taking_another():
    node = Node(A, b"agent", {"GPU": 2.0}, {})
    assert node.assign_gpus(0.5) == ("0",)
    assert node.assign_gpus(0.5) == ("0",)
    assert node.assign_gpus(0.5) == ("1",)
    assert not node._gpu_choice(1.0)          # device 1 is half used
    node.release_gpus(("0",), 0.5)
    node.release_gpus(("0",), 0.5)
    assert node.assign_gpus(1.0) == ("0",)


def test_gpu_ids_come_from_the_agent_when_it_names_them():
    node = Node(A, b"agent", {"GPU": 2.0}, {"gpu_ids": ["3", "5"]})
    assert node.assign_gpus(2.0) == ("3", "5")


def test_blocked_task_gives_back_cpus_but_keeps_its_gpus():
    s = cluster({A: ({"CPU": 1.0, "GPU": 1.0}, 1)})
    out = s.submit([spec(1, (("CPU", 1.0), ("GPU", 1.0)))])
    worker = s.workers[where(out, s) and A + b"-w0"]
    s.blocked(worker.worker_id, [])
    assert s.nodes[A].available == {"CPU": 1.0, "GPU": 0.0}
    assert worker.gpu_ids == ("0",)
    s.unblocked(worker.worker_id)
    s.finished(worker.worker_id, list(worker.queue), [0.1])
    assert s.nodes[A].available == {"CPU": 1.0, "GPU": 1.0}
    assert s.nodes[A].gpu_free == {"0": 1.0}


def test_a_leaving_node_gets_no_work():
    s = cluster({A: ({"CPU": 1.0}, 1), B: ({"CPU": 1.0}, 1)})
    s.remove_node(B)
    out = s.submit([spec(1), spec(2)])
    assert set(where(out, s)) == {A}
