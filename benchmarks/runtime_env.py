"""The first call that needs a new pip environment against later calls that reuse it.

Builds a tiny wheel locally (no network), starts a 1-CPU local cluster with an empty
environment cache, and times: the first call with runtime_env={"pip": [...]} (venv +
pip install + a worker started in it), a second call (the same worker), and a call
from a fresh worker of a new session that finds the venv cached on the node.

    PYTHONPATH=. python benchmarks/runtime_env.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import rayipy  # noqa: E402
from wheel_factory import make_wheel  # noqa: E402


@rayipy.remote
def hello() -> str:
    import benchtinypkg
    return benchtinypkg.hello()


def timed_call(env: dict) -> float:
    start = time.perf_counter()
    assert rayipy.get(hello.options(runtime_env=env).remote(), timeout=300) == "hi"
    return time.perf_counter() - start


def main() -> None:
    scratch = tempfile.mkdtemp(prefix="rayipy-bench-renv-")
    os.environ["RAYIPY_RUNTIME_ENV_DIR"] = os.path.join(scratch, "cache")
    wheels = os.path.join(scratch, "wheels")
    make_wheel(wheels, "benchtinypkg", "1.0", "def hello():\n    return 'hi'\n")
    env = {"pip": ["--no-index", f"--find-links {wheels}", "benchtinypkg==1.0"]}
    rayipy.init(num_cpus=1, include_dashboard=False)
    first = timed_call(env)
    again = [timed_call(env) for _ in range(5)]
    rayipy.shutdown()
    rayipy.init(num_cpus=1, include_dashboard=False)    # a new worker, the venv cached
    cached = timed_call(env)
    rayipy.shutdown()
    print(f"first call, new pip environment (venv + install + worker): {first * 1000:8.1f} ms")
    print(f"later calls, same worker (median of 5):                   "
          f"{sorted(again)[2] * 1000:8.1f} ms")
    print(f"new session, venv cached on the node (new worker):        {cached * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
