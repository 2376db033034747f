"""When to add nodes and which to retire: the pure part of ``Launcher.adapt``.

``AdaptivePolicy.decide(now, nodes, queued, can_start)`` takes one look at the cluster
(what the head's ``demand`` request answers, ``core/demand.py``) and returns a
``Decision``: how many nodes to start, which to retire, and the size it aims at. It
reads no clock and touches no socket; ``adapt_loop.py`` polls the head and carries the
decisions out. Tested with plain asserts in ``tests/unit/test_adaptive.py``.

The rules, in the order they apply:

1. Below ``minimum`` live nodes: start the missing ones at once.
2. Growth. A resource request whose tasks have waited in the head's queue (no live node
   had it free) for ``wait_s`` without a break asks for nodes: one for every ``k`` of its
   tasks, ``k`` being how many such tasks one new node holds (a node of ``template``'s
   shape). Never beyond ``maximum``, nor beyond the spare machines the launcher has. A
   request that a new node could not hold (a GPU one on CPU machines) asks for none.
   When a node joins, the waiting clocks start again: the new node gets ``wait_s`` to
   take work before more are asked for, as Dask's ``Adaptive`` waits a few intervals
   and Ray's autoscaler counts nodes still starting.
3. Shrinking, only when nothing is to be started. A node is retired when the launcher
   started it (never the head's, never one joined by hand), nothing has run on it for
   ``idle_s``, no queued request would fit it (work about to land there), its store
   holds no primary copy of an object (someone may still read it: the node stays until
   the owner frees it; objects are not moved), and the cluster stays at ``minimum`` or
   more. The node idle longest goes first. Above ``maximum`` (``adapt`` called with a
   lower one), idle nodes go at once, without waiting ``idle_s``; busy ones never.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

Request = tuple[tuple[str, float], ...]
"""A resource request as the head queues it: (("CPU", 1.0), ("GPU", 0.5))."""


@dataclass(frozen=True)
class NodeView:
    """One live node as the policy sees it."""

    node_id: str
    resources: Mapping[str, float]       # its totals (CPU, GPU, memory, custom)
    busy: bool                           # anything runs or is held there now
    holds_objects: bool                  # its store holds primary copies
    retirable: bool                      # the launcher started it and can stop it


@dataclass(frozen=True)
class Decision:
    """What to do after one look: start ``start`` nodes, retire ``retire`` (node ids);
    ``target``: the size the cluster goes to once that is done, shown to the user."""

    start: int = 0
    retire: tuple[str, ...] = ()
    target: int = 0


@dataclass
class AdaptivePolicy:
    """The rules of the module docstring, with the clocks they need."""

    minimum: int
    maximum: int
    wait_s: float = 5.0
    idle_s: float = 60.0
    template: Mapping[str, float] | None = None   # a new node's resources, when known
    waiting_since: dict[Request, float] = field(default_factory=dict)
    idle_since: dict[str, float] = field(default_factory=dict)
    _last_size: int = -1

    def __post_init__(self) -> None:
        check_bounds(self.minimum, self.maximum, self.wait_s, self.idle_s)

    def decide(self, now: float, nodes: Sequence[NodeView],
               queued: Sequence[tuple[Request, int]], can_start: int) -> Decision:
        """One look: ``nodes`` live now, ``queued`` (request, tasks waiting), and how
        many more nodes the launcher could start (its spare machines)."""
        size = len(nodes)
        self._watch_clocks(now, nodes, queued, size)
        can_start = max(0, min(can_start, self.maximum - size))
        if size < self.minimum:
            start = min(can_start, self.minimum - size)
            return Decision(start=start, target=size + start)
        wanted = self._nodes_wanted(now, nodes, queued)
        if wanted > 0:
            start = min(can_start, wanted)
            return Decision(start=start, target=size + start)
        retire = self._to_retire(now, nodes, queued)
        return Decision(retire=retire, target=size - len(retire))

    # -- clocks ------------------------------------------------------------------------------
    def _watch_clocks(self, now: float, nodes: Sequence[NodeView],
                      queued: Sequence[tuple[Request, int]], size: int) -> None:
        waiting = {request for request, count in queued if count > 0}
        grew = 0 <= self._last_size < size
        self._last_size = size
        for request in list(self.waiting_since):
            if request not in waiting or grew:
                del self.waiting_since[request]
        for request in waiting:
            self.waiting_since.setdefault(request, now)
        live = {node.node_id for node in nodes}
        for node_id in list(self.idle_since):
            if node_id not in live:
                del self.idle_since[node_id]
        for node in nodes:
            if node.busy:
                self.idle_since.pop(node.node_id, None)
            else:
                self.idle_since.setdefault(node.node_id, now)

    # -- growth ------------------------------------------------------------------------------
    def _nodes_wanted(self, now: float, nodes: Sequence[NodeView],
                      queued: Sequence[tuple[Request, int]]) -> int:
        shape = self.template if self.template is not None else largest(nodes)
        wanted = 0
        for request, count in queued:
            since = self.waiting_since.get(request)
            if count <= 0 or since is None or now - since < self.wait_s:
                continue
            per_node = tasks_per_node(request, shape)
            if per_node > 0:
                wanted += math.ceil(count / per_node)
        return wanted

    # -- shrinking ---------------------------------------------------------------------------
    def _to_retire(self, now: float, nodes: Sequence[NodeView],
                   queued: Sequence[tuple[Request, int]]) -> tuple[str, ...]:
        waiting = [request for request, count in queued if count > 0]
        ripe: list[tuple[float, str]] = []
        early: list[tuple[float, str]] = []
        for node in nodes:
            since = self.idle_since.get(node.node_id)
            if not node.retirable or node.busy or node.holds_objects or since is None:
                continue
            if any(tasks_per_node(request, node.resources) > 0 for request in waiting):
                continue
            (ripe if now - since >= self.idle_s else early).append((since, node.node_id))
        chosen = [node_id for _, node_id in sorted(ripe)]
        over = len(nodes) - self.maximum - len(chosen)
        if over > 0:   # down to maximum at once, with nodes idle for less than idle_s
            chosen += [node_id for _, node_id in sorted(early)[:over]]
        chosen = chosen[:max(0, len(nodes) - self.minimum)]
        for node_id in chosen:
            self.idle_since.pop(node_id, None)
        return tuple(chosen)


def tasks_per_node(request: Request, resources: Mapping[str, float]) -> int:
    """How many tasks asking for ``request`` a node with ``resources`` holds at once
    (0: not even one; a request for nothing counts as 1)."""
    counts = [int(resources.get(name, 0.0) / amount + 1e-9)
              for name, amount in request if amount > 0]
    return min(counts) if counts else 1


def largest(nodes: Sequence[NodeView]) -> Mapping[str, float]:
    """The resources of the live node with the most CPUs: the shape a new node is taken
    to have when the launcher cannot say."""
    if not nodes:
        return {}
    return max(nodes, key=lambda n: n.resources.get("CPU", 0.0)).resources


def check_bounds(minimum: object, maximum: object, wait_s: object, idle_s: object) -> None:
    """ValueError for bounds ``adapt`` cannot follow."""
    for name, value in (("minimum", minimum), ("maximum", maximum)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
    if maximum < 1 or minimum > maximum:  # type: ignore[operator]
        raise ValueError(f"adapt needs 1 <= maximum and minimum <= maximum, got "
                         f"minimum={minimum!r}, maximum={maximum!r}")
    for name, value in (("wait_s", wait_s), ("idle_s", idle_s)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
