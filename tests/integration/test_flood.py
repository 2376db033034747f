"""Floods from a stranger, for a bounded time: the head's ZeroMQ port (frames that fail
the MAC, garbage, HELLOs whose CHALLENGEs it never reads), a worker's direct inbox and its data port (many TCP connections
sending garbage). Meanwhile a driver's round trips stay fast; afterwards each process's
memory comes back near its baseline and its log has grown by a bounded amount.

Also the ZeroMQ frame limit: a legitimate large batch passes, a frame over the limit is
dropped without harm."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import zmq

import rayipy
from rayipy import session
from rayipy.core.object_ref import current_runtime
from rayipy.protocol.kinds import Kind
from rayipy.protocol.wire import Signer
from rayipy.transport.endpoint import MAX_FRAME_BYTES, Endpoint

from helpers import stop_cluster, wait_until

ROOT = Path(__file__).resolve().parents[2]
FLOOD_SECONDS = 4.0
#: Round-trip p99 allowed during the flood: issue 13's 10 ms. On this 2-core machine the
#: p99 is set by CPU scheduling, not by any hop (the call goes driver -> worker, the head
#: is not on its path): no flood 0.5 ms, no flood but a plain busy loop on the cluster's
#: core 3.5 ms, this flood 3.6-7.3 ms when the machine is otherwise quiet (the head rests
#: while it rejects, ``throttle.RejectPacer``), 8-11.5 ms at a load average of 3-5 from
#: other work: on a busy shared machine, RAYIPY_FLOOD_P99_S=0.02 says so.
P99_LIMIT_S = float(os.environ.get("RAYIPY_FLOOD_P99_S", "0.010"))
LOG_GROWTH_LIMIT = 64 * 1024     # bytes the processes' log may grow by during the flood

FLOODER = textwrap.dedent("""
    import os, socket, struct, sys, threading, time
    import zmq
    from rayipy.protocol.kinds import Kind
    from rayipy.protocol.wire import HEADER, MAGIC, PROTOCOL_VERSION, encode_unsigned
    head, inbox, data, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    end = time.monotonic() + seconds
    sent = {"zmq": 0, "tcp": 0}

    def zmq_flood(what):
        context = zmq.Context()
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.connect(head)
        header = HEADER.pack(MAGIC, PROTOCOL_VERSION, 2, 0, 1)
        while time.monotonic() < end:
            for _ in range(100):
                if what == "garbage":
                    frames = [b"garbage" * 10]
                elif what == "hello":   # and never read the CHALLENGEs
                    frames = encode_unsigned(Kind.HELLO, os.urandom(32) + b"\\0")
                else:
                    frames = [os.urandom(32), header, b"x" * 200]
                try:
                    sock.send_multipart(frames, zmq.NOBLOCK)
                    sent["zmq"] += 1
                except zmq.Again:
                    time.sleep(0.001)
        sock.close(0)
        context.term()

    def tcp_flood(address):
        host, port = address.removeprefix("tcp://").rsplit(":", 1)
        while time.monotonic() < end:
            conns = []
            for _ in range(50):
                try:
                    c = socket.create_connection((host, int(port)), timeout=1)
                    c.sendall(b"\\xff" * 1000)
                    conns.append(c)
                    sent["tcp"] += 1
                except OSError:
                    pass
            for c in conns:
                c.close()

    threads = [threading.Thread(target=zmq_flood, args=("bad mac",)),
               threading.Thread(target=zmq_flood, args=("garbage",)),
               threading.Thread(target=zmq_flood, args=("hello",)),
               threading.Thread(target=tcp_flood, args=(inbox,)),
               threading.Thread(target=tcp_flood, args=(data,))]
    for t in threads: t.start()
    for t in threads: t.join()
    print(sent["zmq"], sent["tcp"], flush=True)
""")


@pytest.fixture(scope="module")
def logged_cluster():
    """A local cluster whose processes' stderr (their log) goes to a file we can measure."""
    log = tempfile.NamedTemporaryFile(prefix="rayipy-flood-", suffix=".log", delete=False)
    saved = os.dup(2)
    os.dup2(log.fileno(), 2)          # the head, agent and workers inherit it
    try:
        rayipy.init(num_cpus=2)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    try:
        yield Path(log.name)
    finally:
        stop_cluster()
        log.close()
        os.unlink(log.name)


@rayipy.remote
def noop():
    return None


@rayipy.remote
class Probe:
    def where(self):
        return os.getpid(), current_runtime().info["data"]

    def ping(self):
        return 1


def process_named(module: str) -> psutil.Process:
    for child in psutil.Process().children(recursive=True):
        try:
            if f"rayipy.node.{module}" in " ".join(child.cmdline()):
                return child
        except psutil.Error:
            pass
    raise LookupError(module)


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def test_flood_every_port_then_memory_and_log_come_back(logged_cluster):
    probe = Probe.remote()
    worker_pid, data_address = rayipy.get(probe.where.remote(), timeout=30)
    inbox = next(w["address"] for w in current_runtime().request("workers")
                 if w["pid"] == worker_pid)
    head = process_named("head")
    worker = psutil.Process(worker_pid)
    for _ in range(300):   # warm up both paths before taking baselines
        rayipy.get([noop.remote(), probe.ping.remote()])
    base = {"head": head.memory_info().rss, "worker": worker.memory_info().rss}
    log_size = logged_cluster.stat().st_size

    flooder = subprocess.Popen(
        [sys.executable, "-c", FLOODER, "tcp://" + session._context.address, inbox,
         data_address, str(FLOOD_SECONDS)],
        env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE)
    tasks: list[float] = []
    calls: list[float] = []
    peak = dict(base)
    try:
        deadline = time.monotonic() + FLOOD_SECONDS
        time.sleep(0.3)   # let the flood get going before measuring (not a synchronisation)
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            rayipy.get(noop.remote(), timeout=10)
            t1 = time.perf_counter()
            rayipy.get(probe.ping.remote(), timeout=10)
            t2 = time.perf_counter()
            tasks.append(t1 - t0)
            calls.append(t2 - t1)
            peak["head"] = max(peak["head"], head.memory_info().rss)
            peak["worker"] = max(peak["worker"], worker.memory_info().rss)
        out, _ = flooder.communicate(timeout=30)
    finally:
        if flooder.poll() is None:
            flooder.kill()
            flooder.wait()
    zmq_sent, tcp_sent = (int(x) for x in out.split())
    assert zmq_sent > 10_000 and tcp_sent > 500, (zmq_sent, tcp_sent)
    print(f"\nflood: {zmq_sent} ZeroMQ frames, {tcp_sent} TCP connections; "
          f"task p99 {p99(tasks) * 1e3:.1f} ms (median {sorted(tasks)[len(tasks) // 2] * 1e3:.2f}),"
          f" actor call p99 {p99(calls) * 1e3:.1f} ms "
          f"(median {sorted(calls)[len(calls) // 2] * 1e3:.2f}); {len(tasks)} samples; "
          f"RSS base {base}, peak {peak}")

    # The cluster answers, and memory comes back within 10% of the baseline.
    def settled() -> bool:
        rayipy.get([noop.remote(), probe.ping.remote()], timeout=10)
        return (head.memory_info().rss <= base["head"] * 1.10
                and worker.memory_info().rss <= base["worker"] * 1.10)
    wait_until(settled, timeout=30, interval=0.2,
               message=f"memory did not come back: base {base}, now head "
                       f"{head.memory_info().rss}, worker {worker.memory_info().rss}")
    growth = logged_cluster.stat().st_size - log_size
    assert growth <= LOG_GROWTH_LIMIT, logged_cluster.read_text()[-3000:]
    assert p99(tasks) < P99_LIMIT_S and p99(calls) < P99_LIMIT_S, (p99(tasks), p99(calls))


# -- the frame limit ---------------------------------------------------------------------

def _pair(max_frame_bytes: int = 0):
    context = zmq.Context()
    router = Endpoint(context, zmq.ROUTER, Signer(b"k" * 32), max_frame_bytes=max_frame_bytes)
    dealer = Endpoint(context, zmq.DEALER, Signer(b"k" * 32))
    dealer.connect(router.bind("tcp://127.0.0.1:0"))
    return context, router, dealer


def _receive(endpoint: Endpoint, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if endpoint.socket.poll(100, zmq.POLLIN):
            _sender, message, _frames = endpoint.recv_raw()
            if message is not None:
                return message
    return None


def _handshake(router: Endpoint, dealer: Endpoint) -> None:
    dealer.send(Kind.HEARTBEAT, ("hello",))
    assert router.socket.poll(5000, zmq.POLLIN)
    router.recv_raw()                      # HELLO
    assert dealer.socket.poll(5000, zmq.POLLIN)
    dealer.recv_raw()                      # CHALLENGE: the held HEARTBEAT leaves
    assert _receive(router).body == ("hello",)


def test_a_large_legitimate_batch_passes_the_frame_limit():
    """A SUBMIT batch of 200 specs with arguments just under the 100 KiB inline limit,
    20 MB in one pickled body: the biggest kind of frame that goes through the head."""
    from rayipy.protocol.messages import Payload, TaskSpec
    context, router, dealer = _pair()
    try:
        _handshake(router, dealer)
        specs = [TaskSpec(os.urandom(16), b"f" * 16, "f", Payload(os.urandom(100 * 1024 - 100)),
                          (), 1, (("CPU", 1.0),), 3) for _ in range(200)]
        assert router.max_frame_bytes == MAX_FRAME_BYTES
        dealer.send(Kind.SUBMIT, (specs,))
        message = _receive(router, timeout=30)
        assert message is not None and len(message.body[0]) == 200
    finally:
        dealer.close()
        router.close()
        context.term()


def test_a_frame_over_the_limit_is_dropped_and_the_peer_goes_on():
    context, router, dealer = _pair(max_frame_bytes=1 * 2**20)
    try:
        _handshake(router, dealer)
        dealer.send(Kind.SUBMIT, ([b"x" * (2 * 2**20)],))   # over the receiver's limit
        dealer.send(Kind.HEARTBEAT, ("after",))
        # ZeroMQ cut the connection at the large frame; the DEALER reconnects, and the
        # session (kept by identity) carries on.
        deadline = time.monotonic() + 20
        got = None
        while got is None and time.monotonic() < deadline:
            dealer.send(Kind.HEARTBEAT, ("after",))
            got = _receive(router, timeout=1.0)
        assert got is not None and got.kind is Kind.HEARTBEAT and got.body == ("after",)
        # And the sender refuses a body over its own limit, with a count, sending nothing.
        small = Endpoint(context, zmq.DEALER, Signer(b"k" * 32), max_frame_bytes=1000)
        small.sessions[None] = dealer.sessions[None]
        assert small.send(Kind.SUBMIT, ([b"x" * 2000],)) is False
        assert small.dropped["message too large"] == 1
        small.close()
    finally:
        dealer.close()
        router.close()
        context.term()


def test_the_frame_limit_must_be_positive():
    context = zmq.Context()
    try:
        with pytest.raises(ValueError):
            Endpoint(context, zmq.DEALER, Signer(b"k" * 32), max_frame_bytes=-1)
    finally:
        context.term()
