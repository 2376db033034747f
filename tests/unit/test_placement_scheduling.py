"""Placement groups and node affinity in the head's scheduler (pure, no sockets):
bundles reserved on nodes, tasks placed in them, groups removed, nodes lost."""

from __future__ import annotations

import pytest

from rayipy.core.placement import task_request
from rayipy.core.scheduler import SOFT_AFFINITY, Execute, Fail, KillWorker, Scheduler
from rayipy.core.state import Node, affinity_resource, shown_resources
from rayipy.protocol.messages import Payload, TaskSpec

OWNER = b"O" * 8
N1, N2 = b"node-1", b"node-2"
GROUP = bytes.fromhex("ab" * 16)


def spec(n: int, resources: dict, options: tuple = ()) -> TaskSpec:
    return TaskSpec(OWNER + n.to_bytes(8, "big"), b"f", f"task{n}", Payload(b"args"), (), 1,
                    tuple(sorted(resources.items())), 3, 0, b"", "", options)


def make(*nodes: tuple[bytes, float]) -> Scheduler:
    s = Scheduler()
    s.add_function(b"f", b"code")
    for number, (node, cpus) in enumerate(nodes):
        s.add_node(node, b"agent-" + node, {"CPU": cpus}, {})
        for i in range(int(cpus)):
            s.add_worker(node + b"-w%d" % i, node, 100 * number + i)
    return s


def where(out: list) -> dict[int, bytes]:
    """task number -> node it was sent to."""
    return {int.from_bytes(sp.task_id[8:], "big"): x.worker.split(b"-w")[0]
            for x in out if isinstance(x, Execute) for sp in x.specs}


def in_group(n: int, index: int, cpus: float = 1.0) -> TaskSpec:
    return spec(n, task_request({"CPU": cpus}, GROUP.hex(), index))


def test_a_group_reserves_its_bundles_and_its_tasks_run_in_them():
    s = make((N1, 4), (N2, 4))
    s.create_group(GROUP, [{"CPU": 2}, {"CPU": 2}], "STRICT_SPREAD", "", OWNER, False)
    assert [g["state"] for g in s.describe_groups()] == ["CREATED"]
    assert s.nodes[N1].available["CPU"] == 2 and s.nodes[N2].available["CPU"] == 2
    node_of_1 = s.groups[GROUP].nodes[1]
    out = s.submit([in_group(1, 1), in_group(2, 1)])
    assert set(where(out).values()) == {node_of_1}
    # A third would exceed bundle 1's two CPUs: it may only queue behind one of them.
    out = s.submit([in_group(3, 1)])
    assert set(where(out).values()) <= {node_of_1}
    assert s.nodes[node_of_1].available[f"CPU_group_1_{GROUP.hex()}"] == 0


def test_a_group_that_does_not_fit_waits_and_its_tasks_wait_with_it():
    s = make((N1, 2))
    s.create_group(GROUP, [{"CPU": 2}, {"CPU": 2}], "STRICT_SPREAD", "", OWNER, False)
    assert s.groups[GROUP].state == "PENDING"
    out = s.submit([in_group(1, 0)])
    assert not any(isinstance(x, Fail) for x in out)      # waits, not refused
    out = s.add_node(N2, b"agent-2", {"CPU": 2}, {})
    s.add_worker(b"node-2-w0", N2, 7)
    out = s.add_worker(b"node-2-w1", N2, 8)
    assert s.groups[GROUP].state == "CREATED"
    assert shown_resources(s.nodes[N1].available)["CPU"] == 0


def test_a_task_no_bundle_could_hold_is_refused_with_the_reason():
    s = make((N1, 4))
    s.create_group(GROUP, [{"CPU": 1}], "PACK", "", OWNER, False)
    [fail] = [x for x in s.submit([in_group(1, 0, cpus=3)]) if isinstance(x, Fail)]
    assert "placement group" in str(fail.error) and "bigger bundles" in str(fail.error)


def test_removing_a_group_gives_its_resources_back_fails_its_tasks_kills_its_workers():
    s = make((N1, 2))
    s.create_group(GROUP, [{"CPU": 1}], "PACK", "", OWNER, False)
    out = s.submit([in_group(1, 0), in_group(2, 0)])       # 1 runs, 2 waits or queues behind
    assert where(out)[1] == N1
    out = s.remove_group(GROUP)
    assert len([x for x in out if isinstance(x, KillWorker)]) == 1
    failed = sorted(int.from_bytes(x.task.task_id[8:], "big") for x in out if isinstance(x, Fail))
    assert failed == [1, 2]
    assert all("placement group" in str(x.error) for x in out if isinstance(x, Fail))
    assert s.nodes[N1].available["CPU"] == 2.0
    assert not any("_group_" in name for name in {**s.nodes[N1].total, **s.nodes[N1].available})
    assert s.describe_groups()[0]["state"] == "REMOVED"
    assert s.remove_group(GROUP) == []


def test_a_drivers_groups_go_with_it_but_detached_ones_stay():
    s = make((N1, 4))
    s.owner_joined(OWNER, driver=True)
    s.create_group(GROUP, [{"CPU": 1}], "PACK", "", OWNER, False)
    s.create_group(b"d" * 16, [{"CPU": 1}], "PACK", "keep", OWNER, True)
    s.owner_left(OWNER)
    assert list(s.groups) == [b"d" * 16]
    assert s.group_named("keep") is s.groups[b"d" * 16]
    with pytest.raises(ValueError, match="already exists"):
        s.create_group(b"e" * 16, [{"CPU": 1}], "PACK", "keep", OWNER, True)


def test_bundles_lost_with_their_node_are_placed_again():
    s = make((N1, 2), (N2, 2))
    s.create_group(GROUP, [{"CPU": 1}, {"CPU": 1}], "STRICT_SPREAD", "", OWNER, False)
    lost = s.groups[GROUP].nodes[0]
    s.node_lost(lost, "gone")
    assert s.groups[GROUP].state == "RESCHEDULING"
    third = b"node-3"
    s.add_node(third, b"agent-3", {"CPU": 2}, {})
    assert s.groups[GROUP].state == "CREATED" and s.groups[GROUP].nodes[0] == third


def test_node_affinity_pins_a_task_and_soft_affinity_falls_back_when_the_node_is_gone():
    s = make((N1, 2), (N2, 2))
    pin = {"CPU": 1, affinity_resource(N2): 0.001}
    out = s.submit([spec(1, pin), spec(2, pin)])
    assert set(where(out).values()) == {N2}
    gone = {"CPU": 1, affinity_resource(b"nowhere"): 0.001}
    [fail] = [x for x in s.submit([spec(3, gone)]) if isinstance(x, Fail)]
    assert "which is not in the cluster" in str(fail.error)
    out = s.submit([spec(4, gone, (SOFT_AFFINITY,))])
    assert not any(isinstance(x, Fail) for x in out)
    assert "node:" not in str(s.total_resources()) and "node:" not in str(s.available_resources())


def test_two_bundles_on_one_node_add_up_under_the_groups_any_bundle_names():
    s = make((N1, 4))
    s.create_group(GROUP, [{"CPU": 1}, {"CPU": 2}], "STRICT_PACK", "", OWNER, False)
    total = s.nodes[N1].total
    assert total[f"CPU_group_{GROUP.hex()}"] == 3.0
    assert total[f"bundle_group_{GROUP.hex()}"] == 2000.0
    assert total[f"CPU_group_1_{GROUP.hex()}"] == 2.0
    assert s.nodes[N1].available["CPU"] == 1.0


def test_a_task_pinned_to_a_node_not_in_the_cluster_says_so():
    s = make((N1, 2))
    gone = {"CPU": 1, affinity_resource(b"\x01" * 4): 0.001}
    [fail] = [x for x in s.submit([spec(1, gone)]) if isinstance(x, Fail)]
    assert "pinned to node 01010101" in str(fail.error) and "soft=True" in str(fail.error)


# -- after the head restarts ---------------------------------------------------------------
def test_a_group_is_journaled_when_created_placed_and_removed():
    s = make((N1, 4))
    s.create_group(GROUP, [{"CPU": 1}], "PACK", "g", OWNER, True)
    s.remove_group(GROUP)
    assert s.group_records == [("group", GROUP, [{"CPU": 1.0}], "PACK", "g", OWNER, True),
                               ("group_placed", GROUP, [N1]), ("group_removed", GROUP)]


def test_a_recovered_group_goes_back_to_its_nodes_once_they_are_all_back():
    s = Scheduler()
    s.add_function(b"f", b"code")
    s.recover_groups([(GROUP, [{"CPU": 2.0}, {"CPU": 2.0}], "STRICT_SPREAD", "g", OWNER, True,
                       [N2, N1])])
    assert s.group_named("g").state == "PENDING"
    s.add_node(N1, b"agent-1", {"CPU": 4}, {})
    assert s.group_named("g").state == "PENDING"       # waits for node 2, where bundle 0 was
    s.add_node(N2, b"agent-2", {"CPU": 4}, {})
    assert s.groups[GROUP].state == "CREATED" and s.groups[GROUP].nodes == [N2, N1]
    s.add_worker(b"node-2-w0", N2, 7)
    assert where(s.submit([in_group(1, 0)])) == {1: N2}


def test_a_recovered_group_whose_node_did_not_come_back_is_placed_anew_after_the_wait():
    s = Scheduler()
    s.recover_groups([(GROUP, [{"CPU": 1.0}], "PACK", "g", OWNER, True, [N2])])
    s.add_node(N1, b"agent-1", {"CPU": 2}, {})
    assert s.groups[GROUP].state == "PENDING"
    s.groups_recovery_over()
    assert s.groups[GROUP].nodes == [N1] and s.groups[GROUP].state == "CREATED"


def test_a_recovered_group_of_a_creator_that_did_not_come_back_is_removed_unless_detached():
    s = make((N1, 4))
    s.recover_groups([(GROUP, [{"CPU": 1.0}], "PACK", "mine", OWNER, False, None),
                      (b"\x01" * 16, [{"CPU": 1.0}], "PACK", "kept", OWNER, True, None)])
    s.groups_recovery_over()
    assert [g["name"] for g in s.describe_groups() if g["state"] != "REMOVED"] == ["kept"]
    s = make((N1, 4))
    s.owner_joined(OWNER, driver=True)                  # it came back
    s.recover_groups([(GROUP, [{"CPU": 1.0}], "PACK", "mine", OWNER, False, None)])
    s.groups_recovery_over()
    assert s.groups[GROUP].state == "CREATED"


def test_an_actor_of_a_group_back_before_its_group_keeps_its_share():
    name = f"CPU_group_0_{GROUP.hex()}"
    s = Scheduler()
    s.recover_groups([(GROUP, [{"CPU": 2.0}], "PACK", "g", OWNER, True, [N1])])
    # Its node is known, but not yet placed on: an actor of the group registered again
    # meanwhile, holding one of the bundle's CPUs under the group's name.
    s.nodes[N1] = Node(N1, b"agent-1", {"CPU": 4.0}, {})
    s.nodes[N1].take(((name, 1.0),))
    s.dispatch()
    assert s.groups[GROUP].state == "CREATED"
    assert s.nodes[N1].available[name] == 1.0          # placing adds, it does not reset
    assert s.nodes[N1].available["CPU"] == 2.0
