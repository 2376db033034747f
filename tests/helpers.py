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


def processes_with_env(name: str, value: str) -> list[int]:
    """Live processes whose environment has ``name=value`` (Linux /proc), for cleaning up
    detached processes a test started, which are not its children."""
    import os
    wanted = f"{name}={value}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if wanted not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        if stat[stat.rindex(b")") + 2:][:1] != b"Z":
            found.append(int(entry))
    return found


def kill_pids(pids: list[int]) -> None:
    import os
    import signal
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def local_store():
    """This driver's node's object store client (the tests run on a local cluster)."""
    from rayipy.core.object_ref import current_runtime
    client = current_runtime().access.store()
    assert client is not None, "the driver found no store on its node"
    return client
