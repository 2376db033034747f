"""Placement groups, as in Ray: reserve resources on nodes as bundles, then run tasks and
actors in them.

    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
    rayipy.get(pg.ready())                       # placed: each bundle on its own node
    f.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 0)).remote()
    remove_placement_group(pg)

The head places the bundles (``rayipy.core.placement_scheduling``); this module is the
driver's side: making, finding, waiting for and removing groups.
"""

from __future__ import annotations

import os
from typing import Any

from rayipy import api
from rayipy.core.placement import STRATEGIES, check_bundles, group_of, is_group_resource
from rayipy.core.strategies import PlacementGroupSchedulingStrategy
from rayipy.core.task_context import placed_spec
from rayipy.session import require_runtime


class PlacementGroup:
    """A placement group: its id (``.id``, bytes; ``.id.hex()`` as in Ray) and bundles.
    It can be passed to tasks and actors, like an ObjectRef."""

    def __init__(self, group_id: bytes, bundles: list[dict[str, float]]) -> None:
        self.id = group_id
        self.bundle_specs = [dict(b) for b in bundles]

    @property
    def bundle_count(self) -> int:
        return len(self.bundle_specs)

    def ready(self) -> Any:
        """An ObjectRef that resolves (to this group) once every bundle is placed."""
        strategy = PlacementGroupSchedulingStrategy(self)
        return _ready.options(scheduling_strategy=strategy, name="placement_group.ready").remote(self)

    def wait(self, timeout_seconds: float | None = 30) -> bool:
        """Whether the group is placed within ``timeout_seconds`` (None: wait for ever)."""
        ready, _ = api.wait([self.ready()], timeout=timeout_seconds)
        return bool(ready)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlacementGroup) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"PlacementGroup(id={self.id.hex()}, bundles={self.bundle_specs})"

    def __reduce__(self) -> tuple:
        return (PlacementGroup, (self.id, self.bundle_specs))


@api.remote(num_cpus=0, max_retries=0)
def _ready(group: PlacementGroup) -> PlacementGroup:
    return group


def placement_group(bundles: list[dict[str, float]], strategy: str = "PACK", name: str = "",
                    lifetime: str | None = None, **unsupported: Any) -> PlacementGroup:
    """Reserve ``bundles`` (a list of resource dicts) on nodes, by ``strategy``: PACK,
    SPREAD, STRICT_PACK or STRICT_SPREAD (Ray's meanings). Returns at once; the group is
    placed as soon as the resources are free (``.ready()``, ``.wait()``). ``name``: find
    it later with ``get_placement_group``. ``lifetime="detached"``: it outlives this
    driver (else it is removed when the driver ends)."""
    if unsupported:
        raise ValueError(f"placement_group() does not support {', '.join(sorted(unsupported))}; "
                         f"it takes bundles, strategy ({', '.join(STRATEGIES)}), name and "
                         f"lifetime")
    checked = check_bundles(bundles, strategy)
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {name!r}")
    if lifetime not in (None, "detached"):
        raise ValueError(f'lifetime must be None or "detached", got {lifetime!r}')
    group_id = os.urandom(16)
    require_runtime().request("create_placement_group", group_id, checked, strategy, name,
                              lifetime == "detached")
    return PlacementGroup(group_id, checked)


def remove_placement_group(placement_group: PlacementGroup) -> None:
    """Release the group's resources; its tasks waiting fail, and those running are
    stopped (their workers are killed), as in Ray."""
    if not isinstance(placement_group, PlacementGroup):
        raise TypeError(f"remove_placement_group takes a PlacementGroup, got {placement_group!r}")
    require_runtime().request("remove_placement_group", placement_group.id)


def placement_group_table(placement_group: PlacementGroup | None = None) -> dict[str, Any]:
    """Every group the head knows (the removed ones too, the latest), by id in hex; or
    one group's row. Each row: id, name, strategy, state (PENDING, CREATED, RESCHEDULING,
    REMOVED), bundles, and the node of each placed bundle."""
    rows = {row["placement_group_id"]: row
            for row in require_runtime().request("placement_groups")}
    if placement_group is None:
        return rows
    return rows.get(placement_group.id.hex(), {})


def get_placement_group(placement_group_name: str) -> PlacementGroup:
    """The live group named so; ValueError if there is none."""
    for row in require_runtime().request("placement_groups"):
        if row["name"] == placement_group_name and row["state"] != "REMOVED":
            bundles = [row["bundles"][i] for i in sorted(row["bundles"])]
            return PlacementGroup(bytes.fromhex(row["placement_group_id"]), bundles)
    raise ValueError(f"no placement group named {placement_group_name!r}: make one with "
                     f"placement_group(bundles, name={placement_group_name!r})")


def get_current_placement_group() -> PlacementGroup | None:
    """In a task or actor running in a placement group: that group; else None."""
    spec = placed_spec()
    if spec is None:
        return None
    for name, _ in spec.resources:
        if is_group_resource(name):
            row = placement_group_table(PlacementGroup(bytes.fromhex(group_of(name)), []))
            bundles = [row["bundles"][i] for i in sorted(row.get("bundles", {}))]
            return PlacementGroup(bytes.fromhex(group_of(name)), bundles)
    return None
