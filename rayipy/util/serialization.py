"""Ray's serialization helpers: custom serializers for a class, and finding what in a
value cannot be pickled.

``register_serializer(cls, serializer=, deserializer=)``: from now on, this process
pickles every ``cls`` instance it sends (arguments, results, ``put``) as
``deserializer(serializer(obj))``. The deserializer travels with the value (by reference
if importable, by value if defined in ``__main__`` or a notebook), so the receiving
process needs no registration; as in Ray, register in each process that *sends* such
values (a task that returns one registers in the task, or in a ``worker_process_setup_hook``-
like setup cell: ``%%remote --all`` / ``rayipy.jupyter`` setup cells).
"""

from __future__ import annotations

import sys
from typing import Any, Callable, NamedTuple, TextIO

from rayipy.protocol import serialization


def _rebuild(deserializer: Callable[[Any], Any], state: Any) -> Any:
    return deserializer(state)


def register_serializer(cls: type, *, serializer: Callable[[Any], Any],
                        deserializer: Callable[[Any], Any]) -> None:
    """Pickle ``cls`` instances as ``serializer(obj)``, rebuilt by ``deserializer`` on
    the receiving side (in this process's sends; see the module's docstring)."""
    if not isinstance(cls, type):
        raise TypeError(f"register_serializer() takes a class, got {cls!r}")
    if cls.__module__ == "builtins":
        # pickle writes these itself, before it looks for a custom reducer.
        raise TypeError(f"register_serializer() cannot change how the builtin {cls.__name__} "
                        f"pickles: wrap such values in a class of your own")
    if not callable(serializer) or not callable(deserializer):
        raise TypeError("register_serializer() needs serializer= and deserializer= callables")

    def reduce(obj: Any) -> tuple[Any, ...]:
        return (_rebuild, (deserializer, serializer(obj)))

    serialization.custom_reducers[cls] = reduce


def deregister_serializer(cls: type) -> None:
    """Back to pickling ``cls`` the usual way (KeyError if none was registered, as
    Ray's)."""
    if cls not in serialization.custom_reducers:
        raise KeyError(f"no serializer is registered for {cls!r}")
    del serialization.custom_reducers[cls]


class FailureTuple(NamedTuple):
    """One part of a value that does not pickle: the object, its name, and its parent."""
    obj: Any
    name: str
    parent: Any


def inspect_serializability(base_obj: Any, name: str | None = None, depth: int = 3,
                            print_file: TextIO | None = None) -> tuple[bool, set[FailureTuple]]:
    """Whether ``base_obj`` pickles as rayipy sends it, and if not, which parts do not:
    its members, a function's globals and closure, a container's items, down ``depth``
    levels (Ray's answer: ``(ok, {FailureTuple(obj, name, parent)})``). Prints a short
    tree of what failed to ``print_file`` (default stdout)."""
    out = print_file if print_file is not None else sys.stdout
    label = name or getattr(base_obj, "__qualname__", None) or type(base_obj).__name__
    failures: set[FailureTuple] = set()
    error = serialization.pickling_error(base_obj)
    if error is None:
        print(f"{label} pickles.", file=out)
        return True, failures
    print(f"{label} does not pickle: {type(error).__name__}: {error}", file=out)
    _inspect(base_obj, label, depth, failures, out, "  ")
    if not failures:   # no smaller part to blame: the object itself
        failures.add(FailureTuple(base_obj, label, None))
    return False, failures


def _members(obj: Any) -> list[tuple[str, Any]]:
    if isinstance(obj, dict):
        return [(repr(k), v) for k, v in obj.items()]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [(f"[{i}]", v) for i, v in enumerate(obj)]
    code = getattr(obj, "__code__", None)
    if code is not None:   # a function: the globals it names, and its closure
        names = [(n, obj.__globals__[n]) for n in code.co_names if n in obj.__globals__]
        cells = [(n, c.cell_contents) for n, c in zip(code.co_freevars, obj.__closure__ or ())
                 if _has_contents(c)]
        return names + cells
    state = getattr(obj, "__dict__", None)
    return list(state.items()) if isinstance(state, dict) else []


def _has_contents(cell: Any) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


def _inspect(obj: Any, label: str, depth: int, failures: set[FailureTuple], out: TextIO,
             indent: str) -> None:
    if depth <= 0:
        return
    for member_name, member in _members(obj):
        if serialization.pickling_error(member) is None:
            continue
        print(f"{indent}{member_name}: {type(member).__qualname__} does not pickle", file=out)
        before = len(failures)
        _inspect(member, member_name, depth - 1, failures, out, indent + "  ")
        if len(failures) == before:
            try:
                failures.add(FailureTuple(member, member_name, obj))
            except TypeError:   # unhashable: keep it by identity
                failures.add(FailureTuple(_Unhashable(member), member_name, _Unhashable(obj)))


class _Unhashable:
    """Wraps an unhashable object so it can sit in the failure set."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Unhashable) and other.obj is self.obj

    def __repr__(self) -> str:
        return repr(self.obj)
