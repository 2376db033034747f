"""What a head SIGKILLed mid-run gives back once restarted (issue 13 point 9, "If the head
dies" in docs/cluster.md), beyond its agents, drivers and actors
(tests/integration/test_head_restart.py):

- the tasks it held, queued or running, are sent again by their owner (within their
  retries) and every result comes back right, each task run once (a copy sent again of
  a task its worker still holds goes back to that worker); a task with ``max_retries=0``
  fails with ``HeadRestartedError`` saying so, unless its result was on the way already;
- a named detached placement group is found by name afterwards, and a task runs in it;
- a driver's lease is known to the restarted head, so it lends that worker to nobody
  else, and no worker runs two tasks at once.

One "machine" on loopback (test_cli's ``machines``).
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from helpers import wait_until
from test_cli import machines, ok  # noqa: F401  (the fixture)
from test_head_restart import head_pid

TASKS = """
    import os, sys, time
    import rayipy
    from rayipy.util.placement_group import placement_group

    go, record = sys.argv[1], sys.argv[2]
    rayipy.init(address="auto")

    @rayipy.remote
    def square(i):
        start = time.time()
        time.sleep(4 if i in (1, 2) else 0.2)   # these two run on across the restart
        with open(os.path.join(record, f"{i}-{os.getpid()}-{time.time_ns()}"), "w") as f:
            f.write(f"{os.getpid()} {start} {time.time()}")
        return i * i

    pg = placement_group([{"CPU": 1}], name="kept", lifetime="detached")
    rayipy.get(pg.ready(), timeout=60)
    refs = [square.remote(i) for i in range(50)]
    once = square.options(max_retries=0).remote(50)
    rayipy.get(refs[0], timeout=60)          # running: the head has handed some out
    print("READY", flush=True)
    while not os.path.exists(go):            # the test killed and restarted the head
        time.sleep(0.05)
    assert rayipy.get(refs, timeout=120) == [i * i for i in range(50)]
    try:
        print("ONCE", rayipy.get(once, timeout=120), flush=True)
    except rayipy.exceptions.HeadRestartedError as e:
        print("ONCE failed:", e, flush=True)
    print("DRIVER OK", flush=True)
"""

IN_GROUP = """
    import os
    import rayipy
    from rayipy.util.placement_group import get_placement_group
    from rayipy.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    rayipy.init(address="auto")
    pg = get_placement_group("kept")
    rayipy.get(pg.ready(), timeout=60)

    @rayipy.remote(num_cpus=1)
    def where():
        return "in the group"

    strategy = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=0)
    print("GROUP", rayipy.get(where.options(scheduling_strategy=strategy).remote(),
                              timeout=60), flush=True)
"""


def kill_and_restart(machine, *args: str) -> None:
    old = head_pid(machine)
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: not os.path.exists(f"/proc/{old}"), 10)
    out = ok(machine.rayipy("start", "--head", *args))
    assert "restarted it from its journal" in out
    assert head_pid(machine) != old


def intervals(record: Path) -> list[tuple[int, float, float]]:
    out = []
    for path in record.iterdir():
        pid, start, end = path.read_text().split()
        out.append((int(pid), float(start), float(end)))
    return out


def assert_one_task_at_a_time_per_worker(runs: list[tuple[int, float, float]]) -> None:
    by_pid: dict[int, list[tuple[float, float]]] = {}
    for pid, start, end in runs:
        by_pid.setdefault(pid, []).append((start, end))
    for pid, spans in by_pid.items():
        spans.sort()
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert start >= end, f"worker {pid} ran two tasks at once: {spans}"


def test_tasks_the_head_held_run_again_and_a_placement_group_comes_back(machines, tmp_path):
    machine = machines()
    machine.start_head("--num-cpus", "3")
    go, record = tmp_path / "go", tmp_path / "runs"
    record.mkdir()
    driver = subprocess.Popen([sys.executable, "-c", textwrap.dedent(TASKS), str(go), str(record)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=machine.env, stdin=subprocess.DEVNULL)
    try:
        assert driver.stdout is not None
        first = driver.stdout.readline()
        assert first.startswith("READY"), first + driver.stdout.read()
        kill_and_restart(machine, "--num-cpus", "3")
        go.touch()
        output, _ = driver.communicate(timeout=180)
        assert driver.returncode == 0, output
        assert "DRIVER OK" in output
        # Given to the old head with no retries: run (its result was on the way), or
        # failed saying why it was not sent again.
        assert "ONCE 2500" in output or ("ONCE failed" in output and "max_retries" in output), output
        runs = intervals(record)
        assert_one_task_at_a_time_per_worker(runs)
        # Each task ran once: a copy sent again whose task lived on in its worker (running,
        # or queued there: squares 1 and 2 run across the restart) went back to that
        # worker, which had it already; a result that reached the new head before its
        # owner registered again was given to it first.
        count = collections.Counter(int(p.name.split("-")[0]) for p in record.iterdir())
        print(output, f"{len(runs)} runs for 51 tasks")
        assert [i for i in range(50) if count[i] != 1] == [], sorted(count.items())
        # The one with no retries ran once if its result came, else at most once (queued at
        # the old head, it was never sent again; on a worker, it ran there).
        assert count[50] == 1 if "ONCE 2500" in output else count[50] <= 1
        # The named detached group is back, on its node, and takes tasks.
        assert "GROUP in the group" in ok(machine.python(IN_GROUP))
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()


LEASED = """
    import os, sys, time
    import rayipy

    stop, record = sys.argv[1], sys.argv[2]
    rayipy.init(address="auto")

    @rayipy.remote
    def step(n):
        start = time.time()
        time.sleep(0.1)
        with open(os.path.join(record, f"lease-{n}"), "w") as f:
            f.write(f"{os.getpid()} {start} {time.time()}")
        return os.getpid()

    n = 0
    pids = set()
    while not os.path.exists(stop):          # one at a time: on a leased worker
        pids.add(rayipy.get(step.remote(n), timeout=60))
        n += 1
        if n == 5:
            print("READY", flush=True)
    print("LEASED OK", n, len(pids), flush=True)
"""

BURST = """
    import os, sys, time
    import rayipy

    record = sys.argv[1]
    rayipy.init(address="auto")

    @rayipy.remote
    def busy(n):
        start = time.time()
        time.sleep(0.3)
        with open(os.path.join(record, f"burst-{n}"), "w") as f:
            f.write(f"{os.getpid()} {start} {time.time()}")
        return n

    assert rayipy.get([busy.remote(n) for n in range(8)], timeout=60) == list(range(8))
    print("BURST OK", flush=True)
"""


def test_a_lease_held_across_the_restart_is_known_to_the_new_head(machines, tmp_path):
    machine = machines()
    machine.start_head("--num-cpus", "2")
    stop, record = tmp_path / "stop", tmp_path / "runs"
    record.mkdir()
    driver = subprocess.Popen([sys.executable, "-c", textwrap.dedent(LEASED), str(stop),
                               str(record)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=machine.env, stdin=subprocess.DEVNULL)
    try:
        assert driver.stdout is not None
        first = driver.stdout.readline()
        assert first.startswith("READY"), first + driver.stdout.read()
        assert "1 leased to drivers" in ok(machine.rayipy("status"))
        kill_and_restart(machine, "--num-cpus", "2")
        # The driver told the new head of its lease when it registered again.
        wait_until(lambda: "1 leased to drivers" in ok(machine.rayipy("status")), 30,
                   interval=0.2, message="the restarted head does not know the driver's lease")
        # Another driver's burst through the head: the leased worker is not given it
        # while it is lent (the head asks for it back, and gets it between tasks).
        assert "BURST OK" in ok(machine.python(BURST.replace("sys.argv[1]", repr(str(record)))))
        stop.touch()
        output, _ = driver.communicate(timeout=60)
        assert driver.returncode == 0 and "LEASED OK" in output, output
        assert_one_task_at_a_time_per_worker(intervals(record))
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
