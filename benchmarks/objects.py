#!/usr/bin/env python3
"""objects.py -- large objects: rayipy beside Ray in one run (put, args, returns, get, spilling).

Written to measure rayipy's per-node shared-memory object store against Ray's (plasma), and
to measure rayipy before the store, so the two can be compared. Each system runs in its own
child process, one after the other (never concurrently), on 2 workers:
``rayipy.init(num_cpus=2)``, ``ray.init(num_cpus=2, include_dashboard=False)``. Every
figure is the median of --reps (default 3) after one warm-up, unless said otherwise. The
workloads (names for --only):

  slices  put a 200 MB float64 array (timed alone), then 40 tasks that each sum a different
          1/40 slice of it, the ref passed as an argument, gathered with one get(list): wall
          time of the 40 tasks (sums checked against the driver's)
  put     put a 100 MB float64 array: time of the put, and of put + one task that sums it
          (get(total.remote(ref)))
  ret     a task that makes a 100 MB array with np.ones (which writes every page) and returns
          it, until the driver's get has it: wall time. Beside it, a task that makes the same
          array and returns only the time np.ones took inside it: that task's wall time and
          the in-task creation time; ret minus make-only is the transfer cost
  get     get of a 1 GB array already put (the driver's own array deleted first): time of the
          get alone, median of 5 gets after one warm-up get; and the driver's memory growth
          across one get, median of the 5: RSS, anonymous RSS (RSS minus file/shared pages,
          from /proc/pid/statm) and USS (psutil's private memory). A zero-copy store maps
          shared pages, which show in RSS but not in USS or anonymous RSS. Also the first
          (warm-up) get's RSS growth, and the RSS growth once the array has been read whole.
  gettask the same figures for a 1 GB np.ones array made by a task, a fresh task for
          each of the 5 gets, the get timed from the moment wait() says the ref is ready
          (the get above may find the driver's own put, a local hit; this one cannot), and
          the driver's memory growth from before the task to after the get (a system may
          bring the result into the driver before get is called). For both: what the driver
          holds, RSS and anonymous RSS, with the result in hand and read, and its anonymous
          RSS once the result is dropped, over its level when the child's first cluster had
          started (before any workload made anything large; so memory a system keeps from an
          earlier workload shows here too). gettask runs on a fresh cluster
  spill   a fresh cluster started with object_store_memory=--store-mb MB (both systems are
          given it the same way), then 3x that budget put in 100 MB arrays, each filled with
          its own value, then every one got back and checked whole: total time (and put and
          get times), and the peak over the run of the summed RSS and anonymous RSS of the
          driver and all its descendants (the cluster), sampled every 50 ms by a thread; and
          the peak growth of the machine's Shmem (/proc/meminfo: tmpfs and shared memory, of
          any process on the machine, so other work shows in it) over its value before the
          spill cluster started. Where the system says (Ray: its session's spill directory),
          the bytes on disk right after the puts go in the run notes
  limits  the same-machine limits, measured in each system's child before its cluster
          starts (so the two columns also show how the machine drifted between children):
          a numpy copy of 100 MB into a preallocated, already-written array (memcpy), and
          np.ones of 100 MB (alloc + fill)

--quick shrinks every size (for a smoke run): slices 20 MB, put/ret 10 MB, get 100 MB, spill
25 MB arrays against a 100 MB budget (Ray's store cannot be smaller than 75 MB), limits 10 MB.

A workload that raises or exceeds --workload-timeout (SIGALRM) is recorded with its error
text (or "timeout"), the cluster is shut down, and the next workload starts a fresh one. A
system that fails to import or start reports that error for each of its workloads. The
parent makes itself a child subreaper, records every process a child starts, bounds each
child (--timeout), and afterwards kills leftovers by PID (helpers from core.py).

    /work/peers-venv/bin/python benchmarks/objects.py                      # ray,rayipy, full
    /work/peers-venv/bin/python benchmarks/objects.py --quick              # smoke run
    /work/peers-venv/bin/python benchmarks/objects.py --rayipy-rev HEAD    # a frozen commit
    /work/peers-venv/bin/python benchmarks/objects.py --only get,spill --store-mb 500

It writes objects-results.json (every sample) and objects-results.md into --out-dir (default
/tmp/rayipy-objects-<UTC date>), prints the markdown, and copies the JSON to --out if given.
"""

import argparse
import datetime
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import core  # noqa: E402 -- the shared harness pieces (Recorder, snapshots, process tracking)

pc = time.perf_counter
SCRIPT = os.path.abspath(__file__)
MiB = 1024 * 1024
MB = 1000 * 1000
N_WORKERS = 2
SYSTEM_ORDER = ["ray", "rayipy"]
WORKLOADS = ["limits", "slices", "put", "ret", "get", "gettask", "spill"]
N_GETS = 5   # the get of 1 GB: median of this many gets, after one warm-up get

# ----------------------------------------------------------------------------------
# Task functions: in __main__ on purpose, so both systems pickle them by value.
# ----------------------------------------------------------------------------------


def slice_sum(arr, i, n):
    return float(arr[i * n:(i + 1) * n].sum())


def total(arr):
    return float(arr.sum())


def make_ones(n):
    return np.ones(n)


def make_ones_timed(n):
    """Makes the array ret's task makes, but returns only how long np.ones took."""
    t0 = time.perf_counter()
    a = np.ones(n)
    dt = time.perf_counter() - t0
    del a
    return dt


def ping():
    return 1


# ----------------------------------------------------------------------------------
# The two systems
# ----------------------------------------------------------------------------------


class System:
    """One library behind the few calls the workloads need."""

    name = ""
    module = ""

    def spilled_bytes(self):
        """Bytes the system has spilled to disk now, where it says; None if unknown."""
        return None

    def import_lib(self):
        self.lib = __import__(self.module)
        self.version = getattr(self.lib, "__version__", "?")

    def start(self, store_bytes=None):
        raise NotImplementedError

    def shutdown(self):
        self.lib.shutdown()


class RayipySystem(System):
    name = "rayipy"
    module = "rayipy"

    def start(self, store_bytes=None):
        kw = {} if store_bytes is None else {"object_store_memory": store_bytes}
        self.lib.init(num_cpus=N_WORKERS, **kw)


class RaySystem(System):
    name = "ray"
    module = "ray"

    def spilled_bytes(self):
        """Bytes in this session's ray_spilled_objects* directories (Ray spills files there)."""
        session = self.lib._private.worker._global_node.get_session_dir_path()
        total = 0
        for entry in os.listdir(session):
            if entry.startswith("ray_spilled_objects"):
                d = os.path.join(session, entry)
                total += sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
        return total

    def start(self, store_bytes=None):
        kw = {} if store_bytes is None else {"object_store_memory": store_bytes}
        self.lib.init(num_cpus=N_WORKERS, include_dashboard=False, **kw)


SYSTEMS = {"rayipy": RayipySystem, "ray": RaySystem}

# ----------------------------------------------------------------------------------
# Memory
# ----------------------------------------------------------------------------------


def mem_of(p):
    """(rss, anonymous rss) in bytes: statm's resident and resident minus shared pages."""
    m = p.memory_info()
    return m.rss, m.rss - getattr(m, "shared", 0)


def machine_shmem():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Shmem:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakSampler(threading.Thread):
    """Samples the summed RSS of this process and all its descendants every ``period`` s."""

    def __init__(self, psutil, shmem_base, period=0.05):
        super().__init__(daemon=True)
        self.psutil = psutil
        self.period = period
        self.stop_event = threading.Event()
        self.me = psutil.Process()
        self.peak_rss = self.peak_anon = 0
        self.shmem_base = shmem_base
        self.peak_shmem = 0
        self.samples = 0
        self.max_procs = 0

    def _procs(self):
        try:
            return [self.me] + self.me.children(recursive=True)
        except self.psutil.Error:
            return [self.me]

    def run(self):
        procs = self._procs()
        i = 0
        while not self.stop_event.is_set():
            if i % 10 == 0:   # refresh the process list every 0.5 s: listing /proc costs more
                procs = self._procs()
            rss = anon = 0
            for p in procs:
                try:
                    r, a = mem_of(p)
                except self.psutil.Error:
                    continue
                rss += r
                anon += a
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_anon = max(self.peak_anon, anon)
            self.peak_shmem = max(self.peak_shmem, machine_shmem() - self.shmem_base)
            self.max_procs = max(self.max_procs, len(procs))
            self.samples += 1
            i += 1
            self.stop_event.wait(self.period)

    def stop(self):
        self.stop_event.set()
        self.join(5)


# ----------------------------------------------------------------------------------
# The workloads, in a child process
# ----------------------------------------------------------------------------------


def sizes(quick, store_mb):
    """Element counts (float64) of each workload's arrays."""
    per = 8
    if quick:
        return {"slices": 20 * MB // per, "put": 10 * MB // per, "ret": 10 * MB // per,
                "get": 100 * MB // per, "spill_obj": 25 * MB // per, "limits": 10 * MB // per,
                "store_mb": store_mb or 100}
    return {"slices": 200 * MB // per, "put": 100 * MB // per, "ret": 100 * MB // per,
            "get": 1000 * MB // per, "spill_obj": 100 * MB // per, "limits": 100 * MB // per,
            "store_mb": store_mb or 300}


def run_system(rec, system, reps, sz, only, wl_timeout):
    import psutil
    S = SYSTEMS[system]()
    state = {"up": False}
    notes = rec.res.setdefault("notes", {})

    def repeat(fn):
        """One warm-up call of fn, then reps calls; returns the list of their results."""
        fn()
        gc.collect()
        out = []
        for _ in range(reps):
            out.append(fn())
            gc.collect()
        return out

    # limits: before any cluster, so nothing else of ours runs
    def limits():
        n = sz["limits"]
        src = np.random.default_rng(0).random(n)
        dst = np.empty_like(src)
        dst[:] = 1.0   # warm: every page written once before timing

        def copy():
            t0 = pc(); np.copyto(dst, src); return pc() - t0

        def alloc_fill():
            t0 = pc(); a = np.ones(n); dt = pc() - t0; del a; return dt
        rec.fig("limits_memcpy_s", "s", repeat(copy))
        rec.fig("limits_alloc_fill_s", "s", repeat(alloc_fill))
    if "limits" in only:
        rec.guarded("limits", limits, wl_timeout)

    if not rec.guarded("import", S.import_lib, 120):
        for w in only:
            if w != "limits":
                rec.res["errors"].setdefault(w, "import failed: " + rec.res["errors"]["import"])
        rec.save()
        return
    rec.res["versions"] = {system: S.version, "numpy": np.__version__}
    rec.res["imported_from"] = getattr(S.lib, "__file__", None)
    ray = S.lib

    def up(store_bytes=None):
        if not state["up"]:
            S.start(store_bytes)
            state["up"] = True
            f = ray.remote(ping)
            assert ray.get([f.remote() for _ in range(4 * N_WORKERS)]) == [1] * (4 * N_WORKERS)
            if "driver_base" not in state:
                # the baseline of the "held" rows: nothing large has been made yet
                gc.collect()
                state["driver_base"] = mem_of(psutil.Process())

    def down():
        if state["up"]:
            state["up"] = False
            S.shutdown()

    def workload(label, fn, store_bytes=None, fresh=False):
        if label not in only:
            return
        if fresh:
            rec.guarded(f"{label}:before", down, 120)
            state["shmem_before_cluster"] = machine_shmem()
        if not rec.guarded(f"{label}:start", lambda: up(store_bytes), 180):
            rec.res["errors"].setdefault(label, "cluster did not start: " + rec.res["errors"][f"{label}:start"])
            rec.save()
            rec.guarded(f"{label}:cleanup", down, 60)
            return
        if not rec.guarded(label, fn, wl_timeout) or fresh:
            rec.guarded(f"{label}:cleanup", down, 120)

    # slices: 40 tasks each reading a different slice of one 200 MB put array
    def slices():
        n = sz["slices"]
        n_tasks = 40
        per = n // n_tasks
        arr = np.arange(n, dtype=np.float64)
        expect = [float(arr[i * per:(i + 1) * per].sum()) for i in range(n_tasks)]
        f = ray.remote(slice_sum)
        puts, walls = [], []

        def once():
            t0 = pc(); ref = ray.put(arr); t1 = pc()
            out = ray.get([f.remote(ref, i, per) for i in range(n_tasks)])
            t2 = pc()
            assert np.allclose(out, expect, rtol=1e-12, atol=0), "slice sums differ from the driver's"
            del ref
            puts.append(t1 - t0); walls.append(t2 - t1)
        once(); puts.clear(); walls.clear()
        for _ in range(reps):
            once(); gc.collect()
        rec.fig("slices_put_s", "s", puts, mb=n * 8 / MB)
        rec.fig("slices_tasks_s", "s", walls, n_tasks=n_tasks)
    workload("slices", slices)

    # put: put of 100 MB, and put + one task that sums it
    def put():
        n = sz["put"]
        arr = np.random.default_rng(1).random(n)
        expect = float(arr.sum())
        f = ray.remote(total)
        puts, both = [], []

        def once():
            t0 = pc(); ref = ray.put(arr); t1 = pc()
            s = ray.get(f.remote(ref)); t2 = pc()
            assert abs(s - expect) <= 1e-6 * abs(expect), (s, expect)
            del ref
            puts.append(t1 - t0); both.append(t2 - t0)
        once(); puts.clear(); both.clear()
        for _ in range(reps):
            once(); gc.collect()
        rec.fig("put_put_s", "s", puts, mb=n * 8 / MB)
        rec.fig("put_put_task_s", "s", both)
    workload("put", put)

    # ret: a task returns a 100 MB array it made with np.ones
    def ret():
        n = sz["ret"]
        mk = ray.remote(make_ones)
        mkt = ray.remote(make_ones_timed)

        def get_ret():
            t0 = pc(); a = ray.get(mk.remote(n)); dt = pc() - t0
            assert a.shape == (n,) and a[0] == 1.0 and a[-1] == 1.0
            del a
            return dt

        def make_only():
            t0 = pc(); inner = ray.get(mkt.remote(n)); return pc() - t0, inner
        rec.fig("ret_get_s", "s", repeat(get_ret), mb=n * 8 / MB, made_with="np.ones")
        mo = repeat(make_only)
        rec.fig("ret_make_only_task_s", "s", [w for w, _ in mo])
        rec.fig("ret_make_in_task_s", "s", [i for _, i in mo])
        if rec.res["figures"]["ret_get_s"]["median"] is not None:
            rec.fig("ret_transfer_s", "s", [rec.res["figures"]["ret_get_s"]["median"]
                                            - rec.res["figures"]["ret_make_only_task_s"]["median"]],
                    derived="median(ret_get_s) - median(ret_make_only_task_s)")
    workload("ret", ret)

    # get: 1 GB already put, the get alone, and the driver's memory across it
    def get1g():
        n = sz["get"]
        me = psutil.Process()
        def mem():
            r, a = mem_of(me)
            return r, a, me.memory_full_info().uss
        base = state["driver_base"]
        arr = np.ones(n)
        probe = arr[-1] = 7.0
        ref = ray.put(arr)
        del arr
        gc.collect()

        def one():
            m0 = mem()
            t0 = pc(); a = ray.get(ref); dt = pc() - t0
            m1 = mem()
            assert a.shape == (n,) and float(a[-1]) == probe
            a.sum()   # read it whole: pages a lazy mapping has not brought in yet come in now
            m2 = mem()
            del a
            gc.collect()
            return (dt, [(m1[k] - m0[k]) / MiB for k in range(3)], (m2[0] - m0[0]) / MiB,
                    [(m2[k] - base[k]) / MiB for k in range(2)], (mem_of(me)[1] - base[1]) / MiB)
        first = one()
        rec.fig("get_first_rss_growth_MiB", "MiB", [first[1][0]])
        runs = [one() for _ in range(N_GETS)]
        rec.fig("get_get_s", "s", [r[0] for r in runs], gb=n * 8 / 1e9, gets=N_GETS)
        rec.fig("get_rss_growth_MiB", "MiB", [r[1][0] for r in runs])
        rec.fig("get_anon_growth_MiB", "MiB", [r[1][1] for r in runs])
        rec.fig("get_uss_growth_MiB", "MiB", [r[1][2] for r in runs])
        rec.fig("get_rss_growth_after_read_MiB", "MiB", [r[2] for r in runs])
        rec.fig("get_rss_held_MiB", "MiB", [r[3][0] for r in runs])
        rec.fig("get_anon_held_MiB", "MiB", [r[3][1] for r in runs])
        rec.fig("get_anon_after_drop_MiB", "MiB", [r[4] for r in runs])
        del ref
    workload("get", get1g)

    # gettask: the same get, of a 1 GB array a task made (a fresh task per get, so no get
    # finds it cached in the driver), once wait() says it is ready: what the driver's get of
    # a worker's result costs beyond the task itself. On a fresh cluster, so that memory the
    # driver still holds from `get` cannot move this workload's baseline.
    def gettask():
        n = sz["get"]
        me = psutil.Process()

        def mem():
            r, a = mem_of(me)
            return r, a, me.memory_full_info().uss
        gc.collect()
        mk = ray.remote(make_ones)
        base = state["driver_base"]

        def one_from_task():
            m0 = mem()   # before the task: a system may bring the result in before get
            r = mk.remote(n)
            ready, _ = ray.wait([r])
            assert ready == [r]
            t0 = pc(); a = ray.get(r); dt = pc() - t0
            m1 = mem()
            assert a.shape == (n,) and a[-1] == 1.0
            a.sum()
            m2 = mem()
            del a, r
            gc.collect()
            return (dt, [(m1[k] - m0[k]) / MiB for k in range(3)], (m2[0] - m0[0]) / MiB,
                    [(m2[k] - base[k]) / MiB for k in range(2)], (mem_of(me)[1] - base[1]) / MiB)
        one_from_task()
        runs = [one_from_task() for _ in range(N_GETS)]
        rec.fig("gettask_get_s", "s", [r[0] for r in runs], gb=n * 8 / 1e9, gets=N_GETS)
        rec.fig("gettask_rss_growth_MiB", "MiB", [r[1][0] for r in runs])
        rec.fig("gettask_anon_growth_MiB", "MiB", [r[1][1] for r in runs])
        rec.fig("gettask_uss_growth_MiB", "MiB", [r[1][2] for r in runs])
        rec.fig("gettask_rss_growth_after_read_MiB", "MiB", [r[2] for r in runs])
        rec.fig("gettask_rss_held_MiB", "MiB", [r[3][0] for r in runs])
        rec.fig("gettask_anon_held_MiB", "MiB", [r[3][1] for r in runs])
        rec.fig("gettask_anon_after_drop_MiB", "MiB", [r[4] for r in runs])
    workload("gettask", gettask, fresh=True)

    # spill: 3x the store's budget in 100 MB arrays, on a fresh cluster given that budget
    budget_mb = sz["store_mb"]

    def spill():
        n = sz["spill_obj"]
        count = -(-3 * budget_mb * MB // (n * 8))
        notes["spill"] = (f"budget {budget_mb} MB (object_store_memory={budget_mb * MB} bytes), "
                         f"{count} arrays of {n * 8 / MB:.0f} MB")
        res = {k: [] for k in ("total", "put", "get", "rss", "anon", "shmem", "spilled")}

        def once():
            sampler = PeakSampler(psutil, state["shmem_before_cluster"])
            sampler.start()
            try:
                t0 = pc()
                refs = []
                for i in range(count):
                    a = np.full(n, float(i + 1))
                    refs.append(ray.put(a))
                    del a
                t1 = pc()
                res["spilled"].append(S.spilled_bytes())   # untimed
                t1b = pc()
                for i, ref in enumerate(refs):
                    a = ray.get(ref)
                    assert a.shape == (n,) and bool((a == float(i + 1)).all()), f"array {i} came back wrong"
                    del a
                t2 = pc()
            finally:
                sampler.stop()
            del refs
            gc.collect()
            res["total"].append((t1 - t0) + (t2 - t1b)); res["put"].append(t1 - t0); res["get"].append(t2 - t1b)
            res["rss"].append(sampler.peak_rss / MiB); res["anon"].append(sampler.peak_anon / MiB)
            res["shmem"].append(sampler.peak_shmem / MiB)
            rec.res.setdefault("spill_samples", []).append(
                {"samples": sampler.samples, "max_processes": sampler.max_procs})
            time.sleep(1.0)   # let the store free (and unlink spilled files of) the dropped refs
        once()
        for k in res:
            res[k].clear()
        for _ in range(reps):
            once()
        rec.fig("spill_total_s", "s", res["total"], budget_mb=budget_mb, count=count)
        rec.fig("spill_put_s", "s", res["put"])
        rec.fig("spill_get_s", "s", res["get"])
        rec.fig("spill_peak_rss_MiB", "MiB", res["rss"])
        rec.fig("spill_peak_anon_MiB", "MiB", res["anon"])
        rec.fig("spill_peak_shmem_MiB", "MiB", res["shmem"])
        if res["spilled"]:
            notes["spill"] += (f"; on disk after the puts (max over reps): "
                               f"{max(res['spilled']) / MB:,.0f} MB" if None not in res["spilled"]
                               else "; bytes spilled to disk: not known for this system")
    workload("spill", spill, store_bytes=budget_mb * MB, fresh=True)
    rec.guarded("final_shutdown", down, 120)


def child_main(args):
    reps = args.reps
    sz = sizes(args.quick, args.store_mb)
    only = args.only.split(",")
    params = {"reps": reps, "quick": args.quick, "n_workers": N_WORKERS, "only": only,
              "sizes_elements": sz, "workload_timeout_s": args.workload_timeout}
    rec = core.Recorder(args.child, args.out, params)
    signal.signal(signal.SIGALRM, core._alarm)
    rec.save()
    try:
        run_system(rec, args.child, reps, sz, only, args.workload_timeout)
    finally:
        rec.save()
    return 0


# ----------------------------------------------------------------------------------
# Parent
# ----------------------------------------------------------------------------------


def parent_main(args):
    import psutil
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    for s in systems:
        if s not in SYSTEMS:
            sys.exit(f"unknown system {s!r}; known: {', '.join(SYSTEM_ORDER)}")
    if "spill" in args.only.split(","):
        # a system that ignores the budget keeps all 3x of it in memory: do not let that
        # take the machine's memory from under the other work on it
        need = 3 * sizes(args.quick, args.store_mb)["store_mb"] * MB
        avail = psutil.virtual_memory().available
        if need > 0.5 * avail:
            sys.exit(f"--store-mb: spill puts 3x the budget ({need / MB:,.0f} MB), more than half of the "
                     f"machine's available memory ({avail / MB:,.0f} MB)")
    out_dir = os.path.abspath(args.out_dir or os.path.join(
        tempfile.gettempdir(), "rayipy-objects-" + ("quick-" if args.quick else "")
        + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")))
    log_dir = os.path.join(out_dir, "logs")
    run_dir = os.path.join(out_dir, "run")
    os.makedirs(log_dir, exist_ok=True)
    os.makedirs(run_dir, exist_ok=True)
    subreaper = core._set_subreaper()

    env = os.environ.copy()
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["PYTHONUNBUFFERED"] = "1"
    snapshot = None
    if args.rayipy_rev:
        src, sha = core.rayipy_snapshot(args.rayipy_rev)
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        snapshot = {"rev": args.rayipy_rev, "commit": sha, "dir": src}
        print(f"rayipy from commit {sha[:12]} (snapshot {src})", flush=True)
    provenance = core.rayipy_provenance(env)
    if snapshot:
        provenance["snapshot"] = snapshot
    versions = core.lib_versions()
    versions["numpy"] = np.__version__
    results = {"meta": {
        "rayipy": provenance, "machine": core.machine_facts(), "versions": versions,
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick, "reps": args.reps, "only": args.only, "sizes_elements": sizes(args.quick, args.store_mb),
        "per_system_timeout_s": args.timeout, "workload_timeout_s": args.workload_timeout,
        "subreaper": subreaper, "command": " ".join([sys.executable] + sys.argv)}, "systems": {}}
    json_path = os.path.join(out_dir, "objects-results.json")
    md_path = os.path.join(out_dir, "objects-results.md")

    for s in systems:
        out = os.path.join(run_dir, f"{s}.json")
        if os.path.exists(out):
            os.remove(out)
        log = os.path.join(log_dir, f"{s}.log")
        cmd = [sys.executable, SCRIPT, "--child", s, "--out", out, "--reps", str(args.reps),
               "--only", args.only, "--workload-timeout", str(args.workload_timeout)] \
            + (["--quick"] if args.quick else []) + (["--store-mb", str(args.store_mb)] if args.store_mb else [])
        print(f"=== {s} ===", flush=True)
        load_before = os.getloadavg()
        t0 = pc()
        tracked, timed_out = {}, False
        with open(log, "w") as lf:
            p = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, env=env, cwd=run_dir,
                                 stdin=subprocess.DEVNULL)
            try:
                while p.poll() is None:
                    tracked.update(core._descendants(psutil, p.pid))
                    if pc() - t0 > args.timeout:
                        timed_out = True
                        tracked.update(core._descendants(psutil, p.pid))
                        p.kill()
                        p.wait()
                        break
                    time.sleep(0.5)
            finally:
                if p.poll() is None:   # the parent itself was interrupted
                    tracked.update(core._descendants(psutil, p.pid))
                    p.kill()
                    p.wait()
                    core._kill_pids(psutil, tracked)
        wall = pc() - t0
        time.sleep(2.0)
        tracked.update(core._descendants(psutil, os.getpid()))   # orphans re-parented to us
        left = core._kill_pids(psutil, tracked)
        try:
            with open(out) as f:
                r = json.load(f)
        except (OSError, ValueError):
            r = {"system": s, "figures": {}, "errors": {"child": "no result file"}}
        r.update(exit_code=p.returncode, wall_s=wall, timed_out=timed_out, killed_leftovers=left,
                 processes_seen=len(tracked), log=log,
                 loadavg_1m_before_after=[round(load_before[0], 2), round(os.getloadavg()[0], 2)])
        results["systems"][s] = r
        print(f"    done in {wall:.1f}s rc={p.returncode} timed_out={timed_out} "
              f"errors={list(r.get('errors', {}))} leftovers_killed={left}", flush=True)
        with open(json_path, "w") as f:
            json.dump(results, f, indent=1, default=str)

    with open(json_path, "w") as f:
        json.dump(results, f, indent=1, default=str)
    if args.out:
        shutil.copyfile(json_path, args.out)
    md = render_md(results)
    with open(md_path, "w") as f:
        f.write(md)
    print()
    print(md)
    print(f"wrote {json_path}" + (f" (and {args.out})" if args.out else "") + f"\nwrote {md_path}\nlogs: {log_dir}")
    return 0


# ----------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------

# (key, label); the workload is the key's first word. {…} in a label is filled from sizes.
ROWS = [
    ("slices_put_s", "slices: put of {slices} MB, ms"),
    ("slices_tasks_s", "slices: 40 tasks each summing 1/40 of it (ref as argument), gathered, ms"),
    ("put_put_s", "put: put of {put} MB, ms"),
    ("put_put_task_s", "put: put + one task summing it, until its result, ms"),
    ("ret_get_s", "ret: task returns a {ret} MB np.ones array, until the driver's get has it, ms"),
    ("ret_make_only_task_s", "ret: same task returning only its np.ones time (no transfer), ms"),
    ("ret_make_in_task_s", "ret: np.ones of {ret} MB inside the task, ms"),
    ("ret_transfer_s", "ret: transfer = first row − make-only row, ms"),
    ("get_get_s", "get: get of {get} MB already put, ms (median of 5)"),
    ("get_rss_growth_MiB", "get: driver RSS growth across one get, MiB"),
    ("get_anon_growth_MiB", "get: driver anonymous RSS (RSS − shared) growth, MiB"),
    ("get_uss_growth_MiB", "get: driver USS (private) growth, MiB"),
    ("get_first_rss_growth_MiB", "get: driver RSS growth across the first get (info), MiB"),
    ("get_rss_growth_after_read_MiB", "get: driver RSS growth once the array is read whole (info), MiB"),
    ("get_rss_held_MiB", "get: driver RSS with the result in hand (read), over its level at the first cluster's start, MiB"),
    ("get_anon_held_MiB", "get: driver anonymous RSS, same, MiB"),
    ("get_anon_after_drop_MiB", "get: driver anonymous RSS once the result is dropped, same baseline, MiB"),
    ("gettask_get_s", "gettask: get of {get} MB a task made (np.ones), ready (after wait), ms (median of 5)"),
    ("gettask_rss_growth_MiB", "gettask: driver RSS growth, from before the task to after the get, MiB"),
    ("gettask_anon_growth_MiB", "gettask: driver anonymous RSS growth, same span, MiB"),
    ("gettask_uss_growth_MiB", "gettask: driver USS growth, same span, MiB"),
    ("gettask_rss_growth_after_read_MiB", "gettask: driver RSS growth once read whole (info), MiB"),
    ("gettask_rss_held_MiB", "gettask: driver RSS with the result in hand (read), over its level at the first cluster's start, MiB"),
    ("gettask_anon_held_MiB", "gettask: driver anonymous RSS, same, MiB"),
    ("gettask_anon_after_drop_MiB", "gettask: driver anonymous RSS once the result is dropped, same baseline, MiB"),
    ("spill_total_s", "spill: put 3× budget ({spill_obj} MB arrays) then get + check each, ms"),
    ("spill_put_s", "spill: the puts, ms"),
    ("spill_get_s", "spill: the gets and checks, ms"),
    ("spill_peak_rss_MiB", "spill: peak RSS, driver + cluster, MiB (budget {store_mb} MB)"),
    ("spill_peak_anon_MiB", "spill: peak anonymous RSS, driver + cluster, MiB"),
    ("spill_peak_shmem_MiB", "spill: peak growth of the machine's Shmem since before the cluster started, MiB"),
    ("limits_memcpy_s", "limits: numpy copy of {limits} MB into a warm array, ms"),
    ("limits_alloc_fill_s", "limits: np.ones of {limits} MB (alloc + fill), ms"),
]


def _fmt(v, unit):
    """Times in ms with about 3 significant digits (the rows span µs to minutes)."""
    if v is None:
        return None
    if unit == "MiB":
        return f"{v:,.0f}" if abs(v) >= 10 else f"{v:.1f}"
    ms = v * 1e3
    for limit, spec in ((100, ",.0f"), (10, ".1f"), (1, ".2f")):
        if abs(ms) >= limit:
            return format(ms, spec)
    return f"{ms:.3f}"


def _cell(r, key):
    f = r.get("figures", {}).get(key)
    if f is not None and f.get("median") is not None:
        return _fmt(f["median"], f["unit"])
    errs = r.get("errors", {})
    wl = key.split("_")[0]
    err = errs.get(wl) or errs.get("child") or errs.get("import")
    if err is None:
        if r.get("timed_out"):
            return "killed (per-system timeout)"
        if r.get("exit_code") not in (0, None):
            return f"child died (exit code {r['exit_code']})"
        return "n/a"
    if err.startswith("FigureTimeout"):
        return f"timeout ({r.get('params', {}).get('workload_timeout_s', '?')} s)"
    err = " ".join(err.split()).replace("|", "/")
    return "error: " + (err[:110] + "…" if len(err) > 110 else err)


def render_md(results):
    meta = results["meta"]
    m = meta["machine"]
    sysres = results["systems"]
    el = meta["sizes_elements"]
    fill = {k: (f"{v * 8 / MB:,.0f}" if k != "store_mb" else v) for k, v in el.items()}
    L = ["# Large objects: rayipy vs Ray, same run\n"]
    L.append(f"Date (UTC): {meta['date_utc']}  ")
    L.append(f"Machine: nproc={m['nproc']}, {m['cpu_model']}, Python {m['python']}  ")
    L.append("Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + "  ")
    prov = meta.get("rayipy", {})
    if prov.get("snapshot"):
        L.append(f"rayipy measured: commit `{prov['snapshot']['commit'][:12]}` "
                 f"(`--rayipy-rev {prov['snapshot']['rev']}`, frozen copy in {prov['snapshot']['dir']})  ")
    elif prov:
        dirty = prov.get("rayipy_uncommitted_changes")
        L.append(f"rayipy measured: the working tree at {prov.get('rayipy_root')}"
                 + (f", HEAD `{prov['git_head'][:12]}`" if prov.get("git_head") else "")
                 + (f", with uncommitted changes in rayipy/: {', '.join(dirty)}" if dirty else "") + "  ")
    L.append(f"Method: median of {meta['reps']} reps after one warm-up (get: of {N_GETS} gets); 2 workers; "
             "each system in its own child process, one after the other. MB = 10^6 bytes, MiB = 2^20. "
             f"Rerun: `{meta['command']}`"
             + ("  \n**QUICK MODE (smoke run: small sizes)**" if meta.get("quick") else "") + "\n")
    names = [s for s in SYSTEM_ORDER if s in sysres]
    L.append("| row | " + " | ".join(("Ray" if s == "ray" else s) for s in names)
             + (" | rayipy ÷ Ray |" if len(names) == 2 else " |"))
    L.append("|---|" + "---|" * (len(names) + (1 if len(names) == 2 else 0)))
    only = meta["only"].split(",")
    for key, label in ROWS:
        if key.split("_")[0] not in only:
            continue
        cells = [_cell(sysres[s], key) for s in names]
        row = f"| {label.format(**fill)} | " + " | ".join(cells)
        if len(names) == 2:
            a = sysres["rayipy"].get("figures", {}).get(key, {}).get("median")
            b = sysres["ray"].get("figures", {}).get(key, {}).get("median")
            small = key.endswith("MiB") and (a is None or b is None or abs(a) < 5 or abs(b) < 5)
            row += " | " + (f"{a / b:.2f}" if a is not None and b and not small else "")
        L.append(row + " |")
    L.append("\nRatios of MiB rows are left out where either side grew by less than 5 MiB. "
             "The limits rows are the same code in both children: their ratio shows the machine's drift.\n")
    L.append("## Run notes (automatic)\n")
    for s in names:
        r = sysres[s]
        bits = []
        for k, v in r.get("notes", {}).items():
            bits.append(f"{k}: {v}")
        if r.get("errors"):
            bits.append("errors: " + "; ".join(f"{k}: `{' '.join(str(v).split())[:300]}`"
                                               for k, v in r["errors"].items()))
        if r.get("timed_out"):
            bits.append("child hit the per-system timeout and was killed")
        if r.get("exit_code") not in (0, None):
            bits.append(f"child exit code {r.get('exit_code')}")
        if r.get("killed_leftovers"):
            bits.append(f"killed leftovers by PID: {r['killed_leftovers']}")
        bits.append("1-min load average before/after: %s/%s" % tuple(r.get("loadavg_1m_before_after", ["?", "?"])))
        L.append(f"- **{s}** (wall {r.get('wall_s', 0):.0f} s, {r.get('processes_seen', '?')} processes seen): "
                 + "; ".join(bits))
    return "\n".join(L) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", default="ray,rayipy", help="comma list of ray,rayipy (default both)")
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions per figure after one warm-up (default 3)")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--only", default=",".join(WORKLOADS),
                    help=f"comma list of workloads to run (default all: {','.join(WORKLOADS)})")
    ap.add_argument("--store-mb", type=int, default=0,
                    help="object_store_memory for the spill workload, MB (default 300; --quick: 100)")
    ap.add_argument("--workload-timeout", type=float, default=300.0, help="per-workload limit, seconds")
    ap.add_argument("--timeout", type=float, default=2400.0, help="per-system limit, seconds")
    ap.add_argument("--out", help="also write the JSON results here")
    ap.add_argument("--out-dir", help="default /tmp/rayipy-objects-<UTC date>")
    ap.add_argument("--report-only", action="store_true", help="re-render objects-results.md from the JSON in --out-dir")
    ap.add_argument("--rayipy-rev", help="measure rayipy as committed at this git revision: a frozen "
                                         "`git archive` copy goes first on PYTHONPATH")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    bad = [w for w in args.only.split(",") if w not in WORKLOADS]
    if bad or not args.only:
        ap.error(f"--only: unknown workload(s) {', '.join(bad)}; known: {', '.join(WORKLOADS)}")
    if args.reps < 1:
        ap.error("--reps must be at least 1")
    if args.store_mb and args.store_mb < (25 if args.quick else 100):
        ap.error("--store-mb must hold at least one spill array (100 MB; --quick: 25 MB)")
    if args.workload_timeout < 1 or args.timeout < 1:
        ap.error("timeouts must be at least 1 s")
    if args.child:
        if args.child not in SYSTEMS:
            ap.error(f"unknown system {args.child!r}")
        return child_main(args)
    if args.report_only:
        if not args.out_dir:
            ap.error("--report-only needs --out-dir")
        with open(os.path.join(args.out_dir, "objects-results.json")) as f:
            md = render_md(json.load(f))
        with open(os.path.join(args.out_dir, "objects-results.md"), "w") as f:
            f.write(md)
        print(md)
        return 0
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
