"""The sidebar's buttons and rows, kernel side (rayipy/jupyter/lab.py), without a browser:
start, stop and connect as the comm runs them; per-worker rows; per-function progress."""

from __future__ import annotations

import time

import pytest

import rayipy
from helpers import stop_cluster
from helpers import wait_until
from rayipy.jupyter import lab


@pytest.fixture
def cleanup():
    try:
        yield
    finally:
        stop_cluster()


@rayipy.remote
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_start_shows_worker_rows_and_function_progress_then_stop(cleanup):
    started = lab.run_action({"action": "start", "num_cpus": 2})
    assert started["ok"] and "local cluster" in started["message"], started
    again = lab.run_action({"action": "start", "num_cpus": 2})
    assert again["ok"] and "already running" in again["message"]
    refs = [nap.remote(0.05) for _ in range(4)]
    slow = nap.remote(30)
    rayipy.get(refs)

    def rows_show_the_running_task():
        status = lab.status()
        busy = [w for w in status["worker_rows"] if w["task"] == "nap"]
        return status if busy else None
    status = wait_until(rows_show_the_running_task, timeout=20,
                        message="no worker row says it runs nap")
    rows = status["worker_rows"]
    assert len(rows) >= 2 and all(w["pid"] > 0 and w["state"] for w in rows)
    wait_until(lambda: all(w["rss"] > 0 for w in lab.status()["worker_rows"]), timeout=10,
               message="workers' RSS never came")
    progress = lab.status()["functions"]["nap"]
    assert progress["done"] >= 4 and progress["running"] == 1 and progress["total"] >= 5

    refused = lab.run_action({"action": "stop"})
    assert not refused["ok"] and "--force" in refused["message"] and rayipy.is_initialized()
    stopped = lab.run_action({"action": "stop", "force": True})
    assert stopped["ok"] and "Stopped" in stopped["message"] and not rayipy.is_initialized()
    del slow


def test_bad_actions_are_answered_with_what_is_wrong(cleanup):
    assert "not 'explode'" in lab.run_action({"action": "explode"})["message"]
    assert "whole number" in lab.run_action({"action": "start", "num_cpus": 0})["message"]
    assert "address" in lab.run_action({"action": "connect", "address": " "})["message"]
    failed = lab.run_action({"action": "connect", "address": "127.0.0.1:1", "password": "x"})
    assert not failed["ok"] and "could not connect" in failed["message"]
    assert lab.status()["connected"] is False
