"""init, shutdown and process lifetime: nothing started by rayipy outlives its driver."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

import rayipy
from rayipy.exceptions import NotInitializedError
from helpers import wait_until

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def run_driver(source: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", source], capture_output=True, text=True,
                          timeout=timeout)


def test_use_before_init_is_a_precise_error():
    assert not rayipy.is_initialized()
    with pytest.raises(NotInitializedError, match=r"rayipy\.init\(\)"):
        rayipy.nodes()
    with pytest.raises(NotInitializedError):
        rayipy.cluster_resources()


def test_seed_program_one():
    # The README's first command runs this very file.
    result = subprocess.run([sys.executable, str(EXAMPLES / "seed_squares.py")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[0, 1, 4, 9]"


def test_task_output_reaches_the_driver():
    source = textwrap.dedent("""
        import rayipy
        rayipy.init(num_cpus=1)
        @rayipy.remote
        def talk(i):
            print("line one from", i)
            print("partial", end="")
            return i
        print(rayipy.get(talk.remote(5)))
        rayipy.shutdown()
    """)
    result = run_driver(source)
    assert result.returncode == 0, result.stderr
    assert "(talk pid=" in result.stdout
    assert "line one from 5" in result.stdout
    assert "partial" in result.stdout


def test_shutdown_stops_every_process_and_init_works_again(fresh_cluster):
    fresh_cluster(num_cpus=2)
    # init() returns once the node is up; its workers may still be starting.
    wait_until(lambda: len(psutil.Process().children(recursive=True)) >= 4, timeout=30,
               message="head, agent and two workers did not all start")
    pids = [p.pid for p in psutil.Process().children(recursive=True)]
    rayipy.shutdown()
    wait_until(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                               for p in pids), timeout=10)
    assert not rayipy.is_initialized()
    with pytest.raises(NotInitializedError):
        rayipy.nodes()
    fresh_cluster(num_cpus=1)
    assert rayipy.cluster_resources()["CPU"] == 1.0


def test_killed_driver_leaves_no_process_behind():
    source = textwrap.dedent("""
        import sys, psutil, rayipy
        rayipy.init(num_cpus=2)
        @rayipy.remote
        def f(x):
            return x
        rayipy.get([f.remote(i) for i in range(10)])
        pids = [p.pid for p in psutil.Process().children(recursive=True)]
        print(" ".join(map(str, pids)), flush=True)
        sys.stdin.read()   # wait to be killed
    """)
    driver = subprocess.Popen([sys.executable, "-c", source], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in driver.stdout.readline().split()]
        assert len(pids) >= 4
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(10)

        def all_gone():
            return not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                           for p in pids)
        wait_until(all_gone, timeout=10, message="rayipy processes outlived their driver")
    finally:
        driver.kill()
        driver.wait()
        driver.stdout.close()
        driver.stdin.close()
