"""Placement groups in the head's scheduler: reserving bundles on nodes, releasing them.

A layer of ``Scheduler`` (drawn in ``scheduler_state``), pure like the rest: events in,
instructions out. Where bundles go, and the resource names a placed bundle adds to its
node, are ``rayipy.core.placement``; this layer keeps the groups and moves resources:

- ``create_group``: the group is recorded PENDING, then placed as soon as its bundles
  fit (now, or when resources free up or a node joins: ``dispatch`` tries again first).
  Placing takes each bundle's resources out of its node's pool and adds them back under
  the group's names, so the ordinary placement of tasks does the rest.
- A task or actor asking for a group's resources waits while the group is pending, and
  is refused at once only if no bundle of the group could ever hold it.
- ``remove_group``: its bundles' resources go back to their nodes; tasks waiting for it
  fail; workers running in it are killed, as in Ray.
- A node lost with bundles on it: those bundles are placed again (the group is
  RESCHEDULING meanwhile, as in Ray), under the same names, so tasks waiting for them go
  on once they are.
- A driver's groups go with it, unless created with ``lifetime="detached"``.
- Durable (``core/head_journal.py``): each creation, placement and removal is a journal
  record in ``group_records``, which the head writes. A restarted head gets its groups
  back (``recover_groups``), PENDING, and places each bundle on the node it was on as
  soon as all of the group's nodes have registered again (the workers running in it
  never stopped); a group whose nodes did not all come back within the recovery wait is
  placed anew, as after a lost node, and a non-detached group whose creator did not come
  back is removed (``groups_recovery_over``).
"""

from __future__ import annotations

import abc
import collections
from dataclasses import dataclass, field
from typing import Any

from rayipy.core import placement
from rayipy.core.instructions import Instruction, KillWorker
from rayipy.core.scheduler_state import SchedulerState
from rayipy.core.state import AFFINITY_PREFIX, Request, affinity_resource
from rayipy.exceptions import TaskPlacementGroupRemoved
from rayipy.protocol.messages import CRASHED, ERROR, TaskSpec

PENDING, CREATED, RESCHEDULING, REMOVED = "PENDING", "CREATED", "RESCHEDULING", "REMOVED"
REMOVED_KEPT = 100     # removed groups still listed (placement_group_table), the latest


@dataclass
class Group:
    """One placement group, as the head keeps it."""
    group_id: bytes
    bundles: placement.Bundles
    strategy: str
    name: str
    owner: bytes                      # the process that created it
    detached: bool
    state: str = PENDING
    nodes: list[bytes | None] = field(default_factory=list)   # per bundle; None: not placed
    # After a restart, until placed: the node each bundle was on (the journal's word).
    was_on: list[bytes] | None = None

    @property
    def hex(self) -> str:
        return self.group_id.hex()

    def describe(self) -> dict[str, Any]:
        """The group as ``placement_group_table`` shows it (Ray's field names)."""
        return {"placement_group_id": self.hex, "name": self.name, "strategy": self.strategy,
                "state": self.state, "bundles": {i: dict(b) for i, b in enumerate(self.bundles)},
                "bundles_to_node_id": {i: n.hex() for i, n in enumerate(self.nodes) if n},
                "stats": {"scheduling_state": "FINISHED" if self.state == CREATED
                          else "QUEUED" if self.state in (PENDING, RESCHEDULING) else "REMOVED"},
                "is_detached": self.detached}


class PlacementScheduling(SchedulerState):
    """The placement groups part of the scheduler."""

    def __init__(self) -> None:
        super().__init__()
        self.groups: dict[bytes, Group] = {}
        self.groups_waiting: list[bytes] = []    # pending or rescheduling, oldest first
        self.groups_removed: collections.deque[Group] = collections.deque(maxlen=REMOVED_KEPT)
        # Journal records not written yet (the head takes them each turn of its loop).
        self.group_records: list[tuple[Any, ...]] = []
        # A restarted head waits for groups' nodes to come back (``recover_groups``).
        self.groups_recovering = False

    @abc.abstractmethod
    def remove_worker(self, worker_id: bytes, error: BaseException, crashed_status: int,
                      cancelled_status: int) -> list[Instruction]:
        """A worker is gone: its tasks retried or failed (``Scheduler`` defines it)."""

    # -- events ------------------------------------------------------------------------------
    def create_group(self, group_id: bytes, bundles: placement.Bundles, strategy: str,
                     name: str, owner: bytes, detached: bool) -> list[Instruction]:
        if group_id in self.groups:
            return []
        if name and any(g.name == name for g in self.groups.values()):
            raise ValueError(f"a placement group named {name!r} already exists: pick another "
                             f"name, or find it with get_placement_group({name!r})")
        checked = placement.check_bundles(bundles, strategy)
        self.groups[group_id] = Group(group_id, checked, strategy, name, owner, detached,
                                      nodes=[None] * len(checked))
        self.groups_waiting.append(group_id)
        self.group_records.append(("group", group_id, checked, strategy, name, owner, detached))
        return self.dispatch()

    def remove_group(self, group_id: bytes) -> list[Instruction]:
        """Release a group: its resources back to its nodes, its waiting tasks failed, its
        running workers killed."""
        group = self.groups.pop(group_id, None)
        if group is None:
            return []
        if group_id in self.groups_waiting:
            self.groups_waiting.remove(group_id)
        group.state = REMOVED
        self.groups_removed.append(group)
        self.group_records.append(("group_removed", group_id))
        # The bundles' resources go back to their nodes first, and the group's names
        # with them: the allocations of the workers killed below then give nothing back.
        for index, node_id in enumerate(group.nodes):
            node = self.nodes.get(node_id) if node_id is not None else None
            if node is None:
                continue
            for name in placement.group_resources(group.hex, index, group.bundles[index]):
                node.total.pop(name, None)
                node.available.pop(name, None)
            node.take(tuple(group.bundles[index].items()), -1)
        self._nodes_changed()
        out: list[Instruction] = []
        for worker in list(self.workers.values()):
            allocation = worker.allocation
            if allocation and any(_in_group(name, group.hex) for name, _ in allocation):
                node = self.nodes.get(worker.node_id)
                if node is not None:
                    out.append(KillWorker(node.agent, worker.worker_id))
                # Its tasks go back to the queue, and fail with the others just below.
                out.extend(self.remove_worker(worker.worker_id, RuntimeError(
                    f"its placement group {group.hex} was removed"), ERROR, ERROR))
        out.extend(self._fail_waiting_for(group))
        return out + self.dispatch()

    def owner_groups_gone(self, owner: bytes) -> list[Instruction]:
        """A driver left: its groups go too, but detached ones."""
        out: list[Instruction] = []
        for group in [g for g in self.groups.values() if g.owner == owner and not g.detached]:
            out.extend(self.remove_group(group.group_id))
        return out

    def groups_lost_node(self, node_id: bytes) -> None:
        """A node is gone: its bundles are to be placed again."""
        for group in self.groups.values():
            if node_id in group.nodes:
                group.nodes = [None if n == node_id else n for n in group.nodes]
                group.state = RESCHEDULING
                if group.group_id not in self.groups_waiting:
                    self.groups_waiting.append(group.group_id)

    def recover_groups(self, groups: list[tuple[bytes, placement.Bundles, str, str, bytes,
                                                bool, list[bytes] | None]]) -> None:
        """A restarted head: the journal's live groups, ``(id, bundles, strategy, name,
        owner, detached, nodes it was on or None)``, PENDING until their nodes are back."""
        for group_id, bundles, strategy, name, owner, detached, was_on in groups:
            self.groups[group_id] = Group(group_id, bundles, strategy, name, owner, detached,
                                          nodes=[None] * len(bundles),
                                          was_on=list(was_on) if was_on else None)
            self.groups_waiting.append(group_id)
        self.groups_recovering = True

    def groups_recovery_over(self) -> list[Instruction]:
        """The recovery wait is over: groups whose nodes did not all come back are placed
        anew, and non-detached groups whose creator did not come back are removed."""
        self.groups_recovering = False
        for group in self.groups.values():
            group.was_on = None
        out: list[Instruction] = []
        for group in [g for g in self.groups.values()
                      if not g.detached and g.owner not in self.live_owners]:
            out.extend(self.remove_group(group.group_id))
        return out + self.dispatch()

    # -- questions ----------------------------------------------------------------------------
    def group_named(self, name: str) -> Group | None:
        return next((g for g in self.groups.values() if g.name == name), None)

    def describe_groups(self) -> list[dict[str, Any]]:
        return [g.describe() for g in (*self.groups.values(), *self.groups_removed)]

    # -- steps ------------------------------------------------------------------------------
    def _place_groups(self) -> bool:
        """Place the waiting groups that fit now, oldest first; True if any was."""
        placed_any = False
        for group_id in list(self.groups_waiting):
            group = self.groups[group_id]
            live = {node_id: node.available for node_id, node in self.nodes.items()
                    if not node.leaving}
            chosen: list[bytes] | None
            if group.was_on is not None:
                # Back where it was (its workers lived on there), once all its nodes are.
                if not all(node_id in live for node_id in group.was_on):
                    continue
                chosen, group.was_on = list(group.was_on), None
            else:
                chosen = placement.place(group.bundles, group.strategy, live, group.nodes)
            if chosen is None:
                continue
            for index, node_id in enumerate(chosen):
                if group.nodes[index] is not None:
                    continue
                node = self.nodes[node_id]
                node.take(tuple(group.bundles[index].items()))
                for name, amount in placement.group_resources(group.hex, index,
                                                              group.bundles[index]).items():
                    if f"_group_{index}_" in name:
                        node.total[name] = amount
                        # Added, not set: after a restart an actor of the group may
                        # have registered again first, holding its share already.
                        node.available[name] = node.available.get(name, 0.0) + amount
                    else:   # the wildcard name sums the bundles on this node
                        node.total[name] = node.total.get(name, 0.0) + amount
                        node.available[name] = node.available.get(name, 0.0) + amount
            group.nodes = list(chosen)
            group.state = CREATED
            self.groups_waiting.remove(group_id)
            self.group_records.append(("group_placed", group_id, list(chosen)))
            placed_any = True
        if placed_any:
            self._nodes_changed()
        return placed_any

    def _fits_nowhere(self, spec: TaskSpec) -> bool:
        """As the base, but a request for a group that is not placed (yet, or again) waits
        if one of its bundles could hold it."""
        if not super()._fits_nowhere(spec):
            return False
        group = self._group_of_request(spec.resources)
        if group is None or group.state == CREATED:
            return True
        return not self._a_bundle_holds(group, spec.resources)

    def impossible_message(self, spec: TaskSpec) -> str:
        what = f"actor {spec.name[:-9]!r}" if spec.method == "__init__" else f"task {spec.name!r}"
        pinned = next((name for name, _ in spec.resources if name.startswith(AFFINITY_PREFIX)), "")
        if pinned and not any(affinity_resource(n) == pinned for n in self.nodes):
            return (f"{what} is pinned to node {pinned[len(AFFINITY_PREFIX):]} "
                    f"(NodeAffinitySchedulingStrategy with soft=False), which is not in the "
                    f"cluster: pass a live node's id (rayipy.nodes()), or soft=True to let it "
                    f"run elsewhere.")
        group = self._group_of_request(spec.resources)
        if group is None:
            return super().impossible_message(spec)
        wanted = {name.split("_group_")[0]: amount for name, amount in spec.resources
                  if not name.startswith("bundle_group_")}
        return (f"{what} asks for {wanted or 'nothing'} in placement group {group.hex}, whose "
                f"bundles are {group.bundles}: no bundle it may use holds that. Ask for less, "
                f"or make the group with bigger bundles.")

    def _group_of_request(self, request: Request) -> Group | None:
        for name, _ in request:
            if placement.is_group_resource(name):
                return self.groups.get(bytes.fromhex(placement.group_of(name)))
        return None

    @staticmethod
    def _a_bundle_holds(group: Group, request: Request) -> bool:
        for name, amount in request:
            if not placement.is_group_resource(name) or name.startswith("bundle_group_"):
                continue
            base, rest = name.split("_group_", 1)
            index = int(rest.split("_")[0]) if rest.count("_") else -1
            bundles = [group.bundles[index]] if 0 <= index < len(group.bundles) else group.bundles
            if not any(b.get(base, 0.0) >= amount - 1e-9 for b in bundles):
                return False
        return True

    def _fail_waiting_for(self, group: Group) -> list[Instruction]:
        """Fail the tasks queued for a removed group's resources."""
        out: list[Instruction] = []
        for request, queue in self.ready.items():
            if not queue or not any(_in_group(name, group.hex) for name, _ in request):
                continue
            while queue:
                task_id = queue.popleft()
                if task_id in self.tasks:
                    name = self.tasks[task_id].spec.name
                    out.append(self._fail(task_id, CRASHED, TaskPlacementGroupRemoved(
                        f"task {name!r} was waiting for placement group {group.hex}, which "
                        f"was removed")))
        return out


def _in_group(name: str, group: str) -> bool:
    """Whether resource ``name`` is one of group ``group``'s (hex id)."""
    return placement.is_group_resource(name) and placement.group_of(name) == group
