"""Unit tests of the autoscaling decisions (``rayipy/cluster/adaptive.py``) and of the
head's picture of demand they read (``rayipy/core/demand.py``): issue 16, Autoscaling."""

from __future__ import annotations

import pytest

from rayipy.cluster.adaptive import AdaptivePolicy, Decision, NodeView, tasks_per_node
from rayipy.core.demand import demand_report
from rayipy.core.scheduler import Scheduler
from rayipy.protocol.messages import Payload, TaskSpec

CPU1 = (("CPU", 1.0),)
GPU1 = (("CPU", 1.0), ("GPU", 1.0))


def node(name: str, busy: bool = False, holds: bool = False, retirable: bool = True,
         cpus: float = 1.0) -> NodeView:
    return NodeView(name, {"CPU": cpus}, busy, holds, retirable)


HEAD = node("head", retirable=False)


def policy(**kw) -> AdaptivePolicy:
    kw.setdefault("minimum", 1)
    kw.setdefault("maximum", 3)
    kw.setdefault("wait_s", 2.0)
    kw.setdefault("idle_s", 5.0)
    return AdaptivePolicy(**kw)


# -- growth -------------------------------------------------------------------------------------
def test_growth_comes_only_after_tasks_waited_wait_s():
    p = policy()
    busy_head = node("head", busy=True, retirable=False)
    assert p.decide(0.0, [busy_head], [(CPU1, 4)], can_start=2) == Decision(0, (), 1)
    assert p.decide(1.9, [busy_head], [(CPU1, 4)], can_start=2).start == 0
    decision = p.decide(2.0, [busy_head], [(CPU1, 4)], can_start=2)
    assert decision == Decision(start=2, retire=(), target=3)


def test_a_break_in_the_wait_starts_the_clock_again():
    p = policy()
    busy = node("head", busy=True, retirable=False)
    p.decide(0.0, [busy], [(CPU1, 3)], 2)
    p.decide(1.5, [busy], [], 2)                  # the queue emptied in between
    assert p.decide(2.5, [busy], [(CPU1, 3)], 2).start == 0
    assert p.decide(4.5, [busy], [(CPU1, 3)], 2).start == 2


def test_never_above_maximum_nor_beyond_the_spare_machines():
    p = policy(maximum=3)
    busy = [node("head", busy=True, retirable=False), node("b", busy=True)]
    p.decide(0.0, busy, [(CPU1, 50)], can_start=10)
    assert p.decide(3.0, busy, [(CPU1, 50)], can_start=10).start == 1        # 2 + 1 = maximum
    p = policy(maximum=10)
    p.decide(0.0, busy, [(CPU1, 50)], can_start=2)
    assert p.decide(3.0, busy, [(CPU1, 50)], can_start=2) == Decision(2, (), 4)
    full = [node(str(i), busy=True) for i in range(3)]
    p = policy(maximum=3)
    p.decide(0.0, full, [(CPU1, 50)], can_start=5)
    assert p.decide(9.0, full, [(CPU1, 50)], can_start=5) == Decision(0, (), 3)


def test_one_node_per_k_tasks_a_node_holds_and_none_for_what_no_node_could_run():
    p = policy(maximum=20, template={"CPU": 4.0})
    busy = [node("head", busy=True, retirable=False, cpus=4.0)]
    p.decide(0.0, busy, [(CPU1, 9), (GPU1, 5)], 20)
    assert p.decide(2.0, busy, [(CPU1, 9), (GPU1, 5)], 20).start == 3   # ceil(9 / 4)
    assert tasks_per_node((("CPU", 2.0),), {"CPU": 5.0}) == 2
    assert tasks_per_node((), {"CPU": 1.0}) == 1
    assert tasks_per_node(GPU1, {"CPU": 8.0}) == 0


def test_a_node_that_joins_gets_wait_s_before_more_are_asked_for():
    p = policy(maximum=10)
    one = [node("head", busy=True, retirable=False)]
    p.decide(0.0, one, [(CPU1, 6)], 10)
    assert p.decide(2.0, one, [(CPU1, 6)], 10).start == 6
    two = one + [node("b", busy=True)]
    assert p.decide(3.0, two, [(CPU1, 5)], 9).start == 0     # the clock starts again
    assert p.decide(5.0, two, [(CPU1, 5)], 9).start == 5


def test_below_minimum_nodes_start_at_once():
    p = policy(minimum=3)
    assert p.decide(0.0, [HEAD], [], can_start=5) == Decision(2, (), 3)
    assert p.decide(0.0, [HEAD], [], can_start=1) == Decision(1, (), 2)


# -- shrinking ----------------------------------------------------------------------------------
def test_idle_nodes_retire_after_idle_s_longest_idle_first_down_to_minimum():
    p = policy(minimum=1, idle_s=5.0)
    nodes = [HEAD, node("b"), node("c", busy=True)]
    assert p.decide(0.0, nodes, [], 0).retire == ()
    nodes = [HEAD, node("b"), node("c")]
    assert p.decide(2.0, nodes, [], 0).retire == ()
    assert p.decide(4.9, nodes, [], 0).retire == ()
    assert p.decide(5.0, nodes, [], 0) == Decision(0, ("b",), 2)
    nodes = [HEAD, node("c")]
    assert p.decide(7.0, nodes, [], 0) == Decision(0, ("c",), 1)
    assert p.decide(99.0, [HEAD], [], 0) == Decision(0, (), 1)


def test_minimum_is_kept():
    p = policy(minimum=2, idle_s=1.0)
    nodes = [HEAD, node("b"), node("c")]
    p.decide(0.0, nodes, [], 0)
    assert p.decide(10.0, nodes, [], 0).retire == ("b",)
    assert p.decide(20.0, [HEAD, node("c")], [], 0).retire == ()


def test_a_busy_node_resets_its_idle_clock():
    p = policy(idle_s=5.0)
    p.decide(0.0, [HEAD, node("b")], [], 0)
    p.decide(4.0, [HEAD, node("b", busy=True)], [], 0)
    assert p.decide(6.0, [HEAD, node("b")], [], 0).retire == ()
    assert p.decide(11.0, [HEAD, node("b")], [], 0).retire == ("b",)


def test_never_retires_a_node_holding_objects_someone_may_need():
    p = policy(idle_s=1.0)
    nodes = [HEAD, node("b", holds=True)]
    p.decide(0.0, nodes, [], 0)
    assert p.decide(100.0, nodes, [], 0) == Decision(0, (), 2)
    # the owner freed them: it goes
    assert p.decide(101.0, [HEAD, node("b")], [], 0).retire == ("b",)


def test_never_retires_what_the_launcher_did_not_start():
    p = policy(idle_s=1.0)
    nodes = [HEAD, node("by-hand", retirable=False)]
    p.decide(0.0, nodes, [], 0)
    assert p.decide(100.0, nodes, [], 0).retire == ()


def test_an_idle_node_that_queued_work_fits_is_not_retired():
    p = policy(idle_s=1.0, wait_s=50.0)
    nodes = [node("head", busy=True, retirable=False), node("b")]
    p.decide(0.0, nodes, [(CPU1, 2)], 0)
    assert p.decide(10.0, nodes, [(CPU1, 2)], 0).retire == ()
    assert p.decide(10.0, nodes, [(GPU1, 2)], 0).retire == ("b",)   # a CPU node cannot help


def test_above_maximum_idle_nodes_go_at_once_busy_ones_never():
    p = policy(minimum=1, maximum=2, idle_s=60.0)
    nodes = [HEAD, node("b", busy=True), node("c"), node("d")]
    decision = p.decide(0.0, nodes, [], 0)
    assert decision.start == 0 and set(decision.retire) == {"c", "d"} and "b" not in decision.retire


@pytest.mark.parametrize("kw", [dict(minimum=-1), dict(maximum=0, minimum=0),
                                dict(minimum=4, maximum=3), dict(wait_s=-1),
                                dict(idle_s="5"), dict(minimum=1.5), dict(maximum=True)])
def test_bad_bounds_are_refused(kw):
    with pytest.raises(ValueError):
        policy(**kw)


# -- the head's answer --------------------------------------------------------------------------
def spec(n: int, resources=CPU1) -> TaskSpec:
    return TaskSpec(b"O" * 8 + n.to_bytes(8, "big"), b"f", f"task{n}", Payload(b"args"), (), 1,
                    resources, 3)


def test_demand_report_counts_what_no_worker_could_take_and_which_nodes_are_idle():
    s = Scheduler()
    s.add_function(b"f", b"code")
    s.add_node(b"n1", b"a1", {"CPU": 1.0}, {"ip": "10.0.0.1"})
    s.add_worker(b"w1", b"n1", 100)
    s.add_node(b"n2", b"a2", {"CPU": 1.0},
               {"ip": "10.0.0.2", "store_summary": {"primary_bytes": 4096}})
    s.add_worker(b"w2", b"n2", 101)
    s.add_node(b"n3", b"a3", {"CPU": 1.0}, {"ip": "10.0.0.3"})
    s.add_worker(b"w3", b"n3", 102)
    report = demand_report(s)
    assert report["queued"] == []
    assert [(n["node_id"], n["busy"], n["holds_objects"]) for n in report["nodes"]] == [
        (b"n1".hex(), False, False), (b"n2".hex(), False, True), (b"n3".hex(), False, False)]
    s.submit([spec(i) for i in range(7)])
    report = demand_report(s)
    busy = {n["node_id"]: n["busy"] for n in report["nodes"]}
    assert all(busy.values())
    # 3 run, at most one waits behind each while durations are unknown: the rest queue
    queued = dict(report["queued"])
    assert queued[CPU1] == 7 - sum(len(w.queue) for w in s.workers.values())
    assert queued[CPU1] >= 1
    assert report["nodes"][0]["resources"] == {"CPU": 1.0}


def test_demand_report_leaves_out_work_a_new_node_could_not_run():
    s = Scheduler()
    s.add_function(b"f", b"code")
    s.add_node(b"n1", b"a1", {"CPU": 1.0}, {})
    s.add_worker(b"w1", b"n1", 100)
    pinned = (("CPU", 1.0), ("node:" + b"n1".hex(), 0.001))
    s.submit([spec(0), spec(1, pinned), spec(2, pinned), spec(3, pinned)])
    assert all(pinned != request for request, _ in demand_report(s)["queued"])


def test_above_maximum_only_down_to_maximum_before_idle_s():
    p = policy(minimum=1, maximum=2, idle_s=60.0)
    nodes = [HEAD, node("b"), node("c")]
    assert len(p.decide(0.0, nodes, [], 0).retire) == 1
