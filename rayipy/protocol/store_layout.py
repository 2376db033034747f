"""A serialized value laid out in one contiguous region of the object store, version 1.

```
offset 0     magic b"RYOB" | u32 version (1) | u32 n (buffers) | u64 data_len
offset 20    n x (u64 offset, u64 length)     offsets from the region's start
20 + 16n     data: the pickle stream, data_len bytes
             buffers: each at the next multiple of 64 (numpy's alignment), back to back
```
All integers little-endian. The writer (``write_payload``) copies each out-of-band buffer
of a ``Payload`` once, into the shared arena (``rayipy.node.shm``); every reader then
gets the value back as views of that region (``read_payload``), so numpy arrays built by
``pickle.loads`` point into the arena and copy nothing. Alignment is from the region's
start: the store must start regions at a multiple of 64 for the arrays to be aligned.

A reader trusts nothing in the header: a wrong magic or version, or an offset or length
outside the region, is a ``ValueError``, never a view of the wrong bytes.
"""

from __future__ import annotations

import concurrent.futures
import os
import pickle
import struct
import sys
from typing import Any, cast

from rayipy.protocol.messages import Payload
from rayipy.protocol.wire import Frame

MAGIC = b"RYOB"
VERSION = 1
ALIGNMENT = 64
_HEAD = struct.Struct("<4sIIQ")     # magic, version, buffer count, data length
_ENTRY = struct.Struct("<QQ")       # one buffer's offset and length


def layout_size(payload: Payload) -> int:
    """The bytes ``payload`` takes laid out: the region ``write_payload`` needs."""
    return _layout(payload.data, [_nbytes(b) for b in payload.buffers])[1]


def write_payload(target: memoryview, payload: Payload) -> None:
    """Lay ``payload`` out at the start of ``target`` (writable, at least ``layout_size``
    bytes), copying each buffer once. Bytes between buffers are left as they were."""
    region = _bytes_view(target)
    if region.readonly:
        raise ValueError("write_payload needs a writable region, not a read-only one")
    sources = [memoryview(b) for b in payload.buffers]
    offsets, total = _layout(payload.data, [s.nbytes for s in sources])
    if region.nbytes < total:
        raise ValueError(f"the value needs {total} bytes laid out, and the region has "
                         f"only {region.nbytes}")
    data_len = len(payload.data)
    _HEAD.pack_into(region, 0, MAGIC, VERSION, len(sources), data_len)
    for i, (offset, source) in enumerate(zip(offsets, sources)):
        _ENTRY.pack_into(region, _HEAD.size + i * _ENTRY.size, offset, source.nbytes)
    data_start = _HEAD.size + len(sources) * _ENTRY.size
    region[data_start:data_start + data_len] = payload.data
    for offset, source in zip(offsets, sources):
        _copy_in_c_order(region[offset:offset + source.nbytes], source)


def read_payload(region: memoryview) -> Payload:
    """The payload laid out in ``region``, as views of it: nothing is copied.

    ``data`` is a memoryview too, although ``Payload.data`` is annotated ``bytes``:
    ``pickle.loads`` (``serialization.loads``) takes any bytes-like, and a view saves a
    copy of the pickle stream, which is large for a value of many small parts.
    """
    view = _bytes_view(region)
    if view.nbytes < _HEAD.size:
        raise ValueError(f"not a stored value: {view.nbytes} bytes, shorter than the "
                         f"{_HEAD.size}-byte header")
    magic, version, count, data_len = _HEAD.unpack_from(view, 0)
    if magic != MAGIC:
        raise ValueError(f"not a stored value: it starts with {bytes(magic)!r}, "
                         f"not {MAGIC!r}")
    if version != VERSION:
        raise ValueError(f"a stored value of layout version {version}; this rayipy reads "
                         f"version {VERSION} only (is another rayipy version on this node?)")
    data_start = _HEAD.size + count * _ENTRY.size
    data_end = data_start + data_len
    if data_end > view.nbytes:
        raise ValueError(f"a damaged stored value: its header and data ({data_end} bytes) "
                         f"do not fit in the {view.nbytes}-byte region")
    buffers = []
    for i in range(count):
        offset, length = _ENTRY.unpack_from(view, _HEAD.size + i * _ENTRY.size)
        if offset < data_end or offset + length > view.nbytes:
            raise ValueError(f"a damaged stored value: buffer {i} ({length} bytes at "
                             f"{offset}) is not between its data (ending at {data_end}) "
                             f"and the region's end ({view.nbytes})")
        buffers.append(view[offset:offset + length])
    data = cast(bytes, view[data_start:data_end])   # see the docstring
    return Payload(data, tuple(buffers))


def _layout(data: Frame, lengths: list[int]) -> tuple[list[int], int]:
    """Each buffer's offset, and the end of the last thing laid out."""
    end = _HEAD.size + len(lengths) * _ENTRY.size + memoryview(data).nbytes
    offsets = []
    for length in lengths:
        start = -(-end // ALIGNMENT) * ALIGNMENT
        offsets.append(start)
        end = start + length
    return offsets, end


def _nbytes(buffer: Frame) -> int:
    with memoryview(buffer) as view:
        return view.nbytes


def _bytes_view(buffer: memoryview) -> memoryview:
    """``buffer`` as one flat run of bytes (it must be contiguous)."""
    view = memoryview(buffer)
    if view.ndim == 1 and view.format == "B":
        return view
    if not view.contiguous:
        raise ValueError("a stored value's region must be contiguous memory")
    return pickle.PickleBuffer(view).raw()


def _copy_in_c_order(target: memoryview, source: memoryview) -> None:
    """Copy ``source``'s bytes into ``target`` (its size), once.

    A contiguous buffer of any format or shape is copied as it lies in memory, as pickle
    itself does for in-band buffers (an F-contiguous numpy buffer is read back in that
    order). A non-contiguous one has no such order: it is copied in C order, by CPython
    for one dimension of a plain format, by numpy otherwise (a strided array), and only
    as a last resort through ``tobytes()``, which costs a second full copy.
    """
    if source.contiguous:
        raw = pickle.PickleBuffer(source).raw()
        if raw.nbytes < PARALLEL_COPY_BYTES or not _copy_in_parallel(target, raw):
            target[:] = raw
    elif source.ndim == 1 and _is_native_single(source.format):
        typed: Any = target   # typeshed's cast() lists fewer formats than CPython takes
        typed.cast(source.format.lstrip("@"))[:] = source
    elif not _copy_with_numpy(target, source):
        target[:] = source.tobytes()


PARALLEL_COPY_BYTES = 16 * 2**20
_copiers: concurrent.futures.ThreadPoolExecutor | None = None


def _copy_in_parallel(target: memoryview, source: memoryview) -> bool:
    """Copy a large flat buffer in as many pieces as there are cores (at most 4), at
    once, as Ray does for large objects: one thread copies 100 MB in 13 ms here, two in
    7. numpy's copy lets go of the GIL; without numpy loaded, False (copy it in one)."""
    global _copiers
    numpy: Any = sys.modules.get("numpy")
    threads = min(os.cpu_count() or 1, 4)
    if numpy is None or threads < 2:
        return False
    if _copiers is None:
        _copiers = concurrent.futures.ThreadPoolExecutor(threads - 1, "rayipy-copy")
    to = numpy.frombuffer(target, numpy.uint8)
    frm = numpy.frombuffer(source, numpy.uint8)
    step = -(-frm.size // threads)
    pieces = [_copiers.submit(numpy.copyto, to[i:i + step], frm[i:i + step])
              for i in range(step, frm.size, step)]
    numpy.copyto(to[:step], frm[:step])   # this thread copies the first piece
    for piece in pieces:
        piece.result()
    return True


def _is_native_single(fmt: str) -> bool:
    plain = fmt[1:] if fmt.startswith("@") else fmt
    return len(plain) == 1 and plain in "cbB?hHiIlLqQnNefdP"


def _copy_with_numpy(target: memoryview, source: memoryview) -> bool:
    """Whether numpy copied it: only if numpy is loaded already (a strided buffer that
    numpy made) and understands the buffer's format."""
    numpy: Any = sys.modules.get("numpy")
    if numpy is None:
        return False
    try:
        array = numpy.asarray(source)
    except (TypeError, ValueError, NotImplementedError):
        return False
    if array.nbytes != source.nbytes:
        return False
    numpy.ndarray(array.shape, array.dtype, buffer=target)[...] = array
    return True
