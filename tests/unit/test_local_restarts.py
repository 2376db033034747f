"""Unit tests of the local cluster's agent restart budget and its setting in init()."""

from __future__ import annotations

import pytest

from rayipy import session
from rayipy.node.launch import RestartBudget, describe_exit


def test_restarts_are_bounded_per_window():
    budget = RestartBudget(limit=3, window=60.0)
    assert [budget.allow(t) for t in (0.0, 1.0, 2.0, 3.0)] == [True, True, True, False]
    assert budget.allow(59.9) is False
    assert budget.allow(60.0) is True        # the first restart left the window
    assert budget.allow(60.5) is False


def test_exit_descriptions():
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(1) == "exited with code 1"


def test_unschedulable_timeout_in_system_config():
    assert session._unschedulable_timeout(None) is None
    assert session._unschedulable_timeout({"unschedulable_task_timeout_s": 5}) == 5.0
    with pytest.raises(ValueError, match="unschedulable_task_timeout_s must be"):
        session._unschedulable_timeout({"unschedulable_task_timeout_s": -1})
    with pytest.raises(ValueError, match="it knows 'driver_grace_period_s', "
                                         "'object_spilling_config', 'unschedulable_task_timeout_s'"):
        session._spill_directory({"other": 1})
