"""The worker's memory of cancels for calls not there yet (rayipy.node.worker.remember)."""

from __future__ import annotations

from rayipy.node.worker import CANCELS_KEPT, remember


def test_cancels_are_kept_until_there_are_too_many_then_the_oldest_go():
    cancelled: dict = {}
    for n in range(CANCELS_KEPT + 10):
        remember(cancelled, n.to_bytes(16, "big"))
    assert len(cancelled) == CANCELS_KEPT
    assert (0).to_bytes(16, "big") not in cancelled                     # the oldest: gone
    assert (CANCELS_KEPT + 9).to_bytes(16, "big") in cancelled          # the newest: kept
    assert list(cancelled)[0] == (10).to_bytes(16, "big")


def test_a_cancel_remembered_twice_is_one_entry():
    cancelled: dict = {}
    remember(cancelled, b"t" * 16)
    remember(cancelled, b"t" * 16)
    assert list(cancelled) == [b"t" * 16]
