#!/usr/bin/env python3
"""core.py -- rayipy's own performance figures, each measured for rayipy, Ray and a
multiprocessing.Pool(2) in one run.

shared/bench/peers.py gives the cross-system anchors (with task functions pickled by
reference from an importable module). This script adds the figures that the project's
goals are stated in and that peers.py does not give, always for rayipy and Ray in the
same run, so that the ratio rayipy/Ray means something on a noisy 2-core machine.
Two baselines always run in the same run too: the raw zmq round trip, and
multiprocessing.Pool(2), the same-machine limit (pipes, with no scheduler and no
ownership; issue 11's goals are ratios to it). The pool runs figures a, b, c (and d,
its start to first result); it has no actors and no head, so no e or f:

  zmq  raw pyzmq round trip between two processes, same machine, same run:
       DEALER -> ROUTER echo over tcp://127.0.0.1, p50/p99 of 2000 sequential pings
       after 200 warm-up pings; plus a 3-process relay (client DEALER -> ROUTER relay ->
       worker DEALER and back), the shape of a head-centred task round trip (info only)
  a.   sequential no-op task round trip p50/p99 (2000 calls after 200 warm-up), and
       its p50 divided by the raw zmq DEALER/ROUTER p50. The pool: pool.apply(f)
  b.   10,000 no-op tasks submitted one by one, then gathered with one get(list):
       tasks/s. The task function is defined in __main__ of this script, so both
       systems pickle it by value (cloudpickle), as for a notebook. The pool:
       apply_async one by one, then .get() of each (it forks, so it pickles the
       function by reference); also (info) pool.map over 10,000 items, which batches
  c.   10,000 tasks of time.sleep(0.001) (also a __main__ function) on 2 workers:
       wall seconds (ideal 5.0), on the cluster that just ran a and b; and (info) the
       same on a freshly started cluster
  d.   cold start: init() to the first result, in a fresh Python process each time
       (the library import is timed separately and not included)
  e.   memory: on a fresh cluster, after one warm-up batch, 100,000 no-op tasks in
       batches of 1,000 (submit a batch, get it, drop the refs); RSS growth (MiB) of
       the driver and of the head process: rayipy's `python -m rayipy.node.head`
       (a child of the driver), Ray's gcs_server. Also shown (info): the node
       process (rayipy agent / Ray raylet) and the sum over the workers
  f.   sequential actor method call p50 (2000 calls after 200 warm-up), where the
       system has actors (the actor class is defined in __main__ too); actor creation
       to the first call's result (seconds); and 10,000 calls made one after another
       without waiting on one actor, then gathered with one get(list): calls/s

Every system uses 2 workers: rayipy.init(num_cpus=2), ray.init(num_cpus=2,
include_dashboard=False), with RAY_USAGE_STATS_ENABLED=0, multiprocessing.Pool(2) with
the platform's default start method (fork on Linux). Each figure is repeated --reps
times (default 3; the memory figure once) and the median is reported.

Each system runs in its own child process, one after another (zmq, pool, rayipy, ray:
the pool right before rayipy, so that the ratio rayipy/pool spans the shortest time),
never concurrently. The parent makes itself a child subreaper, records every process
that a child starts, bounds each child's run time (--timeout), and afterwards kills
leftovers by PID only. A figure
that fails or hangs is recorded with its error text (SIGALRM bounds each figure), and the
next figure runs on a freshly started cluster.

Run it with the venv that has ray and rayipy installed (see benchmarks/README.md):

    /work/peers-venv/bin/python benchmarks/core.py                      # rayipy,ray (+zmq,pool), full
    /work/peers-venv/bin/python benchmarks/core.py --quick              # smoke run
    /work/peers-venv/bin/python benchmarks/core.py --systems rayipy --reps 5
    /work/peers-venv/bin/python benchmarks/core.py --rayipy-rev HEAD     # a frozen commit
    /work/peers-venv/bin/python benchmarks/core.py --report-only --out-dir DIR

--rayipy-rev REV measures rayipy as committed at REV (a `git archive` copy in /tmp put first
on PYTHONPATH), so that commits or half-done edits landing in rayipy/ during the run cannot
mix code versions between the driver and the cluster processes it starts later. Without
it, the working tree is measured, and the report says so (with its uncommitted changes).

It writes core-results.json (all raw samples) and core-results.md into --out-dir
(default /tmp/rayipy-core-<UTC date>) and prints the markdown.

The systems here run one after another, so a ratio to the pool still carries the drift of
the machine's load between two children. For the hot-path figures, benchmarks/ab.py
alternates two sides (two rayipy commits, or `pool` and a commit) round by round.
"""

import argparse
import datetime
import gc
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

pc = time.perf_counter
HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.abspath(__file__)
N_WORKERS = 2
MiB = 1024 * 1024
SYSTEM_ORDER = ["zmq", "pool", "rayipy", "ray"]
BASELINES = ["zmq", "pool"]   # always measured, in every run

# ----------------------------------------------------------------------------------
# Task functions and the actor class: defined in __main__ on purpose (the child runs
# this file as a script), so both systems pickle them by value, as for a notebook.
# ----------------------------------------------------------------------------------


def main_noop():
    return None


def main_ping():
    return 1


def main_sleep_ms():
    time.sleep(0.001)


def main_yield_n(n):
    """A generator task: n small values, each a ref on the caller as it is yielded."""
    for i in range(n):
        yield i


def main_noop_item(_):
    """pool.map's form of main_noop (one argument per item)."""
    return None


class MainCounter:
    def __init__(self):
        self.n = 0

    def inc(self):
        self.n += 1
        return self.n


# ----------------------------------------------------------------------------------
# The two systems, behind one small interface
# ----------------------------------------------------------------------------------


def stream_10k(S, f, n=10_000):
    """Seconds from ``f.remote(n)`` (a generator task) to every value got, refs taken as
    they stream in: the figure g of core.py and of generators.py."""
    t0 = pc()
    refs = list(f.remote(n))
    assert S.get(refs) == list(range(n))
    return pc() - t0


class RayipySystem:
    name = "rayipy"
    label = "rayipy.init(num_cpus=2)"
    has_actors = True
    has_generators = True
    has_head = True

    def import_lib(self):
        import rayipy
        self.lib = rayipy
        self.version = getattr(rayipy, "__version__", "?")

    def start(self):
        self.lib.init(num_cpus=N_WORKERS)

    def remote(self, obj):
        return self.lib.remote(obj)

    def get(self, refs):
        return self.lib.get(refs)

    def call(self, f):
        """One task, waited for: the round trip of figure a."""
        return self.lib.get(f.remote())

    def shutdown(self):
        self.lib.shutdown()

    def cluster_processes(self, psutil):
        """{'head': Process, 'node': Process, 'workers': [Process]} among the driver's descendants."""
        out = {"head": None, "node": None, "workers": []}
        for p in psutil.Process().children(recursive=True):
            try:
                cmd = " ".join(p.cmdline())
            except psutil.Error:
                continue
            if "rayipy.node.head" in cmd:
                out["head"] = p
            elif "rayipy.node.agent" in cmd:
                out["node"] = p
            elif "rayipy.node.worker" in cmd:
                out["workers"].append(p)
        return out


class RaySystem:
    name = "ray"
    label = "ray.init(num_cpus=2, include_dashboard=False)"
    has_actors = True
    has_generators = True
    has_head = True

    def import_lib(self):
        import ray
        self.lib = ray
        self.version = ray.__version__

    def start(self):
        self.lib.init(num_cpus=N_WORKERS, include_dashboard=False)

    def remote(self, obj):
        return self.lib.remote(obj)

    def get(self, refs):
        return self.lib.get(refs)

    def call(self, f):
        return self.lib.get(f.remote())

    def shutdown(self):
        self.lib.shutdown()

    def cluster_processes(self, psutil):
        out = {"head": None, "node": None, "workers": []}
        for p in psutil.Process().children(recursive=True):
            try:
                name = p.name()
                cmd = " ".join(p.cmdline())
            except psutil.Error:
                continue
            if name == "gcs_server" or "gcs_server" in cmd.split(" ")[0]:
                out["head"] = p
            elif name == "raylet" or cmd.split(" ")[0].endswith("/raylet"):
                out["node"] = p
            elif name.startswith("ray::") or "default_worker.py" in cmd:
                out["workers"].append(p)
        return out


class _PoolFunction:
    """What PoolSystem.remote returns: ``.remote()`` is one ``apply_async``."""

    def __init__(self, pool, fn):
        self.pool = pool
        self.fn = fn

    def remote(self):
        return self.pool.apply_async(self.fn)


class PoolSystem:
    """multiprocessing.Pool(2): the same-machine limit (pipes, no scheduler, no ownership).

    Its workers fork from the driver, so a __main__ function is pickled by reference.
    It has no actors and no head process: figures e and f are not run for it.
    """
    name = "pool"
    label = "multiprocessing.Pool(2)"
    has_actors = False
    has_head = False

    def import_lib(self):
        import multiprocessing
        self.lib = multiprocessing
        self.version = "Python " + platform.python_version()
        self.label = f"multiprocessing.Pool(2), start method {multiprocessing.get_start_method()}"

    def start(self):
        self.pool = self.lib.Pool(N_WORKERS)

    def remote(self, fn):
        return _PoolFunction(self.pool, fn)

    def get(self, refs):
        if isinstance(refs, list):
            return [r.get() for r in refs]
        return refs.get()

    def call(self, f):
        return self.pool.apply(f.fn)

    def shutdown(self):
        self.pool.close()
        self.pool.join()


SYSTEMS = {"pool": PoolSystem, "rayipy": RayipySystem, "ray": RaySystem}

# ----------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------


class FigureTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise FigureTimeout("figure timed out (SIGALRM)")


def pct(samples, q):
    s = sorted(samples)
    if not s:
        return None
    k = (len(s) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


class Recorder:
    """Collects figures into a JSON file, saved after every change (a crash loses nothing)."""

    def __init__(self, name, out_path, params):
        self.name = name
        self.out_path = out_path
        self.res = {"system": name, "figures": {}, "errors": {}, "params": params, "pid": os.getpid()}

    def save(self):
        tmp = self.out_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.res, f, indent=1, default=str)
        os.replace(tmp, self.out_path)

    def fig(self, key, unit, samples, **extra):
        d = {"median": med(samples), "unit": unit, "samples": samples}
        d.update(extra)
        self.res["figures"][key] = d
        self.save()
        print(f"[{self.name}] {key}: {d['median']} {unit}", flush=True)

    def guarded(self, label, fn, timeout):
        """Run fn under a SIGALRM bound; record any error with its text. True if it succeeded."""
        signal.alarm(int(timeout))
        try:
            fn()
            return True
        except BaseException as e:  # noqa: BLE001 -- record and go on
            signal.alarm(0)
            msg = f"{type(e).__name__}: {e}"
            self.res["errors"][label] = msg
            self.res.setdefault("tracebacks", {})[label] = traceback.format_exc()
            print(f"[{self.name}] ERROR in {label}: {msg}", flush=True)
            traceback.print_exc()
            self.save()
            if isinstance(e, KeyboardInterrupt):
                raise
            return False
        finally:
            signal.alarm(0)
            gc.collect()


# ----------------------------------------------------------------------------------
# Raw zmq round trip (figure "zmq")
# ----------------------------------------------------------------------------------


def zmq_echo_main(mode):
    """A helper process: 'echo' = ROUTER that echoes; 'worker' = DEALER that echoes (relay mode)."""
    import zmq
    ctx = zmq.Context()
    if mode == "echo":
        s = ctx.socket(zmq.ROUTER)
        s.setsockopt(zmq.LINGER, 0)
        port = s.bind_to_random_port("tcp://127.0.0.1")
        print(port, flush=True)
        while True:
            frames = s.recv_multipart(copy=False)
            if frames[-1].bytes == b"stop":
                break
            s.send_multipart(frames, copy=False)
    elif mode.startswith("relay:"):
        # ROUTER between a client DEALER (identity b"C") and a worker DEALER (identity b"W")
        s = ctx.socket(zmq.ROUTER)
        s.setsockopt(zmq.LINGER, 0)
        port = s.bind_to_random_port("tcp://127.0.0.1")
        print(port, flush=True)
        while True:
            frames = s.recv_multipart(copy=False)
            ident = frames[0].bytes
            if frames[-1].bytes == b"stop":
                s.send_multipart([b"W", b"C", b"stop"])
                break
            if ident == b"C":
                s.send_multipart([b"W", b"C"] + frames[1:], copy=False)
            elif ident == b"W" and len(frames) > 2:
                s.send_multipart(frames[1:], copy=False)   # [b"C", payload]
    elif mode.startswith("worker:"):
        addr = mode.split(":", 1)[1]
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.IDENTITY, b"W")
        s.setsockopt(zmq.LINGER, 0)
        s.connect(addr)
        s.send(b"ready")
        while True:
            frames = s.recv_multipart(copy=False)
            if frames[-1].bytes == b"stop":
                break
            s.send_multipart(frames, copy=False)
    ctx.destroy(linger=0)


def _spawn_helper(mode):
    p = subprocess.Popen([sys.executable, SCRIPT, "--zmq-helper", mode], stdout=subprocess.PIPE,
                         stdin=subprocess.DEVNULL)
    return p


def _read_port(p, timeout=20.0):
    import select
    r, _, _ = select.select([p.stdout], [], [], timeout)
    if not r:
        raise RuntimeError("zmq helper did not print its port")
    line = p.stdout.readline().strip()
    if not line.isdigit():
        raise RuntimeError(f"zmq helper printed {line!r}")
    return int(line)


def _stop(procs):
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        if p.stdout:
            p.stdout.close()


def run_zmq(rec, reps, n_lat):
    import zmq
    rec.res["label"] = "raw pyzmq DEALER/ROUTER over tcp://127.0.0.1 (16-byte message)"
    rec.res["versions"] = {"pyzmq": zmq.__version__, "libzmq": zmq.zmq_version()}
    payload = b"p" * 16

    def pings(sock, recv):
        for _ in range(200):
            sock.send(payload); recv()
        p50, p99 = [], []
        for _ in range(reps):
            s = []
            for _ in range(n_lat):
                t0 = pc(); sock.send(payload); recv(); s.append(pc() - t0)
            p50.append(pct(s, 50) * 1e6); p99.append(pct(s, 99) * 1e6)
        return p50, p99

    def direct():
        echo = _spawn_helper("echo")
        ctx = zmq.Context()
        try:
            port = _read_port(echo)
            d = ctx.socket(zmq.DEALER)
            d.setsockopt(zmq.LINGER, 0)
            d.connect(f"tcp://127.0.0.1:{port}")
            p50, p99 = pings(d, d.recv)
            rec.fig("zmq_rtt_p50_us", "us", p50)
            rec.fig("zmq_rtt_p99_us", "us", p99)
            d.send(b"stop")
            d.close()
        finally:
            ctx.destroy(linger=0)
            _stop([echo])
    rec.guarded("zmq_direct", direct, 120)

    def relay():
        relay_p = _spawn_helper("relay:")
        procs = [relay_p]
        ctx = zmq.Context()
        try:
            port = _read_port(relay_p)
            addr = f"tcp://127.0.0.1:{port}"
            procs.append(_spawn_helper("worker:" + addr))
            c = ctx.socket(zmq.DEALER)
            c.setsockopt(zmq.IDENTITY, b"C")
            c.setsockopt(zmq.LINGER, 0)
            c.connect(addr)
            # the relay drops messages for a worker that has not connected yet: knock until
            # one comes back, then drain any late duplicates so pings and replies pair up
            for _ in range(100):
                c.send(b"hello")
                if c.poll(200):
                    c.recv()
                    break
            else:
                raise RuntimeError("relay worker never answered")
            time.sleep(0.5)
            while c.poll(0):
                c.recv()
            p50, p99 = pings(c, c.recv)
            rec.fig("zmq_relay_rtt_p50_us", "us", p50)
            rec.fig("zmq_relay_rtt_p99_us", "us", p99)
            c.send(b"stop")
            c.close()
        finally:
            ctx.destroy(linger=0)
            time.sleep(0.2)
            _stop(procs)
    rec.guarded("zmq_relay", relay, 120)


# ----------------------------------------------------------------------------------
# Cold start (figure d): one fresh process per sample
# ----------------------------------------------------------------------------------


def cold_once_main(system):
    """Runs in a fresh process: import, then init() -> first result; prints one JSON line."""
    S = SYSTEMS[system]()
    t0 = pc()
    S.import_lib()
    t1 = pc()
    S.start()
    f = S.remote(main_ping)
    v = S.get(f.remote())
    t2 = pc()
    assert v == 1, v
    print("COLD " + json.dumps({"import_s": t1 - t0, "cold_start_s": t2 - t1}), flush=True)
    t3 = pc()
    S.shutdown()
    print("SHUT " + json.dumps({"shutdown_s": pc() - t3}), flush=True)
    return 0


def run_cold(rec, system, n):
    env = os.environ.copy()
    cold, imp, shut, errors = [], [], [], []
    for i in range(n):
        try:
            cp = subprocess.run([sys.executable, SCRIPT, "--cold-once", system], capture_output=True,
                                text=True, timeout=180, env=env, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            errors.append(f"rep {i}: timed out after 180 s; stderr tail: {(e.stderr or '')[-800:]}")
            continue
        got = False
        for line in cp.stdout.splitlines():
            if line.startswith("COLD "):
                d = json.loads(line[5:])
                cold.append(d["cold_start_s"]); imp.append(d["import_s"]); got = True
            elif line.startswith("SHUT "):
                shut.append(json.loads(line[5:])["shutdown_s"])
        if not got or cp.returncode != 0:
            errors.append(f"rep {i}: exit code {cp.returncode}; stderr tail: {cp.stderr[-1500:]}")
        elif cp.stderr.strip():
            rec.res.setdefault("cold_start_stderr", []).append(cp.stderr[-1500:])
        time.sleep(1.0)   # let the previous cluster's processes go (untimed)
    if cold:
        rec.fig("cold_start_s", "s", cold)
        rec.fig("import_s", "s", imp)
    if shut:
        rec.fig("cold_shutdown_s", "s", shut)
    if errors:
        rec.res["errors"]["cold_start"] = " | ".join(errors)
        rec.save()


# ----------------------------------------------------------------------------------
# One system's figures (a, b, c, e, f)
# ----------------------------------------------------------------------------------


def rss_of(p):
    import psutil
    try:
        return p.memory_info().rss
    except (psutil.Error, AttributeError):
        return None


def run_system(rec, system, reps, n_lat, n_tasks, mem_total, batch, cold_reps):
    import psutil
    S = SYSTEMS[system]()
    rec.res["label"] = S.label

    # d. cold start, first: nothing of ours is running yet
    rec.guarded("cold_start", lambda: run_cold(rec, system, cold_reps), 180 * cold_reps + 60)

    if not rec.guarded("import", S.import_lib, 120):
        return
    rec.res["versions"] = {system: S.version}
    rec.res["imported_from"] = getattr(S.lib, "__file__", None)
    state = {"up": False}

    def up():
        if not state["up"]:
            S.start()
            state["up"] = True
            warm = S.remote(main_ping)
            assert S.get([warm.remote() for _ in range(4 * N_WORKERS)]) == [1] * (4 * N_WORKERS)

    def down():
        if state["up"]:
            state["up"] = False
            S.shutdown()

    progress = {}   # label -> (rep, samples so far, rep start): says where a timed-out loop was

    def figure(label, fn, timeout):
        """Run one figure on a running cluster; on failure, stop the cluster (next figure restarts it)."""
        if not rec.guarded(f"{label}:start", up, 180):
            rec.guarded(f"{label}:cleanup", down, 60)
            return
        if not rec.guarded(label, fn, timeout):
            if label in progress:
                r, smp, t_rep = progress[label]
                done = sorted(smp)
                info = (f" [in timed rep {r + 1}/{reps}: {len(smp)} of {n_lat} calls done in "
                        f"{pc() - t_rep:.1f} s before the error")
                if done:
                    info += (f"; their p50 {pct(done, 50) * 1e6:,.0f} us, max {done[-1] * 1e3:,.1f} ms, "
                             f"{sum(x > 0.05 for x in done)} took > 50 ms")
                rec.res["errors"][label] += info + "]"
                rec.res.setdefault("partial_samples_us", {})[label] = [x * 1e6 for x in smp]
                rec.save()
            rec.guarded(f"{label}:cleanup", down, 60)

    # a. sequential no-op round trip
    def latency():
        f = S.remote(main_noop)
        for _ in range(200):
            S.call(f)
        p50, p99, mean = [], [], []
        for r in range(reps):
            s = []
            progress["rtt"] = (r, s, pc())
            for _ in range(n_lat):
                t0 = pc(); S.call(f); s.append(pc() - t0)
            p50.append(pct(s, 50) * 1e6); p99.append(pct(s, 99) * 1e6); mean.append(statistics.fmean(s) * 1e6)
        rec.fig("rtt_p50_us", "us", p50)
        rec.fig("rtt_p99_us", "us", p99)
        rec.fig("rtt_mean_us", "us", mean)
    figure("rtt", latency, 300)

    # b. n_tasks no-op tasks, __main__ function, submitted one by one then gathered
    def throughput():
        f = S.remote(main_noop)
        S.get([f.remote() for _ in range(1000)])  # warm-up
        tps, sub, wall = [], [], []
        for _ in range(reps):
            t0 = pc()
            refs = [f.remote() for _ in range(n_tasks)]
            t1 = pc()
            out = S.get(refs)
            t2 = pc()
            assert len(out) == n_tasks and out[0] is None
            del refs, out
            gc.collect()
            tps.append(n_tasks / (t2 - t0)); sub.append(n_tasks / (t1 - t0)); wall.append(t2 - t0)
        rec.fig("main_throughput_tps", "tasks/s", tps)
        rec.fig("main_submit_rate_tps", "tasks/s", sub)
        rec.fig("main_throughput_wall_s", "s", wall)
        if system == "pool":
            # (info) the pool's own batching form: map cuts the items into chunks
            rates = []
            for _ in range(reps):
                t0 = pc()
                out = S.pool.map(main_noop_item, range(n_tasks))
                rates.append(n_tasks / (pc() - t0))
                assert len(out) == n_tasks
            rec.fig("pool_map_tps", "tasks/s", rates)
    figure("throughput", throughput, 600)

    # c. n_tasks x sleep(1 ms), __main__ function
    def sleepwork(key="sleep1ms_wall_s"):
        f = S.remote(main_sleep_ms)
        S.get([f.remote() for _ in range(100)])  # warm-up
        wall = []
        for _ in range(reps):
            t0 = pc()
            refs = [f.remote() for _ in range(n_tasks)]
            out = S.get(refs)
            wall.append(pc() - t0)
            assert len(out) == n_tasks
            del refs, out
            gc.collect()
        rec.fig(key, "s", wall, ideal_s=n_tasks * 0.001 / N_WORKERS)
    figure("sleep1ms", sleepwork, 600)

    # f. sequential actor calls (where actors exist)
    def actor():
        t0 = pc()
        A = S.remote(MainCounter)
        h = A.remote()
        assert S.get(h.inc.remote()) == 1
        rec.fig("actor_create_s", "s", [pc() - t0])
        for _ in range(200):
            S.get(h.inc.remote())
        p50, p99 = [], []
        for r in range(reps):
            s = []
            progress["actor"] = (r, s, pc())
            for _ in range(n_lat):
                t0 = pc(); S.get(h.inc.remote()); s.append(pc() - t0)
            p50.append(pct(s, 50) * 1e6); p99.append(pct(s, 99) * 1e6)
        rec.fig("actor_p50_us", "us", p50)
        rec.fig("actor_p99_us", "us", p99)
        rates = []
        for r in range(reps):
            progress["actor"] = (r, [], pc())
            first = S.get(h.inc.remote())
            t0 = pc()
            refs = [h.inc.remote() for _ in range(10_000)]
            out = S.get(refs)
            rates.append(10_000 / (pc() - t0))
            assert out == list(range(first + 1, first + 10_001)), "calls ran out of order"
            del refs, out
        rec.fig("actor_pipelined_cps", "calls/s", rates)
        del h
    if S.has_actors:
        figure("actor", actor, 300)

    # g. a streaming generator task of 10,000 yields, every value got (rayipy and Ray)
    def generator():
        f = S.remote(main_yield_n)
        S.get(list(f.remote(100)))   # warm-up
        rec.fig("generator_10k_yields_s", "s", [stream_10k(S, f) for _ in range(reps)])
    if getattr(S, "has_generators", False):
        figure("generator", generator, 300)

    rec.guarded("shutdown", down, 120)
    time.sleep(1.0)

    # c'. (info) the same sleep workload on a fresh cluster: c above runs on a cluster that
    # has already run ~37,000 tasks, so the two together show any dependence on history
    figure("sleep1ms_fresh", lambda: sleepwork("sleep1ms_fresh_wall_s"), 600)
    rec.guarded("shutdown2", down, 120)
    time.sleep(1.0)

    # e. memory, on a fresh cluster (where there is a head process to watch)
    def memory():
        up()
        f = S.remote(main_noop)
        procs = S.cluster_processes(psutil)
        if procs["head"] is None:
            raise RuntimeError("head process not found among the driver's descendants: "
                               + ", ".join(f"{p.pid}:{p.name()}" for p in psutil.Process().children(recursive=True)))
        me = psutil.Process()
        S.get([f.remote() for _ in range(batch)])   # warm-up batch
        gc.collect(); time.sleep(0.5)
        procs = S.cluster_processes(psutil)        # workers may have been (re)started
        base = {"driver": rss_of(me), "head": rss_of(procs["head"]), "node": rss_of(procs["node"]),
                "workers": {p.pid: rss_of(p) for p in procs["workers"]}}
        peak = {"driver": base["driver"], "head": base["head"]}
        n_batches = mem_total // batch
        t0 = pc()
        for b in range(n_batches):
            refs = [f.remote() for _ in range(batch)]
            out = S.get(refs)
            assert len(out) == batch
            del refs, out
            if b % 5 == 4:
                for k, p in (("driver", me), ("head", procs["head"])):
                    r = rss_of(p)
                    if r is not None and (peak[k] is None or r > peak[k]):
                        peak[k] = r
        wall = pc() - t0
        gc.collect(); time.sleep(1.0)
        now = S.cluster_processes(psutil)
        end = {"driver": rss_of(me), "head": rss_of(procs["head"]), "node": rss_of(procs["node"]),
               "workers": {p.pid: rss_of(p) for p in now["workers"]}}
        for k in ("driver", "head"):
            peak[k] = max(x for x in (peak[k], end[k]) if x is not None) if end[k] is not None else peak[k]

        def growth(a, b):
            return None if a is None or b is None else (b - a) / MiB
        common = [pid for pid in base["workers"] if pid in end["workers"]
                  and base["workers"][pid] is not None and end["workers"][pid] is not None]
        rec.res["memory_detail"] = {
            "tasks": n_batches * batch, "batch": batch, "wall_s": wall,
            "rss_base_MiB": {"driver": (base["driver"] or 0) / MiB, "head": (base["head"] or 0) / MiB,
                             "node": (base["node"] or 0) / MiB,
                             "workers": {str(k): (v or 0) / MiB for k, v in base["workers"].items()}},
            "rss_end_MiB": {"driver": (end["driver"] or 0) / MiB, "head": (end["head"] or 0) / MiB,
                            "node": (end["node"] or 0) / MiB,
                            "workers": {str(k): (v or 0) / MiB for k, v in end["workers"].items()}},
            "rss_peak_MiB": {k: (v or 0) / MiB for k, v in peak.items()},
            "head_process": f"{procs['head'].pid}: {' '.join(procs['head'].cmdline())[:200]}",
            "node_process": (f"{procs['node'].pid}: {' '.join(procs['node'].cmdline())[:200]}"
                             if procs["node"] is not None else None),
            "workers_at_start": sorted(base["workers"]), "workers_at_end": sorted(end["workers"]),
        }
        rec.fig("mem_driver_growth_MiB", "MiB", [growth(base["driver"], end["driver"])],
                base_MiB=base["driver"] / MiB, end_MiB=end["driver"] / MiB, peak_MiB=peak["driver"] / MiB)
        rec.fig("mem_head_growth_MiB", "MiB", [growth(base["head"], end["head"])],
                base_MiB=base["head"] / MiB, end_MiB=(end["head"] or 0) / MiB, peak_MiB=(peak["head"] or 0) / MiB)
        if base["node"] is not None and end["node"] is not None:
            rec.fig("mem_node_growth_MiB", "MiB", [growth(base["node"], end["node"])])
        if common:
            rec.fig("mem_workers_growth_MiB", "MiB",
                    [sum(end["workers"][p] - base["workers"][p] for p in common) / MiB],
                    n_workers_compared=len(common))
        rec.fig("mem_batched_tps", "tasks/s", [n_batches * batch / wall])
    if S.has_head:
        rec.guarded("memory", memory, 900)
    rec.guarded("final_shutdown", down, 120)


def child_main(args):
    quick = args.quick
    reps = args.reps if args.reps else (1 if quick else 3)
    params = {"reps": reps, "quick": quick, "n_workers": N_WORKERS,
              "n_lat": 200 if quick else 2000, "n_tasks": 1000 if quick else 10_000,
              "mem_total": 10_000 if quick else 100_000, "batch": 1000,
              "cold_reps": 2 if quick else max(reps, 5)}
    rec = Recorder(args.child, args.out, params)
    signal.signal(signal.SIGALRM, _alarm)
    rec.save()
    try:
        if args.child == "zmq":
            run_zmq(rec, reps, params["n_lat"])
        else:
            run_system(rec, args.child, reps, params["n_lat"], params["n_tasks"],
                       params["mem_total"], params["batch"], params["cold_reps"])
    finally:
        rec.save()
    return 0


# ----------------------------------------------------------------------------------
# Parent: run the children one after another, track and clean up their processes
# ----------------------------------------------------------------------------------


def _set_subreaper():
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0   # PR_SET_CHILD_SUBREAPER
    except Exception:  # noqa: BLE001
        return False


def _descendants(psutil, root_pid):
    out = {}
    try:
        for p in psutil.Process(root_pid).children(recursive=True):
            try:
                out[p.pid] = (p.create_time(), p.name())
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    return out


def _kill_pids(psutil, tracked):
    """Kill, by PID, the tracked processes that are still alive (same create time)."""
    alive = []
    for pid, (ct, _name) in tracked.items():
        try:
            p = psutil.Process(pid)
            if abs(p.create_time() - ct) < 0.01 and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.Error:
            pass
    names = []
    for p in alive:
        try:
            names.append(f"{p.pid}:{' '.join(p.cmdline())[:120] or p.name()}")
            p.terminate()
        except psutil.Error:
            pass
    _, still = psutil.wait_procs(alive, timeout=5)
    for p in still:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(still, timeout=5)
    return names


def machine_facts():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"nproc": len(os.sched_getaffinity(0)), "cpu_model": cpu, "python": sys.version.split()[0],
            "python_executable": sys.executable, "platform": platform.platform()}


def lib_versions():
    from importlib import metadata
    v = {}
    for pkg in ("rayipy", "ray", "pyzmq", "cloudpickle", "psutil"):
        try:
            v[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    try:
        import zmq
        v["libzmq"] = zmq.zmq_version()
    except Exception:  # noqa: BLE001
        pass
    return v


REPO = os.path.dirname(HERE)


def rayipy_snapshot(rev):
    """Extract rayipy/ at git revision ``rev`` into /tmp (read-only use of the repository).

    Others may commit to rayipy/ or leave it half-edited while a benchmark runs; a snapshot
    first on PYTHONPATH makes every process of the run (driver, head, agent, workers,
    started at any time) use the same code. Returns (directory, full commit id).
    """
    sha = subprocess.run(["git", "-C", REPO, "rev-parse", "--verify", rev + "^{commit}"],
                         check=True, capture_output=True, text=True).stdout.strip()
    dest = os.path.join(tempfile.gettempdir(), f"rayipy-src-{sha[:12]}")
    if not os.path.isdir(os.path.join(dest, "rayipy")):
        tmp = dest + f".tmp{os.getpid()}"
        os.makedirs(tmp, exist_ok=True)
        arch = subprocess.run(["git", "-C", REPO, "archive", sha, "rayipy"], check=True,
                              capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=arch, check=True)
        os.replace(tmp, dest)
    return dest, sha


def rayipy_provenance(env):
    """Which rayipy the children will import, and its git state."""
    cp = subprocess.run([sys.executable, "-c", "import rayipy, os; print(os.path.dirname(os.path.dirname("
                         "os.path.abspath(rayipy.__file__))))"], capture_output=True, text=True, env=env,
                        cwd=tempfile.gettempdir())   # as the children import it: not from our cwd
    root = cp.stdout.strip() or f"(import failed: {cp.stderr.strip()[-300:]})"
    out = {"rayipy_root": root}
    if os.path.isdir(os.path.join(root, ".git")) or os.path.exists(os.path.join(root, ".git")):
        g = lambda *a: subprocess.run(["git", "-C", root, *a], capture_output=True, text=True).stdout.strip()
        out["git_head"] = g("rev-parse", "HEAD")
        dirty = g("status", "--porcelain", "--", "rayipy")
        out["rayipy_uncommitted_changes"] = dirty.splitlines() if dirty else []
    return out


def parent_main(args):
    try:
        import psutil
    except ImportError:
        sys.exit("psutil is needed: run with the venv python (see benchmarks/README.md)")
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    for s in systems:
        if s not in SYSTEM_ORDER:
            sys.exit(f"unknown system {s!r}; known: {', '.join(SYSTEM_ORDER)}")
    # the baselines are always measured in the same run; the pool runs right before rayipy
    systems = [s for s in SYSTEM_ORDER if s in systems or s in BASELINES]
    out_dir = os.path.abspath(args.out_dir or os.path.join(
        tempfile.gettempdir(), "rayipy-core-" + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")))
    log_dir = os.path.join(out_dir, "logs")
    os.makedirs(log_dir, exist_ok=True)
    run_dir = os.path.join(out_dir, "run")
    os.makedirs(run_dir, exist_ok=True)
    subreaper = _set_subreaper()

    env = os.environ.copy()
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["PYTHONUNBUFFERED"] = "1"
    snapshot = None
    if args.rayipy_rev:
        src, sha = rayipy_snapshot(args.rayipy_rev)
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        snapshot = {"rev": args.rayipy_rev, "commit": sha, "dir": src}
        print(f"rayipy from commit {sha[:12]} (snapshot {src})", flush=True)
    provenance = rayipy_provenance(env)
    if snapshot:
        provenance["snapshot"] = snapshot
    results = {"meta": {
        "rayipy": provenance,
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_facts(), "versions": lib_versions(), "quick": args.quick,
        "reps": args.reps or (1 if args.quick else 3), "per_system_timeout_s": args.timeout,
        "subreaper": subreaper, "command": " ".join([sys.executable] + sys.argv)},
        "systems": {}}
    json_path = os.path.join(out_dir, "core-results.json")
    md_path = os.path.join(out_dir, "core-results.md")

    for s in systems:
        out = os.path.join(run_dir, f"{s}.json")
        if os.path.exists(out):
            os.remove(out)
        log = os.path.join(log_dir, f"{s}.log")
        cmd = [sys.executable, SCRIPT, "--child", s, "--out", out] + (["--quick"] if args.quick else []) \
            + (["--reps", str(args.reps)] if args.reps else [])
        print(f"=== {s} ===", flush=True)
        load_before = os.getloadavg()
        t0 = pc()
        tracked, timed_out = {}, False
        with open(log, "w") as lf:
            p = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, env=env, cwd=run_dir,
                                 stdin=subprocess.DEVNULL)
            while p.poll() is None:
                tracked.update(_descendants(psutil, p.pid))
                if pc() - t0 > args.timeout:
                    timed_out = True
                    tracked.update(_descendants(psutil, p.pid))
                    p.kill()
                    p.wait()
                    break
                time.sleep(0.5)
        wall = pc() - t0
        time.sleep(2.0)
        tracked.update(_descendants(psutil, os.getpid()))   # orphans re-parented to us
        left = _kill_pids(psutil, tracked)
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
        time.sleep(2.0)

    with open(json_path, "w") as f:
        json.dump(results, f, indent=1, default=str)
    md = render_md(results)
    with open(md_path, "w") as f:
        f.write(md)
    print()
    print(md)
    print(f"wrote {json_path}\nwrote {md_path}\nlogs: {log_dir}")
    return 0


# ----------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------


def _f(v, unit):
    if v is None:
        return "n/a"
    if unit in ("us", "tasks/s", "calls/s"):
        return f"{v:,.0f}"
    if unit == "MiB":
        return f"{v:+.1f}"
    if unit == "x":
        return f"{v:.3f}"   # three places: the 1.03 goal needs them
    return f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}"


# Issue 11's goals, stated as ratios of rayipy's figure to the pool's in the same run:
# key -> (goal text, check on the ratio rayipy / pool)
POOL_GOALS = {
    "rtt_p50_us": ("≤ 1.00 (no worse)", lambda r: r <= 1.0),
    "main_throughput_tps": ("≥ 0.80", lambda r: r >= 0.8),
    "sleep1ms_wall_s": ("≤ 1.03", lambda r: r <= 1.03),
}

# (key, label, unit, goal text, goal check (value -> bool) or None)
ROWS = [
    ("cold_start_s", "d. cold start: init() → first result, s (fresh process)", "s", "≤ 0.5", lambda v: v <= 0.5),
    ("import_s", "   import, s (info, not in cold start)", "s", "", None),
    ("rtt_p50_us", "a. no-op task round trip p50, µs", "us", "≤ 400", lambda v: v <= 400),
    ("rtt_p99_us", "   no-op task round trip p99, µs (info)", "us", "", None),
    ("rtt_over_zmq", "a. round trip p50 ÷ raw zmq DEALER/ROUTER p50", "x", "", None),
    ("main_throughput_tps", "b. 10k no-op tasks (__main__ fn), tasks/s (higher is better)", "tasks/s",
     "≥ 15,000", lambda v: v >= 15000),
    ("main_submit_rate_tps", "   10k submit rate, tasks/s (info)", "tasks/s", "", None),
    ("pool_map_tps", "   pool.map over 10k items (batched in chunks), tasks/s (info, pool only)", "tasks/s",
     "", None),
    ("sleep1ms_wall_s", "c. 10k × sleep(1 ms), wall s (ideal 5.0), after a–b on the same cluster", "s",
     "≤ 5.75", lambda v: v <= 5.75),
    ("sleep1ms_fresh_wall_s", "   same on a fresh cluster, wall s (info)", "s", "", None),
    ("mem_driver_growth_MiB", "e. driver RSS growth over 100k tasks, MiB", "MiB", "≤ 50", lambda v: v <= 50),
    ("mem_head_growth_MiB", "e. head RSS growth (rayipy head / Ray gcs_server), MiB", "MiB", "≤ 50",
     lambda v: v <= 50),
    ("mem_node_growth_MiB", "   node process RSS growth (rayipy agent / Ray raylet), MiB (info)", "MiB", "", None),
    ("mem_workers_growth_MiB", "   workers' RSS growth, sum, MiB (info)", "MiB", "", None),
    ("mem_batched_tps", "   100k tasks in batches of 1,000, tasks/s (info)", "tasks/s", "", None),
    ("actor_p50_us", "f. sequential actor call p50, µs", "us", "≤ 300", lambda v: v <= 300),
    ("actor_p99_us", "   actor call p99, µs (info)", "us", "", None),
    ("actor_pipelined_cps", "f. 10k pipelined calls on one actor, calls/s", "calls/s", "≥ 10,000",
     lambda v: v >= 10000),
    ("actor_create_s", "f. actor creation to first call, s", "s", "≤ 0.3", lambda v: v <= 0.3),
    ("generator_10k_yields_s", "g. generator task of 10,000 yields, all got, s (info)", "s", "", None),
]


def render_md(results):
    meta = results["meta"]
    m = meta["machine"]
    sysres = results["systems"]

    def g(s, key, field="median"):
        f = sysres.get(s, {}).get("figures", {}).get(key)
        return None if f is None else f.get(field)

    zmq_p50 = g("zmq", "zmq_rtt_p50_us")
    for s in ("pool", "rayipy", "ray"):
        if s in sysres:
            v = g(s, "rtt_p50_us")
            if v is not None and zmq_p50:
                sysres[s].setdefault("figures", {})["rtt_over_zmq"] = {"median": v / zmq_p50, "unit": "x"}

    L = ["# rayipy core figures: rayipy vs multiprocessing.Pool(2) and Ray, same run\n"]
    L.append(f"Date (UTC): {meta['date_utc']}  ")
    L.append(f"Machine: nproc={m['nproc']}, {m['cpu_model']}, Python {m['python']}  ")
    L.append("Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + "  ")
    prov = meta.get("rayipy", {})
    if prov.get("snapshot"):
        L.append(f"rayipy measured: commit `{prov['snapshot']['commit'][:12]}` "
                 f"(`--rayipy-rev {prov['snapshot']['rev']}`, a frozen copy in {prov['snapshot']['dir']})  ")
    elif prov:
        dirty = prov.get("rayipy_uncommitted_changes")
        L.append(f"rayipy measured: the working tree at {prov.get('rayipy_root')}"
                 + (f", HEAD `{prov['git_head'][:12]}`" if prov.get("git_head") else "")
                 + (f", with uncommitted changes in rayipy/: {', '.join(dirty)}" if dirty else "")
                 + "  ")
    L.append(f"Method: median of {meta['reps']} reps per figure (memory: 1 run; cold start: "
             f"{sysres.get('rayipy', sysres.get('ray', {})).get('params', {}).get('cold_reps', '?')} fresh processes); "
             "2 workers; each system in its own driver process, one after another. "
             f"Rerun: `{meta['command']}`"
             + ("  \n**QUICK MODE (smoke run: small counts, not goal figures)**" if meta.get("quick") else "") + "\n")

    L.append("## Raw zmq baseline (same run)\n")
    L.append("| figure | µs |")
    L.append("|---|---|")
    for key, label in (("zmq_rtt_p50_us", "DEALER → ROUTER echo → DEALER, 2 processes, p50"),
                       ("zmq_rtt_p99_us", "same, p99"),
                       ("zmq_relay_rtt_p50_us", "client DEALER → ROUTER relay → worker DEALER and back, "
                                                "3 processes, p50 (info: the shape of a head-centred round trip)"),
                       ("zmq_relay_rtt_p99_us", "same, p99")):
        L.append(f"| {label} | {_f(g('zmq', key), 'us')} |")

    L.append("\n## rayipy vs multiprocessing.Pool(2) and Ray\n")
    L.append("The pool is the same-machine limit (pipes, no scheduler, no ownership); issue 11 states "
             "its goals as rayipy ÷ pool, measured in one run. For tasks/s a ratio above 1 is better "
             "for rayipy; for times and µs, below 1.\n")
    L.append("| figure | rayipy | pool | Ray | rayipy ÷ pool | rayipy ÷ Ray | goal (rayipy) "
             "| meets | goal (rayipy ÷ pool) | meets |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")

    def ratio(a, b, unit):
        # growths (MiB) and figures that are ratios already give no meaningful ratio
        return a / b if a is not None and b not in (None, 0) and unit not in ("MiB", "x") else None

    def verdict(value, check, key):
        if value is None:
            err = _error_for(sysres.get("rayipy", {}), key) or _error_for(sysres.get("pool", {}), key)
            return "not measured" + (f" ({err})" if err else "")
        return "yes" if check(value) else "**NO**"

    for key, label, unit, goal, check in ROWS:
        a, p, b = g("rayipy", key), g("pool", key), g("ray", key)
        r_pool, r_ray = ratio(a, p, unit), ratio(a, b, unit)
        meets = verdict(a, check, key) if check is not None else ""
        pool_goal, pool_meets = "", ""
        if key in POOL_GOALS:
            pool_goal, pool_check = POOL_GOALS[key]
            pool_meets = verdict(r_pool, pool_check, key)
        L.append(f"| {label} | {_f(a, unit)} | {_f(p, unit)} | {_f(b, unit)} | {_f(r_pool, 'x')} "
                 f"| {_f(r_ray, 'x')} | {goal} | {meets} | {pool_goal} | {pool_meets} |")

    for s in ("rayipy", "ray"):
        md = sysres.get(s, {}).get("memory_detail")
        if md:
            L.append(f"\n{s} memory detail: {md['tasks']:,} tasks in {md['wall_s']:.1f} s; RSS MiB base → end (peak): "
                     f"driver {md['rss_base_MiB']['driver']:.1f} → {md['rss_end_MiB']['driver']:.1f} "
                     f"({md['rss_peak_MiB']['driver']:.1f}), head {md['rss_base_MiB']['head']:.1f} → "
                     f"{md['rss_end_MiB']['head']:.1f} ({md['rss_peak_MiB']['head']:.1f}), node "
                     f"{md['rss_base_MiB']['node']:.1f} → {md['rss_end_MiB']['node']:.1f}; workers at start "
                     f"{len(md['workers_at_start'])}, at end {len(md['workers_at_end'])}.")

    L.append("\n## Run notes (automatic)\n")
    any_note = False
    for s, r in sysres.items():
        bits = []
        if r.get("errors"):
            bits.append("errors: " + "; ".join(f"{k}: `{str(v)[:600]}`" for k, v in r["errors"].items()))
        if r.get("timed_out"):
            bits.append("child hit the per-system timeout and was killed")
        if r.get("exit_code") not in (0, None):
            bits.append(f"child exit code {r.get('exit_code')}")
        if r.get("killed_leftovers"):
            bits.append(f"killed leftovers by PID: {r['killed_leftovers']}")
        if r.get("loadavg_1m_before_after"):
            bits.append("1-min load average before/after: %s/%s (other work on the machine shows here)"
                        % tuple(r["loadavg_1m_before_after"]))
        if r.get("cold_start_stderr"):
            bits.append(f"cold-start processes wrote to stderr ({len(r['cold_start_stderr'])} of them); "
                        f"first: `{r['cold_start_stderr'][0].strip().splitlines()[-1][:200]}`")
        if bits:
            any_note = True
            L.append(f"- **{s}** (wall {r.get('wall_s', 0):.0f} s, {r.get('processes_seen', '?')} processes seen): "
                     + "; ".join(bits))
    if not any_note:
        L.append("- none")
    return "\n".join(L) + "\n"


def _error_for(r, key):
    errs = r.get("errors", {})
    prefix = {"rtt": "rtt", "main": "throughput", "sleep": "sleep1ms", "mem": "memory",
              "actor": "actor", "cold": "cold_start", "import": "import"}
    for p, label in prefix.items():
        if key.startswith(p):
            for k, v in errs.items():
                if k.split(":")[0] == label:
                    return str(v)[:200].replace("|", "/")
    return ""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", default="rayipy,ray", help="comma list of rayipy,ray (default both); "
                                                            "the baselines zmq and pool always run")
    ap.add_argument("--reps", type=int, default=0, help="repetitions per figure (default 3; --quick: 1)")
    ap.add_argument("--quick", action="store_true", help="smaller counts, for a smoke test")
    ap.add_argument("--timeout", type=float, default=1800.0, help="per-system wall limit, seconds")
    ap.add_argument("--out-dir", help="default /tmp/rayipy-core-<UTC date>")
    ap.add_argument("--report-only", action="store_true", help="re-render core-results.md from the json")
    ap.add_argument("--rayipy-rev", help="measure rayipy as committed at this git revision (e.g. HEAD): "
                                         "a frozen copy goes first on PYTHONPATH, so commits or edits made "
                                         "by others during the run do not mix into it")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--cold-once", help=argparse.SUPPRESS)
    ap.add_argument("--zmq-helper", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.zmq_helper:
        zmq_echo_main(args.zmq_helper)
        return 0
    if args.cold_once:
        return cold_once_main(args.cold_once)
    if args.child:
        return child_main(args)
    if args.report_only:
        if not args.out_dir:
            sys.exit("--report-only needs --out-dir")
        with open(os.path.join(args.out_dir, "core-results.json")) as f:
            res = json.load(f)
        md = render_md(res)
        with open(os.path.join(args.out_dir, "core-results.md"), "w") as f:
            f.write(md)
        print(md)
        return 0
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
