"""Placement groups: where a group's bundles go, and the resources that stand for them.

A placement group reserves resources as *bundles* (``[{"CPU": 2}, {"CPU": 2}]``) on nodes
chosen by its strategy, all at once or not at all (Ray's names and meanings):

- ``PACK``: as few nodes as possible (one if any fits them all);
- ``SPREAD``: each bundle on a different node where possible;
- ``STRICT_PACK``: all on one node, or wait;
- ``STRICT_SPREAD``: each on a different node, or wait.

Once placed, a bundle's resources leave its node's pool and come back under names only
tasks of the group ask for, as Ray names them: ``CPU_group_0_<id>`` (bundle 0's CPUs),
``CPU_group_<id>`` (any bundle's), and ``bundle_group_0_<id>`` / ``bundle_group_<id>``
(1000 per bundle, of which every task of the group takes a thousandth, so that a task
asking for nothing still lands in its bundle). A task sent to a group has its request
rewritten to those names (``task_request``), and the ordinary scheduler places it: on
the node holding its bundle, within what the bundle has left.

Pure: the scheduler (``rayipy.core.scheduler``) keeps the groups and calls these.
"""

from __future__ import annotations

import numbers
from typing import Any, Iterable, Mapping

STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
BUNDLE_UNITS = 1000.0        # of ``bundle_group_*`` per bundle
TASK_BUNDLE_SHARE = 0.001    # of it, per task: any number of tasks fit a bundle by it
# Resources a bundle may hold. GPUs are also assigned by device, which group names would
# lose, so they are refused (with the alternative) rather than reserved wrongly.
UNSUPPORTED = ("GPU",)

Bundles = list[dict[str, float]]


def check_bundles(bundles: Any, strategy: Any) -> Bundles:
    """The bundles as plain dicts of floats; ValueError/TypeError saying what is wrong."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if not isinstance(bundles, (list, tuple)) or not bundles:
        raise ValueError(f"bundles must be a non-empty list of dicts such as "
                         f"[{{'CPU': 1}}, {{'CPU': 1}}], got {bundles!r}")
    checked: Bundles = []
    for index, bundle in enumerate(bundles):
        if not isinstance(bundle, dict) or not bundle:
            raise ValueError(f"bundle {index} must be a non-empty dict of resource -> amount, "
                             f"got {bundle!r}")
        for name, amount in bundle.items():
            if not isinstance(name, str):
                raise TypeError(f"bundle {index}: resource names are strings, got {name!r}")
            if not isinstance(amount, numbers.Real) or isinstance(amount, bool) or amount < 0:
                raise ValueError(f"bundle {index}: {name} must be a number >= 0, got {amount!r}")
            if name in UNSUPPORTED:
                raise ValueError(
                    f"bundle {index} asks for {name}: GPUs in placement group bundles are not "
                    f"supported yet. Give the task num_gpus= and pin it with "
                    f"NodeAffinitySchedulingStrategy(node_id) instead")
        if not any(amount > 0 for amount in bundle.values()):
            raise ValueError(f"bundle {index} must ask for some resource, got {bundle!r}")
        checked.append({name: float(amount) for name, amount in bundle.items() if amount > 0})
    return checked


def _fits(need: Mapping[str, float], have: Mapping[str, float]) -> bool:
    return all(have.get(name, 0.0) >= amount - 1e-9 for name, amount in need.items())


def _take(need: Mapping[str, float], have: dict[str, float]) -> None:
    for name, amount in need.items():
        have[name] = have.get(name, 0.0) - amount


def _sum(bundles: Iterable[Mapping[str, float]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for bundle in bundles:
        for name, amount in bundle.items():
            total[name] = total.get(name, 0.0) + amount
    return total


def place(bundles: Bundles, strategy: str, available: Mapping[bytes, Mapping[str, float]],
          fixed: list[bytes | None] | None = None) -> list[bytes] | None:
    """The node of each bundle, in order, or None if they cannot all be placed now.
    ``available``: what each live node has left, in a stable order (ties go to the
    first). ``fixed``: bundles placed already (a node each, None for those to place),
    after a node with some of them was lost; the others keep their nodes."""
    fixed = list(fixed) if fixed is not None else [None] * len(bundles)
    free = {node: dict(have) for node, have in available.items()}
    missing = [i for i, node in enumerate(fixed) if node is None]
    kept = {node for node in fixed if node is not None}
    if not free or not missing:
        return None if not free and missing else [n for n in fixed if n is not None]
    todo = [bundles[i] for i in missing]
    if strategy in ("PACK", "STRICT_PACK"):
        need = _sum(todo)
        whole = [node for node, have in free.items()
                 if _fits(need, have) and (not kept or node in kept)]
        if whole:
            # The one with the fewest CPUs left: keeps the emptier nodes whole for others.
            best = min(whole, key=lambda node: free[node].get("CPU", 0.0))
            chosen: list[bytes] | None = [best] * len(todo)
        elif strategy == "STRICT_PACK":
            return None
        else:
            chosen = _greedy(todo, free, prefer_used=True, used=kept)
    elif strategy == "STRICT_SPREAD":
        chosen = _distinct(todo, {n: h for n, h in free.items() if n not in kept})
    else:
        chosen = (_distinct(todo, {n: h for n, h in free.items() if n not in kept})
                  or _greedy(todo, free, prefer_used=False, used=kept))
    if chosen is None:
        return None
    placed = list(fixed)
    for index, node in zip(missing, chosen):
        placed[index] = node
    return [n for n in placed if n is not None]


def _greedy(bundles: Bundles, free: dict[bytes, dict[str, float]], prefer_used: bool,
            used: set[bytes]) -> list[bytes] | None:
    """Each bundle in turn on a node it fits: a node already used first (PACK), or the
    least used (SPREAD)."""
    chosen: list[bytes] = []
    uses: dict[bytes, int] = {node: int(node in used) for node in free}
    for bundle in bundles:
        fitting = [node for node in free if _fits(bundle, free[node])]
        if not fitting:
            return None
        if prefer_used:
            node = max(fitting, key=lambda n: uses[n])
        else:
            node = min(fitting, key=lambda n: uses[n])
        _take(bundle, free[node])
        uses[node] += 1
        chosen.append(node)
    return chosen


def _distinct(bundles: Bundles, free: dict[bytes, dict[str, float]]) -> list[bytes] | None:
    """A different node for each bundle (a matching, by backtracking: bundles are few)."""
    order = sorted(range(len(bundles)), key=lambda i: -sum(bundles[i].values()))
    chosen: dict[int, bytes] = {}

    def assign(k: int, used: set[bytes]) -> bool:
        if k == len(order):
            return True
        index = order[k]
        for node, have in free.items():
            if node not in used and _fits(bundles[index], have):
                chosen[index] = node
                if assign(k + 1, used | {node}):
                    return True
        return False

    if len(bundles) > len(free) or not assign(0, set()):
        return None
    return [chosen[i] for i in range(len(bundles))]


def group_resources(group: str, index: int, bundle: Mapping[str, float]) -> dict[str, float]:
    """What a placed bundle adds to its node, by the names its tasks ask for. ``group``:
    the group id in hex."""
    added = {f"bundle_group_{index}_{group}": BUNDLE_UNITS, f"bundle_group_{group}": BUNDLE_UNITS}
    for name, amount in bundle.items():
        added[f"{name}_group_{index}_{group}"] = amount
        added[f"{name}_group_{group}"] = amount
    return added


def task_request(resources: Mapping[str, float], group: str, index: int) -> dict[str, float]:
    """A task's resources, asked of its group's bundle ``index`` (-1: any bundle)."""
    suffix = f"_group_{index}_{group}" if index >= 0 else f"_group_{group}"
    request = {f"{name}{suffix}": amount for name, amount in resources.items() if amount > 0}
    request[f"bundle{suffix}"] = TASK_BUNDLE_SHARE
    return request


def is_group_resource(name: str) -> bool:
    return "_group_" in name


def group_of(name: str) -> str:
    """The group id (hex) a group resource name belongs to."""
    return name.rsplit("_", 1)[1]
