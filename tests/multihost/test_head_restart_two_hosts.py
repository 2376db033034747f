"""The head SIGKILLed mid-run on two hosts (network namespaces) and restarted by hand
with `rayipy start --head` (issue 13 point 9): the joined host's agent and workers, and a
driver on that host, register again; a named detached actor answers with its state."""

from __future__ import annotations

import json
import os
import signal

from helpers import wait_until
from test_two_hosts import PASSWORD, start_cluster

DRIVER = """
    import sys, time
    import rayipy

    rayipy.init(address=ADDRESS, _redis_password=PASSWORD, namespace="ft")

    @rayipy.remote
    class Counter:
        def __init__(self):
            self.n = 0
        def incr(self):
            self.n += 1
            return self.n

    @rayipy.remote
    def where(x):
        import socket
        return socket.gethostname()

    counters = [Counter.options(name=f"c{i}", lifetime="detached").remote() for i in range(2)]
    assert rayipy.get([c.incr.remote() for c in counters]) == [1, 1]
    print("READY", flush=True)
    sys.stdin.readline()                  # the head was killed and restarted meanwhile
    deadline = time.monotonic() + 60
    for i in range(2):
        while True:
            try:
                handle = rayipy.get_actor(f"c{i}")
                break
            except ValueError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert rayipy.get(handle.incr.remote(), timeout=60) == 2
    spread = where.options(scheduling_strategy="SPREAD")
    hosts = set(rayipy.get([spread.remote(i) for i in range(20)], timeout=120))
    print("HOSTS", sorted(hosts), flush=True)
    print("DRIVER OK", flush=True)
"""


def test_the_head_killed_and_restarted_gets_both_hosts_back(two_hosts):
    a, b = two_hosts
    address = start_cluster(a, b, cpus="2")
    source = DRIVER.replace("ADDRESS", repr(address)).replace("PASSWORD", repr(PASSWORD), 1)
    driver = b.popen_python(source)
    try:
        assert driver.stdout is not None and driver.stdin is not None
        first = driver.stdout.readline()
        assert first.startswith("READY"), first + driver.stderr.read()
        cluster = json.loads((a.home / "hostA" / "cluster.json").read_text())
        old = next(p["pid"] for p in cluster["processes"] if p["role"] == "head")
        os.kill(old, signal.SIGKILL)
        wait_until(lambda: not os.path.exists(f"/proc/{old}"), 10)
        restarted = a.rayipy("start", "--head", f"--redis-password={PASSWORD}")
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        assert "restarted it from its journal" in restarted.stdout
        # Both agents register again (each on its own reconnection), then tasks spread.
        wait_until(lambda: "Nodes (2 alive)" in a.rayipy("status").stdout, 30)
        driver.stdin.write("go\n")
        driver.stdin.flush()
        out, err = driver.communicate(timeout=180)
        assert driver.returncode == 0, out + err
        assert "DRIVER OK" in out and "'hostA', 'hostB'" in out, out + err
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.communicate()
