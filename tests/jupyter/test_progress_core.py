"""The pure progress logic: counts, ETA, redraw rate, text."""

from __future__ import annotations

import pytest

from rayipy.core import progress as core
from rayipy.core.progress import (CANCELLED, FAILED, OK, ProgressCounts, ProgressState,
                                  RateEstimate, RedrawClock, describe, format_seconds,
                                  outcome_style)


def test_counts_and_eta_follow_outcomes():
    state = ProgressState(10, started=100.0)
    for _ in range(3):
        state.record(OK, 101.0)
    state.record(FAILED, 102.0)
    state.set_running(2)
    counts = state.snapshot(104.0)
    assert (counts.total, counts.done, counts.failed, counts.cancelled, counts.running) == (10, 3, 1, 0, 2)
    assert counts.finished == 4 and counts.waiting == 4 and not counts.complete
    assert counts.elapsed == 4.0
    # Four results in one second are too few to say how fast the rest will go.
    assert counts.eta is None and "estimating time left..." in describe(counts)
    for i in range(4):                       # one more every half second from t=2.5 on
        state.record(OK, 102.5 + 0.5 * i)
    counts = state.snapshot(104.0)
    assert counts.finished == 8
    assert counts.eta == pytest.approx(2 / 2.0, rel=0.3)  # ~2 a second, 2 left


def test_the_clock_stops_when_the_last_one_finishes():
    state = ProgressState(2, started=0.0)
    state.set_running(2)
    state.record(OK, 1.0)
    state.record(CANCELLED, 2.5)
    later = state.snapshot(50.0)
    assert later.complete and later.elapsed == 2.5 and later.eta == 0.0
    assert later.running == 0  # nothing runs once everything is over


def test_running_never_exceeds_what_is_left():
    state = ProgressState(3, started=0.0)
    state.record(OK, 1.0)
    state.set_running(10)
    assert state.snapshot(1.0).running == 2


def test_no_eta_before_the_first_result_and_empty_sets_are_complete():
    assert ProgressState(5, 0.0).snapshot(3.0).eta is None
    empty = ProgressState(0, 0.0).snapshot(9.0)
    assert empty.complete and empty.elapsed == 0.0


def test_version_moves_only_on_change():
    state = ProgressState(5, 0.0)
    v0 = state.version
    state.set_running(0)
    assert state.version == v0
    state.set_running(1)
    state.record(OK, 1.0)
    assert state.version == v0 + 2


def test_redraws_are_rate_limited_however_many_results_arrive():
    clock = RedrawClock(min_interval=0.1, idle_interval=1.0)
    drawn = 0
    version = 0
    # 10,000 results over 2 s, checked at every result: at most ~10 redraws a second.
    for i in range(10_000):
        version += 1
        now = i * 0.0002
        drawn += clock.due(now, version, complete=False)
    assert drawn <= 2 / 0.1 + 1
    assert clock.due(2.5, version + 1, complete=True)      # the final state is always drawn
    assert not clock.due(10.0, version + 2, complete=True)  # ... once


def test_idle_displays_refresh_slowly_and_news_waits_for_the_interval():
    clock = RedrawClock(min_interval=0.1, idle_interval=1.0)
    assert clock.due(0.0, 0, False)          # first draw at once
    assert not clock.due(0.5, 0, False)      # nothing new: wait for the idle interval
    assert clock.due(1.0, 0, False)          # the elapsed time moved
    assert not clock.due(1.05, 1, False)     # news, but too soon
    assert clock.due(1.1, 1, False)
    assert clock.due(1.25, 1, True) and clock.final_drawn


def test_describe_says_what_matters():
    state = ProgressState(100, 0.0)
    for i in range(37):
        state.record(OK, 1.0 + 0.1 * i)
    state.record(FAILED, 4.8)
    state.record(FAILED, 4.9)
    state.set_running(4)
    text = describe(state.snapshot(12.3))
    assert text.startswith("37/100 done, 2 failed, 4 running, 12.3 s, about ")
    assert text.endswith(" left")
    done = ProgressState(1, 0.0)
    done.record(OK, 2.0)
    assert describe(done.snapshot(5.0)) == "1/1 done, 2.0 s"


def test_format_seconds():
    assert format_seconds(3.24) == "3.2 s"
    assert format_seconds(65) == "1 min 05 s"
    assert format_seconds(3 * 3600 + 125) == "3 h 02 min"


def test_a_bar_whose_cluster_went_away_stops_and_says_so():
    state = ProgressState(10, started=0.0)
    for _ in range(4):
        state.record(OK, 1.0)
    state.set_running(2)
    state.abandon(2.0)
    counts = state.snapshot(60.0)
    assert counts.complete and counts.abandoned and counts.elapsed == 2.0
    assert counts.running == 0 and counts.eta is None
    assert describe(counts) == "4/10 done, 2.0 s, 6 never finished: the cluster is gone"


def _timeline(total: int, start_delay: float, per_second: float, workers: int = 1):
    """(time, count) completions: nothing for ``start_delay`` (workers starting), then
    batches of ``workers`` at ``per_second`` tasks a second in all."""
    step = workers / per_second
    t = start_delay
    done = 0
    while done < total:
        n = min(workers, total - done)
        yield t, n
        done += n
        t += step


def _eta_at(total, timeline, fraction):
    """The ETA a display shows when ``fraction`` of the tasks are done, and the true rest."""
    state = ProgressState(total, 0.0)
    events = list(timeline)
    end = events[-1][0]
    done = 0
    for t, n in events:
        for _ in range(n):
            state.record(OK, t)
        done += n
        if done >= fraction * total:
            return state.snapshot(t).eta, end - t
    raise AssertionError("never reached")


def test_a_slow_start_does_not_inflate_the_eta():
    # The report: 40 tasks, workers slow to start, 3.4 s in all. The old ETA (elapsed /
    # finished * left) said 12.2 s at 7%; now early on it says nothing, and at 30% it is
    # close to the truth.
    events = list(_timeline(40, start_delay=2.0, per_second=28.0, workers=2))
    eta, _ = _eta_at(40, events, 0.07)
    assert eta is None
    # steady runs, with and without parallel batches, a start delay or none
    for total, delay, rate, workers in [(400, 2.0, 50.0, 2), (1000, 0.0, 100.0, 4),
                                        (200, 5.0, 20.0, 1)]:
        eta, truth = _eta_at(total, _timeline(total, delay, rate, workers), 0.3)
        assert eta is not None and eta == pytest.approx(truth, rel=0.15), (total, eta, truth)


def test_the_estimate_waits_for_a_minimum_sample_and_span():
    estimate = RateEstimate(100)
    estimate.record(0.0)
    for i in range(1, 5):
        estimate.record(i * 0.1)
    assert estimate.seconds_left(5, 0.5) is None          # 4 after the first: too few
    for i in range(5, 9):
        estimate.record(i * 0.1)
    assert estimate.seconds_left(9, 0.8) is None          # enough, but over 0.8 s only
    for i in range(9, 13):
        estimate.record(i * 0.1)
    assert estimate.seconds_left(13, 1.2) == pytest.approx(87 / 10, rel=0.1)


def test_the_rate_follows_a_change_of_pace_and_falls_during_a_stall():
    state = ProgressState(1000, 0.0)
    t = 0.0
    for _ in range(200):                # 20 a second for 10 s
        t += 0.05
        state.record(OK, t)
    fast = state.snapshot(t).eta
    assert fast == pytest.approx(800 / 20, rel=0.1)
    for _ in range(50):                 # then 5 a second for 10 s
        t += 0.2
        state.record(OK, t)
    slow = state.snapshot(t).eta
    assert slow == pytest.approx(750 / 5, rel=0.25)
    stalled = state.snapshot(t + 10.0).eta             # nothing for 10 s: much longer
    assert stalled is not None and stalled > 3 * slow


def test_each_outcome_has_its_own_style():
    def counts(done=0, failed=0, cancelled=0, total=10, abandoned=False):
        return ProgressCounts(total, done, failed, cancelled, 0, 1.0, None, abandoned)
    assert outcome_style(counts(done=3)) == core.RUNNING
    assert outcome_style(counts(done=3, cancelled=1)) == core.RUNNING_WITH_CANCELS
    assert outcome_style(counts(done=3, failed=1, cancelled=1)) == core.RUNNING_WITH_FAILURES
    assert outcome_style(counts(done=10)) == core.ALL_DONE
    assert outcome_style(counts(done=8, cancelled=2)) == core.SOME_CANCELLED
    assert outcome_style(counts(done=7, cancelled=2, failed=1)) == core.SOME_FAILED
    assert outcome_style(counts(done=4, abandoned=True)) == core.ABANDONED
    assert len({core.SOME_CANCELLED, core.SOME_FAILED, core.ABANDONED, core.ALL_DONE}) == 4
