"""What an autoscaler needs to know from the head, read from its scheduling state.

The head's ``demand`` request answers with ``demand_report(scheduler)``, which
``rayipy/cluster/adaptive.py`` turns into decisions (start N nodes, retire node X). It is
the cheapest honest picture the head has, with no extra bookkeeping on its hot path:

- ``queued``: per resource request, how many tasks wait in the head's ready queue, plus
  actors waiting to be placed. A task is there only while no worker of any live node can
  take it (``Scheduler.dispatch`` hands out everything it can at once), so this is work
  waiting for resources no live node has free. Requests pinned to a node
  (``NodeAffinitySchedulingStrategy``) or naming a placement group's resources are left
  out: a new node could not run them.
- ``nodes``: per live node, its resources, whether anything runs there (``busy``), and
  whether its object store holds primary copies (``holds_objects``). A primary copy in
  a store is an object whose owner has not freed it, so someone may still read it; the
  figures are those of the agent's last heartbeat (one a second), which is why a
  retirement waits for a node to be idle several seconds, not one.
"""

from __future__ import annotations

from typing import Any

from rayipy.core import placement
from rayipy.core.state import AFFINITY_PREFIX, Node, Request, WorkerStatus, shown_resources


def demand_report(scheduler: Any) -> dict[str, Any]:
    """``{"queued": [(request, count)], "nodes": [{...}]}`` for ``scheduler`` (the head's
    ``Scheduler``); plain values only, so it travels as a request's answer."""
    counts: dict[Request, int] = {}
    for request, queue in scheduler.ready.items():
        if queue and _new_node_could_help(request):
            counts[request] = counts.get(request, 0) + len(queue)
    for actor_id in scheduler.creating:
        actor = scheduler.actors.get(actor_id)
        if actor is not None and not actor.dead:
            request = actor.creation.resources
            if _new_node_could_help(request):
                counts[request] = counts.get(request, 0) + 1
    nodes = [_node_report(scheduler, node) for node in scheduler.nodes.values()
             if not node.leaving]
    return {"queued": sorted(counts.items()), "nodes": nodes}


def _new_node_could_help(request: Request) -> bool:
    return not any(name.startswith(AFFINITY_PREFIX) or placement.is_group_resource(name)
                   for name, _ in request)


def _node_report(scheduler: Any, node: Node) -> dict[str, Any]:
    workers = [scheduler.workers[w] for w in node.workers if w in scheduler.workers]
    # Any resource taken (tasks, leases, actors with resources, placement group bundles),
    # any worker with work or serving an actor (an actor may hold no resources at all).
    in_use = any(node.available.get(name, 0.0) < amount - 1e-9
                 for name, amount in node.total.items())
    working = any(w.queue or w.state is not WorkerStatus.IDLE for w in workers)
    store = node.info.get("store_summary")
    store = store if isinstance(store, dict) else {}
    holds = int(store.get("primary_bytes", 0) or 0) > 0 or int(store.get("spilled_objects", 0) or 0) > 0
    return {"node_id": node.node_id.hex(), "ip": node.info.get("ip", ""),
            "hostname": node.info.get("hostname", ""),
            "resources": shown_resources(node.total),
            "busy": in_use or working, "holds_objects": holds}
