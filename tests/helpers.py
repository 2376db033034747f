"""Helpers for tests: waiting on conditions with deadlines, finding child processes."""

from __future__ import annotations

import time

import psutil

import rayipy


def wait_until(condition, timeout: float = 10.0, interval: float = 0.01, message: str = ""):
    """Poll ``condition`` until it is true or the deadline passes (never a bare sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(message or f"condition not met within {timeout} s")
        time.sleep(interval)


def child_processes() -> list[psutil.Process]:
    try:
        return [p for p in psutil.Process().children(recursive=True) if p.is_running()
                and p.status() != psutil.STATUS_ZOMBIE]
    except psutil.NoSuchProcess:
        return []


def stop_cluster() -> None:
    """Shut rayipy down and make sure every process it started is gone."""
    before = child_processes()
    rayipy.shutdown()
    try:
        wait_until(lambda: not child_processes(), timeout=10,
                   message=f"processes left after shutdown: {child_processes()}")
    finally:
        for proc in child_processes():  # never leave anything behind, even on failure
            proc.kill()
        for proc in before:
            try:
                proc.wait(0)
            except (psutil.NoSuchProcess, psutil.TimeoutExpired):
                pass
