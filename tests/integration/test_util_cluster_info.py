"""rayipy.util's cluster questions and custom serializers on a real cluster."""

from __future__ import annotations

import threading

import rayipy
from rayipy.util import (deregister_serializer, get_node_ip_address, list_named_actors,
                         register_serializer)


@rayipy.remote
class Holder:
    def ping(self):
        return "pong"


class Handle:
    """Holds a lock, so pickle refuses it: only a registered serializer sends it."""

    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()


def reopen(path):
    return Handle(path + " (reopened)")


@rayipy.remote
def path_of(handle):
    return handle.path


def test_named_actors_are_listed_by_namespace(cluster):
    named = Holder.options(name="util-listed").remote()
    other = Holder.options(name="util-elsewhere", namespace="util-other-ns").remote()
    unnamed = Holder.remote()
    assert rayipy.get([named.ping.remote(), other.ping.remote(), unnamed.ping.remote()])
    assert "util-listed" in list_named_actors()
    assert "util-elsewhere" not in list_named_actors()
    everywhere = list_named_actors(all_namespaces=True)
    assert {"name": "util-elsewhere", "namespace": "util-other-ns"} in everywhere
    rayipy.kill(named)
    rayipy.kill(other)


def test_the_node_ip_address_is_the_nodes_listed_address(cluster):
    address = get_node_ip_address()
    assert address in {n["NodeManagerAddress"] for n in rayipy.nodes()}


def test_a_registered_serializer_carries_a_value_to_a_task(cluster):
    register_serializer(Handle, serializer=lambda h: h.path, deserializer=reopen)
    try:
        assert rayipy.get(path_of.remote(Handle("/data/x"))) == "/data/x (reopened)"
    finally:
        deregister_serializer(Handle)
