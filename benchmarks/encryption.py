#!/usr/bin/env python3
"""encryption.py -- what encryption costs: rayipy with RAYIPY_ENCRYPT=always against
never, beside Ray with TLS on against off, interleaved in one run on this machine.

    /work/peers-venv/bin/python benchmarks/encryption.py                # 5 rounds, ~6 min
    /work/peers-venv/bin/python benchmarks/encryption.py --quick        # smoke run, ~1 min
    /work/peers-venv/bin/python benchmarks/encryption.py --md benchmarks/results/encryption.md

Sides (each round runs every side once, each in a fresh Python process with fresh
clusters; the order is reversed every other round, so drift of the machine does not
always favour the same side):

  rayipy-never    RAYIPY_ENCRYPT=never (no connection encrypted)
  rayipy-always   RAYIPY_ENCRYPT=always (every connection encrypted, loopback and Unix
                  sockets too: within one machine, only ``always`` encrypts)
  ray-plain       RAY_USE_TLS=0
  ray-tls         RAY_USE_TLS=1 with RAY_TLS_SERVER_CERT, RAY_TLS_SERVER_KEY and
                  RAY_TLS_CA_CERT: a CA and a node certificate (RSA 2048, signed by that CA,
                  for localhost, 127.0.0.1 and this machine's addresses) made by this script
                  with ``cryptography`` into a temporary directory, deleted at the end. Ray
                  then speaks TLS (mutual, the CA checks both ends) on every gRPC channel,
                  loopback included.
  cipher          no cluster: the raw limits of the primitives on this CPU.

Figures of the four cluster sides (task functions and the actor class live in
``__main__``, so both systems pickle them by value, as from a notebook):

  start       init() to the first result of a 2-CPU one-node cluster, s (context: the
              handshakes of every first connection are in it)
  rtt         no-op task round trip p50, us: 2000 sequential ``get(f.remote())`` after 200
  tput        10,000 no-op tasks submitted one by one, then one ``get(list)``: tasks/s
  actor       actor call round trip p50, us: 2000 sequential ``get(h.inc.remote())`` after 200
  put_local   ``put`` of a 100 MB float64 array, then a task on the same node summing it,
              until its result: s. Both systems hand such a value over in shared memory
              (rayipy's node store, Ray's plasma): the bytes cross no socket, so neither
              encrypts them. Shown to prove that.
  put_remote  the same with the task on a second node of the same machine: its store
              pulls the 100 MB from the driver's node over TCP on loopback (rayipy:
              STORE_READ/STORE_DATA between the two stores; Ray: the object manager's
              gRPC), the path that encryption covers.
  ret_remote  a task on the second node makes a 100 MB array (``np.ones``) and returns
              it; until the driver has it (pulled back over the same kind of link): s

The first four run on ``init(num_cpus=2)``; put_remote and ret_remote on a second
cluster: the driver's node with 1 CPU, and a second node with 1 CPU and the resource
``side`` (rayipy: a second node agent joining the driver's cluster on 127.0.0.1, as
``tests/integration/test_nodes.py`` does; Ray: ``ray.cluster_utils.Cluster`` with a head
and one added node). Each 100 MB figure is the median of 7 after a warm-up (their
samples are bimodal: fresh pages or reused ones).

With rtt, tput, actor and each 100 MB figure comes the CPU time that every process of
the side (the driver and its descendants: the whole cluster of either engine) spent on
it, per call, task or transfer, from psutil before and after all the calls of the
figure. On 2 cores shared with other work, the CPU time moves less than the wall time,
and it shows the cost of encryption even where the work overlaps on the two cores and
the wall time hides it.

Each side also checks that its setting took: rayipy's driver counts the AES keys it made
(an encrypted session makes two; ``never`` must make none), and for Ray the script opens
a TLS connection, with the benchmark's CA and certificate, to the GCS port: it must
succeed under TLS and fail in plain mode.

Figures of ``cipher``, in MB/s (10^6 bytes) over a 100 MB buffer, all in this process on
one core: memcpy (numpy copyto into written memory), AES-256-CTR as rayipy runs it
(``protocol/cipher.FrameCipher``, 1 MiB pieces), HMAC-SHA256, keyed BLAKE3 (what
``protocol/wire.py`` feeds a frame over 64 KiB into the MAC), AES-256-CTR + HMAC-SHA256
(encrypt-then-MAC in one pass over each piece), AES-256-CTR + keyed BLAKE3 (what a large
rayipy frame costs its sender: the cipher, then the MAC's digest); and, in us, a small
message (a 100-byte body) signed in clear, and encrypted and signed
(``wire.sign_frames``). The cipher writes each 1 MiB piece into a buffer that stays in
the CPU's cache, where memcpy writes 100 MB to memory: AES-256-CTR can come out above
memcpy.

Ratios reported: encrypted/plain for each engine (the median over the rounds of each,
and the range of the per-round ratio: the noise), and rayipy/Ray for the plain sides and
for the encrypted ones. For times (us, s) a ratio above 1 is slower; for tasks/s and MB/s
a ratio below 1 is.

The parent makes itself a child subreaper, records every process a child starts, bounds
each child (--timeout) and each figure (SIGALRM), and afterwards kills leftovers by PID
(never ``ray stop``, which would also stop clusters of other users of the machine); each
child shuts down its own clusters first (``rayipy.shutdown()``, ``ray.shutdown()`` and
``Cluster.shutdown()``), in ``finally`` blocks. The machine's load is recorded: the
1-minute load average before each child, and the CPU share that processes outside this
run took, sampled over one second before each round and at the end.

rayipy is measured as a frozen copy of a commit (``--rayipy-rev``, default HEAD; the
same ``git archive`` copy as core.py's), first on PYTHONPATH of every process. Output:
encryption-results.{json,md} in --out-dir (default /tmp/rayipy-encryption-<UTC date>),
logs/ there; ``--md FILE`` writes a copy of the markdown.
"""

import argparse
import datetime
import gc
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import core  # noqa: E402 -- benchmarks/core.py: snapshots, process tracking, Recorder helpers

pc = time.perf_counter
SCRIPT = os.path.abspath(__file__)
N_WORKERS = 2
MB = 1_000_000
CLUSTER_SIDES = ["rayipy-never", "rayipy-always", "ray-plain", "ray-tls"]
CIPHER = "cipher"
SAMPLES = 7   # per 100 MB figure and child, after a warm-up: their pages make them bimodal

# (key, label, unit, higher is better); each *_cpu row comes with the figure before it
FIGURES = [
    ("start", "cluster start to first result (1 node, 2 CPUs), s", "s", False),
    ("rtt", "no-op task round trip p50, µs", "us", False),
    ("rtt_cpu", "   CPU µs per round trip, all processes", "us", False),
    ("tput", "10k no-op tasks (one by one, then get(list)), tasks/s", "tasks/s", True),
    ("tput_cpu", "   CPU µs per task, all processes", "us", False),
    ("actor", "actor call round trip p50, µs", "us", False),
    ("actor_cpu", "   CPU µs per call, all processes", "us", False),
    ("put_local", "100 MB put + task reading it, same node (shared memory), s", "s", False),
    ("put_local_cpu", "   CPU s per transfer, all processes", "s", False),
    ("put_remote", "100 MB put + task reading it on the other node (pulled over TCP), s", "s",
     False),
    ("put_remote_cpu", "   CPU s per transfer, all processes", "s", False),
    ("ret_remote", "100 MB made on the other node, got by the driver (pulled over TCP), s", "s",
     False),
    ("ret_remote_cpu", "   CPU s per transfer, all processes", "s", False),
]
CIPHER_FIGURES = [
    ("memcpy", "memcpy (numpy copyto), MB/s", "MB/s", True),
    ("aes_ctr", "AES-256-CTR (FrameCipher, 1 MiB pieces), MB/s", "MB/s", True),
    ("hmac_sha256", "HMAC-SHA256, MB/s", "MB/s", True),
    ("blake3", "keyed BLAKE3 (wire's large-frame digest), MB/s", "MB/s", True),
    ("aes_hmac", "AES-256-CTR + HMAC-SHA256 (encrypt-then-MAC), MB/s", "MB/s", True),
    ("aes_blake3", "AES-256-CTR + keyed BLAKE3 (rayipy's large frames), MB/s", "MB/s", True),
    ("small_clear", "100-byte message signed, in clear, µs", "us", False),
    ("small_sealed", "100-byte message encrypted + signed, µs", "us", False),
]

# ----------------------------------------------------------------------------------
# Task functions and the actor class: in __main__ on purpose (the child runs this file
# as a script), so both systems pickle them by value, as for a notebook.
# ----------------------------------------------------------------------------------


def main_noop():
    return None


def main_ping():
    return 1


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
# The two engines behind one small interface
# ----------------------------------------------------------------------------------


def _wait_for(condition, timeout, message):
    """Poll ``condition`` until true; RuntimeError with ``message`` past ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(message)
        time.sleep(0.05)


class RayipyEngine:
    """rayipy from the frozen copy first on PYTHONPATH; RAYIPY_ENCRYPT comes from the
    environment the parent gave this child."""

    def __init__(self):
        import rayipy
        from rayipy.protocol import cipher
        self.lib = rayipy
        self.imported_from = os.path.dirname(os.path.abspath(rayipy.__file__))
        self.aes_keys = 0
        original = cipher.FrameCipher.__init__
        engine = self

        def counting_init(cipher_self, key):
            engine.aes_keys += 1   # the proof that this driver's sessions are encrypted
            original(cipher_self, key)
        cipher.FrameCipher.__init__ = counting_init
        self.agent = None

    def start_one(self):
        self.lib.init(num_cpus=N_WORKERS)

    def start_two(self):
        """The driver's node with 1 CPU and a second node agent with 1 CPU and ``side``."""
        from rayipy import session
        self.lib.init(num_cpus=1)
        cluster = session._cluster
        env = dict(os.environ, RAYIPY_CLUSTER_KEY=cluster.key.hex())
        self.agent = subprocess.Popen(
            [sys.executable, "-m", "rayipy.node.agent", "--head", cluster.address,
             "--num-cpus", "1", "--resources", json.dumps({"side": 1}),
             "--node-id", os.urandom(8).hex(), "--ip", "127.0.0.1"],
            env=env, stdin=subprocess.DEVNULL)
        _wait_for(lambda: len([n for n in self.lib.nodes() if n["Alive"]]) == 2, 60,
                  "the second rayipy node never joined")

    def remote(self, obj, side=False):
        r = self.lib.remote(obj)
        return r.options(resources={"side": 1}) if side else r

    def get(self, refs):
        return self.lib.get(refs)

    def put(self, value):
        return self.lib.put(value)

    def stop(self):
        try:
            self.lib.shutdown()
        finally:
            if self.agent is not None:
                self._stop_agent()

    def _stop_agent(self):
        """The joined agent leaves with the cluster's shutdown; if it has not within 10 s,
        it and its workers are stopped by PID."""
        import psutil
        agent, self.agent = self.agent, None
        try:
            agent.wait(10)
            return
        except subprocess.TimeoutExpired:
            pass
        try:
            family = [psutil.Process(agent.pid)] + psutil.Process(agent.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            family = []
        for p in family:
            try:
                p.terminate()
            except psutil.Error:
                pass
        _, still = psutil.wait_procs(family, timeout=5)
        for p in still:
            try:
                p.kill()
            except psutil.Error:
                pass
        agent.wait(10)

    def encryption_evidence(self):
        want = os.environ.get("RAYIPY_ENCRYPT")
        ok = self.aes_keys > 0 if want == "always" else self.aes_keys == 0
        return ok, f"RAYIPY_ENCRYPT={want}: the driver made {self.aes_keys} AES session keys"


class RayEngine:
    """Ray; TLS or not comes from the environment the parent gave this child."""

    def __init__(self):
        import ray
        self.lib = ray
        self.imported_from = os.path.dirname(os.path.abspath(ray.__file__))
        self.cluster = None
        self.probe = None

    def start_one(self):
        self.lib.init(num_cpus=N_WORKERS, include_dashboard=False)
        self._probe()

    def start_two(self):
        from ray.cluster_utils import Cluster
        self.cluster = Cluster(initialize_head=True,
                               head_node_args={"num_cpus": 1, "include_dashboard": False})
        self.cluster.add_node(num_cpus=1, resources={"side": 1})
        self.lib.init(address=self.cluster.address)
        self.cluster.wait_for_nodes()

    def remote(self, obj, side=False):
        r = self.lib.remote(obj)
        return r.options(resources={"side": 1}) if side else r

    def get(self, refs):
        return self.lib.get(refs)

    def put(self, value):
        return self.lib.put(value)

    def stop(self):
        try:
            self.lib.shutdown()
        finally:
            if self.cluster is not None:
                cluster, self.cluster = self.cluster, None
                cluster.shutdown()

    def _probe(self):
        """Whether the GCS port answers a TLS handshake made with the benchmark's CA and
        certificate (it does only when Ray runs with TLS)."""
        ca = os.environ.get("BENCH_TLS_CA_CERT")
        try:
            address = self.lib._private.worker.global_worker.node.gcs_address
            host, port = address.rsplit(":", 1)
        except Exception as e:  # noqa: BLE001 -- a probe that cannot run says so, no more
            self.probe = (None, f"no GCS address to probe: {type(e).__name__}: {e}")
            return
        if not ca:
            self.probe = (None, "no certificate to probe with")
            return
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(ca)
        ctx.load_cert_chain(os.environ["BENCH_TLS_CERT"], os.environ["BENCH_TLS_KEY"])
        ctx.set_alpn_protocols(["h2"])
        try:
            with socket.create_connection((host, int(port)), timeout=5) as raw:
                with ctx.wrap_socket(raw) as tls:
                    self.probe = (True, f"TLS handshake with the GCS at {address}: {tls.version()}, "
                                        f"{tls.cipher()[0]}")
        except (OSError, ssl.SSLError) as e:
            self.probe = (False, f"no TLS handshake with the GCS at {address}: {type(e).__name__}")

    def encryption_evidence(self):
        want = os.environ.get("RAY_USE_TLS") == "1"
        if self.probe is None or self.probe[0] is None:
            return None, "not probed"
        return self.probe[0] == want, f"RAY_USE_TLS={int(want)}: {self.probe[1]}"


# ----------------------------------------------------------------------------------
# Child: one side, one round, every figure once
# ----------------------------------------------------------------------------------


def cpu_seconds():
    """{pid: user+system CPU seconds} of this process and all its descendants (the whole
    cluster: both engines start theirs below the driver)."""
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


def cpu_spent(before, after):
    """CPU seconds spent between two cpu_seconds() snapshots. CPU time does not count
    waiting for a core that other work holds: the figure least moved by the machine's load."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


def median_of(one, key, n=SAMPLES):
    """One warm-up, then the median of ``n`` timed calls of ``one``, with the mean CPU
    seconds of every process per call as ``<key>_cpu``: taken over all ``n`` calls at
    once, since the kernel counts CPU time in 10 ms ticks (samples kept)."""
    one()
    s = []
    c0 = cpu_seconds()
    for _ in range(n):
        gc.collect()
        t0 = pc()
        one()
        s.append(pc() - t0)
    cpu = cpu_spent(c0, cpu_seconds()) / n
    return statistics.median(s), {"samples_s": [round(x, 4) for x in s],
                                  "derived": {key + "_cpu": cpu}}


def one_node_figures(E, n_lat, n_tasks, arr_n):
    """key -> a function measuring that figure once on the started one-node cluster."""

    def rtt():
        f = E.remote(main_noop)
        for _ in range(200):
            E.get(f.remote())
        s = []
        c0 = cpu_seconds()
        for _ in range(n_lat):
            t0 = pc()
            E.get(f.remote())
            s.append(pc() - t0)
        cpu = cpu_spent(c0, cpu_seconds()) / n_lat * 1e6
        return core.pct(s, 50) * 1e6, {"p99_us": core.pct(s, 99) * 1e6, "derived": {"rtt_cpu": cpu}}

    def tput():
        f = E.remote(main_noop)
        E.get([f.remote() for _ in range(1000)])   # warm-up
        c0 = cpu_seconds()
        t0 = pc()
        refs = [f.remote() for _ in range(n_tasks)]
        out = E.get(refs)
        wall = pc() - t0
        cpu = cpu_spent(c0, cpu_seconds()) / n_tasks * 1e6
        assert len(out) == n_tasks and out[0] is None
        return n_tasks / wall, {"derived": {"tput_cpu": cpu}}

    def actor():
        h = E.remote(MainCounter).remote()
        first = E.get(h.inc.remote())
        for _ in range(200):
            E.get(h.inc.remote())
        s = []
        c0 = cpu_seconds()
        for _ in range(n_lat):
            t0 = pc()
            last = E.get(h.inc.remote())
            s.append(pc() - t0)
        cpu = cpu_spent(c0, cpu_seconds()) / n_lat * 1e6
        assert last == first + 200 + n_lat, (first, last)
        return core.pct(s, 50) * 1e6, {"p99_us": core.pct(s, 99) * 1e6, "derived": {"actor_cpu": cpu}}

    def put_local():
        import numpy as np
        a = np.ones(arr_n)
        f = E.remote(main_arr_sum)

        def one():
            ref = E.put(a)
            assert E.get(f.remote(ref)) == float(arr_n)
            del ref
        return median_of(one, "put_local")

    return {"rtt": rtt, "tput": tput, "actor": actor, "put_local": put_local}


def two_node_figures(E, arr_n):
    """key -> a function measuring that figure once on the started two-node cluster."""

    def put_remote():
        import numpy as np
        a = np.ones(arr_n)
        f = E.remote(main_arr_sum, side=True)

        def one():
            ref = E.put(a)
            assert E.get(f.remote(ref)) == float(arr_n)
            del ref
        return median_of(one, "put_remote")

    def ret_remote():
        f = E.remote(main_make_array, side=True)

        def one():
            v = E.get(f.remote(arr_n))
            assert v.shape == (arr_n,)
            del v
        return median_of(one, "ret_remote")

    return {"put_remote": put_remote, "ret_remote": ret_remote}


class ChildRecord:
    """The child's results, saved after every change (a crash loses nothing)."""

    def __init__(self, side, out):
        self.out = out
        self.res = {"side": side, "figures": {}, "pid": os.getpid()}

    def save(self):
        tmp = self.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.res, f, indent=1, default=str)
        os.replace(tmp, self.out)

    def record(self, key, value, extra):
        for k, v in extra.pop("derived", {}).items():
            self.res["figures"][k] = {"value": v}
        self.res["figures"][key] = dict(value=value, **extra)
        self.save()
        print(f"[{self.res['side']}] {key}: {value}", flush=True)

    def measure(self, key, fn, timeout):
        """Run one figure under a SIGALRM bound; an error is recorded with its text.
        True if it gave a value."""
        signal.alarm(int(timeout))
        try:
            value, extra = fn()
            signal.alarm(0)
            self.record(key, value, extra)
            return True
        except Exception as e:  # noqa: BLE001 -- record it, go on with the next figure
            signal.alarm(0)
            self.record(key, None, {"error": f"{type(e).__name__}: {e}",
                                    "traceback": traceback.format_exc()})
            return False
        finally:
            signal.alarm(0)
            gc.collect()


def run_phase(rec, E, start, figures, keys, start_key=None):
    """Start a cluster, measure ``keys`` on it, and stop it whatever happens. A cluster
    that cannot start measures nothing: its figures get the error, the next phase runs."""
    signal.alarm(180)
    try:
        t0 = pc()
        start()
        ping = E.remote(main_ping)
        assert E.get([ping.remote() for _ in range(4 * N_WORKERS)]) == [1] * (4 * N_WORKERS)
        if start_key:
            rec.record(start_key, pc() - t0, {})
    except BaseException as e:  # noqa: BLE001 -- recorded; only Ctrl-C goes further
        signal.alarm(0)
        for key in ([start_key] if start_key else []) + keys:
            rec.record(key, None, {"error": f"start failed: {type(e).__name__}: {e}"})
        signal.alarm(120)
        try:
            E.stop()
        finally:
            signal.alarm(0)
        if isinstance(e, KeyboardInterrupt):
            raise
        return
    finally:
        signal.alarm(0)
    try:
        for key in keys:
            rec.measure(key, figures[key], 300)
    finally:
        signal.alarm(120)
        try:
            E.stop()
        finally:
            signal.alarm(0)


def cipher_figures(arr_n):
    """The cipher side: rayipy's primitives on a 100 MB buffer, this process, one core."""
    import numpy as np
    from rayipy.protocol import cipher, wire
    from rayipy.protocol.kinds import Kind
    piece = cipher.PIECE_BYTES
    src = np.ones(arr_n)
    dst = np.empty_like(src)
    dst.fill(0.0)   # written pages: a copy, not page faults
    data = memoryview(src).cast("B")
    nbytes = data.nbytes
    fc = cipher.FrameCipher(os.urandom(32))
    signer = wire.Signer(os.urandom(32))

    def aes():
        for off in range(0, nbytes, piece):
            fc.apply_piece(7, 1, off, data[off:off + piece])

    def hmac_pass():
        h = signer.start()
        for off in range(0, nbytes, piece):
            h.update(data[off:off + piece])
        h.digest()

    def blake_pass():
        h = signer.frame_hasher()
        for off in range(0, nbytes, piece):
            h.update(data[off:off + piece])
        h.digest()

    def aes_hmac():
        h = signer.start()
        for off in range(0, nbytes, piece):
            h.update(fc.apply_piece(7, 1, off, data[off:off + piece]))
        h.digest()

    def aes_blake():
        h = signer.frame_hasher()
        for off in range(0, nbytes, piece):
            h.update(fc.apply_piece(7, 1, off, data[off:off + piece]))
        h.digest()

    def rate(fn):
        fn()
        s = []
        for _ in range(5):
            t0 = pc()
            fn()
            s.append(pc() - t0)
        return nbytes / statistics.median(s) / MB, {"samples_s": [round(x, 5) for x in s]}

    body = os.urandom(100)

    def per_message(seal):
        def run():
            n = 20_000
            for seq in range(1, 200):
                wire.sign_frames(signer, Kind.TASK_DONE, body, [], seq, seal)
            t0 = pc()
            for seq in range(1, n + 1):
                wire.sign_frames(signer, Kind.TASK_DONE, body, [], seq, seal)
            return (pc() - t0) / n * 1e6, {}
        return run

    return {
        "memcpy": lambda: rate(lambda: np.copyto(dst, src)),
        "aes_ctr": lambda: rate(aes),
        "hmac_sha256": lambda: rate(hmac_pass),
        "blake3": lambda: rate(blake_pass),
        "aes_hmac": lambda: rate(aes_hmac),
        "aes_blake3": lambda: rate(aes_blake),
        "small_clear": per_message(None),
        "small_sealed": per_message(fc),
    }


def child_main(args):
    rec = ChildRecord(args.side, args.out)
    signal.signal(signal.SIGALRM, core._alarm)
    arr_n = args.mb * MB // 8
    if args.side == CIPHER:
        import rayipy
        rec.res["imported_from"] = os.path.dirname(os.path.abspath(rayipy.__file__))
        for key, fn in cipher_figures(arr_n).items():
            rec.measure(key, fn, 120)
        return 0
    E = RayipyEngine() if args.side.startswith("rayipy") else RayEngine()
    rec.res["imported_from"] = E.imported_from
    if args.side.startswith("rayipy") and args.expect_dir \
            and not E.imported_from.startswith(args.expect_dir + os.sep):
        rec.res["error"] = f"rayipy imported from {E.imported_from}, not from {args.expect_dir}"
        rec.save()
        return 2
    rec.save()
    try:
        run_phase(rec, E, E.start_one, one_node_figures(E, args.n_lat, args.n_tasks, arr_n),
                  ["rtt", "tput", "actor", "put_local"], start_key="start")
        run_phase(rec, E, E.start_two, two_node_figures(E, arr_n), ["put_remote", "ret_remote"])
    finally:
        ok, text = E.encryption_evidence()
        rec.res["encryption_check"] = {"ok": ok, "evidence": text}
        rec.save()
        print(f"[{args.side}] encryption check: {ok}: {text}", flush=True)
    return 0


# ----------------------------------------------------------------------------------
# Parent: certificates, rounds of children, process tracking, report
# ----------------------------------------------------------------------------------


def machine_addresses():
    """This machine's addresses that a Ray node may use, for the certificate's names."""
    found = {"127.0.0.1"}
    try:
        found.add(socket.gethostbyname(socket.gethostname()))
    except OSError:
        pass
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))   # no packet leaves: only picks the route's address
            found.add(s.getsockname()[0])
    except OSError:
        pass
    return sorted(found)


def make_tls_files(directory):
    """A CA and a node certificate signed by it (RSA 2048, SHA-256, one day), for every
    address of this machine; Ray uses the node certificate as server and as client.
    Returns {'ca', 'cert', 'key'}: paths in ``directory``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    now = datetime.datetime.now(datetime.timezone.utc)
    valid = dict(not_valid_before=now - datetime.timedelta(minutes=5),
                 not_valid_after=now + datetime.timedelta(days=1))
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rayipy benchmark CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(valid["not_valid_before"]).not_valid_after(valid["not_valid_after"])
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    addresses = machine_addresses()
    # IP entries for clients that check them; the same as DNS names, as Ray's own test
    # certificates do, for gRPC targets written as IPs.
    names = [x509.DNSName("localhost")] + [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses] \
        + [x509.DNSName(a) for a in addresses]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ray-node")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(valid["not_valid_before"]).not_valid_after(valid["not_valid_after"])
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {"ca": os.path.join(directory, "ca.crt"), "cert": os.path.join(directory, "node.crt"),
             "key": os.path.join(directory, "node.key")}
    with open(paths["ca"], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths["cert"], "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(paths["key"], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return paths


def side_env(side, base, tls):
    """The environment of one side's child: only that side's setting."""
    env = {k: v for k, v in base.items()
           if k != "RAYIPY_ENCRYPT" and not k.startswith(("RAY_USE_TLS", "RAY_TLS_", "BENCH_TLS_"))}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["PYTHONUNBUFFERED"] = "1"
    if side.startswith("rayipy"):
        env["RAYIPY_ENCRYPT"] = side.split("-", 1)[1]
    if side.startswith("ray-"):
        env["RAY_USE_TLS"] = "1" if side == "ray-tls" else "0"
        # the probe's credentials, in both modes (plain mode must refuse them)
        env.update(BENCH_TLS_CA_CERT=tls["ca"], BENCH_TLS_CERT=tls["cert"], BENCH_TLS_KEY=tls["key"])
        if side == "ray-tls":
            env.update(RAY_TLS_SERVER_CERT=tls["cert"], RAY_TLS_SERVER_KEY=tls["key"],
                       RAY_TLS_CA_CERT=tls["ca"])
    return env


def others_cpu(psutil, seconds=1.0):
    """Per cent of one core that processes outside this run used over ``seconds``, and the
    top three of them (name: per cent)."""
    mine = {os.getpid()} | {p.pid for p in psutil.Process().children(recursive=True)}
    procs = []
    for p in psutil.process_iter(["name"]):
        if p.pid in mine:
            continue
        try:
            p.cpu_percent(None)
            procs.append(p)
        except psutil.Error:
            pass
    time.sleep(seconds)
    use = []
    for p in procs:
        try:
            use.append((p.cpu_percent(None), p.info["name"]))
        except psutil.Error:
            pass
    use.sort(reverse=True)
    return {"total_pct": round(sum(u for u, _ in use), 1),
            "top": [f"{n}: {u:.0f}%" for u, n in use[:3] if u > 0]}


def run_child(psutil, side, out, log, env, args):
    """One child, bounded by --timeout; every process it started is gone afterwards."""
    cmd = [sys.executable, SCRIPT, "--child", "--side", side, "--out", out, "--n-lat",
           str(args.n_lat), "--n-tasks", str(args.n_tasks), "--mb", str(args.mb)]
    if args.snapshot_dir:
        cmd += ["--expect-dir", args.snapshot_dir]
    if os.path.exists(out):
        os.remove(out)
    load_before = os.getloadavg()[0]
    t0 = pc()
    tracked, timed_out, p = {}, False, None
    try:
        with open(log, "w") as lf:
            p = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, env=env,
                                 stdin=subprocess.DEVNULL,
                                 cwd=tempfile.gettempdir())   # the repository's rayipy/ must not shadow
            while p.poll() is None:
                tracked.update(core._descendants(psutil, p.pid))
                if pc() - t0 > args.timeout:
                    timed_out = True
                    break
                time.sleep(0.2)
    finally:
        if p is not None and p.poll() is None:   # timed out, or we were interrupted
            tracked.update(core._descendants(psutil, p.pid))
            p.kill()
            p.wait()
        wall = pc() - t0
        if p is not None:
            # give the child's own shutdown a moment, then orphans re-parented to us too
            _wait_gone(psutil, tracked, 5.0)
            tracked.update(core._descendants(psutil, os.getpid()))
        left = core._kill_pids(psutil, tracked)
    try:
        with open(out) as f:
            r = json.load(f)
    except (OSError, ValueError):
        r = {"figures": {}, "error": f"no result file; see {log}"}
    r.update(exit_code=p.returncode, wall_s=round(wall, 1), timed_out=timed_out,
             killed_leftovers=left, processes_seen=len(tracked), log=log,
             loadavg_1m_before=round(load_before, 2))
    return r


def _wait_gone(psutil, tracked, timeout):
    """Wait (bounded) until the tracked processes have exited by themselves."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = 0
        for pid, (ct, _name) in tracked.items():
            try:
                q = psutil.Process(pid)
                if abs(q.create_time() - ct) < 0.01 and q.status() != psutil.STATUS_ZOMBIE:
                    alive += 1
            except psutil.Error:
                pass
        if not alive:
            return
        time.sleep(0.1)


def _interrupted(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def uptime_line():
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def parent_main(args):
    try:
        import psutil
    except ImportError:
        sys.exit("psutil is needed: run with the peers venv python (see benchmarks/README.md)")
    out_dir = os.path.abspath(args.out_dir or os.path.join(
        tempfile.gettempdir(), "rayipy-encryption-"
        + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")))
    os.makedirs(os.path.join(out_dir, "logs"), exist_ok=True)
    os.makedirs(os.path.join(out_dir, "run"), exist_ok=True)
    subreaper = core._set_subreaper()
    # SIGTERM (and SIGINT, which a shell's background job ignores) unwind like Ctrl-C, so
    # the finally blocks stop the running child and every process it started.
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGINT, _interrupted)
    base = os.environ.copy()
    src, sha = core.rayipy_snapshot(args.rayipy_rev)
    base["PYTHONPATH"] = src + (os.pathsep + base["PYTHONPATH"] if base.get("PYTHONPATH") else "")
    args.snapshot_dir = src
    print(f"rayipy from commit {sha[:12]} (snapshot {src})", flush=True)
    tls_dir = tempfile.mkdtemp(prefix="rayipy-bench-tls-")
    results = {"meta": {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "rayipy": {"rev": args.rayipy_rev, "commit": sha, "snapshot": src},
        "machine": core.machine_facts(), "versions": core.lib_versions(),
        "rounds": args.rounds, "n_lat": args.n_lat, "n_tasks": args.n_tasks, "mb": args.mb,
        "subreaper": subreaper, "command": " ".join([sys.executable] + sys.argv),
        "uptime_start": uptime_line(), "others_cpu": []}, "rounds": []}
    json_path = os.path.join(out_dir, "encryption-results.json")
    try:
        tls = make_tls_files(tls_dir)
        results["meta"]["tls"] = {"addresses": machine_addresses(),
                                  "files": "CA + node certificate, RSA 2048, SHA-256"}
        for i in range(args.rounds):
            results["meta"]["others_cpu"].append(others_cpu(psutil))
            order = [CIPHER] + (CLUSTER_SIDES if i % 2 == 0 else CLUSTER_SIDES[::-1])
            rnd = {}
            for side in order:
                print(f"=== round {i + 1}/{args.rounds}: {side} ===", flush=True)
                r = run_child(psutil, side, os.path.join(out_dir, "run", f"r{i + 1}-{side}.json"),
                              os.path.join(out_dir, "logs", f"r{i + 1}-{side}.log"),
                              side_env(side, base, tls), args)
                errs = {k: v["error"][:200] for k, v in r["figures"].items() if v.get("error")}
                if r.get("error"):
                    errs["child"] = r["error"]
                print(f"    {r['wall_s']:.1f} s, exit {r['exit_code']}, errors {errs or 'none'}, "
                      f"check {r.get('encryption_check')}, leftovers killed "
                      f"{r['killed_leftovers'] or 'none'}", flush=True)
                rnd[side] = r
            results["rounds"].append(rnd)
            with open(json_path, "w") as f:
                json.dump(results, f, indent=1, default=str)
        results["meta"]["others_cpu"].append(others_cpu(psutil))
    finally:
        shutil.rmtree(tls_dir, ignore_errors=True)
        results["meta"]["uptime_end"] = uptime_line()
        left = core._descendants(psutil, os.getpid())
        results["meta"]["left_running_at_end"] = core._kill_pids(psutil, left)
        with open(json_path, "w") as f:
            json.dump(results, f, indent=1, default=str)
    md = render_md(results)
    for path in [os.path.join(out_dir, "encryption-results.md")] + ([args.md] if args.md else []):
        with open(path, "w") as f:
            f.write(md)
    print()
    print(md)
    print(f"wrote {json_path}\nwrote {os.path.join(out_dir, 'encryption-results.md')}"
          + (f"\nwrote {args.md}" if args.md else "") + f"\nlogs: {os.path.join(out_dir, 'logs')}")
    return 0


# ----------------------------------------------------------------------------------
# Report (pure: results dict in, markdown out)
# ----------------------------------------------------------------------------------


def _fmt(v, unit):
    if v is None:
        return "n/a"
    if unit in ("tasks/s", "MB/s") or (unit == "us" and v >= 100):
        return f"{v:,.0f}"
    if unit == "us":
        return f"{v:.2f}"
    return f"{v:.3f}"


def values(rounds, side, key):
    """The figure ``key`` of ``side`` in each round (None where missing or failed)."""
    return [r.get(side, {}).get("figures", {}).get(key, {}).get("value") for r in rounds]


def ratio_cell(rounds, num_side, den_side, key):
    """'median ratio (min–max of the per-round ratios)' of two sides' figure."""
    a, b = values(rounds, num_side, key), values(rounds, den_side, key)
    ma, mb = core.med(a), core.med(b)
    if not ma or not mb:
        return "n/a"
    per = [x / y for x, y in zip(a, b) if x is not None and y]
    spread = f" ({min(per):.2f}–{max(per):.2f})" if len(per) > 1 else ""
    return f"**{ma / mb:.2f}**{spread}"


def render_md(results):
    meta = results["meta"]
    rounds = results["rounds"]
    m = meta["machine"]
    v = meta["versions"]
    L = ["# Encryption: rayipy (RAYIPY_ENCRYPT=always / never) beside Ray (TLS / plain)\n"]
    L.append(f"- Date (UTC): {meta['date_utc']}; rayipy commit `{meta['rayipy']['commit'][:12]}` "
             f"(`{meta['rayipy']['rev']}`, frozen copy); Ray {v.get('ray', '?')}, pyzmq "
             f"{v.get('pyzmq', '?')} (libzmq {v.get('libzmq', '?')})")
    L.append(f"- Machine: {m['nproc']} cores, {m['cpu_model']}, Python {m['python']}; "
             "shared with other work")
    L.append(f"- Load: at the start `{meta.get('uptime_start', '?')}`; at the end "
             f"`{meta.get('uptime_end', '?')}`; CPU used by processes outside this run "
             "(per cent of one core, 1 s samples before each round and at the end): "
             + ", ".join(f"{o['total_pct']}%" + (f" ({'; '.join(o['top'])})" if o["top"] else "")
                         for o in meta.get("others_cpu", [])))
    L.append(f"- Command: `{meta['command']}`")
    L.append(f"- Method: {len(rounds)} rounds; in each, every side in a fresh process with fresh "
             "clusters, the order reversed every other round; per figure, the median over the "
             "rounds, and each ratio as the ratio of those medians with the range of the "
             "per-round ratios in brackets (the noise). Times: above 1 is slower; tasks/s: "
             "below 1 is slower. Script docstring: what each figure times.\n")
    L.append("| figure | rayipy never | rayipy always | always / never | Ray plain | Ray TLS "
             "| TLS / plain | rayipy / Ray, plain | rayipy / Ray, encrypted |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for key, label, unit, _higher in FIGURES:
        med = {s: core.med(values(rounds, s, key)) for s in CLUSTER_SIDES}
        L.append(f"| {label} | {_fmt(med['rayipy-never'], unit)} | {_fmt(med['rayipy-always'], unit)} "
                 f"| {ratio_cell(rounds, 'rayipy-always', 'rayipy-never', key)} "
                 f"| {_fmt(med['ray-plain'], unit)} | {_fmt(med['ray-tls'], unit)} "
                 f"| {ratio_cell(rounds, 'ray-tls', 'ray-plain', key)} "
                 f"| {ratio_cell(rounds, 'rayipy-never', 'ray-plain', key)} "
                 f"| {ratio_cell(rounds, 'rayipy-always', 'ray-tls', key)} |")
    L.append("\nThe raw limit on this CPU, one core, 100 MB buffer (median over the rounds, "
             "range of the rounds in brackets):\n")
    L.append("| primitive | figure | ÷ memcpy |")
    L.append("|---|---|---|")
    copy = core.med(values(rounds, CIPHER, "memcpy"))
    for key, label, unit, _higher in CIPHER_FIGURES:
        vals = [x for x in values(rounds, CIPHER, key) if x is not None]
        mid = core.med(vals)
        spread = f" ({_fmt(min(vals), unit)}–{_fmt(max(vals), unit)})" if len(vals) > 1 else ""
        share = f"{mid / copy:.3f}" if unit == "MB/s" and mid and copy else ""
        L.append(f"| {label} | {_fmt(mid, unit)}{spread} | {share} |")
    notes = []
    for i, r in enumerate(rounds):
        for side in [CIPHER] + CLUSTER_SIDES:
            c = r.get(side, {})
            bits = []
            check = c.get("encryption_check")
            if check and i == 0:
                bits.append(f"setting check {'passed' if check['ok'] else 'FAILED'}: {check['evidence']}")
            elif check and not check["ok"]:
                bits.append(f"setting check FAILED: {check['evidence']}")
            if c.get("error"):
                bits.append(f"error: `{c['error'][:300]}`")
            for key, fig in c.get("figures", {}).items():
                if fig.get("error"):
                    bits.append(f"{key}: `{fig['error'][:300]}`")
            if c.get("exit_code") not in (0, None):
                bits.append(f"exit code {c['exit_code']}")
            if c.get("timed_out"):
                bits.append("hit --timeout and was killed")
            if c.get("killed_leftovers"):
                bits.append(f"killed leftovers by PID: {len(c['killed_leftovers'])}")
            if bits:
                notes.append(f"round {i + 1}, {side}: " + "; ".join(bits))
    loads = [f"{s}: " + ", ".join(str(r.get(s, {}).get("loadavg_1m_before")) for r in rounds)
             for s in [CIPHER] + CLUSTER_SIDES]
    notes.append("1-minute load average before each child, by round: " + "; ".join(loads))
    notes.append("processes of this run left at the end (killed by PID): "
                 + (", ".join(meta.get("left_running_at_end") or []) or "none"))
    L.append("\n## Run notes (automatic)\n")
    L.extend(f"- {n}" for n in notes)
    return "\n".join(L) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=None, help="rounds of every side (default 5; --quick 1)")
    ap.add_argument("--n-lat", type=int, default=None, help="sequential calls per round-trip figure (2000)")
    ap.add_argument("--n-tasks", type=int, default=None, help="tasks in the throughput figure (10,000)")
    ap.add_argument("--mb", type=int, default=None, help="size of the large array, MB (100)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1 round, 200 calls, 1,000 tasks, 10 MB (unless given)")
    ap.add_argument("--rayipy-rev", default="HEAD", help="the commit of rayipy to measure (HEAD)")
    ap.add_argument("--timeout", type=float, default=300.0, help="wall limit per child, s (300)")
    ap.add_argument("--out-dir", help="default /tmp/rayipy-encryption-<UTC date>")
    ap.add_argument("--md", help="also write the markdown report to this file")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--side", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--expect-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    quick = args.quick
    if args.rounds is None:
        args.rounds = 1 if quick else 5
    if args.n_lat is None:
        args.n_lat = 200 if quick else 2000
    if args.n_tasks is None:
        args.n_tasks = 1000 if quick else 10_000
    if args.mb is None:
        args.mb = 10 if quick else 100
    if args.rounds < 1 or args.n_lat < 1 or args.n_tasks < 1 or args.mb < 1:
        ap.error("--rounds, --n-lat, --n-tasks and --mb must be at least 1")
    if args.mb * MB % 8:
        ap.error("--mb must make a whole number of float64 values")
    if args.child:
        if args.side not in CLUSTER_SIDES + [CIPHER]:
            ap.error(f"unknown side {args.side!r}")
        return child_main(args)
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
