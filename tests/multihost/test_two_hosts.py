"""The seed's cluster workflow on two really separate hosts (network namespaces).

hostA (10.213.0.1) runs `rayipy start --head`, hostB (10.213.0.2) joins with
`rayipy start --address=... --redis-password=...`, and the seed's third program runs as
the driver on hostA, as written but for the import and the address and password.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from helpers import wait_until

SEED_PROGRAM_3 = (Path(__file__).resolve().parents[2] / "examples" / "seed_cluster.py").read_text()
PASSWORD = "5241590000000000"   # the seed's


def start_cluster(head, node, cpus: str = "1") -> str:
    """The seed's two commands; returns the head's address."""
    started = head.rayipy("start", "--head", "--node-ip-address", head.ip, "--num-cpus", cpus,
                          f"--redis-password={PASSWORD}")
    assert started.returncode == 0, started.stdout + started.stderr
    address = f"{head.ip}:6379"
    # The join command keeps the password out of `ps` (it is asked for, or read from
    # $RAYIPY_PASSWORD or a file); the password itself is printed once, on its own line.
    assert f"rayipy start --address='{address}'\n" in started.stdout
    assert f"The cluster's password: {PASSWORD}\n" in started.stdout
    joined = node.rayipy("start", f"--address={address}", f"--redis-password={PASSWORD}",
                         "--num-cpus", cpus)
    assert joined.returncode == 0, joined.stdout + joined.stderr
    return address


def seed_program(address: str) -> str:
    program = SEED_PROGRAM_3.replace("'172.17.0.2:6379'", repr(address))
    assert program != SEED_PROGRAM_3
    return program


def test_seed_program_3_spreads_its_tasks_over_both_hosts(two_hosts):
    a, b = two_hosts
    address = start_cluster(a, b)
    result = a.python(seed_program(address), timeout=300)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"^\s+2 nodes in total$", out, re.M), out
    assert re.search(r"^\s+2\.0 CPU resources in total$", out, re.M), out
    counts = {ip: int(n) for n, ip in re.findall(r"^\s+(\d+) tasks on (\S+)$", out, re.M)}
    assert sum(counts.values()) == 10000, out
    assert set(counts) == {a.ip, b.ip}, out    # each host reports its own address
    for ip, n in counts.items():
        assert n >= 3000, f"a fair share is about half of the 10,000 tasks: {counts}"

    status = a.rayipy("status")
    assert status.returncode == 0 and "Nodes (2 alive)" in status.stdout, status.stderr
    assert f"{b.ip} (hostB)" in status.stdout and f"{a.ip} (hostA)  head" in status.stdout
    # Status from the other host, through its own connection file.
    assert "Nodes (2 alive)" in b.rayipy("status").stdout


def test_joining_with_a_wrong_password_is_refused_at_once(two_hosts):
    a, b = two_hosts
    # No --node-ip-address: the head guesses this host's address (no route out here, so
    # from its host name), not loopback.
    started = a.rayipy("start", "--head", "--num-cpus", "1", "--password", "right")
    assert started.returncode == 0, started.stderr
    assert f"rayipy start --address='{a.ip}:6379'\n" in started.stdout
    wrong = b.rayipy("start", f"--address={a.ip}:6379", "--redis-password=wrong", timeout=30)
    assert wrong.returncode == 1
    assert "refused the password (wrong password)" in wrong.stderr
    assert not b.pids()
    dead = b.rayipy("start", f"--address={a.ip}:6380", "--password=right", timeout=30)
    assert dead.returncode == 1 and "(Connection refused)" in dead.stderr
    unreachable = b.rayipy("start", "--address=10.213.1.9:6379", "--password=right", timeout=30)
    assert unreachable.returncode == 1 and "cannot join" in unreachable.stderr, unreachable.stderr


def test_stopping_the_head_stops_the_other_hosts_too(two_hosts):
    a, b = two_hosts
    start_cluster(a, b)
    assert a.rayipy("stop").returncode == 0 and not a.pids()
    wait_until(lambda: not b.pids(), timeout=30, message="hostB's agent outlived its head")
    late = b.rayipy("stop")
    assert late.returncode == 0 and "had already exited" in late.stdout, late.stderr
    assert not (b.home / b.name / "cluster.json").exists()


def arenas(*hosts) -> set[str]:
    """The object stores' shared-memory files the hosts' processes hold open."""
    found = set()
    for host in hosts:
        for pid in host.pids():
            try:
                for fd in Path(f"/proc/{pid}/fd").iterdir():
                    target = os.readlink(fd)
                    if "rayipy-arena-" in target:
                        found.add(target)
            except OSError:
                continue   # gone meanwhile
    return found


def test_stop_leaves_nothing_behind_on_either_host(two_hosts):
    a, b = two_hosts
    address = start_cluster(a, b, cpus="2")
    used = a.python(f"""
        import numpy as np
        import rayipy
        rayipy.init(address={address!r}, password={PASSWORD!r})
        @rayipy.remote
        def f(x):
            return x
        print(sum(rayipy.get([f.remote(i) for i in range(200)])))
        kept = rayipy.put(np.ones(1_000_000))     # an object in hostA's store
    """)
    assert used.stdout.strip() == str(sum(range(200))), used.stderr
    stores = arenas(a, b)
    assert len(stores) == 2 and all(os.path.exists(p) for p in stores)   # one per host
    assert len(a.pids()) == 4 and len(b.pids()) == 3   # head, agents, 2 workers each
    for host in (b, a):
        stopped = host.rayipy("stop")
        assert stopped.returncode == 0 and "Stopped" in stopped.stdout, stopped.stderr
        assert not host.pids(), f"left on {host.name}: {host.pids()}"
        assert not (host.home / host.name / "cluster.json").exists()
    assert not [p for p in stores if os.path.exists(p)], "a store's file stayed in /dev/shm"


@pytest.mark.timeout(240)
@pytest.mark.parametrize("how", ["killed", "stopped"])
def test_a_host_lost_mid_run_loses_no_result(two_hosts, how):
    """hostB dies (every process SIGKILLed) or leaves (`rayipy stop`) while its tasks run."""
    a, b = two_hosts
    address = start_cluster(a, b)
    driver = a.popen_python(f"""
        import socket, sys, time
        import rayipy
        rayipy.init(address={address!r}, password={PASSWORD!r})
        @rayipy.remote
        def f(x):
            time.sleep(0.005)
            return x * x, socket.gethostbyname(socket.gethostname())
        refs = [f.remote(i) for i in range(2000)]
        ready, _ = rayipy.wait(refs, num_returns=300)
        print("where", *sorted(set(ip for _, ip in rayipy.get(ready))), flush=True)
        sys.stdin.readline()          # hostB is gone now
        values = rayipy.get(refs, timeout=120)
        print("correct", [v for v, _ in values] == [i * i for i in range(2000)], flush=True)
        print("nodes alive", sum(n["Alive"] for n in rayipy.nodes()), flush=True)
    """)
    try:
        where = driver.stdout.readline().split()
        assert where[:1] == ["where"], driver.stderr.read() if driver.poll() is not None else where
        assert b.ip in where[1:], f"hostB ran none of the first tasks: {where}"
        if how == "killed":
            b.kill_everything()
        else:
            stopped = b.rayipy("stop")
            assert stopped.returncode == 0 and not b.pids(), stopped.stderr
        driver.stdin.write("go\n")
        driver.stdin.flush()
        out, err = driver.communicate(timeout=180)
        assert driver.returncode == 0, err
        assert "correct True" in out, out + err
        assert "nodes alive 1" in out, out
    finally:
        driver.kill()
        driver.wait()


def test_direct_paths_work_across_hosts(two_hosts):
    """Actor calls, leased workers and objects go between hosts on advertised addresses."""
    a, b = two_hosts
    started = a.rayipy("start", "--head", "--node-ip-address", a.ip, "--num-cpus", "1",
                       "--resources", '{"at_a": 4}', "--password", PASSWORD)
    assert started.returncode == 0, started.stderr
    joined = b.rayipy("start", f"--address={a.ip}:6379", "--password", PASSWORD, "--num-cpus", "1",
                      "--resources", '{"at_b": 1}')
    assert joined.returncode == 0, joined.stderr
    # The driver runs on hostB, which has no head: "auto" finds it through B's connection file.
    result = b.python("""
        import socket
        import numpy as np
        import rayipy
        rayipy.init(address="auto")
        here = lambda: socket.gethostbyname(socket.gethostname())

        @rayipy.remote(resources={"at_a": 1})
        class Counter:
            def __init__(self):
                self.n = 0
            def add(self):
                self.n += 1
                return self.n, here()

        c = Counter.remote()                  # on hostA, called straight from hostB
        print("actor", [rayipy.get(c.add.remote()) for _ in range(3)][-1])

        @rayipy.remote(resources={"at_a": 1})
        def on_a(x):
            return x + 1, here()
        # One at a time: the driver leases hostA's worker and sends it tasks directly.
        print("leased", [rayipy.get(on_a.remote(i)) for i in range(20)][-1])

        @rayipy.remote(resources={"at_a": 1})
        def big():
            return np.arange(5_000_000, dtype=np.int64)     # 40 MB, made on hostA
        @rayipy.remote(resources={"at_a": 1})
        def total(refs):
            return int(rayipy.get(refs[0]).sum()), here()   # a hostB object, fetched on hostA
        print("big", int(rayipy.get(big.remote()).sum()) == 4999999 * 5000000 // 2)
        mine = rayipy.put(np.ones(1_000_000))
        print("borrowed", rayipy.get(total.remote([mine])))
        @rayipy.remote(resources={"at_a": 1})
        def total_of(array):
            return int(array.sum()), here()
        by_value = np.ones(2_000_000)                     # 16 MB: held on hostB, fetched
        calls = [total_of.remote(by_value) for _ in range(3)]
        by_value[:] = 0                                    # fixed at the call, all the same
        print("by_value", rayipy.get(calls))
    """)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.strip().splitlines())
    assert lines == {"actor": f"(3, '{a.ip}')", "leased": f"(20, '{a.ip}')", "big": "True",
                     "borrowed": f"(1000000, '{a.ip}')",
                     "by_value": str([(2000000, a.ip)] * 3)}, result.stdout


def test_hosts_sharing_a_home_directory_keep_their_processes_apart(two_hosts):
    """One rayipy directory for both hosts, as with a home directory on NFS."""
    a, b = two_hosts
    b.home = a.home
    b.env["RAYIPY_HOME"] = str(a.home)
    start_cluster(a, b)
    assert (a.home / "hostA" / "cluster.json").exists() and (a.home / "hostB" / "cluster.json").exists()
    assert b.rayipy("stop").returncode == 0 and not b.pids()
    assert len(a.pids()) == 3   # hostA's head, agent and worker are untouched
    assert "Nodes (1 alive)" in a.rayipy("status").stdout
    assert a.rayipy("stop").returncode == 0 and not a.pids()
