"""Unit tests of rayipy.protocol.store_layout: a serialized value laid out in one region,
read back as views of it (zero-copy when the region is an arena's pinned view)."""

from __future__ import annotations

import pickle
import struct
import sys

import numpy as np
import pytest

from rayipy.node.shm import Arena
from rayipy.protocol import serialization, store_layout
from rayipy.protocol.messages import Payload


def laid_out(payload: Payload) -> memoryview:
    region = memoryview(bytearray(store_layout.layout_size(payload)))
    store_layout.write_payload(region, payload)
    return region


def round_trip(value):
    payload, _ = serialization.dumps(value)
    return serialization.loads(store_layout.read_payload(laid_out(payload)))


@pytest.fixture
def arena(tmp_path):
    arena = Arena.create(16 * 2**20, str(tmp_path))
    yield arena
    arena.close()
    arena.unlink()


def test_the_header_and_offsets_are_as_documented():
    payload = Payload(b"pickle", (b"x" * 5000, memoryview(bytearray(b"y" * 3))))
    region = laid_out(payload)
    magic, version, count, data_len = struct.unpack_from("<4sIIQ", region, 0)
    assert (magic, version, count, data_len) == (b"RYOB", 1, 2, 6)
    entries = [struct.unpack_from("<QQ", region, 20 + 16 * i) for i in range(2)]
    data_start = 20 + 16 * 2
    assert bytes(region[data_start:data_start + 6]) == b"pickle"
    assert entries == [(64, 5000), (5120, 3)]     # each at the next multiple of 64
    assert store_layout.layout_size(payload) == 5123 == region.nbytes
    assert bytes(region[64:5064]) == b"x" * 5000 and bytes(region[5120:5123]) == b"yyy"


def test_a_payload_without_buffers_is_header_and_data():
    payload = Payload(b"abc")
    assert store_layout.layout_size(payload) == 20 + 3
    read = store_layout.read_payload(laid_out(payload))
    assert bytes(read.data) == b"abc" and read.buffers == ()


def test_values_round_trip():
    values = {
        "floats": np.linspace(0, 1, 10_000),
        "ints": np.arange(20_000, dtype=np.int32).reshape(100, 200),
        "complex": np.full(3000, 1 + 2j, dtype=np.complex64),
        "bools": np.ones(8192, dtype=bool),
        "structured": np.zeros(1000, dtype=[("x", "<i4"), ("y", "<f8")]),
        "fortran": np.asfortranarray(np.arange(10_000.0).reshape(100, 100)),
        "big_endian": np.arange(5000, dtype=">f8"),
        "strided": np.arange(40_000.0).reshape(200, 200)[::3, ::2],
        "zero_d": np.array(3.5),
        "empty": np.empty((0, 7)),
        "bytes": b"b" * 100_000,
        "bytearray": bytearray(b"c" * 100_000),
        "small": [1, "two", (3.0, None)],
        "nested": {"a": [np.arange(5000), {"b": (np.ones(4096, dtype=np.uint8),)}]},
    }
    back = round_trip(values)
    assert back.keys() == values.keys()
    for key, value in values.items():
        if isinstance(value, np.ndarray):
            assert back[key].dtype == value.dtype, key
            assert np.array_equal(back[key], value), key
        elif key != "nested":
            assert back[key] == value, key
    assert np.array_equal(back["nested"]["a"][0], np.arange(5000))
    assert np.array_equal(back["nested"]["a"][1]["b"][0], np.ones(4096, dtype=np.uint8))
    assert back["fortran"].flags.f_contiguous


def test_a_dataframe_round_trips():
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame({"a": np.arange(10_000), "b": np.linspace(0, 1, 10_000),
                              "c": ["x"] * 10_000})
    pandas.testing.assert_frame_equal(round_trip(frame), frame)


@pytest.mark.parametrize("make", [
    lambda a: pickle.PickleBuffer(a[:, ::2]),      # 2-D strided: copied by numpy
    lambda a: memoryview(a[::2, 1:]),
    lambda a: memoryview(a)[::2],                  # a strided view of a C array
    lambda a: memoryview(a.ravel())[1::3],         # 1-D strided: copied by CPython
    lambda a: memoryview(np.zeros(10, dtype=[("x", "<i4"), ("y", "<f8")]))[::2],
    lambda a: memoryview(b"0123456789abcdef")[::3],
])
def test_a_buffer_that_is_not_contiguous_is_stored_in_c_order(make):
    buffer = make(np.arange(48.0).reshape(6, 8))
    assert not memoryview(buffer).contiguous
    read = store_layout.read_payload(laid_out(Payload(b"", (buffer,))))
    assert bytes(read.buffers[0]) == memoryview(buffer).tobytes()


def test_without_numpy_a_strided_buffer_is_copied_through_tobytes(monkeypatch):
    buffer = memoryview(np.arange(48.0).reshape(6, 8)[:, ::2])   # made before the patch
    monkeypatch.setitem(sys.modules, "numpy", None)
    read = store_layout.read_payload(laid_out(Payload(b"", (buffer,))))
    assert bytes(read.buffers[0]) == buffer.tobytes()


def test_a_contiguous_buffer_of_any_format_is_copied_as_it_lies():
    fortran = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    buffers = (memoryview(fortran), memoryview(np.arange(10, dtype=np.int16)),
               memoryview(np.array(7, dtype=np.int64)), memoryview(np.empty((0, 3))))
    read = store_layout.read_payload(laid_out(Payload(b"", buffers)))
    assert bytes(read.buffers[0]) == pickle.PickleBuffer(fortran).raw().tobytes()
    assert bytes(read.buffers[1]) == np.arange(10, dtype=np.int16).tobytes()
    assert bytes(read.buffers[2]) == np.array(7, dtype=np.int64).tobytes()
    assert read.buffers[3].nbytes == 0


def test_read_payload_copies_nothing():
    payload, _ = serialization.dumps({"x": np.arange(10_000)})
    region = laid_out(payload)
    read = store_layout.read_payload(region)
    assert isinstance(read.data, memoryview) and read.data.obj is region.obj
    assert all(b.obj is region.obj for b in read.buffers)


def test_from_a_pin_arrays_are_read_only_zero_copy_and_hold_the_pin(arena):
    # (numpy pickles a strided array in band, as a copy: not one to check here)
    value = {"a": np.arange(100_000, dtype=np.float32), "b": np.ones((300, 300)),
             "f": np.asfortranarray(np.arange(90_000).reshape(300, 300))}
    payload, _ = serialization.dumps(value, snapshot=False)
    size = store_layout.layout_size(payload)
    with arena.writable(4096, size) as target:
        store_layout.write_payload(target, payload)
    released: list[bool] = []
    region = arena.pinned(4096, size, lambda: released.append(True))
    back = serialization.loads(store_layout.read_payload(region))
    del region
    for key in value:
        assert np.array_equal(back[key], value[key]), key
        assert not back[key].flags.writeable, key
        assert arena.contains_address(back[key].ctypes.data), key
    assert back["a"].ctypes.data % 64 == 0       # the region starts 64-aligned
    assert released == []
    del back
    assert released == [True]


def test_write_payload_refuses_a_region_too_small_or_read_only():
    payload = Payload(b"abc", (b"x" * 100,))
    size = store_layout.layout_size(payload)
    with pytest.raises(ValueError, match=f"needs {size} bytes laid out, and the region has "
                                         f"only {size - 1}"):
        store_layout.write_payload(memoryview(bytearray(size - 1)), payload)
    with pytest.raises(ValueError, match="writable"):
        store_layout.write_payload(memoryview(bytes(size)), payload)


def damaged(region: memoryview, offset: int, fmt: str, value) -> memoryview:
    copy = bytearray(region)
    struct.pack_into(fmt, copy, offset, value)
    return memoryview(copy)


@pytest.mark.parametrize("offset, fmt, value, message", [
    (0, "<4s", b"XXXX", "not a stored value: it starts with b'XXXX'"),
    (4, "<I", 2, "layout version 2; this rayipy reads version 1 only"),
    (8, "<I", 1000, "header and data"),                   # more entries than fit
    (12, "<Q", 10**6, "header and data"),                 # data longer than the region
    (20, "<Q", 10**6, "buffer 0 .* is not between"),      # offset past the end
    (28, "<Q", 10**6, "buffer 0 .* is not between"),      # length past the end
    (20, "<Q", 0, "buffer 0 .* is not between"),          # over the header
])
def test_read_payload_refuses_a_damaged_header(offset, fmt, value, message):
    region = laid_out(Payload(b"data", (b"x" * 100,)))
    with pytest.raises(ValueError, match=message):
        store_layout.read_payload(damaged(region, offset, fmt, value))


def test_read_payload_refuses_a_region_shorter_than_a_header():
    with pytest.raises(ValueError, match="shorter than the 20-byte header"):
        store_layout.read_payload(memoryview(b"RYOB"))


def test_a_large_buffer_is_copied_in_pieces_at_once_and_whole(monkeypatch):
    calls = []
    real = store_layout._copy_in_parallel
    monkeypatch.setattr(store_layout, "_copy_in_parallel",
                        lambda target, source: calls.append(source.nbytes) or real(target, source))
    value = np.random.default_rng(1).integers(0, 2**62, 3_000_001, dtype=np.int64)  # 24 MB, odd
    payload = serialization.dumps(value, snapshot=False)[0]
    region = memoryview(bytearray(store_layout.layout_size(payload)))
    store_layout.write_payload(region, payload)
    assert calls == [value.nbytes]
    assert np.array_equal(serialization.loads(store_layout.read_payload(region)), value)
