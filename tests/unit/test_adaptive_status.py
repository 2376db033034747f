"""The figures an adapting launcher shows in ``%cluster status`` and the JupyterLab
sidebar (issue 16, Autoscaling): found by the cluster's address, since the front ends
know only that."""

from __future__ import annotations

from rayipy.cluster.adapt_loop import AdaptStatus
from rayipy.cluster.base import Launcher, adapt_status_for
from rayipy.jupyter.cluster import adapt_line


class FakeLoop:
    def __init__(self, status: AdaptStatus) -> None:
        self._status = status

    def status(self) -> AdaptStatus:
        return self._status

    def stop(self) -> None:
        pass


def launcher_at(address: str, status: AdaptStatus | None) -> Launcher:
    launcher = Launcher("pw")
    launcher._address = address
    launcher._adapting = FakeLoop(status) if status is not None else None
    launcher._closed = True      # nothing to stop at exit
    return launcher


def test_the_adapting_launcher_of_an_address_shows_target_and_current_size():
    keep = [launcher_at("10.0.0.9:6379", AdaptStatus(True, 1, 3, 3, 2)),
            launcher_at("10.0.0.8:6379", None)]
    assert adapt_status_for("tcp://10.0.0.9:6379") == {
        "adapting": True, "minimum": 1, "maximum": 3, "target": 3, "current": 2, "error": ""}
    assert adapt_status_for("10.0.0.8:6379") is None
    assert adapt_status_for("10.0.0.7:6379") is None
    assert adapt_line("tcp://10.0.0.9:6379") == "Adapting: 2 node(s) now, target 3 (1 to 3)"
    assert adapt_line("10.0.0.8:6379") == ""
    del keep


def test_a_stopped_loop_and_its_error_are_said():
    keep = launcher_at("10.0.0.6:6379", AdaptStatus(False, 1, 3, 1, 1, "the head stopped"))
    assert adapt_line("10.0.0.6:6379") == ("Adapting stopped: 1 node(s) now, target 1 (1 to 3); "
                                           "last error: the head stopped")
    del keep
