#!/usr/bin/env python3
"""util.py -- rayipy.util beside ray.util in one run: ActorPool.map and Pool.map of 10,000 items.

Each system runs in its own child process, one after the other (never concurrently), on 2
CPUs (``init(num_cpus=2)``; Ray without its dashboard). Figures, each the median of --reps
(3) after one warm-up, in seconds:

  actor_pool  ``list(ActorPool([A.remote(), A.remote()]).map(lambda a, v: a.f.remote(v),
              range(N)))``: one actor call per item, at most one in flight per actor
  pool_map    ``Pool(2).map(f, range(N))`` with the default chunksize (the stdlib's rule:
              about four chunks per actor), the pool made once before timing
  pool_imap   ``list(Pool(2).imap(f, range(N), chunksize=100))``

The functions live in ``__main__``, so both systems pickle them by value. The harness
pieces (Recorder, process tracking, rayipy snapshots) are core.py's.

    /work/peers-venv/bin/python benchmarks/util.py --rayipy-rev HEAD     # ray,rayipy
    /work/peers-venv/bin/python benchmarks/util.py --n 2000 --reps 1      # smoke run
"""

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import core  # noqa: E402 -- the shared harness pieces

pc = time.perf_counter
SCRIPT = os.path.abspath(__file__)
SYSTEMS = ["ray", "rayipy"]
WORKLOADS = ["actor_pool", "pool_map", "pool_imap"]


def inc(x):
    return x + 1


class Adder:
    def f(self, v):
        return v + 1


def load(system):
    """(module, ActorPool, Pool) of one system."""
    if system == "ray":
        import ray
        from ray.util import ActorPool
        from ray.util.multiprocessing import Pool
        ray.init(num_cpus=2, include_dashboard=False)
        return ray, ActorPool, Pool
    import rayipy
    from rayipy.util import ActorPool
    from rayipy.util.multiprocessing import Pool
    rayipy.init(num_cpus=2)
    return rayipy, ActorPool, Pool


def child_main(args):
    rec = core.Recorder(args.child, args.out, {"n": args.n, "reps": args.reps})
    signal.signal(signal.SIGALRM, core._alarm)
    lib, ActorPool, Pool = load(args.child)
    n = args.n
    expected = [i + 1 for i in range(n)]

    def timed(label, run):
        samples = []
        for rep in range(args.reps + 1):
            t0 = pc()
            out = run()
            took = pc() - t0
            assert out == expected, f"{label}: wrong results"
            if rep:   # the first is a warm-up
                samples.append(round(took, 4))
        rec.fig(label, "s", samples)

    def actor_pool():
        actors = [lib.remote(Adder).remote() for _ in range(2)]
        pool = ActorPool(actors)
        timed("actor_pool", lambda: list(pool.map(lambda a, v: a.f.remote(v), range(n))))

    def pools():
        pool = Pool(2)
        try:
            timed("pool_map", lambda: pool.map(inc, range(n)))
            timed("pool_imap", lambda: list(pool.imap(inc, range(n), chunksize=100)))
        finally:
            pool.terminate()
    rec.guarded("actor_pool", actor_pool, 600)
    rec.guarded("pools", pools, 600)
    lib.shutdown()
    rec.save()
    return 0


def parent_main(args):
    import psutil
    out_dir = os.path.abspath(args.out_dir or os.path.join(
        tempfile.gettempdir(), "rayipy-util-"
        + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")))
    os.makedirs(os.path.join(out_dir, "logs"), exist_ok=True)
    core._set_subreaper()
    env = os.environ.copy()
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["PYTHONUNBUFFERED"] = "1"
    if args.rayipy_rev:
        src, sha = core.rayipy_snapshot(args.rayipy_rev)
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        print(f"rayipy from commit {sha[:12]} (snapshot {src})", flush=True)
    results = {"meta": {"rayipy": core.rayipy_provenance(env), "machine": core.machine_facts(),
                        "versions": core.lib_versions(), "n": args.n, "reps": args.reps},
               "systems": {}}
    for system in [s for s in args.systems.split(",") if s]:
        out = os.path.join(out_dir, f"{system}.json")
        log = os.path.join(out_dir, "logs", f"{system}.log")
        cmd = [sys.executable, SCRIPT, "--child", system, "--out", out, "--n", str(args.n),
               "--reps", str(args.reps)]
        print(f"=== {system} ===", flush=True)
        tracked = {}
        with open(log, "w") as lf:
            p = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, env=env, cwd=out_dir,
                                 stdin=subprocess.DEVNULL)
            t0 = pc()
            try:
                while p.poll() is None and pc() - t0 < args.timeout:
                    tracked.update(core._descendants(psutil, p.pid))
                    time.sleep(0.5)
            finally:
                if p.poll() is None:
                    tracked.update(core._descendants(psutil, p.pid))
                    p.kill()
                    p.wait()
        time.sleep(2.0)
        tracked.update(core._descendants(psutil, os.getpid()))
        core._kill_pids(psutil, tracked)
        try:
            with open(out) as f:
                results["systems"][system] = json.load(f)
        except (OSError, ValueError):
            results["systems"][system] = {"figures": {}, "errors": {"child": f"no result; see {log}"}}
    with open(os.path.join(out_dir, "util-results.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    md = render_md(results)
    with open(os.path.join(out_dir, "util-results.md"), "w") as f:
        f.write(md)
    print(md)


def render_md(results):
    systems = list(results["systems"])
    lines = [f"{results['meta']['n']:,} items, median of {results['meta']['reps']} (s)", "",
             "| workload | " + " | ".join(systems) + " | rayipy / ray |",
             "|---|" + "---|" * (len(systems) + 1)]
    for w in WORKLOADS:
        cells = [results["systems"][s].get("figures", {}).get(w, {}).get("median") for s in systems]
        ratio = ""
        if "ray" in systems and "rayipy" in systems:
            a, b = cells[systems.index("rayipy")], cells[systems.index("ray")]
            ratio = f"{a / b:.2f}" if a and b else ""
        lines.append(f"| {w} | " + " | ".join("error" if c is None else f"{c:.3f}" for c in cells)
                     + f" | {ratio} |")
    for s in systems:
        for label, error in results["systems"][s].get("errors", {}).items():
            lines.append(f"\n{s} {label}: {error}")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", default="ray,rayipy")
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--rayipy-rev")
    ap.add_argument("--out-dir")
    ap.add_argument("--child", choices=SYSTEMS)
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.child:
        return child_main(args)
    parent_main(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
