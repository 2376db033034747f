"""rayipy.util's serialization helpers without a cluster: a registered serializer is
used by what rayipy sends (and only while registered), and inspect_serializability names
the part of a value that does not pickle."""

from __future__ import annotations

import io
import threading

import pytest

from rayipy.protocol import serialization
from rayipy.util import deregister_serializer, inspect_serializability, register_serializer


class Opaque:
    """Refuses pickle on its own: only a registered serializer can send it."""

    def __init__(self, value):
        self.value = value
        self.lock = threading.Lock()


def rebuild(value):
    return Opaque(value * 10)


def test_a_registered_serializer_is_used_and_its_deserializer_rebuilds():
    with pytest.raises(Exception):
        serialization.dumps(Opaque(1))
    register_serializer(Opaque, serializer=lambda o: o.value, deserializer=rebuild)
    try:
        payload, _ = serialization.dumps([Opaque(4), {"k": Opaque(5)}])
        first, rest = serialization.loads(payload)
        assert (first.value, rest["k"].value) == (40, 50)
    finally:
        deregister_serializer(Opaque)
    with pytest.raises(Exception):
        serialization.dumps(Opaque(1))
    with pytest.raises(KeyError):
        deregister_serializer(Opaque)


def test_a_serializer_for_a_builtin_is_refused_saying_what_to_do():
    with pytest.raises(TypeError, match="builtin int.*class of your own"):
        register_serializer(int, serializer=str, deserializer=int)


def test_register_serializer_checks_its_arguments():
    with pytest.raises(TypeError):
        register_serializer(Opaque(1), serializer=str, deserializer=str)
    with pytest.raises(TypeError):
        register_serializer(Opaque, serializer=None, deserializer=str)


def test_inspect_serializability_names_the_part_that_does_not_pickle():
    lock = threading.Lock()

    def uses_lock():
        return lock

    out = io.StringIO()
    ok, failures = inspect_serializability(uses_lock, name="uses_lock", print_file=out)
    assert ok is False
    assert [f.name for f in failures] == ["lock"]
    assert "lock" in out.getvalue()
    ok, failures = inspect_serializability({"a": 1, "b": [2, 3]}, print_file=io.StringIO())
    assert ok is True and failures == set()
