"""``rayipy.util``: Ray's library layer over rayipy's public API.

- ``ActorPool``: work over a fixed set of actors (``ray.util.ActorPool``).
- ``as_completed``, ``map_unordered``: refs as they finish; a stream with back-pressure.
- ``Executor``: a ``concurrent.futures.Executor`` whose calls are tasks.
- ``rayipy.util.multiprocessing.Pool``: ``multiprocessing.Pool`` on actors.
- ``rayipy.util.queue.Queue``: a FIFO kept by an actor, usable from tasks and actors.
- ``rayipy.util.joblib.register_rayipy()``: joblib's ``backend="rayipy"`` (imports
  joblib only when called).
- ``placement_group`` and its companions (``rayipy.util.placement_group``), and
  ``rayipy.util.scheduling_strategies``: where tasks and actors run.
- ``rayipy.util.state``: the state API (``list_tasks``, ``summarize_tasks``...).
- ``register_serializer``, ``deregister_serializer``, ``inspect_serializability``
  (``rayipy.util.serialization``); ``get_node_ip_address``, ``list_named_actors``.

The submodules load on first use, so ``import rayipy.util`` stays cheap.
"""

from __future__ import annotations

from rayipy.util.actor_pool import ActorPool
from rayipy.util.cluster_info import get_node_ip_address, list_named_actors
from rayipy.util.completion import as_completed, map_unordered
from rayipy.util.executor import Executor
from rayipy.util.placement_group import (PlacementGroup, get_current_placement_group,
                                         get_placement_group, placement_group,
                                         placement_group_table, remove_placement_group)
from rayipy.util.serialization import (deregister_serializer, inspect_serializability,
                                       register_serializer)

__all__ = ["ActorPool", "Executor", "PlacementGroup", "as_completed", "deregister_serializer",
           "get_current_placement_group", "get_node_ip_address", "get_placement_group",
           "inspect_serializability", "list_named_actors", "map_unordered", "placement_group",
           "placement_group_table", "register_serializer", "remove_placement_group"]
