"""A driver that stops (SIGSTOP, a closed laptop) or holds the GIL keeps its session.

Each test runs a driver in a subprocess with its own local cluster (its head and agent
are in sessions of their own, so a SIGSTOP of the driver stops the driver only), and
drives it line by line over stdin: ``check`` calls its actor, reads its stored object
and collects the task it submitted before the pause.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from helpers import wait_until

pytestmark = pytest.mark.timeout(90)

DRIVER = textwrap.dedent("""
    import ctypes, sys, time
    import rayipy

    grace = float(sys.argv[1])
    rayipy.init(num_cpus=1, include_dashboard=False,
                _system_config={"driver_grace_period_s": grace} if grace else None)

    @rayipy.remote(num_cpus=0)
    class Counter:
        def __init__(self):
            self.n = 0
        def incr(self):
            self.n += 1
            return self.n

    @rayipy.remote
    def slow(seconds):
        time.sleep(seconds)
        return "slow done"

    @rayipy.remote
    def hold_gil(seconds):
        # PyDLL keeps the GIL through the C call: nothing else in this process runs.
        ctypes.PyDLL(None).sleep(seconds)
        return "held"

    counter = Counter.remote()
    assert rayipy.get(counter.incr.remote()) == 1
    stored = rayipy.put(b"x" * (2 << 20))     # a large value: it lives in the node's store
    pending = None
    print("ready", flush=True)
    for line in sys.stdin:
        command, *args = line.split()
        try:
            if command == "submit":            # a task that ends while we are stopped
                pending = slow.remote(float(args[0]))
                if len(args) > 1:              # and more, which queue at the head
                    queued = [slow.remote(float(args[1])) for _ in range(2)]
                rayipy.cluster_resources()     # a round trip: the head has them now
                print("submitted", flush=True)
            elif command == "check":
                n = rayipy.get(counter.incr.remote(), timeout=20)
                size = len(rayipy.get(stored, timeout=20))
                late = rayipy.get(pending, timeout=20) if pending is not None else "-"
                print(f"ok {n} {size} {late.replace(' ', '_')}", flush=True)
            elif command == "hold_gil":        # the driver itself holds the GIL
                ctypes.PyDLL(None).sleep(int(args[0]))
                print("held", flush=True)
            elif command == "task_holds_gil":  # a worker's task holds its GIL
                print(rayipy.get(hold_gil.remote(int(args[0])), timeout=60), flush=True)
        except Exception as e:
            text = str(e).replace(chr(10), " ")
            print(f"error {type(e).__name__} {text}", flush=True)
""")


class Driver:
    """A driver subprocess, told what to do one line at a time."""

    def __init__(self, grace: float = 0.0) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(grace)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.read_line(60) == "ready"

    def read_line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"the driver said nothing within {timeout} s")
            ready, _, _ = select.select([self.proc.stdout], [], [], remaining)
            if ready:
                line = self.proc.stdout.readline()
                if not line:
                    raise AssertionError(f"the driver exited ({self.proc.wait()})")
                return line.strip()

    def ask(self, command: str, timeout: float = 60) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read_line(timeout)

    def pause(self, seconds: float) -> None:
        """SIGSTOP for ``seconds``, then SIGCONT (the whole driver, every thread)."""
        process = psutil.Process(self.proc.pid)
        os.kill(self.proc.pid, signal.SIGSTOP)
        try:
            wait_until(lambda: process.status() == psutil.STATUS_STOPPED, timeout=5,
                       message="the driver did not stop")
            deadline = time.monotonic() + seconds
            # The pause itself is the point: there is no condition to wait on.
            while time.monotonic() < deadline:
                assert process.status() == psutil.STATUS_STOPPED
                time.sleep(0.5)
        finally:
            os.kill(self.proc.pid, signal.SIGCONT)

    def close(self) -> None:
        children = []
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()     # the driver's loop ends; atexit shuts its cluster down
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for child in children:      # never leave anything behind, even on failure
            try:
                child.wait(5)
            except psutil.TimeoutExpired:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        self.proc.stdout.close()


@pytest.fixture
def driver():
    made: list[Driver] = []

    def start(grace: float = 0.0) -> Driver:
        made.append(Driver(grace))
        return made[-1]
    yield start
    for d in made:
        d.close()


def test_a_driver_stopped_for_30_s_resumes_with_its_actor_object_and_tasks(driver):
    d = driver()
    assert d.ask("submit 2") == "submitted"
    d.pause(30)
    # The actor kept its state (1 call before, this is the 2nd), the stored object is
    # still readable, and the task that ended while we were stopped has its result.
    assert d.ask("check") == f"ok 2 {2 << 20} slow_done"
    assert d.ask("check") == f"ok 3 {2 << 20} slow_done"


def test_a_driver_holding_the_gil_for_15_s_stays_connected(driver):
    d = driver()
    assert d.ask("hold_gil 15") == "held"
    assert d.ask("check") == f"ok 2 {2 << 20} -"


def test_a_driver_stopped_past_its_grace_period_is_told_what_it_lost(driver):
    d = driver(grace=3)
    # The first may run on a worker lent to the driver, which the head does not track;
    # the others queue at the head behind it (one CPU).
    assert d.ask("submit 60 1") == "submitted"
    d.pause(10)
    answer = d.ask("check")
    assert answer.startswith("error SessionLostError "), answer
    # It says why, and what went: the actor, the task, the objects.
    for words in ("grace period of 3 s", "1 actor killed", "objects freed"):
        assert words in answer, (words, answer)
    assert re.search(r"[23] tasks dropped", answer), answer
    # Every later call says the same, not something generic.
    assert d.ask("check").startswith("error SessionLostError ")


def test_a_task_holding_its_workers_gil_for_15_s_finishes(driver):
    d = driver()
    assert d.ask("task_holds_gil 15", timeout=70) == "held"
    assert d.ask("check") == f"ok 2 {2 << 20} -"
