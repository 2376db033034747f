"""Namespaces across drivers: a second driver process on the same cluster finds named
actors in its namespace only; detached actors outlive the driver that made them."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import rayipy


@rayipy.remote
class Box:
    def __init__(self, value=None):
        self.value = value

    def get(self):
        return self.value


def other_driver(source: str) -> subprocess.CompletedProcess:
    """Run ``source`` in a second driver connected to this test's local cluster."""
    cluster = rayipy.session._cluster
    prelude = textwrap.dedent(f"""
        import rayipy
        from rayipy.node import connection
        # The local cluster's key is random and written nowhere: hand it over.
        connection.resolve = lambda address, password: connection.Target(
            "tcp://{rayipy.session.context().address}", bytes.fromhex("{cluster.key.hex()}"), "test")
        """)
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(source)],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_detached_actors_are_found_from_another_driver_in_the_same_namespace(fresh_cluster):
    fresh_cluster(namespace="colors")
    assert rayipy.get_runtime_context().namespace == "colors"
    keeper = Box.options(name="orange", lifetime="detached").remote("kept")
    rayipy.get(keeper.get.remote(), timeout=60)
    result = other_driver("""
        import rayipy
        from rayipy.exceptions import ActorDiedError
        @rayipy.remote
        class Box:
            def __init__(self, value=None):
                self.value = value
            def get(self):
                return self.value
        rayipy.init(namespace="colors")
        print(rayipy.get(rayipy.get_actor("orange").get.remote(), timeout=60))
        Box.options(name="purple", lifetime="detached").remote("made there")
        rayipy.shutdown()
        rayipy.init(namespace="fruits")
        try:
            rayipy.get_actor("orange")
        except ValueError as e:
            print("ValueError:", e)
        rayipy.shutdown()
        rayipy.init()
        try:
            rayipy.get_actor("orange")
        except ValueError as e:
            print("anonymous:", e)
        """)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "kept"
    assert lines[1].startswith("ValueError: no live actor is named 'orange' in namespace "
                               "'fruits'") and "'colors'" in lines[1]
    assert lines[2].startswith("anonymous: no live actor is named 'orange' in namespace "
                               "'anonymous-")
    # Made by a driver that has exited, detached: still there, in our namespace.
    assert rayipy.get(rayipy.get_actor("purple").get.remote(), timeout=60) == "made there"


def test_init_checks_its_namespace(fresh_cluster):
    with pytest.raises(TypeError, match="namespace must be a non-empty string"):
        fresh_cluster(namespace="")
