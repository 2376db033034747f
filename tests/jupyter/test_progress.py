"""rayipy.progress outside a notebook: the tqdm bar, the counts, the redraw rate."""

from __future__ import annotations

import time

import pytest

import rayipy
from helpers import wait_until


@rayipy.remote
def nap(seconds: float, fail: bool = False) -> float:
    time.sleep(seconds)
    if fail:
        raise ValueError("asked to fail")
    return seconds


@rayipy.remote
def quick(i: int) -> int:
    return i


def test_the_bar_counts_done_failed_and_cancelled(cluster, capsys):
    refs = [nap.remote(0.05, fail=(i % 4 == 0)) for i in range(12)]
    blocked = nap.remote(30)
    bar = rayipy.progress(refs + [blocked], description="work")
    wait_until(lambda: bar.counts.finished >= 12, timeout=30)
    rayipy.cancel(blocked)
    assert bar.wait(30)
    counts = bar.counts
    assert (counts.total, counts.done, counts.failed, counts.cancelled) == (13, 9, 3, 1)
    assert counts.complete and bar.done()
    err = capsys.readouterr().err
    assert "work: 100%" in err and "13/13" in err and "failed=3" in err and "cancelled=1" in err
    assert "9/13 done, 3 failed, 1 cancelled" in repr(bar)
    assert bar.widget is None  # a terminal bar


def test_running_tasks_are_counted_while_they_run(cluster):
    refs = [nap.remote(1.5) for _ in range(4)]
    bar = rayipy.progress(refs, display="terminal")
    wait_until(lambda: bar.counts.running == 2, timeout=10,
               message="2 CPUs: two of the four tasks should be seen running")
    assert bar.wait(30) and bar.counts.running == 0


def test_redraws_are_rate_limited_however_many_refs_finish(cluster):
    start = time.monotonic()
    refs = [quick.remote(i) for i in range(3000)]
    bar = rayipy.progress(refs, display="terminal")
    assert bar.wait(60)
    elapsed = time.monotonic() - start
    assert bar.counts.done == 3000
    assert bar.redraws <= 12 * elapsed + 2, (bar.redraws, elapsed)


def test_refs_already_done_and_empty_sets_finish_at_once(cluster):
    refs = [quick.remote(i) for i in range(5)]
    rayipy.get(refs)
    bar = rayipy.progress(refs + refs[:2], display="terminal")  # a ref twice is one task
    assert bar.wait(5) and bar.counts.total == 5 and bar.counts.done == 5
    empty = rayipy.progress([], display="terminal")
    assert empty.wait(5) and empty.counts.total == 0


def test_bad_arguments_say_what_was_wrong(cluster):
    with pytest.raises(TypeError, match="expects an ObjectRef or a list of ObjectRefs, got int"):
        rayipy.progress(5)
    with pytest.raises(TypeError, match="item 1 is str"):
        rayipy.progress([quick.remote(1), "x"])
    with pytest.raises(ValueError, match='display must be "auto", "widget" or "terminal"'):
        rayipy.progress([], display="gui")


@rayipy.remote
def other(i: int) -> int:
    time.sleep(0.05)
    return i


def test_grouped_by_function_one_bar_each(cluster, capsys):
    refs = [quick.remote(i) for i in range(6)] + [other.remote(i) for i in range(4)]
    bar = rayipy.progress(refs, display="terminal", group_by="function")
    assert bar.wait(30)
    groups = bar.group_counts
    assert set(groups) == {"quick", "other"}
    assert (groups["quick"].total, groups["quick"].done) == (6, 6)
    assert (groups["other"].total, groups["other"].done) == (4, 4)
    assert bar.counts.total == 10 and bar.counts.done == 10
    err = capsys.readouterr().err
    assert "quick: 100%" in err and "other: 100%" in err and "6/6" in err and "4/4" in err
    with pytest.raises(ValueError, match='group_by must be None or "function"'):
        rayipy.progress(refs, group_by="node")
    assert rayipy.progress(refs, display="terminal").group_counts == {}
