"""The pure progress logic: counts, ETA, redraw rate, text."""

from __future__ import annotations

from rayipy.core.progress import (CANCELLED, FAILED, OK, ProgressState, RedrawClock, describe,
                                  format_seconds)


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
    assert counts.eta == 4.0 / 4 * 6  # the rate so far, over what is left


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
    for _ in range(37):
        state.record(OK, 1.0)
    state.record(FAILED, 1.0)
    state.record(FAILED, 1.0)
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
