"""User values to bytes and back: cloudpickle, pickle protocol 5, out-of-band buffers.

The only module that imports cloudpickle. Functions and classes defined in ``__main__``
or a notebook cell travel by value; everything importable travels by reference. Buffers
of 4 KiB or more (numpy arrays, anything that pickles through protocol-5 PickleBuffers)
stay out of band, so they become frames of their own, copied once (below) and never again
in Python.

ObjectRefs found inside a value are collected while it is pickled, so the caller can
keep the objects they name alive while the value is in flight.

A value is fixed when it is handed over (a ``put``, a task's arguments, a return value),
as in Ray: ``dumps`` copies large buffers into memory of their own that nobody can write
(numpy arrays built on it are read-only), so the caller may reuse or change its array at
once. Without the copy, a change made while the bytes were being signed and sent would
also make the message fail its signature. (``snapshot=False`` keeps views, for tests.)
"""

from __future__ import annotations

import io
import linecache
import pickle
import threading
import types
from collections import ChainMap
from typing import Any, Callable

import cloudpickle

from rayipy.exceptions import SerializationError
from rayipy.protocol import landing
from rayipy.protocol.messages import Payload

INBAND_LIMIT = 4096
PICKLER = f"cloudpickle {cloudpickle.__version__}"   # what `rayipy info` reports
DYNAMIC_CODE = "<dynamic-code>"
_local = threading.local()


# Serializers the user registered for their classes (``rayipy.util.register_serializer``):
# class -> reducer. Used only while there is one, so values pickle as before otherwise.
custom_reducers: dict[type, Callable[[Any], tuple[Any, ...]]] = {}


class _CustomPickler(cloudpickle.CloudPickler):
    """cloudpickle with the user's serializers first (in this process only)."""
    dispatch_table = ChainMap(custom_reducers, cloudpickle.CloudPickler.dispatch_table)


def _cloudpickle(value: Any, buffer_callback: Callable[[pickle.PickleBuffer], bool] | None
                 = None) -> bytes:
    if not custom_reducers:
        data: bytes = cloudpickle.dumps(value, protocol=5, buffer_callback=buffer_callback)
        return data
    file = io.BytesIO()
    _CustomPickler(file, protocol=5, buffer_callback=buffer_callback).dump(value)
    return file.getvalue()


def note_contained_ref(ref: Any) -> None:
    """Called by ObjectRef.__reduce__: record a ref found inside the value being pickled."""
    found = getattr(_local, "refs", None)
    if found is not None:
        found.append(ref)


def dumps(value: Any, what: str = "value", snapshot: bool = True) -> tuple[Payload, list[Any]]:
    """Serialize ``value``; returns the payload and the ObjectRefs it contains. Large
    buffers are read-only copies unless ``snapshot`` is False (see the module's docstring)."""
    buffers: list[Any] = []

    def keep_large_out_of_band(buf: pickle.PickleBuffer) -> bool:
        raw = buf.raw()
        if raw.nbytes < INBAND_LIMIT:
            return True
        buffers.append(_frozen(raw) if snapshot else raw)
        return False

    if _is_plain(value, 2):
        # Plain data pickles the same either way; the C pickler is ten times quicker.
        return Payload(pickle.dumps(value, protocol=5)), []
    outer = getattr(_local, "refs", None)
    _local.refs = []
    try:
        data = _cloudpickle(value, keep_large_out_of_band)
        refs = _local.refs
    except MemoryError:
        raise   # out of memory, not unpicklable: the caller sees the MemoryError itself
    except Exception as e:
        raise SerializationError(_describe_failure(value, what, e)) from e
    finally:
        _local.refs = outer
    return Payload(data, tuple(buffers)), refs


def freeze(payload: Payload) -> Payload:
    """``payload`` with its buffers copied where nobody can change them (what ``dumps``
    does by default), for a payload made with ``snapshot=False`` that stays in memory."""
    if not payload.buffers:
        return payload
    # dumps keeps its buffers as ``PickleBuffer.raw()`` views: flat and contiguous.
    return Payload(payload.data, tuple(_frozen(memoryview(b)) for b in payload.buffers))


def _frozen(raw: memoryview) -> memoryview:
    """``raw``'s bytes as they are now, where nobody can change them."""
    if raw.readonly and type(raw.obj) is bytes:
        return raw
    copy = memoryview(landing.buffer(raw.nbytes)).cast("B")
    copy[:] = raw
    return copy.toreadonly()


_SCALARS = frozenset({type(None), bool, int, float, complex, str})


def _is_plain(value: Any, depth: int) -> bool:
    """Scalars and small tuples/lists/dicts of them (bytes stay with the buffer rules)."""
    kind = type(value)
    if kind in _SCALARS:
        return kind is not str or len(value) < INBAND_LIMIT
    if depth == 0:
        return False
    if kind is tuple or kind is list:
        return len(value) <= 16 and all(_is_plain(v, depth - 1) for v in value)
    if kind is dict:
        return len(value) <= 16 and all(type(k) is str and _is_plain(v, depth - 1)
                                        for k, v in value.items())
    return False


def pickling_error(value: Any) -> Exception | None:
    """The error pickling ``value`` alone raises, or None if it would travel: to name
    the part of a larger value that made ``dumps`` fail."""
    try:
        _cloudpickle(value)
    except Exception as e:
        return e
    return None


def dumps_inband(value: Any) -> bytes:
    """One self-contained pickle (no out-of-band buffers), for small records like errors."""
    return _cloudpickle(value)


def loads_inband(data: bytes) -> Any:
    return pickle.loads(data)


def loads(payload: Payload) -> Any:
    return pickle.loads(payload.data, buffers=payload.buffers)


def ship_by_value(module: types.ModuleType) -> None:
    """From now on, pickle ``module``'s functions and classes (and the module itself,
    where a function refers to it) by value: a local module edited since the workers
    imported it (``node/runtime_env_modules.py``)."""
    cloudpickle.register_pickle_by_value(module)


def dumps_function(fn: Callable[..., Any], what: str) -> bytes:
    """Pickle a function or class once, with what its tracebacks need on the other side.

    cloudpickle replaces the file name of code it pickles by value with "<dynamic-code>",
    which would leave remote tracebacks without file or source lines. So we send the file
    name and the source lines of the code that travels beside it (a notebook cell's source
    lives only in the kernel's linecache) and put both back when loading.

    Only that code's own lines travel, each with its line number: the function (its
    decorators, def and body), a class's methods, and helpers from the same file that
    travel by value with it; never the rest of the file, which may hold secrets no task
    uses. Code loaded by reference needs none: its module's file is read where it runs.
    """
    try:
        pickled = cloudpickle.dumps(fn, protocol=5)
    except Exception as e:
        raise SerializationError(
            f"could not serialize {what}: {type(e).__name__}: {e}. A remote function may "
            f"only capture picklable globals; create locks, sockets and open files inside "
            f"the function instead.") from e
    filename = _source_file(fn)
    lines = source_lines(fn, filename) if filename and not _by_reference(fn) else []
    return pickle.dumps((pickled, filename, lines), protocol=5)


def loads_function(data: bytes) -> Callable[..., Any]:
    pickled, filename, lines = pickle.loads(data)
    fn: Callable[..., Any] = pickle.loads(pickled)
    if filename:
        if _restore_filename(fn, filename) and lines:
            _remember_lines(filename, lines)
    return fn


SourceLines = list[tuple[int, str]]   # (line number, its text), ascending


def source_lines(fn: Any, filename: str) -> SourceLines:
    """The numbered lines of ``filename`` that hold the code of ``fn`` (see
    ``dumps_function``): from each function's first line (its first decorator) to the
    last line any of its code reaches."""
    all_lines = linecache.getlines(filename)
    wanted: set[int] = set()
    for function in _travelling_functions(fn, filename):
        first, last = _line_span(function.__code__)
        wanted.update(range(first, last + 1))
    return [(n, all_lines[n - 1]) for n in sorted(wanted) if 0 < n <= len(all_lines)]


def _line_span(code: types.CodeType) -> tuple[int, int]:
    first = last = code.co_firstlineno
    # co_positions (3.11) knows where a statement spanning lines ends; co_lines only
    # where each instruction starts.
    positions = getattr(code, "co_positions", None)
    ends = ([p[1] for p in positions()] if positions is not None
            else [line for _, _, line in code.co_lines()])
    for end_line in ends:
        if end_line is not None and end_line > last:
            last = end_line
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            last = max(last, _line_span(const)[1])
    return first, last


def _travelling_functions(fn: Any, filename: str) -> list[types.FunctionType]:
    """``fn``'s functions, and the functions of ``filename`` they use that cloudpickle
    ships with them: globals their code names, closure cells, ``__wrapped__``."""
    pending = _functions_of(fn)
    seen: dict[int, types.FunctionType] = {}
    while pending:
        function = pending.pop()
        if id(function) in seen or function.__code__.co_filename != filename:
            continue
        seen[id(function)] = function
        names = _global_names(function.__code__)
        related = [function.__globals__.get(name) for name in names]
        related += [cell.cell_contents for cell in function.__closure__ or () if _cell_full(cell)]
        related.append(getattr(function, "__wrapped__", None))
        pending.extend(v for v in related
                       if isinstance(v, types.FunctionType) and not _by_reference(v))
    return list(seen.values())


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _by_reference(obj: Any) -> bool:
    """Whether cloudpickle pickles ``obj`` by reference (its module importable)."""
    check = getattr(cloudpickle.cloudpickle, "_should_pickle_by_reference", None)
    if check is None:
        return False   # an older cloudpickle: send the lines, loading decides
    try:
        return bool(check(obj))
    except Exception:
        return False


def _remember_lines(filename: str, lines: SourceLines) -> None:
    """Put numbered source lines into linecache, keeping any line it already has (the
    cell's full text from ``%%remote --run``, another function of the same cell)."""
    entry = linecache.cache.get(filename)
    if entry is not None and len(entry) != 4:
        return   # a lazy entry: linecache reads the real file itself
    known: list[str] = entry[2] if entry is not None else []
    for number, text in lines:
        while len(known) < number:
            known.append("\n")
        if not known[number - 1].strip():
            known[number - 1] = text
    if entry is None:
        linecache.cache[filename] = (sum(map(len, known)), None, known, filename)


def _functions_of(fn: Any) -> list[types.FunctionType]:
    """The plain functions whose code ``fn`` carries: itself, or a class's methods."""
    members = vars(fn).values() if isinstance(fn, type) else [fn]
    found: list[types.FunctionType] = []
    for member in members:
        target = getattr(member, "__func__", member)   # staticmethod / classmethod
        if isinstance(target, types.FunctionType):
            found.append(target)
    return found


def _source_file(fn: Any) -> str | None:
    for function in _functions_of(fn):
        return function.__code__.co_filename
    return None


def _restore_filename(fn: Any, filename: str) -> bool:
    """Put ``filename`` back into code that travelled by value; whether there was any."""
    # Helpers from the same file travel by value with it: as globals of its functions, in
    # closures (decorators), or as __wrapped__. Walk them all, once each.
    pending = _functions_of(fn)
    seen: set[int] = set()
    restored = False
    while pending:
        function = pending.pop()
        if id(function) in seen:
            continue
        seen.add(id(function))
        code = function.__code__
        if code.co_filename != DYNAMIC_CODE:
            continue  # loaded by reference: its module has the real file name
        function.__code__ = _with_filename(code, filename)
        restored = True
        related = list(function.__globals__.values())
        related += [cell.cell_contents for cell in function.__closure__ or () if _cell_full(cell)]
        related.append(getattr(function, "__wrapped__", None))
        pending.extend(v for v in related if isinstance(v, types.FunctionType))
    return restored


def _cell_full(cell: types.CellType) -> bool:
    try:
        cell.cell_contents
        return True
    except ValueError:
        return False


def _with_filename(code: types.CodeType, filename: str) -> types.CodeType:
    consts = tuple(_with_filename(c, filename) if isinstance(c, types.CodeType) else c
                   for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)


def dumps_arguments(args: tuple[Any, ...], kwargs: dict[str, Any],
                    function_name: str, snapshot: bool = True) -> tuple[Payload, list[Any]]:
    """dumps((args, kwargs)), with errors that name the argument that would not pickle."""
    if not args and not kwargs:
        return NO_ARGUMENTS, []   # the same bytes every time: made once
    try:
        return dumps((args, kwargs), f"the arguments of {function_name}", snapshot)
    except SerializationError as e:
        labelled = [(f"argument {i}", a) for i, a in enumerate(args)]
        labelled += [(f"keyword argument {k!r}", v) for k, v in kwargs.items()]
        for label, value in labelled:
            inner = pickling_error(value)
            if inner is not None:
                culprit = _find_unpicklable(value, depth=3)
                detail = f" ({culprit})" if culprit else ""
                raise SerializationError(
                    f"could not serialize {label} of {function_name}: {_short_repr(value)}"
                    f"{detail}: {type(inner).__name__}: {inner}. Pass only picklable values to "
                    f"remote calls (create locks, sockets, open files and the like inside the "
                    f"task).") from None
        raise e


NO_ARGUMENTS = Payload(pickle.dumps(((), {}), protocol=5))


def _describe_failure(value: Any, what: str, error: Exception) -> str:
    """Find which part of a value would not pickle, to name it in the error."""
    culprit = _find_unpicklable(value, depth=3)
    where = f" ({culprit})" if culprit else ""
    return (f"could not serialize {what}{where}: {type(error).__name__}: {error}. "
            f"Pass only picklable values to remote calls (create locks, sockets, open files "
            f"and the like inside the task).")


def _find_unpicklable(value: Any, depth: int, path: str = "") -> str:
    items: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        items = [(f"{path}[{k!r}]", v) for k, v in value.items()]
    elif isinstance(value, (list, tuple)):
        items = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
    for label, item in items:
        if pickling_error(item) is not None:
            if depth > 0:
                inner = _find_unpicklable(item, depth - 1, label)
                if inner:
                    return inner
            return f"item {label}: {_short_repr(item)} of type {type(item).__qualname__}"
    return ""


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        text = object.__repr__(value)
    return text if len(text) <= 80 else text[:77] + "..."
