"""Unit tests of rayipy.node.interrupts: holding Ctrl-C while an answer is handled."""

from __future__ import annotations

import os
import signal

import pytest

from rayipy.node import interrupts


@pytest.fixture
def installed():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupts.install()
    try:
        yield
    finally:
        interrupts.uninstall()
        signal.signal(signal.SIGINT, previous)


def test_unheld_it_is_the_default_ctrl_c(installed):
    assert interrupts.can_hold()
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)


def test_held_it_waits_for_the_release(installed):
    interrupts.hold()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert interrupts.pending()
        interrupts.hold()            # nested holds: only the last release raises
        interrupts.release()
    except KeyboardInterrupt:
        pytest.fail("raised while held")
    with pytest.raises(KeyboardInterrupt):
        interrupts.release()
    assert not interrupts.pending()
    interrupts.hold()
    interrupts.release()             # nothing came: nothing raised


def test_a_handler_of_someone_elses_is_left_alone():
    def theirs(signum, frame):
        pass

    previous = signal.signal(signal.SIGINT, theirs)
    try:
        interrupts.install()
        assert signal.getsignal(signal.SIGINT) is theirs
        assert not interrupts.can_hold()
        interrupts.uninstall()
        assert signal.getsignal(signal.SIGINT) is theirs
    finally:
        signal.signal(signal.SIGINT, previous)


def test_uninstall_puts_the_default_back(installed):
    interrupts.uninstall()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_default_handler_put_back_is_taken_over_again(installed):
    """As a notebook kernel does for each cell."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    assert interrupts.can_hold()
    interrupts.hold()
    signal.raise_signal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        interrupts.release()
