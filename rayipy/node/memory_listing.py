"""Gathering what ``memory_summary`` shows: the head says where the stores are and who
the owners are (its ``memory`` request), each store lists its objects over a connection
of its own (``store_client.list_store``), and this process adds its own reference counts.
The text is ``core/memory_report.py``'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rayipy.core.memory_report import LocalRefs, MemoryData, NodeMemory, Owner
from rayipy.node.store_client import list_store

if TYPE_CHECKING:
    from rayipy.node.client import Runtime

LIST_TIMEOUT_SECONDS = 10.0   # for one store to list its objects


def collect(runtime: Runtime, own_objects: bool = True) -> MemoryData:
    """Ask the head, then every node's store, from the calling thread. ``own_objects``:
    add this process's counts for the objects it owns (not for a command-line tool,
    which owns none)."""
    answer = runtime.request("memory")
    nodes = []
    for node in answer["nodes"]:
        summary: dict[str, Any] = dict(node["summary"])
        objects: list[dict[str, Any]] = []
        problem = ""
        if not node["store"]:
            problem = "its node agent runs no object store"
        else:
            try:
                summary, objects = list_store(node["store"], runtime.signer, LIST_TIMEOUT_SECONDS)
            except (ConnectionError, TimeoutError, OSError) as e:
                problem = str(e) or type(e).__name__
        nodes.append(NodeMemory(node["node_id"], node["address"], node["hostname"], summary,
                                objects, problem))
    owners = {pid: Owner(p["role"], p["pid"], p["node_id"])
              for pid, p in answer["processes"].items()}
    if not own_objects:
        return MemoryData(nodes, owners, {})
    local = {oid.hex(): LocalRefs(*counts)
             for oid, counts in runtime.objects.reference_counts().items()}
    inline_count, inline_bytes = runtime.objects.inline_usage()
    return MemoryData(nodes, owners, local, runtime.process_id.hex(), inline_count, inline_bytes)
