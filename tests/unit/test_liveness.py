"""The liveness rules (core/liveness.py), without sockets or processes."""

from __future__ import annotations

import pytest

from rayipy.core.liveness import (DEFAULT_DRIVER_GRACE_S, DriverSessions, Lost, SilenceClock,
                                  check_grace_period)

A, B = b"Da", b"Db"


def test_the_head_is_gone_after_the_limit_of_silence_while_we_ran():
    clock = SilenceClock(limit=10, now=0)
    for t in range(1, 11):          # the loop turns; nothing comes
        assert not clock.turn(t)
    assert not clock.gone(10)
    clock.turn(10.5)
    assert clock.gone(10.5)


def test_a_message_restarts_the_count():
    clock = SilenceClock(limit=10, now=0)
    for t in range(1, 10):
        clock.turn(t)
    clock.heard(9)
    for t in range(10, 16):
        assert not clock.turn(t)
    assert clock.silent(15) == pytest.approx(6)
    assert not clock.gone(15)


def test_time_this_process_was_stopped_is_not_the_heads_silence():
    clock = SilenceClock(limit=10, now=0)
    clock.turn(1)
    # Stopped (SIGSTOP, a long GIL hold) for 30 s: the next turn comes late.
    assert clock.turn(31)
    assert not clock.gone(31)
    assert clock.silent(31) == pytest.approx(1)
    # From then on, silence counts again: a head that stays silent is gone in time.
    t = 31.0
    while not clock.gone(t):
        t += 0.1
        assert not clock.turn(t)
    assert t == pytest.approx(40, abs=0.2)


def test_driver_alive_while_its_connection_is_whatever_its_python_says():
    sessions = DriverSessions(grace=300)
    sessions.joined(A, 0)
    # Its interpreter is silent for an hour (the GIL held), its connection answers.
    for t in range(1, 3600):
        assert not sessions.beat(A, True, t)
    assert sessions.state(A, 3600) == "silent"
    sessions.heard(A, 3600)
    assert sessions.state(A, 3600) == "connected"


def test_a_driver_without_a_connection_is_dropped_after_the_reconnect_allowance():
    sessions = DriverSessions(grace=300, reconnect_s=3)
    sessions.joined(A, 0)
    assert not sessions.beat(A, False, 10)      # the connection went (died, or grace over)
    assert sessions.state(A, 10) == "disconnected"
    assert not sessions.beat(A, False, 12)
    assert sessions.beat(A, False, 13)
    assert sessions.unreachable_for(A, 13) == 3


def test_a_driver_that_reconnects_in_time_is_kept():
    sessions = DriverSessions(reconnect_s=3)
    sessions.joined(A, 0)
    sessions.beat(A, False, 10)
    sessions.heard(A, 11)                       # it connected again and spoke
    assert not sessions.beat(A, False, 13)     # a new outage starts from scratch
    assert not sessions.beat(A, True, 14)
    assert sessions.state(A, 14) == "connected"


def test_a_dropped_driver_is_told_what_it_lost_once_a_second():
    sessions = DriverSessions(grace=3)
    sessions.joined(A, 0)
    lost = Lost(actors=1, tasks=2, leases=1, groups=0, grace=3, unreachable=3)
    sessions.drop(A, lost)
    assert A not in sessions.sessions
    assert sessions.notice_for(A, 20) == lost
    assert sessions.notice_for(A, 20.5) is None     # not once per message it sends
    assert sessions.notice_for(A, 21) == lost
    assert sessions.notice_for(B, 21) is None       # a stranger is not a dropped driver
    text = lost.describe()
    for words in ("grace period of 3 s", "1 actor killed", "2 tasks dropped",
                  "1 leased worker taken back", "objects freed", "rayipy.init()",
                  "driver_grace_period_s"):
        assert words in text, words


def test_a_driver_that_left_on_its_own_is_not_told_anything():
    sessions = DriverSessions()
    sessions.joined(A, 0)
    sessions.left(A)
    assert sessions.notice_for(A, 1) is None
    assert not sessions.beat(A, False, 100)


def test_dropped_drivers_are_remembered_within_a_bound():
    sessions = DriverSessions(keep_lost=2)
    for i in range(3):
        sessions.drop(bytes([i]), Lost(0, 0, 0, 0, 300, 3))
    assert list(sessions.dropped) == [bytes([1]), bytes([2])]
    sessions.joined(bytes([2]), 0)                  # a new session under that id
    assert sessions.notice_for(bytes([2]), 5) is None


def test_summary_counts_drivers_by_state():
    sessions = DriverSessions(silent_after=10)
    sessions.joined(A, 0)
    sessions.joined(B, 0)
    sessions.beat(B, False, 5)
    assert sessions.summary(20) == {"connected": 0, "silent": 1, "disconnected": 1}


@pytest.mark.parametrize("bad", [0, 0.5, -1, float("nan"), True, "300", None, 10**9])
def test_grace_period_must_be_a_sensible_number_of_seconds(bad):
    with pytest.raises(ValueError, match="driver_grace_period_s"):
        check_grace_period(bad)


def test_grace_period_accepts_seconds():
    assert check_grace_period(3) == 3.0
    assert check_grace_period(DEFAULT_DRIVER_GRACE_S) == 300.0


def test_a_dropped_drivers_loss_is_kept_for_its_return():
    sessions = DriverSessions(3.0)
    sessions.joined(b"D", 0.0)
    assert sessions.lost_by(b"D") is None
    lost = Lost(1, 2, 0, 0, 3.0, 4.0)
    sessions.drop(b"D", lost)
    assert sessions.lost_by(b"D") == lost
    sessions.joined(b"D", 10.0)           # a new session of its own, later
    assert sessions.lost_by(b"D") is None
