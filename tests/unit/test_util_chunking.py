"""rayipy.util's pure pieces: chunk sizes, chunking, per-item errors, the in-flight window."""

from __future__ import annotations

import pytest

from rayipy.util.chunking import (ItemError, RemoteTraceback, check_chunksize, chunks,
                                  default_chunksize, first_error, run_chunk)
from rayipy.util.window import InFlightWindow


def test_default_chunksize_is_the_stdlib_rule():
    # About four chunks per worker, rounded up; at least one item.
    assert default_chunksize(10_000, 2) == 1250
    assert default_chunksize(10, 2) == 2
    assert default_chunksize(9, 2) == 2
    assert default_chunksize(0, 2) == 1
    assert default_chunksize(1, 8) == 1
    with pytest.raises(ValueError):
        default_chunksize(10, 0)


def test_chunks_are_lazy_and_complete():
    consumed = []

    def items():
        for i in range(7):
            consumed.append(i)
            yield i
    parts = chunks(items(), 3)
    assert next(parts) == [0, 1, 2]
    assert consumed == [0, 1, 2]   # nothing read ahead of the chunk asked for
    assert list(parts) == [[3, 4, 5], [6]]
    assert list(chunks([], 3)) == []


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_chunksize_is_refused(bad):
    with pytest.raises((TypeError, ValueError)):
        check_chunksize(bad)
    with pytest.raises((TypeError, ValueError)):
        list(chunks([1, 2], bad))


def test_run_chunk_keeps_each_items_error_in_place():
    results = run_chunk(lambda x: 10 // x, [1, 0, 5], star=False)
    assert results[0] == 10 and results[2] == 2
    assert isinstance(results[1], ItemError)
    assert run_chunk(pow, [(2, 3), (3, 2)], star=True) == [8, 9]
    error = first_error(results)
    assert isinstance(error, ZeroDivisionError)
    assert isinstance(error.__cause__, RemoteTraceback)
    assert "ZeroDivisionError" in str(error.__cause__)
    assert first_error([1, 2]) is None


def test_window_never_exceeds_its_limit():
    window = InFlightWindow(3)
    for _ in range(3):
        window.start()
    assert window.room() == 0
    with pytest.raises(RuntimeError):
        window.start()
    window.collect()
    assert window.room() == 1
    window.start()
    assert (window.started, window.collected, window.peak) == (4, 1, 3)
    for _ in range(3):
        window.collect()
    with pytest.raises(RuntimeError):
        window.collect()


@pytest.mark.parametrize("bad", [0, -2, 1.0, None, True])
def test_window_limit_must_be_a_positive_int(bad):
    with pytest.raises(ValueError):
        InFlightWindow(bad)
