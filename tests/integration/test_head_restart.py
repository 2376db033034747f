"""A head SIGKILLed mid-run and restarted with `rayipy start --head` gets its cluster
back (issue 13 point 9): the agent, its workers and a connected driver register again,
a named detached actor answers with its state, and new tasks run.

One "machine" on loopback (test_cli's ``machines``); the same on two network namespaces
is tests/multihost/test_head_restart_two_hosts.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from helpers import wait_until
from test_cli import machines, ok  # noqa: F401  (the fixture)

DRIVER = """
    import os, sys, time
    import rayipy

    rayipy.init(address="auto", namespace="ft")

    @rayipy.remote
    class Counter:
        def __init__(self):
            self.n = 0
        def incr(self):
            self.n += 1
            return self.n

    @rayipy.remote
    def square(x):
        return x * x

    @rayipy.remote
    def slow():
        time.sleep(4)
        return "slow done"

    counter = Counter.options(name="counter", lifetime="detached").remote()
    assert rayipy.get([counter.incr.remote() for _ in range(3)]) == [1, 2, 3]
    assert rayipy.get(square.remote(3)) == 9
    in_flight = [slow.remote() for _ in range(2)]
    print("READY", flush=True)
    while not os.path.exists(sys.argv[1]):       # the test killed and restarted the head
        time.sleep(0.05)
    # Calls to the actor go straight to its worker, which lived on.
    assert rayipy.get(counter.incr.remote(), timeout=60) == 4
    deadline = time.monotonic() + 60
    while True:                                  # the head learns the name again
        try:
            again = rayipy.get_actor("counter")
            break
        except ValueError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert rayipy.get(again.incr.remote(), timeout=60) == 5
    assert rayipy.get([square.remote(i) for i in range(20)], timeout=60) == [i * i for i in range(20)]
    for ref in in_flight:   # given to the old head: sent again to the new one (retries)
        try:
            print("IN FLIGHT", rayipy.get(ref, timeout=60), flush=True)
        except rayipy.exceptions.HeadRestartedError as e:
            print("IN FLIGHT failed:", e, flush=True)
    print("DRIVER OK", flush=True)
"""


def head_pid(machine) -> int:
    return next(p["pid"] for p in machine.cluster_file()["processes"] if p["role"] == "head")


def test_a_restarted_head_gets_its_agent_actor_and_driver_back(machines, tmp_path):
    machine = machines()
    machine.start_head("--num-cpus", "2")
    go = tmp_path / "go"
    driver = subprocess.Popen([sys.executable, "-c", textwrap.dedent(DRIVER), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=machine.env, stdin=subprocess.DEVNULL)
    try:
        assert driver.stdout is not None
        first = driver.stdout.readline()
        assert first.startswith("READY"), first + driver.stdout.read()
        old = head_pid(machine)
        os.kill(old, signal.SIGKILL)
        wait_until(lambda: not os.path.exists(f"/proc/{old}"), 10)
        out = ok(machine.rayipy("start", "--head", "--num-cpus", "2"))
        assert "restarted it from its journal" in out
        assert head_pid(machine) != old
        go.touch()
        output, _ = driver.communicate(timeout=120)
        assert driver.returncode == 0, output
        assert "DRIVER OK" in output
        assert output.count("IN FLIGHT") == 2
        # Sent again (they have retries), with their function, which the old head may
        # not have written to its journal before it died.
        assert output.count("IN FLIGHT slow done") == 2, output
        # A driver that connects now finds the actor, its state intact.
        late = machine.python("""
            import rayipy
            rayipy.init(address="auto", namespace="ft")
            print("N", rayipy.get(rayipy.get_actor("counter").incr.remote(), timeout=60))
        """)
        assert "N 6" in ok(late)
        status = ok(machine.rayipy("status"))
        assert "Nodes (1 alive)" in status and "3 workers" in status, status
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
