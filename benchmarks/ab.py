#!/usr/bin/env python3
"""ab.py -- an interleaved A/B benchmark of rayipy's hot path: two commits, round by round.

    python benchmarks/ab.py A B [--rounds 3] [--figures rtt,tput,...] [--out-dir DIR]

A and B are each a git revision of this repository (a commit, a branch, HEAD, ...) or the
word `pool`, for multiprocessing.Pool(2), the same-machine limit of issue 11. A revision is
measured as a frozen copy: `git archive` of its rayipy/ in /tmp/rayipy-src-<commit> (the
same copy as core.py's --rayipy-rev), put first on PYTHONPATH for the child and every
process its cluster starts, so edits or commits landing during the run cannot mix in.

The machine has 2 cores shared with other work, so absolute times drift by tens of per cent
within minutes. This script therefore alternates the two sides: round 1 runs A then B,
round 2 runs A then B, and so on, each side in a fresh Python process with a fresh cluster.
It reports, per figure, the median over the rounds of each side, the ratio B/A of those
medians, and the range of the per-round ratios (how far one round's pair can be off: the
noise). With A and B the same code, the ratios tell the noise of the machine at that time.

Figures (each child runs them in this order, once per round; all task functions and the
actor class are defined in __main__ of this script, so rayipy pickles them by value, as
for a notebook):

  rtt     sequential no-op round trip p50, us: 2000 get(f.remote()) after 200 warm-up
          (the pool: pool.apply(f))
  tput    10,000 no-op tasks submitted one by one, then one get(list): tasks/s
          (the pool: apply_async one by one, then .get() of each)
  sleep   10,000 x time.sleep(0.001), submitted then gathered: wall s (ideal 5.0)
  actor   sequential actor call p50, us: 2000 get(h.inc.remote()) after 200 warm-up
          (not for the pool)
  arg     a 100 MB float64 array passed as an argument to a task that sums it: s
  put     put(array), then a task that sums it, until its result: s (not for the pool)
  ret     a task that makes and returns a 100 MB array, until the driver has it: s
  (the 100 MB figures: median of 5 samples after one warm-up, within each child)

With rtt and tput come the CPU seconds that every process of the side (the driver, and
its descendants: head, agent, workers; the pool's workers) spent on them, per call or per
task, from psutil before and after: the figures least moved by other work on the machine.

Both sides use 2 workers: rayipy.init(num_cpus=2), multiprocessing.Pool(2).

The parent makes itself a child subreaper, records every process a child starts, bounds
each child (--timeout) and each figure (SIGALRM), and afterwards kills leftovers by PID.
It writes ab-results.json (every sample) and ab-results.md into --out-dir (default
/tmp/rayipy-ab-<UTC date>) and prints the markdown.

Examples:

    /work/peers-venv/bin/python benchmarks/ab.py 80844cb HEAD
    /work/peers-venv/bin/python benchmarks/ab.py pool HEAD --figures rtt,tput,sleep
    /work/peers-venv/bin/python benchmarks/ab.py 80844cb HEAD --rounds 5 --figures rtt,actor
"""

import argparse
import datetime
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

import core   # benchmarks/core.py, beside this file: the snapshot and process-tracking helpers

pc = time.perf_counter
SCRIPT = os.path.abspath(__file__)
N_WORKERS = 2
ARR_N = 12_500_000        # float64: 100,000,000 bytes
POOL = "pool"

# (key, label, unit, higher is better); the *_cpu rows come with the figure before them
FIGURES = [
    ("rtt", "no-op round trip p50, µs", "us", False),
    ("rtt_cpu", "   CPU µs per round trip, all processes", "us", False),
    ("rtt_cpu_driver", "   CPU µs per round trip, driver", "us", False),
    ("tput", "10k no-op tasks (__main__ fn, one by one, then get(list)), tasks/s", "tasks/s", True),
    ("tput_cpu", "   CPU µs per task, all processes", "us", False),
    ("tput_cpu_driver", "   CPU µs per task, driver", "us", False),
    ("sleep", "10k × sleep(1 ms), wall s (ideal 5.0)", "s", False),
    ("actor", "sequential actor call p50, µs", "us", False),
    ("arg", "100 MB by argument, s", "s", False),
    ("put", "100 MB put() + send, s", "s", False),
    ("ret", "100 MB returned, s", "s", False),
]
FIGURE_KEYS = [f[0] for f in FIGURES if not f[0].endswith(("_cpu", "_cpu_driver"))]
NOT_FOR_POOL = {"actor", "put"}

# ----------------------------------------------------------------------------------
# Task functions and the actor class: in __main__ on purpose (the child runs this file
# as a script), so rayipy pickles them by value, as for a notebook.
# ----------------------------------------------------------------------------------


def main_noop():
    return None


def main_ping():
    return 1


def main_sleep_ms():
    time.sleep(0.001)


def main_arr_sum(a):
    return float(a.sum())


def main_make_array(n):
    import numpy as np
    return np.ones(n)


class MainCounter:
    """The actor of the actor figure."""

    def __init__(self):
        self.n = 0

    def inc(self):
        self.n += 1
        return self.n


# ----------------------------------------------------------------------------------
# The two kinds of side, behind one small interface
# ----------------------------------------------------------------------------------


class RayipySide:
    """rayipy as imported (from the frozen copy first on PYTHONPATH): init(num_cpus=2)."""

    def __init__(self):
        import rayipy
        self.lib = rayipy
        self.imported_from = os.path.dirname(os.path.abspath(rayipy.__file__))

    def start(self):
        self.lib.init(num_cpus=N_WORKERS)
        f = self.lib.remote(main_ping)
        assert self.lib.get([f.remote() for _ in range(4 * N_WORKERS)]) == [1] * (4 * N_WORKERS)

    def remote(self, fn):
        return self.lib.remote(fn)

    def submit(self, f, *args):
        return f.remote(*args)

    def call(self, f, *args):
        return self.lib.get(f.remote(*args))

    def gather(self, refs):
        return self.lib.get(refs)

    def put(self, value):
        return self.lib.put(value)

    def actor(self, cls):
        return self.lib.remote(cls).remote()

    def shutdown(self):
        self.lib.shutdown()


class PoolSide:
    """multiprocessing.Pool(2): apply for a call, apply_async for a submit; no actors, no put."""

    def __init__(self):
        import multiprocessing
        self.mp = multiprocessing
        self.imported_from = os.path.dirname(os.path.abspath(multiprocessing.__file__))

    def start(self):
        self.pool = self.mp.Pool(N_WORKERS)
        assert self.pool.apply(main_ping) == 1

    def remote(self, fn):
        return fn

    def submit(self, f, *args):
        return self.pool.apply_async(f, args)

    def call(self, f, *args):
        return self.pool.apply(f, args)

    def gather(self, results):
        return [r.get() for r in results]

    def shutdown(self):
        self.pool.close()
        self.pool.join()


# ----------------------------------------------------------------------------------
# Child: one side, one round, every figure once
# ----------------------------------------------------------------------------------


def cpu_seconds():
    """{pid: user+system CPU seconds} of this process and all its descendants."""
    import psutil
    me = psutil.Process()
    out = {}
    for p in [me] + me.children(recursive=True):
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
        except psutil.Error:
            pass
    return out


def cpu_per_item(before, after, n):
    """(all processes, driver) CPU µs per item between two cpu_seconds() snapshots.

    CPU time is what a per-task cost is made of, and it does not count the time spent
    waiting for a core that other work on the machine holds: the steadiest figure here.
    """
    total = sum(t - before.get(pid, 0.0) for pid, t in after.items())
    driver = after.get(os.getpid(), 0.0) - before.get(os.getpid(), 0.0)
    return total / n * 1e6, driver / n * 1e6


def figure_table(S, n_lat, n_tasks):
    """key -> a function that measures that figure once on the started side S: (value, extra)."""

    def rtt():
        f = S.remote(main_noop)
        for _ in range(200):
            S.call(f)
        s = []
        c0 = cpu_seconds()
        for _ in range(n_lat):
            t0 = pc(); S.call(f); s.append(pc() - t0)
        cpu, cpu_driver = cpu_per_item(c0, cpu_seconds(), n_lat)
        return core.pct(s, 50) * 1e6, {"p99_us": core.pct(s, 99) * 1e6,
                                       "derived": {"rtt_cpu": cpu, "rtt_cpu_driver": cpu_driver}}

    def tput():
        f = S.remote(main_noop)
        S.gather([S.submit(f) for _ in range(1000)])   # warm-up
        c0 = cpu_seconds()
        t0 = pc()
        refs = [S.submit(f) for _ in range(n_tasks)]
        t1 = pc()
        out = S.gather(refs)
        t2 = pc()
        cpu, cpu_driver = cpu_per_item(c0, cpu_seconds(), n_tasks)
        assert len(out) == n_tasks and out[0] is None
        return n_tasks / (t2 - t0), {"submit_rate_tps": n_tasks / (t1 - t0),
                                     "derived": {"tput_cpu": cpu, "tput_cpu_driver": cpu_driver}}

    def sleep():
        f = S.remote(main_sleep_ms)
        S.gather([S.submit(f) for _ in range(100)])   # warm-up
        t0 = pc()
        out = S.gather([S.submit(f) for _ in range(n_tasks)])
        wall = pc() - t0
        assert len(out) == n_tasks
        return wall, {}

    def actor():
        h = S.actor(MainCounter)
        first = S.call(h.inc)
        for _ in range(200):
            S.call(h.inc)
        s = []
        for _ in range(n_lat):
            t0 = pc(); last = S.call(h.inc); s.append(pc() - t0)
        assert last == first + 200 + n_lat, (first, last)
        return core.pct(s, 50) * 1e6, {"p99_us": core.pct(s, 99) * 1e6}

    def big(one):
        one()   # warm-up
        s = []
        for _ in range(5):   # the samples are bimodal (fresh pages or not): 5 keep the median steady
            gc.collect()
            t0 = pc(); one(); s.append(pc() - t0)
        return statistics.median(s), {"samples_s": s}

    def arg():
        import numpy as np
        a = np.ones(ARR_N)
        f = S.remote(main_arr_sum)

        def one():
            assert S.call(f, a) == float(ARR_N)
        return big(one)

    def put():
        import numpy as np
        a = np.ones(ARR_N)
        f = S.remote(main_arr_sum)

        def one():
            ref = S.put(a)
            assert S.call(f, ref) == float(ARR_N)
            del ref
        return big(one)

    def ret():
        f = S.remote(main_make_array)

        def one():
            v = S.call(f, ARR_N)
            assert v.shape == (ARR_N,)
            del v
        return big(one)

    return {"rtt": rtt, "tput": tput, "sleep": sleep, "actor": actor, "arg": arg, "put": put, "ret": ret}


def child_main(args):
    figures = args.figures.split(",")
    res = {"side": args.side, "figures": {}, "pid": os.getpid()}

    def save():
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(res, f, indent=1)
        os.replace(tmp, args.out)

    def record(key, value, extra):
        for k, v in extra.pop("derived", {}).items():
            res["figures"][k] = {"value": v}
        res["figures"][key] = dict(value=value, **extra)
        save()
        print(f"[{args.side}] {key}: {value}", flush=True)

    signal.signal(signal.SIGALRM, core._alarm)
    S = PoolSide() if args.side == POOL else RayipySide()
    res["imported_from"] = S.imported_from
    if args.expect_dir and not S.imported_from.startswith(args.expect_dir + os.sep):
        res["error"] = f"rayipy imported from {S.imported_from}, not from the frozen copy {args.expect_dir}"
        save()
        return 2
    save()
    table = figure_table(S, args.n_lat, args.n_tasks)
    remaining = list(figures)
    while remaining:
        signal.alarm(120)
        try:
            S.start()
        except BaseException as e:  # noqa: BLE001 -- a side that cannot start measures nothing
            for key in remaining:
                record(key, None, {"error": f"start failed: {type(e).__name__}: {e}"})
            raise
        finally:
            signal.alarm(0)
        try:
            while remaining:
                key = remaining.pop(0)
                signal.alarm(300)
                try:
                    value, extra = table[key]()
                    signal.alarm(0)
                    record(key, value, extra)
                except Exception as e:  # noqa: BLE001 -- record it; the rest run on a fresh start
                    signal.alarm(0)
                    record(key, None, {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
                    break
                finally:
                    gc.collect()
        finally:
            signal.alarm(60)
            try:
                S.shutdown()
            finally:
                signal.alarm(0)
    return 0


# ----------------------------------------------------------------------------------
# Parent: alternate the sides, track and clean up their processes, report
# ----------------------------------------------------------------------------------


def resolve_side(spec):
    """'pool' or a git revision -> {'spec', 'kind', 'commit', 'dir'}; exits with a clear error."""
    if spec == POOL:
        return {"spec": spec, "kind": POOL, "commit": None, "dir": None, "name": POOL}
    try:
        src, sha = core.rayipy_snapshot(spec)
    except subprocess.CalledProcessError as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        err = err.strip()
        sys.exit(f"{spec!r} is neither 'pool' nor a revision of {core.REPO} with a rayipy/ folder: {err}")
    return {"spec": spec, "kind": "rayipy", "commit": sha, "dir": src, "name": f"{spec} ({sha[:9]})"}


def run_child(psutil, side, figures, out, log, args):
    env = os.environ.copy()
    env["PYTHONUNBUFFERED"] = "1"
    cmd = [sys.executable, SCRIPT, "--child", "--side", side["kind"], "--out", out,
           "--figures", ",".join(figures), "--n-lat", str(args.n_lat), "--n-tasks", str(args.n_tasks)]
    if side["dir"]:
        env["PYTHONPATH"] = side["dir"] + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        cmd += ["--expect-dir", side["dir"]]
    if os.path.exists(out):
        os.remove(out)
    t0 = pc()
    tracked, timed_out = {}, False
    with open(log, "w") as lf:
        p = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL,
                             cwd=tempfile.gettempdir())   # not the repository: its rayipy/ must not shadow
        while p.poll() is None:
            tracked.update(core._descendants(psutil, p.pid))
            if pc() - t0 > args.timeout:
                timed_out = True
                tracked.update(core._descendants(psutil, p.pid))
                p.kill()
                p.wait()
                break
            time.sleep(0.2)
    wall = pc() - t0
    time.sleep(1.0)
    tracked.update(core._descendants(psutil, os.getpid()))   # orphans re-parented to us
    left = core._kill_pids(psutil, tracked)
    try:
        with open(out) as f:
            r = json.load(f)
    except (OSError, ValueError):
        r = {"figures": {}, "error": "no result file"}
    r.update(exit_code=p.returncode, wall_s=wall, timed_out=timed_out, killed_leftovers=left, log=log,
             loadavg_1m=round(os.getloadavg()[0], 2))
    return r


def parent_main(args):
    try:
        import psutil
    except ImportError:
        sys.exit("psutil is needed: run with the venv python (see benchmarks/README.md)")
    figures = [f.strip() for f in args.figures.split(",") if f.strip()]
    bad = [f for f in figures if f not in FIGURE_KEYS]
    if bad or not figures:
        sys.exit(f"unknown figure(s) {bad}; known: {','.join(FIGURE_KEYS)}")
    if args.rounds < 1:
        sys.exit("--rounds must be at least 1")
    sides = {"A": resolve_side(args.a), "B": resolve_side(args.b)}
    if sides["A"]["kind"] == POOL and sides["B"]["kind"] == POOL:
        sys.exit("A and B are both the pool: nothing to compare")
    out_dir = os.path.abspath(args.out_dir or os.path.join(
        tempfile.gettempdir(), "rayipy-ab-" + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")))
    os.makedirs(os.path.join(out_dir, "logs"), exist_ok=True)
    os.makedirs(os.path.join(out_dir, "run"), exist_ok=True)
    subreaper = core._set_subreaper()
    results = {"meta": {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": core.machine_facts(), "versions": core.lib_versions(), "rounds": args.rounds,
        "figures": figures, "n_lat": args.n_lat, "n_tasks": args.n_tasks, "subreaper": subreaper,
        "sides": sides, "command": " ".join([sys.executable] + sys.argv)}, "rounds": []}
    json_path = os.path.join(out_dir, "ab-results.json")
    for i in range(args.rounds):
        rnd = {}
        for label in ("A", "B"):
            side = sides[label]
            print(f"=== round {i + 1}/{args.rounds}: {label} = {side['name']} ===", flush=True)
            # the pool has no actors and no put: those figures are not asked of it
            figs = [f for f in figures if not (side["kind"] == POOL and f in NOT_FOR_POOL)]
            r = run_child(psutil, side, figs, os.path.join(out_dir, "run", f"r{i + 1}-{label}.json"),
                          os.path.join(out_dir, "logs", f"r{i + 1}-{label}.log"), args)
            errs = {k: v["error"] for k, v in r["figures"].items() if v.get("error")}
            if r.get("error"):
                errs["child"] = r["error"]
            print(f"    {r['wall_s']:.1f} s, exit {r['exit_code']}, errors {errs or 'none'}, "
                  f"leftovers killed {r['killed_leftovers'] or 'none'}", flush=True)
            rnd[label] = r
            time.sleep(1.0)
        results["rounds"].append(rnd)
        with open(json_path, "w") as f:
            json.dump(results, f, indent=1)
    md = render_md(results)
    with open(os.path.join(out_dir, "ab-results.md"), "w") as f:
        f.write(md)
    print()
    print(md)
    print(f"wrote {json_path}\nwrote {os.path.join(out_dir, 'ab-results.md')}\nlogs: {os.path.join(out_dir, 'logs')}")
    return 0


def _fmt(v, unit):
    if v is None:
        return "n/a"
    if unit in ("us", "tasks/s"):
        return f"{v:,.0f}"
    return f"{v:.3f}"


def render_md(results):
    meta = results["meta"]
    sides = meta["sides"]
    rounds = results["rounds"]
    L = [f"# A/B: A = {sides['A']['name']}, B = {sides['B']['name']}\n"]
    L.append(f"Date (UTC): {meta['date_utc']}; machine: nproc={meta['machine']['nproc']}, "
             f"{meta['machine']['cpu_model']}, Python {meta['machine']['python']}  ")
    L.append(f"Method: {len(rounds)} rounds, each A then B, each side in a fresh process with a fresh "
             "2-worker cluster (a revision: its frozen `git archive` copy first on PYTHONPATH); "
             "per figure, the median over the rounds of each side, B/A of those medians, and the "
             f"range of the per-round B/A. Rerun: `{meta['command']}`\n")
    L.append("| figure | A | B | B/A | per-round B/A (min–max) | better for B when |")
    L.append("|---|---|---|---|---|---|")
    notes = []
    for key, label, unit, higher in FIGURES:
        if key.split("_")[0] not in meta["figures"]:
            continue

        def val(rnd, side):
            return rnd.get(side, {}).get("figures", {}).get(key, {}).get("value")
        a = [val(r, "A") for r in rounds]
        b = [val(r, "B") for r in rounds]
        ma, mb = core.med(a), core.med(b)
        per = [y / x for x, y in zip(a, b) if x and y is not None]
        ratio = mb / ma if ma and mb is not None else None
        rng = f"{min(per):.3f}–{max(per):.3f}" if per else "n/a"
        L.append(f"| {label} | {_fmt(ma, unit)} | {_fmt(mb, unit)} | {_fmt(ratio, 'x')} | {rng} "
                 f"| {'B/A > 1' if higher else 'B/A < 1'} |")
        for i, r in enumerate(rounds):
            for side in ("A", "B"):
                e = r.get(side, {}).get("figures", {}).get(key, {}).get("error")
                if e:
                    notes.append(f"round {i + 1}, {side}, {key}: `{e[:300]}`")
    L.append("\n## Run notes (automatic)\n")
    for i, r in enumerate(rounds):
        for side in ("A", "B"):
            c = r.get(side, {})
            bits = []
            if c.get("error"):
                bits.append(f"error: `{c['error'][:300]}`")
            if c.get("exit_code") not in (0, None):
                bits.append(f"exit code {c['exit_code']}")
            if c.get("timed_out"):
                bits.append("hit --timeout and was killed")
            if c.get("killed_leftovers"):
                bits.append(f"killed leftovers by PID: {c['killed_leftovers']}")
            if bits:
                notes.append(f"round {i + 1}, {side}: " + "; ".join(bits))
    loads = [r.get(s, {}).get("loadavg_1m") for r in rounds for s in ("A", "B")]
    notes.append("1-min load average after each child: " + ", ".join(str(x) for x in loads)
                 + " (other work on the machine shows here)")
    L.extend(f"- {n}" for n in notes)
    return "\n".join(L) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", nargs="?", help="side A: a git revision, or 'pool'")
    ap.add_argument("b", nargs="?", help="side B: a git revision, or 'pool'")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of A then B (default 3)")
    ap.add_argument("--figures", default=",".join(FIGURE_KEYS),
                    help=f"comma list among {','.join(FIGURE_KEYS)} (default all)")
    ap.add_argument("--n-lat", type=int, default=2000, help="sequential calls per latency figure (default 2000)")
    ap.add_argument("--n-tasks", type=int, default=10_000, help="tasks in tput and sleep (default 10,000)")
    ap.add_argument("--timeout", type=float, default=900.0, help="wall limit per child, seconds (default 900)")
    ap.add_argument("--out-dir", help="default /tmp/rayipy-ab-<UTC date>")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--side", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--expect-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child_main(args)
    if not args.a or not args.b:
        ap.error("give two sides, A and B: git revisions, or 'pool'")
    if args.n_lat < 1 or args.n_tasks < 1:
        ap.error("--n-lat and --n-tasks must be at least 1")
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
