"""Unit tests of rayipy.protocol.serialization: values, buffers, functions, refs, errors."""

from __future__ import annotations

import linecache
import pickle
import threading
import traceback

import weakref

import cloudpickle
import numpy as np
import pytest

from rayipy.core.object_ref import ObjectRef
from rayipy.exceptions import SerializationError
from rayipy.protocol import serialization
from rayipy.protocol.messages import Payload
from rayipy.protocol.serialization import (
    DYNAMIC_CODE, INBAND_LIMIT, dumps, dumps_arguments, dumps_function, loads, loads_function,
    pickling_error)


def round_trip(value):
    payload, refs = dumps(value)
    assert isinstance(payload, Payload)
    return loads(payload), payload, refs


def inert_ref(tag: bytes) -> ObjectRef:
    return ObjectRef(tag * 18, None, counted=False)


def frame_files(error: BaseException) -> list[tuple[str, str]]:
    return [(f.filename, f.name) for f in traceback.extract_tb(error.__traceback__)]


# -- plain values --------------------------------------------------------------------
@pytest.mark.parametrize("value", [
    None, 0, -3, 2**100, 1.5, "text", "ünïcode", b"bytes", b"x" * 100_000,
    [1, [2, [3]]], (1, "a"), {"k": {1: 2}}, {1, 2, 3}, frozenset({"a"}), range(5),
    bytearray(b"ba"), Exception("e"), complex(1, 2),
])
def test_plain_values_round_trip(value):
    got, payload, refs = round_trip(value)
    assert got == value or (isinstance(value, Exception) and got.args == value.args)
    assert type(got) is type(value)
    assert refs == []
    assert payload.buffers == ()


def test_shared_references_stay_shared():
    inner = [1, 2]
    got, _, _ = round_trip([inner, inner])
    assert got[0] is got[1]


# -- numpy and buffers ---------------------------------------------------------------
def test_large_numpy_array_goes_out_of_band():
    array = np.arange(100_000, dtype=np.float64)
    got, payload, _ = round_trip(array)
    assert len(payload.buffers) == 1
    assert memoryview(payload.buffers[0]).nbytes == array.nbytes
    assert len(payload.data) < 1024
    assert payload.nbytes == len(payload.data) + array.nbytes
    assert np.array_equal(got, array) and got.dtype == array.dtype


def test_out_of_band_buffer_is_a_view_not_a_copy():
    array = np.zeros(10_000, dtype=np.uint8)
    payload, _ = dumps(array, snapshot=False)
    got = loads(payload)
    assert np.shares_memory(got, array)


@pytest.mark.parametrize("size", [10_000, 3 * 2**20])    # from the allocator, from the pool
def test_a_snapshot_is_a_read_only_copy_fixed_when_made(size):
    array = np.zeros(size, dtype=np.uint8)
    payload, _ = dumps({"a": array, "small": np.zeros(3)})
    array[:] = 1
    got = loads(payload)["a"]
    assert not got.any() and not np.shares_memory(got, array)
    assert all(memoryview(b).readonly for b in payload.buffers)
    assert not got.flags.writeable


def test_a_snapshot_of_a_bytearray_is_still_a_bytearray():
    value = bytearray(range(256)) * 100
    payload, _ = dumps(value)
    value[0] = 9
    got = loads(payload)
    assert type(got) is bytearray and got[0] == 0 and got[1:] == value[1:]


def test_small_numpy_array_stays_in_band():
    array = np.arange(10, dtype=np.int32)
    got, payload, _ = round_trip(array)
    assert payload.buffers == ()
    assert np.array_equal(got, array)


@pytest.mark.parametrize("nbytes, out_of_band", [
    (INBAND_LIMIT - 8, False), (INBAND_LIMIT, True), (INBAND_LIMIT + 8, True)])
def test_in_band_limit_boundary(nbytes, out_of_band):
    array = np.ones(nbytes // 8, dtype=np.float64)
    got, payload, _ = round_trip(array)
    assert len(payload.buffers) == (1 if out_of_band else 0)
    assert np.array_equal(got, array)


def test_many_arrays_mixed_sizes():
    value = {"big": np.ones(2048), "small": np.ones(3), "big2": np.arange(1000, dtype=np.int64)}
    got, payload, _ = round_trip(value)
    assert len(payload.buffers) == 2
    for key in value:
        assert np.array_equal(got[key], value[key])


def test_large_bytearray_round_trips():
    value = bytearray(range(256)) * 100
    got, _, _ = round_trip(value)
    assert type(got) is bytearray and got == value


# -- functions by value ----------------------------------------------------------------
@pytest.fixture
def load_elsewhere(monkeypatch):
    """loads_function as a fresh process would run it: cloudpickle knows no classes yet."""
    def load(data: bytes):
        monkeypatch.setattr(cloudpickle.cloudpickle, "_DYNAMIC_CLASS_TRACKER_BY_ID",
                            weakref.WeakValueDictionary())
        return loads_function(data)
    return load


def test_local_function_travels_by_value():
    factor = 3

    def triple(x):
        return x * factor

    got, payload, _ = round_trip(triple)
    assert got is not triple
    assert got(5) == 15


def test_plain_cloudpickle_loses_the_filename():
    """The problem dumps_function exists to fix (guards the tests below)."""
    def task():
        return 1
    assert pickle.loads(cloudpickle.dumps(task)).__code__.co_filename == DYNAMIC_CODE


def test_loads_function_restores_the_filename_of_nested_code():
    def task(x):
        def inner(y):
            return 1 / y
        via_lambda = lambda z: inner(z)  # noqa: E731
        return via_lambda(x)

    fn = loads_function(dumps_function(task, "task"))
    assert fn is not task
    assert fn.__code__.co_filename == task.__code__.co_filename == __file__
    assert fn(4) == 0.25
    with pytest.raises(ZeroDivisionError) as info:
        fn(0)
    frames = frame_files(info.value)
    assert [name for _, name in frames[-3:]] == ["task", "<lambda>", "inner"]
    assert all(filename == __file__ for filename, _ in frames)


def test_loads_function_restores_methods_of_a_class(load_elsewhere):
    class Counter:
        def __init__(self):
            self.n = 0

        def bump(self):
            return [i for i in range(self.n + 1)]  # a nested code object (the comprehension)

    cls = load_elsewhere(dumps_function(Counter, "Counter"))
    assert cls is not Counter
    assert cls.bump.__code__.co_filename == __file__
    assert cls.__init__.__code__.co_filename == __file__
    assert cls().bump() == [0]


def test_loads_function_restores_classmethod_only_class(load_elsewhere):
    class Tools:
        @classmethod
        def make(cls):
            return cls

    cls = load_elsewhere(dumps_function(Tools, "Tools"))
    assert cls is not Tools
    assert cls.make.__func__.__code__.co_filename == __file__


NOTEBOOK_CELL = '''\
def helper(x):
    return 1 / x

def task(x):
    inner = lambda y: 1 / y
    return inner(x)

def calls_helper(x):
    return helper(x)

def via_helpers(x):
    return calls_helper(x)

def decorate(f):
    def wrapper(*args):
        return f(*args)
    return wrapper

@decorate
def decorated(x):
    return 1 / x
'''


@pytest.fixture
def notebook_cell():
    """Functions from a 'cell' whose source exists only in linecache (as in Jupyter)."""
    filename = "<rayipy-test-cell-1>"
    lines = NOTEBOOK_CELL.splitlines(True)
    linecache.cache[filename] = (len(NOTEBOOK_CELL), None, lines, filename)
    namespace = {"__name__": "rayipy_test_not_importable"}
    exec(compile(NOTEBOOK_CELL, filename, "exec"), namespace)
    yield filename, namespace
    linecache.cache.pop(filename, None)


def test_source_lines_travel_into_linecache(notebook_cell):
    filename, namespace = notebook_cell
    data = dumps_function(namespace["task"], "task")
    del linecache.cache[filename]           # the other process has never seen the cell
    fn = loads_function(data)
    assert fn.__code__.co_filename == filename
    assert linecache.getline(filename, 5) == "    inner = lambda y: 1 / y\n"
    with pytest.raises(ZeroDivisionError) as info:
        fn(0)
    text = "".join(traceback.format_exception(info.value))
    assert f'File "{filename}", line 5, in <lambda>' in text
    assert "inner = lambda y: 1 / y" in text
    assert "return inner(x)" in text


def test_loads_function_keeps_existing_linecache_entry(notebook_cell):
    filename, namespace = notebook_cell
    data = dumps_function(namespace["task"], "task")
    marker = (1, None, ["other\n"], filename)
    linecache.cache[filename] = marker
    loads_function(data)
    assert linecache.cache[filename] is marker


def test_helper_function_from_the_same_cell_gets_its_filename(notebook_cell):
    filename, namespace = notebook_cell
    fn = loads_function(dumps_function(namespace["calls_helper"], "calls_helper"))
    with pytest.raises(ZeroDivisionError) as info:
        fn(0)
    assert frame_files(info.value)[-2:] == [(filename, "calls_helper"), (filename, "helper")]


def test_helpers_of_helpers_get_their_filename(notebook_cell):
    filename, namespace = notebook_cell
    fn = loads_function(dumps_function(namespace["via_helpers"], "via_helpers"))
    with pytest.raises(ZeroDivisionError) as info:
        fn(0)
    assert [f for f, _ in frame_files(info.value)[-3:]] == [filename] * 3


def test_decorated_function_gets_its_filename(notebook_cell):
    filename, namespace = notebook_cell
    fn = loads_function(dumps_function(namespace["decorated"], "decorated"))
    with pytest.raises(ZeroDivisionError) as info:
        fn(0)
    assert frame_files(info.value)[-2:] == [(filename, "wrapper"), (filename, "decorated")]


def test_function_pickled_by_reference_is_the_same_object():
    fn = loads_function(dumps_function(np.array, "np.array"))
    assert fn is np.array


def test_dumps_function_with_unpicklable_global_names_the_function():
    lock = threading.Lock()

    def uses_lock():
        return lock

    with pytest.raises(SerializationError) as info:
        dumps_function(uses_lock, "remote function 'uses_lock'")
    message = str(info.value)
    assert "could not serialize remote function 'uses_lock'" in message
    assert "_thread.lock" in message
    assert isinstance(info.value, TypeError)


# -- argument errors ---------------------------------------------------------------------
def test_dumps_arguments_round_trip():
    payload, refs = dumps_arguments((1, "a"), {"k": [2]}, "f")
    assert loads(payload) == ((1, "a"), {"k": [2]})
    assert refs == []


def test_unpicklable_positional_argument_is_named():
    with pytest.raises(SerializationError) as info:
        dumps_arguments((1, threading.Lock()), {}, "my_task")
    message = str(info.value)
    assert isinstance(info.value, TypeError)
    assert "argument 1 of my_task" in message
    assert "_thread.lock" in message


def test_unpicklable_first_argument_is_argument_0():
    with pytest.raises(SerializationError, match=r"argument 0 of f\b"):
        dumps_arguments((threading.Lock(),), {}, "f")


def test_unpicklable_keyword_argument_is_named():
    with pytest.raises(SerializationError) as info:
        dumps_arguments((1, 2), {"ok": 3, "k": threading.Lock()}, "f")
    message = str(info.value)
    assert "keyword argument 'k' of f" in message
    assert "_thread.lock" in message
    assert "argument 0" not in message


def test_unpicklable_item_nested_in_a_list_is_located():
    with pytest.raises(SerializationError) as info:
        dumps_arguments(([1, 2, [3, threading.Lock()]],), {}, "f")
    message = str(info.value)
    assert "argument 0 of f" in message
    assert "item [2][1]" in message
    assert "of type lock" in message


def test_dumps_names_the_culprit_inside_a_dict():
    with pytest.raises(SerializationError) as info:
        dumps({"a": 1, "b": [0, threading.Lock()]}, "the value")
    assert "could not serialize the value (item ['b'][1]" in str(info.value)
    assert isinstance(info.value.__cause__, TypeError)


def test_pickling_error_says_why_a_value_would_not_travel():
    assert pickling_error({"a": [1, 2], "f": lambda x: x}) is None   # cloudpickle: by value
    error = pickling_error([threading.Lock()])
    assert isinstance(error, TypeError) and "_thread.lock" in str(error)


def test_long_reprs_are_shortened():
    with pytest.raises(SerializationError) as info:
        dumps_arguments(([0] * 1000 + [threading.Lock()],), {}, "f")
    assert "..." in str(info.value)
    assert len(str(info.value)) < 1000


# -- refs found inside values ----------------------------------------------------------------
def test_refs_inside_a_value_are_collected():
    a, b = inert_ref(b"a"), inert_ref(b"b")
    payload, refs = dumps({"x": [a], "y": (1, b)})
    assert refs == [a, b]
    got = loads(payload)
    assert got["x"][0] == a and got["y"][1] == b
    assert got["x"][0]._runtime is None


def test_refs_in_arguments_are_collected():
    ref = inert_ref(b"r")
    _, refs = dumps_arguments(([ref],), {"k": ref}, "f")
    assert refs == [ref]


class _DumpsInside:
    """Pickles its value with a nested dumps call, as a Payload inside a body would."""

    def __init__(self, value):
        self.value = value

    def __reduce__(self):
        payload, inner = dumps(self.value)
        _DumpsInside.inner_refs = inner
        return (loads, (payload,))


def test_nested_dumps_keeps_its_own_ref_list():
    a, b, c = inert_ref(b"a"), inert_ref(b"b"), inert_ref(b"c")
    _, refs = dumps([a, _DumpsInside([b]), c])
    assert _DumpsInside.inner_refs == [b]
    assert a in refs and c in refs


def test_failed_dumps_leaves_no_collection_behind():
    with pytest.raises(SerializationError):
        dumps([inert_ref(b"a"), threading.Lock()])
    assert getattr(serialization._local, "refs", None) is None
    serialization.note_contained_ref(inert_ref(b"z"))  # outside dumps: ignored
    _, refs = dumps([1])
    assert refs == []


SECRET = "s3cret-not-for-workers"
SECRET_CELL = f'''PASSWORD = "{SECRET}"

def helper(x):
    return 1 / x

def decorate(f):
    def wrapper(*args):
        return f(*args)
    return wrapper

TOKEN = "{SECRET}-2"

@decorate
def task(x):
    total = (x +
             1)
    return helper(total - 1)

class Counter:
    # {SECRET} between methods

    def add(self, x):
        return helper(x)
# {SECRET} in a trailing comment
'''


@pytest.fixture
def secret_cell():
    """A 'cell' holding secrets on lines that no function uses."""
    filename = "<rayipy-test-secret-cell>"
    linecache.cache[filename] = (len(SECRET_CELL), None, SECRET_CELL.splitlines(True), filename)
    namespace = {"__name__": "rayipy_test_not_importable"}
    exec(compile(SECRET_CELL, filename, "exec"), namespace)
    yield filename, namespace
    linecache.cache.pop(filename, None)


@pytest.mark.parametrize("name", ["task", "helper", "Counter"])
def test_only_the_code_that_travels_ships_its_source_lines(secret_cell, name):
    filename, namespace = secret_cell
    data = dumps_function(namespace[name], name)
    # What the head stores and forwards is these bytes: no line the code does not use.
    assert SECRET.encode() not in data
    assert b"PASSWORD" not in data and b"TOKEN" not in data


def test_shipped_lines_keep_their_numbers_and_tracebacks_show_them(secret_cell):
    filename, namespace = secret_cell
    data = dumps_function(namespace["task"], "task")
    del linecache.cache[filename]           # the other process has never seen the cell
    fn = loads_function(data)
    with pytest.raises(ZeroDivisionError) as info:
        fn(0)
    text = "".join(traceback.format_exception(info.value))
    assert f'File "{filename}", line 17, in task' in text
    assert "return helper(total - 1)" in text and "return 1 / x" in text
    assert f'File "{filename}", line 4, in helper' in text
    # The multi-line statement, the decorator and the wrapper travel; nothing else does.
    shown = linecache.getlines(filename)
    assert shown[12:16] == ["@decorate\n", "def task(x):\n", "    total = (x +\n",
                            "             1)\n"]
    assert shown[6] == "    def wrapper(*args):\n"
    assert not any(SECRET in line for line in shown)


def test_lines_of_several_functions_of_one_cell_add_up(secret_cell):
    filename, namespace = secret_cell
    task_data = dumps_function(namespace["task"], "task")
    counter_data = dumps_function(namespace["Counter"], "Counter")
    del linecache.cache[filename]
    loads_function(task_data)
    loads_function(counter_data)
    shown = linecache.getlines(filename)
    assert shown[16] == "    return helper(total - 1)\n"
    assert shown[22] == "        return helper(x)\n"


def test_code_loaded_by_reference_ships_no_lines():
    _, filename, lines = pickle.loads(dumps_function(traceback.format_exception, "fmt"))
    assert filename.endswith("traceback.py") and lines == []
