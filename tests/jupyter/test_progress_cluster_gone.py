"""A progress bar whose cluster goes away ends (each test has a cluster of its own)."""

from __future__ import annotations

import time

import rayipy
from rayipy.core.object_ref import current_runtime


@rayipy.remote
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_a_bar_stops_when_its_cluster_is_shut_down(fresh_cluster):
    fresh_cluster()
    refs = [nap.remote(60) for _ in range(3)]
    bar = rayipy.progress(refs, display="terminal")
    rayipy.shutdown()
    # Failed by the head's goodbye, or given up when the runtime closed: over either way.
    assert bar.wait(10) and bar.counts.complete and bar.counts.done == 0


def test_a_bar_gives_up_on_a_runtime_that_closed_without_a_word(fresh_cluster):
    fresh_cluster()
    refs = [nap.remote(60) for _ in range(3)]
    bar = rayipy.progress(refs, display="terminal")
    current_runtime().close()   # no results will ever come, and nobody says why
    assert bar.wait(10), "the bar gave up on a cluster that is gone"
    assert bar.counts.abandoned and "3 never finished: the cluster is gone" in repr(bar)
