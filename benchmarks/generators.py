"""generators.py -- a streaming generator task of 10,000 yields, rayipy beside Ray in one run.

The figure g of ``core.py`` on its own, for a quick look: each system in a fresh driver
process of its own, one after the other, with core.py's system classes (``rayipy.init
(num_cpus=2)``, ``ray.init(num_cpus=2, include_dashboard=False)``) and its timed body
(``stream_10k``: ``f.remote(10_000)``, every ref taken as it streams in, then every value
got). Prints the median of ``--reps`` runs per system, and rayipy/Ray.

    /work/peers-venv/bin/python benchmarks/generators.py [--reps 5] [--systems rayipy,ray]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def child(system: str, reps: int) -> None:
    sys.path.insert(0, HERE)
    import core   # noqa: E402 -- the harness's pieces, shared
    S = core.SYSTEMS[system]()
    S.import_lib()
    S.start()
    try:
        f = S.remote(core.main_yield_n)
        S.get(list(f.remote(100)))   # warm-up
        times = [core.stream_10k(S, f) for _ in range(reps)]
    finally:
        S.shutdown()
    print(json.dumps({"system": system, "seconds": times, "version": S.version}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--systems", default="rayipy,ray")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.reps)
        return
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    medians = {}
    for system in args.systems.split(","):
        out = subprocess.run([sys.executable, __file__, "--child", system, "--reps", str(args.reps)],
                             capture_output=True, text=True, timeout=600, env=env,
                             start_new_session=True)
        lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
        if out.returncode != 0 or not lines:
            print(f"{system}: failed\n{out.stderr[-2000:]}")
            continue
        res = json.loads(lines[-1])
        medians[system] = statistics.median(res["seconds"])
        runs = ", ".join(f"{s:.3f}" for s in res["seconds"])
        print(f"| {system} {res['version']} | {medians[system]:.3f} s | {10_000 / medians[system]:,.0f} "
              f"yields/s | runs: {runs} |")
    if "rayipy" in medians and "ray" in medians:
        print(f"rayipy/Ray time: {medians['rayipy'] / medians['ray']:.2f}")


if __name__ == "__main__":
    main()
