"""Placement groups and node affinity on a local cluster (Ray's API, in
rayipy.util.placement_group and rayipy.util.scheduling_strategies)."""

from __future__ import annotations

import os

import pytest

import rayipy
from rayipy.exceptions import TaskError
from rayipy.util.placement_group import (get_current_placement_group, get_placement_group,
                                         placement_group, placement_group_table,
                                         remove_placement_group)
from rayipy.util.scheduling_strategies import (NodeAffinitySchedulingStrategy,
                                               PlacementGroupSchedulingStrategy)

from helpers import wait_until


@rayipy.remote(num_cpus=1)
def pid_and_group():
    group = get_current_placement_group()
    return os.getpid(), group.id.hex() if group else None


@rayipy.remote
def sleep_then(seconds, value):
    import time
    time.sleep(seconds)
    return value


def cpus_free() -> float:
    return rayipy.available_resources().get("CPU", 0.0)


def test_a_group_reserves_cpus_runs_its_tasks_and_gives_them_back(cluster):
    wait_until(lambda: cpus_free() == 2.0, timeout=30)
    pg = placement_group([{"CPU": 1}], strategy="PACK", name="one")
    assert rayipy.get(pg.ready(), timeout=30) == pg
    assert placement_group_table(pg)["state"] == "CREATED"
    wait_until(lambda: cpus_free() == 1.0, timeout=10, message="the bundle took no CPU")
    strategy = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=0)
    pid, group = rayipy.get(pid_and_group.options(scheduling_strategy=strategy).remote(), timeout=30)
    assert group == pg.id.hex()
    assert get_placement_group("one") == pg
    remove_placement_group(pg)
    assert placement_group_table(pg)["state"] == "REMOVED"
    wait_until(lambda: cpus_free() == 2.0, timeout=10, message="the bundle's CPU never came back")
    with pytest.raises(ValueError, match="no placement group named 'one'"):
        get_placement_group("one")


def test_a_group_that_cannot_be_placed_waits_and_its_tasks_with_it(cluster):
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")   # one node only
    assert not pg.wait(timeout_seconds=0.5)
    assert placement_group_table(pg)["state"] == "PENDING"
    waiting = pid_and_group.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg)).remote()
    ready, _ = rayipy.wait([waiting], timeout=0.5)
    assert ready == []
    remove_placement_group(pg)
    with pytest.raises(rayipy.exceptions.TaskPlacementGroupRemoved, match="was removed"):
        rayipy.get(waiting, timeout=30)


def test_a_task_bigger_than_its_bundle_is_refused_with_the_reason(cluster):
    pg = placement_group([{"CPU": 1}])
    try:
        big = pid_and_group.options(num_cpus=2, scheduling_strategy=PlacementGroupSchedulingStrategy(pg))
        with pytest.raises(TaskError, match="bigger bundles"):
            rayipy.get(big.remote(), timeout=30)
    finally:
        remove_placement_group(pg)


def test_removing_a_group_stops_what_runs_in_it(cluster):
    pg = placement_group([{"CPU": 1}])
    try:
        assert pg.wait(30)
        running = sleep_then.options(
            scheduling_strategy=PlacementGroupSchedulingStrategy(pg)).remote(30, "done")
        in_use = f"CPU_group_{pg.id.hex()}"    # the bundle's CPU, taken by the running task
        wait_until(lambda: rayipy.available_resources().get(in_use, 0.0) == 0.0, timeout=30)
    finally:
        remove_placement_group(pg)
    with pytest.raises(rayipy.exceptions.TaskPlacementGroupRemoved, match="placement group"):
        rayipy.get(running, timeout=30)
    assert rayipy.get(sleep_then.remote(0, "next"), timeout=60) == "next"


def test_an_actor_lives_in_a_bundle(cluster):
    pg = placement_group([{"CPU": 1}])
    try:
        @rayipy.remote(num_cpus=1)
        class Where:
            def group(self):
                group = get_current_placement_group()
                return group.id.hex() if group else None

        actor = Where.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg)).remote()
        assert rayipy.get(actor.group.remote(), timeout=30) == pg.id.hex()
        assert rayipy.available_resources().get(f"CPU_group_{pg.id.hex()}", 0.0) == 0.0
        rayipy.kill(actor)
    finally:
        remove_placement_group(pg)


def test_node_affinity_hard_soft_and_to_a_node_not_there(cluster):
    node = rayipy.get_runtime_context().get_node_id()
    here = pid_and_group.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
    assert rayipy.get(here.remote(), timeout=30)[1] is None
    nowhere = "00" * 16
    soft = pid_and_group.options(scheduling_strategy=NodeAffinitySchedulingStrategy(nowhere, soft=True))
    assert rayipy.get(soft.remote(), timeout=30)[1] is None
    hard = pid_and_group.options(scheduling_strategy=NodeAffinitySchedulingStrategy(nowhere, soft=False))
    with pytest.raises(TaskError, match="pinned to node 0000.*soft=True"):
        rayipy.get(hard.remote(), timeout=30)
    assert "node:" not in str(rayipy.cluster_resources())


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(ValueError, match="PACK, SPREAD, STRICT_PACK, STRICT_SPREAD"):
        placement_group([{"CPU": 1}], strategy="TIGHT")
    with pytest.raises(ValueError, match="NodeAffinitySchedulingStrategy"):
        placement_group([{"GPU": 1}])
    with pytest.raises(ValueError, match="hex string"):
        NodeAffinitySchedulingStrategy("not-hex", soft=False)
    with pytest.raises(TypeError, match="PlacementGroup"):
        PlacementGroupSchedulingStrategy("pg")
    with pytest.raises(ValueError, match="capture_child_tasks is not supported"):
        from rayipy.util.placement_group import PlacementGroup
        PlacementGroupSchedulingStrategy(PlacementGroup(b"x" * 16, [{"CPU": 1}]),
                                         placement_group_capture_child_tasks=True)
    with pytest.raises(ValueError, match="does not support _max_cpu_fraction_per_node"):
        placement_group([{"CPU": 1}], _max_cpu_fraction_per_node=0.5)
