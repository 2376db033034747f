"""memory_summary() and `rayipy memory` on real clusters: what the object stores hold,
largest first, with where each object was made, and gone once its last ref is."""

from __future__ import annotations

import inspect
import json
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest

import rayipy
from helpers import kill_pids, processes_with_env, wait_until

UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
ROW = re.compile(r"^\s+([0-9a-f]{32,})\s+([\d.]+) (B|KiB|MiB|GiB)\s+(.*)$")


def rows(text: str) -> list[tuple[str, int, str]]:
    """(object id, size in bytes as shown, the rest of the line) for each object listed."""
    out = []
    for line in text.splitlines():
        m = ROW.match(line)
        if m:
            out.append((m.group(1), int(float(m.group(2)) * UNITS[m.group(3)]), m.group(4)))
    return out


def about(shown: int, size: int) -> bool:
    """Whether a size shown with one decimal (and the value's small header) is ``size``."""
    return abs(shown - size) <= 0.05 * 2**20 + 4096


@rayipy.remote
def make_array(n: int) -> np.ndarray:
    return np.ones(n, dtype=np.uint8)


def test_memory_summary_lists_objects_largest_first_and_forgets_freed_ones(cluster):
    line = inspect.currentframe().f_lineno
    small = rayipy.put(np.zeros(1_000_000, dtype=np.uint8))   # made at line + 1
    large = rayipy.put(np.zeros(3_000_000, dtype=np.uint8))   # made at line + 2
    made = make_array.remote(2_000_000)
    assert rayipy.get(made).nbytes == 2_000_000

    text = rayipy.memory_summary()
    listed = rows(text)
    ids = [object_id for object_id, _, _ in listed]
    assert ids == [large.hex(), made.hex(), small.hex()], text
    for (_, shown, _), expected in zip(listed, (3_000_000, 2_000_000, 1_000_000)):
        assert about(shown, expected), text
    here = os.path.basename(__file__)
    (_, _, large_rest), (_, _, made_rest), (_, _, small_rest) = listed
    assert re.search(rf"{re.escape(here)}:{line + 2}$", large_rest), text
    assert re.search(rf"{re.escape(here)}:{line + 1}$", small_rest), text
    assert made_rest.endswith("make_array") and "1 ref(s)" in made_rest, text
    assert all(rest.split()[:2] == ["memory", "primary"] and "this process" in rest
               for _, _, rest in listed), text
    assert "Object stores: 1 node(s), 3 object(s)" in text
    stats = rayipy.memory_summary(stats_only=True)
    used = float(re.search(r"used ([\d.]+) MiB of", stats).group(1))
    assert 5.7 <= used <= 5.8 and large.hex() not in stats, stats   # 6 MB in whole pages

    del large
    wait_until(lambda: len(rows(rayipy.memory_summary())) == 2, timeout=10,
               message="the freed object is still listed")
    assert [object_id for object_id, _, _ in rows(rayipy.memory_summary())] == \
        [made.hex(), small.hex()]
    with pytest.raises(TypeError, match="stats_only"):
        rayipy.memory_summary(stats_only="yes")


def test_cluster_status_follows_the_store_use(cluster):
    def used() -> int:
        [store] = rayipy.cluster_status()["object_stores"].values()
        return store.get("used", 0)

    ref = rayipy.put(np.zeros(2_000_000, dtype=np.uint8))
    wait_until(lambda: used() >= 2_000_000, timeout=10, message="the put is not counted")
    del ref
    wait_until(lambda: used() < 2_000_000, timeout=10, message="the freed put is still counted")


# -- the command line ------------------------------------------------------------------------
@pytest.fixture
def machine(tmp_path):
    """A rayipy directory of its own, stopped and cleaned up whatever the test did."""
    home = tmp_path / "home"
    env = dict(os.environ, RAYIPY_HOME=str(home))
    env.pop("RAYIPY_ADDRESS", None)

    def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "rayipy", *args], capture_output=True,
                              text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)

    try:
        yield run, home
    finally:
        if (home / socket.gethostname() / "cluster.json").exists():
            run("stop", "--force", timeout=30)
        kill_pids(processes_with_env("RAYIPY_HOME", str(home)))


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_rayipy_memory_on_a_started_cluster(machine, tmp_path):
    run, home = machine
    spill = tmp_path / "spill here"
    ok(run("start", "--head", "--node-ip-address", "127.0.0.1", "--port", "0", "--password",
           "pw", "--num-cpus", "1", "--include-dashboard", "false",
           "--object-store-memory", "200000000", "--object-spilling-directory", str(spill)))
    text = ok(run("memory"))
    assert "Object stores: 1 node(s), 0 object(s)" in text
    assert re.search(r"used 0 B of 190\.7 MiB", text), text
    assert "(no objects)" in text
    # the agent spills under the directory given
    assert [p.name.startswith("rayipy-spill-") for p in spill.iterdir()] == [True]

    address = json.loads((home / socket.gethostname() / "cluster.json").read_text())["address"]
    driver = subprocess.run(
        [sys.executable, "-c",
         "import numpy as np, rayipy, subprocess, sys\n"
         f"rayipy.init(address='{address}', password='pw')\n"
         "ref = rayipy.put(np.zeros(3_000_000, dtype=np.uint8))\n"
         "print(subprocess.run([sys.executable, '-m', 'rayipy', 'memory'], capture_output=True,"
         " text=True, timeout=60).stdout)\n"],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, RAYIPY_HOME=str(home)),
        stdin=subprocess.DEVNULL)
    listing = ok(driver)
    [(object_id, size, rest)] = rows(listing)
    assert about(size, 3_000_000) and "driver pid" in rest and rest.endswith("<string>:3")
    stats = ok(run("memory", "--stats-only"))
    assert "used" in stats and "object id" not in stats
    status = ok(run("status"))
    assert re.search(r"object store .* / 190\.7 MiB", status), status
    ok(run("stop"))
    failed = run("memory")
    assert failed.returncode == 1 and "no rayipy cluster was started" in failed.stderr


def test_bad_object_store_options_are_refused(machine):
    run, _home = machine
    for args, says in [(["--object-store-memory", "2GB"], "is a number of bytes"),
                       (["--object-store-memory", "100"], "at least 1048576 bytes"),
                       (["--object-spilling-directory", "/proc/no/such"], "cannot make it")]:
        result = run("start", "--head", "--node-ip-address", "127.0.0.1", "--port", "0",
                     "--password", "pw", *args)
        assert result.returncode == 1 and says in result.stderr, result.stderr
    help_text = ok(run("start", "--help"))
    assert "--object-store-memory BYTES" in help_text
    assert "--object-spilling-directory DIR" in help_text
