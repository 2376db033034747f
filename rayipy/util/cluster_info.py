"""Ray's small questions about the cluster: this node's IP address, the named actors."""

from __future__ import annotations

from typing import Any

from rayipy import api
from rayipy.node.connection import default_node_ip
from rayipy.session import is_initialized, require_runtime


def get_node_ip_address() -> str:
    """The IP address of the node this process runs on: as the cluster lists it (its
    ``NodeManagerAddress``) once connected, else this machine's, as Ray guesses it."""
    if is_initialized():
        node_id = require_runtime().node_id.hex()
        for node in api.nodes():
            if node.get("NodeID") == node_id and node.get("NodeManagerAddress"):
                return str(node["NodeManagerAddress"])
    return default_node_ip()


def list_named_actors(all_namespaces: bool = False) -> list[Any]:
    """The names of the live named actors in the caller's namespace; with
    ``all_namespaces``, every one as ``{"name": ..., "namespace": ...}`` (Ray's forms)."""
    from rayipy.util import state
    rows = state.list_actors(filters=[("state", "!=", "DEAD")], limit=100_000)
    named = [(row["ray_namespace"], row["name"]) for row in rows if row["name"]]
    if all_namespaces:
        return [{"name": name, "namespace": namespace} for namespace, name in sorted(named)]
    here = require_runtime().namespace
    return sorted(name for namespace, name in named if namespace == here)
