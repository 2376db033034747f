"""The node agent: one per host. Reports the host's resources, starts and watches workers,
and runs the node's object store (``store_server.py``, a thread of its own).

It starts ``num_cpus`` workers at once, more when the head asks (tasks blocked on nested
tasks), and learns of a worker's death the moment it happens: each worker's pidfd sits
in the same poller as the socket, so a dead worker is an event, not a timeout. It tells
the head, which retries or fails the worker's tasks, and starts a replacement.

Messages from the head are dispatched through a table ``{Kind: handler}``: a kind it
does not know is counted and dropped, and a handler that raises (a malformed body, even
a correctly signed one) is logged with its traceback and counted; the agent serves on
(``core.message_faults``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Callable

import zmq

from rayipy.core.message_faults import MessageFaults
from rayipy.node import lifetime, log_setup
from rayipy.node import memory_use
from rayipy.node import runtime_env_setup
from rayipy.node.client import HEARTBEAT_SECONDS, HEAD_SILENCE_LIMIT, new_process_id
from rayipy.node.store_server import StoreServer, default_capacity
from rayipy.protocol.kinds import Kind
from rayipy.protocol.messages import Registration
from rayipy.protocol.wire import PROTOCOL_VERSION, Signer
from rayipy.transport.endpoint import Endpoint

log = logging.getLogger("rayipy.agent")


def physical_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def gpu_ids(resources: dict[str, float]) -> list[str]:
    """This host's GPU device ids: those CUDA_VISIBLE_DEVICES names if it names as many as
    the node has GPUs (the node was given some of the host's GPUs), else 0..N-1."""
    count = int(resources.get("GPU", 0))
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return visible[:count] if len(visible) >= count > 0 else [str(i) for i in range(count)]


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (killed: out of memory, or by hand?)" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exited with code {code}"


class WorkerProcess:
    """A worker this agent started: its process and, where the OS has them, its pidfd."""

    def __init__(self, worker_id: bytes, popen: subprocess.Popen[bytes]) -> None:
        self.worker_id = worker_id
        self.popen = popen
        self.pidfd = os.pidfd_open(popen.pid) if hasattr(os, "pidfd_open") else None


class Agent:
    """The node agent's state and loop (``serve``); one thread owns all of it."""

    def __init__(self, head_address: str, key: bytes, num_cpus: int, resources: dict[str, float],
                 node_id: bytes, ip: str, watch_parent: int | None,
                 object_store_memory: int | None = None, spill_directory: str = "") -> None:
        self.head_address = head_address
        self.key = key
        self.num_cpus = num_cpus
        self.node_id = node_id
        self.ip = ip
        self.resources = {"CPU": float(num_cpus), "memory": float(physical_memory()),
                          **{name: float(amount) for name, amount in resources.items()}}
        self.watch_parent = watch_parent
        self.process_id = new_process_id(b"A")
        self.context = zmq.Context()
        self.endpoint = Endpoint(self.context, zmq.DEALER, Signer(key), self.process_id)
        self.endpoint.connect(head_address)
        self.workers: dict[bytes, WorkerProcess] = {}
        self.poller = zmq.Poller()
        self.poller.register(self.endpoint.socket, zmq.POLLIN)
        self.running = True
        self.last_heard = time.monotonic()
        # How long to wait for a head that fell silent to restart (its WELCOME says: 0
        # for a head that keeps no journal, which cannot come back).
        self.head_restart_wait = 0.0
        self.head_away = False
        self.faults = MessageFaults(log, self.endpoint.dropped)
        self.store_capacity = object_store_memory or default_capacity(physical_memory())
        self.spill_directory = spill_directory
        # Made by ``serve``, whose end removes its file: an agent that never serves (a
        # test's) leaves nothing in /dev/shm.
        self.store: StoreServer | None = None
        self.handlers: dict[Kind, Callable[[Any], None]] = {
            Kind.FREE_OBJECTS: self.to_store(Kind.FREE_OBJECTS),
            Kind.OWNER_GONE: self.to_store(Kind.OWNER_GONE),
            Kind.SPAWN_WORKER: self.on_spawn_worker,
            Kind.SPAWN_ENV_WORKER: self.on_spawn_env_worker,
            Kind.RETIRE_WORKER: self.on_retire_worker,
            Kind.SHUTDOWN: self.on_shutdown,
            Kind.AUTH_FAILED: self.on_auth_failed,
            Kind.REFUSED: self.on_refused,
            Kind.WELCOME: self.on_welcome,
            Kind.HEARTBEAT: self.on_nothing,   # being heard from is all it says
            **self.job_handlers(),
        }

    def to_store(self, kind: Kind) -> Callable[[Any], None]:
        """A handler that hands the message to the store's thread."""
        def handler(body: Any) -> None:
            if self.store is not None:
                self.store.post(kind, body)
        return handler

    def spawn(self, runtime_env: dict[str, Any] | None = None) -> None:
        """Start one worker process and watch it; with ``runtime_env`` (resolved), a
        worker of that environment, which sets it up itself (``runtime_env_setup``)."""
        worker_id = new_process_id(b"W")
        env = dict(os.environ, RAYIPY_CLUSTER_KEY=self.key.hex())
        env.pop(runtime_env_setup.ENV_VARIABLE, None)
        env.pop(runtime_env_setup.READY_VARIABLE, None)
        if runtime_env is not None:
            env[runtime_env_setup.ENV_VARIABLE] = runtime_env_setup.to_json(runtime_env)
        cmd = [sys.executable, "-m", "rayipy.node.worker", "--head", self.head_address,
               "--node-id", self.node_id.hex(), "--worker-id", worker_id.hex(), "--ip", self.ip,
               "--store", self.store.address if self.store is not None else ""]
        popen = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
        worker = WorkerProcess(worker_id, popen)
        self.workers[worker_id] = worker
        if worker.pidfd is not None:
            self.poller.register(worker.pidfd, zmq.POLLIN)

    def reap(self, worker: WorkerProcess) -> None:
        """A worker exited: tell the head, and replace it while we are below num_cpus."""
        code = worker.popen.wait()
        if worker.pidfd is not None:
            self.poller.unregister(worker.pidfd)
            os.close(worker.pidfd)
        self.workers.pop(worker.worker_id, None)
        if self.running:
            self.endpoint.send(Kind.WORKER_DIED, (worker.worker_id, code, describe_exit(code)))
            if len(self.workers) < self.num_cpus:
                self.spawn()

    def serve(self) -> None:
        """Start the node's object store, register, start the workers, then serve until
        told to stop or the head is gone."""
        store = self.store = StoreServer(self.node_id, self.ip, Signer(self.key),
                                         self.store_capacity, self.spill_directory)
        next_beat = time.monotonic() + HEARTBEAT_SECONDS
        try:
            info = {"resources": self.resources, "gpu_ids": gpu_ids(self.resources),
                    "hostname": socket.gethostname(), "ip": self.ip, "pid": os.getpid(),
                    "store": store.address, "store_capacity": store.state.alloc.capacity,
                    # its figures from the start (then each heartbeat's), so that `rayipy
                    # status` never shows a node's store without them
                    "store_summary": store.summary()}
            store.start()
            registration = Registration("agent", self.process_id, self.node_id, os.getpid(),
                                        PROTOCOL_VERSION, info)
            # A restarted head hears the same registration again, when we reconnect.
            self.endpoint.greeting = lambda: (Kind.REGISTER, registration)
            self.endpoint.send(Kind.REGISTER, registration)
            for _ in range(self.num_cpus):   # inside: a SIGTERM meanwhile still cleans up
                self.spawn()
            while self.running:
                events = dict(self.poller.poll(250))
                self.endpoint.check_link()
                if self.endpoint.socket in events:
                    while self.endpoint.socket.poll(0, zmq.POLLIN):
                        _, message = self.endpoint.recv()
                        if message is not None:
                            self.last_heard = time.monotonic()
                            self.handle(message.kind, message.body)
                self.jobs.check()
                for worker in list(self.workers.values()):
                    if worker.pidfd in events or (worker.pidfd is None and worker.popen.poll() is not None):
                        self.reap(worker)
                now = time.monotonic()
                if now >= next_beat:
                    next_beat = now + HEARTBEAT_SECONDS
                    # The store's figures, then (added at the end) the node's real memory use.
                    self.endpoint.send(Kind.HEARTBEAT, (store.summary(), memory_use.sample(
                        w.popen.pid for w in self.workers.values())))
                    if self.watch_parent is not None and not lifetime.parent_alive(self.watch_parent):
                        break
                    silent = now - self.last_heard
                    if silent > HEAD_SILENCE_LIMIT + self.head_restart_wait:
                        log.warning("no word from the head for %.0f s; stopping", silent)
                        break
                    if silent > HEAD_SILENCE_LIMIT and not self.head_away:
                        self.head_away = True
                        log.warning("no word from the head for %.0f s: waiting up to %g s "
                                    "more for it to restart", silent, self.head_restart_wait)
        finally:
            # The store's file first: nothing that follows may keep it in /dev/shm (the
            # mappings of workers still running stay valid).
            store.arena.unlink()
            if self.running:  # we leave on our own: say so, rather than fall silent
                self.endpoint.send(Kind.NODE_LEAVING, ("its node agent stopped",))
            self.running = False
            self.jobs.stop_all()
            self.stop_workers()
            store.stop()
            self.endpoint.close()
            self.context.term()

    def handle(self, kind: Kind, body: Any) -> None:
        """Run the handler for one message from the head; nothing in it stops the agent."""
        handler = self.handlers.get(kind)
        if handler is None:
            self.faults.unexpected(kind, None, time.monotonic())
            return
        try:
            handler(body)
        except Exception:
            self.faults.handler_failed(kind, None)

    def on_spawn_worker(self, body: Any) -> None:
        (count,) = body
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ValueError(f"SPAWN_WORKER wants a count of workers, got {count!r}")
        for _ in range(count):
            self.spawn()

    def on_spawn_env_worker(self, body: Any) -> None:
        count, runtime_env = body
        if not isinstance(count, int) or isinstance(count, bool) or count < 0 or not (
                isinstance(runtime_env, dict) and isinstance(runtime_env.get("key"), str)):
            raise ValueError(f"SPAWN_ENV_WORKER wants (count, runtime_env), got {body!r:.200}")
        for _ in range(count):
            self.spawn(runtime_env)

    def on_retire_worker(self, body: Any) -> None:
        worker_id, kill = body
        worker = self.workers.get(worker_id)
        if worker is not None:
            if kill:
                worker.popen.kill()
            else:
                worker.popen.terminate()

    # -- jobs (`rayipy job`): rayipy/node/job_runner.py runs them ------------------------------
    def job_handlers(self) -> dict[Kind, Callable[[Any], None]]:
        """The job messages' handlers, and the runner they use."""
        from rayipy.node.job_runner import JobRunner
        from rayipy.node.connection import machine_dir
        self.jobs = JobRunner(machine_dir() / "jobs", self.key, lambda job_id, event, value:
                              self.endpoint.send(Kind.JOB_EVENT, (job_id, event, value)))
        return {Kind.JOB_START: lambda body: self.jobs.start(*body),
                Kind.JOB_STOP: lambda body: self.jobs.stop(body[0]),
                Kind.JOB_LOGS: self.on_job_logs}

    def on_job_logs(self, body: Any) -> None:
        job_id, offset, limit, requester, request_id = body
        try:
            answer: Any = self.jobs.read_log(job_id, offset, limit)
            ok = True
        except ValueError as e:
            answer, ok = str(e), False
        self.endpoint.send(Kind.JOB_LOG_DATA, (requester, request_id, ok, answer))

    def on_shutdown(self, body: Any) -> None:
        self.running = False

    def on_auth_failed(self, body: Any) -> None:
        print("rayipy agent: the head rejected our password (cluster key)", file=sys.stderr)
        self.running = False

    def on_refused(self, body: Any) -> None:
        print(f"rayipy agent: refused by the head: {body[0]}", file=sys.stderr)
        self.running = False

    def on_welcome(self, body: Any) -> None:
        """Registered (again, with a head that restarted): how long to wait for it next."""
        self.head_away = False
        info = body[2] if len(body) > 2 and isinstance(body[2], dict) else {}
        self.head_restart_wait = float(info.get("head_restart_wait_s", 0))

    def on_nothing(self, body: Any) -> None:
        pass

    def stop_workers(self) -> None:
        """Stop every worker: SIGTERM, then SIGKILL after a grace period."""
        for worker in self.workers.values():
            if worker.popen.poll() is None:
                worker.popen.terminate()
        deadline = time.monotonic() + 3
        for worker in self.workers.values():
            try:
                worker.popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.popen.kill()
                worker.popen.wait()
            if worker.pidfd is not None:
                os.close(worker.pidfd)
        self.workers.clear()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rayipy.node.agent")
    parser.add_argument("--head", required=True)
    parser.add_argument("--num-cpus", type=int, required=True)
    parser.add_argument("--resources", default="{}")
    parser.add_argument("--node-id", required=True)
    parser.add_argument("--ip", default="127.0.0.1")
    parser.add_argument("--watch-parent", action="store_true")
    parser.add_argument("--object-store-memory", type=int, default=None,
                        help="bytes of the node's object store (default: 30%% of memory)")
    parser.add_argument("--spill-dir", default="", help="where the store spills objects")
    parser.add_argument("--log-file", default=None,
                        help="write the log here, rotated, with stdout and stderr "
                             "(default: stderr)")
    args = parser.parse_args(argv)
    log_setup.configure("agent", args.log_file)
    key = bytes.fromhex(os.environ.pop("RAYIPY_CLUSTER_KEY"))
    watch = os.getppid() if args.watch_parent else None
    if args.watch_parent:
        lifetime.die_with_parent()
    lifetime.exit_on_sigterm()
    agent = None
    try:
        agent = Agent(args.head, key, args.num_cpus, json.loads(args.resources),
                      bytes.fromhex(args.node_id), args.ip, watch, args.object_store_memory,
                      args.spill_dir)
        agent.serve()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        if agent is not None and agent.store is not None:   # stopped before serve's own
            agent.store.arena.unlink()                       # cleanup could run
    lifetime.ignore_sigterm()  # cleaned up already: a late SIGTERM must not interrupt exit
    return 0


if __name__ == "__main__":
    sys.exit(main())
