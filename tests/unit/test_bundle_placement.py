"""Placement groups' pure part (rayipy.core.placement): where bundles go under each
strategy, and the resource names that stand for a placed bundle."""

from __future__ import annotations

import pytest

from rayipy.core.placement import (check_bundles, group_of, group_resources, is_group_resource,
                                   place, task_request)

A, B, C = b"a", b"b", b"c"


def nodes(**cpus: float) -> dict[bytes, dict[str, float]]:
    return {name.encode(): {"CPU": float(n), "memory": 1e9} for name, n in cpus.items()}


def test_pack_puts_every_bundle_on_one_node_when_one_holds_them():
    assert place([{"CPU": 1}, {"CPU": 1}], "PACK", nodes(a=4, b=2)) == [B, B]   # the fuller fit
    assert place([{"CPU": 2}, {"CPU": 2}], "PACK", nodes(a=4, b=2)) == [A, A]


def test_pack_spills_over_to_other_nodes_but_strict_pack_waits():
    free = nodes(a=2, b=2)
    assert sorted(place([{"CPU": 2}, {"CPU": 2}], "PACK", free)) == [A, B]
    assert place([{"CPU": 2}, {"CPU": 2}], "STRICT_PACK", free) is None
    assert place([{"CPU": 1}, {"CPU": 1}], "STRICT_PACK", free) in ([A, A], [B, B])


def test_spread_uses_different_nodes_where_it_can_and_strict_spread_waits():
    assert sorted(place([{"CPU": 1}] * 2, "SPREAD", nodes(a=4, b=4))) == [A, B]
    assert place([{"CPU": 1}] * 3, "SPREAD", nodes(a=4, b=4)).count(A) in (1, 2)
    assert place([{"CPU": 1}] * 3, "STRICT_SPREAD", nodes(a=4, b=4)) is None
    assert sorted(place([{"CPU": 1}] * 3, "STRICT_SPREAD", nodes(a=4, b=4, c=1))) == [A, B, C]


def test_strict_spread_finds_a_matching_a_greedy_choice_would_miss():
    # The big bundle must take the only big node, even though it comes second.
    free = nodes(a=4, b=1)
    assert place([{"CPU": 1}, {"CPU": 4}], "STRICT_SPREAD", free) == [B, A]


def test_nothing_placed_when_resources_are_short_or_there_are_no_nodes():
    assert place([{"CPU": 8}], "PACK", nodes(a=4, b=4)) is None
    assert place([{"CPU": 1}], "SPREAD", {}) is None
    assert place([{"custom": 1}], "PACK", nodes(a=4)) is None


def test_a_placed_bundle_is_named_for_its_tasks_and_a_task_asks_for_those_names():
    added = group_resources("ff00", 1, {"CPU": 2.0})
    assert added == {"CPU_group_1_ff00": 2.0, "CPU_group_ff00": 2.0,
                     "bundle_group_1_ff00": 1000.0, "bundle_group_ff00": 1000.0}
    assert task_request({"CPU": 1.0}, "ff00", 1) == {"CPU_group_1_ff00": 1.0,
                                                     "bundle_group_1_ff00": 0.001}
    assert task_request({"CPU": 0.0}, "ff00", -1) == {"bundle_group_ff00": 0.001}
    assert all(is_group_resource(n) and group_of(n) == "ff00" for n in added)
    assert not is_group_resource("CPU")


def test_bad_bundles_and_strategies_are_refused_with_the_reason():
    assert check_bundles([{"CPU": 1, "memory": 0}], "PACK") == [{"CPU": 1.0}]
    with pytest.raises(ValueError, match="one of PACK, SPREAD"):
        check_bundles([{"CPU": 1}], "pack")
    with pytest.raises(ValueError, match="non-empty list"):
        check_bundles([], "PACK")
    with pytest.raises(ValueError, match="bundle 1 must be a non-empty dict"):
        check_bundles([{"CPU": 1}, {}], "PACK")
    with pytest.raises(ValueError, match="must ask for some resource"):
        check_bundles([{"CPU": 0}], "PACK")
    with pytest.raises(ValueError, match="CPU must be a number >= 0"):
        check_bundles([{"CPU": -1}], "PACK")
    with pytest.raises(ValueError, match="NodeAffinitySchedulingStrategy"):
        check_bundles([{"GPU": 1}], "PACK")


def test_bundles_lost_with_a_node_are_placed_again_under_the_strategy():
    free = nodes(a=4, b=4, c=4)
    # STRICT_SPREAD: the lost bundle goes to a node the others do not use.
    assert place([{"CPU": 1}] * 2, "STRICT_SPREAD", free, fixed=[A, None]) in ([A, B], [A, C])
    assert place([{"CPU": 1}] * 2, "STRICT_SPREAD", nodes(a=4), fixed=[A, None]) is None
    # STRICT_PACK: with the node of the others, or not at all.
    assert place([{"CPU": 1}] * 2, "STRICT_PACK", free, fixed=[B, None]) == [B, B]
    assert place([{"CPU": 8}] * 2, "STRICT_PACK", free, fixed=[B, None]) is None
    # Nothing to place: the nodes as they are.
    assert place([{"CPU": 1}], "PACK", free, fixed=[C]) == [C]
