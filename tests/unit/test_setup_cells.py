"""The head's record of %%remote --all cells (core/setup_cells.py), without a head."""

from __future__ import annotations

import pytest

from rayipy.core.setup_cells import SetupCells

A, B = b"A" * 8, b"B" * 8


def test_cells_come_back_per_live_driver_in_the_order_recorded():
    cells = SetupCells()
    assert cells.add(A, "a1", b"one") == 1
    assert cells.add(B, "b1", b"two") == 1
    assert cells.add(A, "a2", b"three") == 2
    assert cells.for_workers([A, B]) == [(A, "a1", b"one"), (A, "a2", b"three"), (B, "b1", b"two")]


def test_a_gone_drivers_cells_are_forgotten():
    cells = SetupCells()
    cells.add(A, "a1", b"one")
    cells.add(B, "b1", b"two")
    assert cells.for_workers([B]) == [(B, "b1", b"two")]
    assert A not in cells.by_driver
    cells.forget(B)
    assert cells.for_workers([A, B]) == []


def test_the_same_cell_sent_twice_is_kept_once():
    cells = SetupCells()
    cells.add(A, "a1", b"one")
    assert cells.add(A, "a1", b"one") == 1


def test_a_cell_taken_back_is_not_replayed():
    cells = SetupCells()
    cells.add(A, "a1", b"one")
    cells.add(A, "a2", b"two")
    assert cells.drop(A, "a1") and not cells.drop(A, "a1") and not cells.drop(B, "a1")
    assert cells.for_workers([A]) == [(A, "a2", b"two")]


def test_limits_are_clear_errors():
    cells = SetupCells(max_cells=2, max_bytes=10)
    with pytest.raises(ValueError, match="MiB"):
        cells.add(A, "big", b"x" * 11)
    cells.add(A, "1", b"")
    cells.add(A, "2", b"")
    with pytest.raises(ValueError, match="restart the kernel"):
        cells.add(A, "3", b"")
    with pytest.raises(ValueError, match="id"):
        cells.add(A, "", b"")
    with pytest.raises(ValueError, match="bytes"):
        cells.add(A, "4", "text")   # type: ignore[arg-type]
