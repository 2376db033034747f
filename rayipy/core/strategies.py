"""Scheduling strategies (Ray's classes), and what each does to a task's request.

``scheduling_strategy=`` takes ``"DEFAULT"``, ``"SPREAD"``, or one of these:

- ``NodeAffinitySchedulingStrategy(node_id, soft)``: run on that node (its id as
  ``rayipy.nodes()`` and ``get_runtime_context().get_node_id()`` give it). The task asks
  for a thousandth of the node's own resource (``rayipy.core.state.affinity_resource``);
  with ``soft=True`` it runs elsewhere if that node is gone or could never run it.
- ``PlacementGroupSchedulingStrategy(pg, bundle_index=-1)``: run in a bundle of a
  placement group (``rayipy.util.placement_group``); its request is renamed to the
  group's resources (``rayipy.core.placement.task_request``).

Users import them from ``rayipy.util.scheduling_strategies``, as in Ray.
"""

from __future__ import annotations

from typing import Any

from rayipy.core.placement import task_request
from rayipy.core.state import AFFINITY_PREFIX, AFFINITY_SHARE

# In TaskSpec.options: the task may leave its node (``rayipy.core.scheduler``).
SOFT_AFFINITY = ("node_affinity_soft", True)


class NodeAffinitySchedulingStrategy:
    """Run the task or actor on the node ``node_id`` (hex, as ``rayipy.nodes()`` shows
    it). ``soft=True``: anywhere else if that node is gone or could never run it."""

    def __init__(self, node_id: str, soft: bool, _spill_on_unavailable: bool = False,
                 _fail_on_unavailable: bool = False) -> None:
        if not isinstance(node_id, str):
            raise TypeError(f"node_id must be a node's id as a hex string (rayipy.nodes()"
                            f"[i]['NodeID']), got {node_id!r}")
        try:
            bytes.fromhex(node_id)
        except ValueError:
            raise ValueError(f"node_id must be a node's id as a hex string (rayipy.nodes()"
                             f"[i]['NodeID']), got {node_id!r}") from None
        if not isinstance(soft, bool):
            raise TypeError(f"soft must be True or False, got {soft!r}")
        if _spill_on_unavailable or _fail_on_unavailable:
            raise ValueError("_spill_on_unavailable and _fail_on_unavailable are not supported: "
                             "with soft=True a task waits for its node while it is alive and "
                             "could run it, and goes elsewhere only if it is gone")
        self.node_id = node_id
        self.soft = soft

    def __repr__(self) -> str:
        return f"NodeAffinitySchedulingStrategy(node_id={self.node_id!r}, soft={self.soft})"


class PlacementGroupSchedulingStrategy:
    """Run the task or actor in ``placement_group``'s bundle ``placement_group_bundle_index``
    (-1: any of its bundles)."""

    def __init__(self, placement_group: Any, placement_group_bundle_index: int = -1,
                 placement_group_capture_child_tasks: bool | None = None) -> None:
        group_id = getattr(placement_group, "id", None)
        if group_id is None or not hasattr(placement_group, "bundle_count"):
            raise TypeError(f"placement_group must be a PlacementGroup made by "
                            f"rayipy.util.placement_group(...), got {placement_group!r}")
        index = placement_group_bundle_index
        if not isinstance(index, int) or isinstance(index, bool) or not (
                -1 <= index < placement_group.bundle_count):
            raise ValueError(f"placement_group_bundle_index must be -1 (any bundle) or a "
                             f"bundle's index, 0 to {placement_group.bundle_count - 1}, got "
                             f"{index!r}")
        if placement_group_capture_child_tasks:
            raise ValueError("placement_group_capture_child_tasks is not supported: pass "
                             "scheduling_strategy=PlacementGroupSchedulingStrategy(pg) to the "
                             "child tasks yourself (get the group in the task with "
                             "rayipy.util.get_current_placement_group())")
        self.placement_group = placement_group
        self.placement_group_bundle_index = index
        self.placement_group_capture_child_tasks = placement_group_capture_child_tasks

    def __repr__(self) -> str:
        return (f"PlacementGroupSchedulingStrategy({self.placement_group!r}, "
                f"placement_group_bundle_index={self.placement_group_bundle_index})")


STRATEGY_TYPES = (NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy)


def is_strategy(value: Any) -> bool:
    """Whether ``value`` is something ``scheduling_strategy=`` accepts."""
    return value in ("DEFAULT", "SPREAD") or isinstance(value, STRATEGY_TYPES)


def apply_strategy(strategy: Any,
                   amounts: dict[str, float]) -> tuple[dict[str, float], tuple[Any, ...]]:
    """A request (resource -> amount) as the strategy changes it, and what the spec's
    options must carry for it."""
    if isinstance(strategy, NodeAffinitySchedulingStrategy):
        pinned = {**amounts, AFFINITY_PREFIX + strategy.node_id: AFFINITY_SHARE}
        return pinned, (SOFT_AFFINITY,) if strategy.soft else ()
    if isinstance(strategy, PlacementGroupSchedulingStrategy):
        group = strategy.placement_group
        return (task_request(amounts, group.id.hex(), strategy.placement_group_bundle_index), ())
    return amounts, ()
