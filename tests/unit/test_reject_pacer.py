"""The pacing of rejections (``transport/throttle.py``, ``RejectPacer``), pure: a thread
that rejects a flood flat out is told to rest so that rejecting takes at most its share
of the time, in short slices; time spent otherwise counts as rest."""

from __future__ import annotations

import pytest

from rayipy.transport.throttle import RejectPacer


def run_flood(pacer: RejectPacer, cost: float, count: int, gap: float = 0.0) -> tuple[float, float]:
    """Reject ``count`` messages of ``cost`` seconds each, ``gap`` seconds of other work
    between them, resting as told; (time spent rejecting, wall time)."""
    now = busy = 0.0
    for _ in range(count):
        now += cost
        busy += cost
        now += pacer.rejected(cost, now)
        now += gap
    return busy, now


def test_a_flood_flat_out_takes_about_its_share():
    pacer = RejectPacer(share=0.5, slice_seconds=0.001)
    busy, wall = run_flood(pacer, cost=10e-6, count=100_000)
    assert 0.49 <= busy / wall <= 0.51
    assert pacer.rested == pytest.approx(wall - busy)


def test_rests_come_in_short_slices():
    pacer = RejectPacer(share=0.25, slice_seconds=0.002)
    rests = [r for r in (pacer.rejected(10e-6, i * 10e-6) for i in range(1, 10_000)) if r]
    assert rests and max(rests) < 0.0021


def test_rejections_spread_out_never_rest():
    """A wrong password now and then, or rejections among other work: no rest."""
    pacer = RejectPacer(share=0.5, slice_seconds=0.001)
    busy, wall = run_flood(pacer, cost=10e-6, count=10_000, gap=20e-6)
    assert pacer.rested == 0.0 and wall == pytest.approx(busy + 10_000 * 20e-6)


def test_a_share_of_one_never_rests():
    pacer = RejectPacer(share=1.0)
    run_flood(pacer, cost=10e-6, count=10_000)
    assert pacer.rested == 0.0


def test_bad_settings_are_refused():
    for kwargs in ({"share": 0.0}, {"share": 1.5}, {"slice_seconds": 0.0}):
        with pytest.raises(ValueError):
            RejectPacer(**kwargs)   # type: ignore[arg-type]
