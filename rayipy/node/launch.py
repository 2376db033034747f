"""Starting a local cluster: a head and a node agent on loopback, children of this process.

Both start at once (the agent's connection waits for the head by itself); we wait only
for the head to say it listens. They die with us: the kernel signals them when we exit
(even by SIGKILL), and they also watch our pid and their connection to the head.

The agent is restarted when it dies abnormally (killed, out of memory, crashed): a thread
of the driver, ``rayipy-agent-watch``, waits on it. The driver watches, not the head,
because the agent is the driver's child: only a parent is told at once that its child
died and how (an event, not a missed heartbeat), and only the driver started it with
what a new one needs (its settings, the key). The head stays the same program for
clusters made with ``rayipy start``, where it cannot start processes on other hosts. The
new agent registers as a new node (a fresh node id: the old node's record, its workers
and their tasks are dropped by the head when the old agent's silence is noticed, 4 s,
and those tasks are retried on the new node). Restarts are bounded
(``RESTART_LIMIT`` within ``RESTART_WINDOW_S``); after that the driver logs why it gave
up, and queued work fails once ``unschedulable_task_timeout_s`` has passed.
"""

from __future__ import annotations

import collections
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time

from rayipy import exceptions
from rayipy.core.unschedulable import TIMEOUT_ENVIRONMENT
from rayipy.transport import encryption
from rayipy.transport.endpoint import free_tcp_port

log = logging.getLogger("rayipy")

RESTART_LIMIT = 3           # the agent is restarted at most this many times...
RESTART_WINDOW_S = 60.0     # ...within this many seconds; then the driver gives up


class RestartBudget:
    """Bounded restarts: at most ``limit`` within any ``window`` seconds."""

    def __init__(self, limit: int = RESTART_LIMIT, window: float = RESTART_WINDOW_S) -> None:
        self.limit = limit
        self.window = window
        self.times: collections.deque[float] = collections.deque()

    def allow(self, now: float) -> bool:
        """Whether a restart at ``now`` stays within the budget (it is then counted)."""
        while self.times and now - self.times[0] >= self.window:
            self.times.popleft()
        if len(self.times) >= self.limit:
            return False
        self.times.append(now)
        return True


def describe_exit(code: int) -> str:
    """"killed by SIGKILL", "exited with code 1"."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class LocalCluster:
    """The head and node agent this driver started, and the thread that restarts the agent."""

    def __init__(self, num_cpus: int, resources: dict, host: str = "127.0.0.1",
                 dashboard_port: int | None = None, dashboard_host: str | None = None,
                 object_store_memory: int | None = None, spill_directory: str = "",
                 unschedulable_timeout: float | None = None,
                 driver_grace: float | None = None) -> None:
        self.key = os.urandom(32)
        self.head_env = ({TIMEOUT_ENVIRONMENT: repr(unschedulable_timeout)}
                         if unschedulable_timeout is not None else {})
        self.num_cpus = num_cpus
        self.resources = resources
        self.host = host
        self.dashboard = (["--no-dashboard"] if dashboard_port is None else
                          ["--dashboard-port", str(dashboard_port)]
                          + (["--dashboard-host", dashboard_host] if dashboard_host else []))
        self.node_id = os.urandom(8)
        self.store = ((["--object-store-memory", str(object_store_memory)] if object_store_memory
                       else []) + (["--spill-dir", spill_directory] if spill_directory else []))
        # How long the head keeps a driver that stopped answering (None: its default).
        self.grace = [] if driver_grace is None else ["--driver-grace-period", repr(driver_grace)]
        self.processes: list[subprocess.Popen[bytes]] = []   # [head, agent]
        self.address = ""
        self.restart_budget = RestartBudget()
        self.agent_restarts = 0
        self.gave_up = ""           # why the agent is no longer restarted, once so
        self._stopping = False
        self._lock = threading.Lock()   # ``processes`` and ``_stopping``, with the watcher
        self._watcher: threading.Thread | None = None

    def start(self, timeout: float = 30.0) -> str:
        encryption.mode()   # a bad RAYIPY_ENCRYPT fails here, not in the children
        for attempt in range(3):
            port = free_tcp_port(self.host)
            self.address = f"tcp://{self.host}:{port}"
            head = self._spawn("head", "--host", self.host, "--port", str(port), "--watch-parent",
                               *self.dashboard, *self.grace, stdout=subprocess.PIPE,
                               env=self.head_env)
            self.processes = [head, self._spawn_agent()]
            if self._wait_listening(head, timeout):
                self._watcher = threading.Thread(target=self._watch_agent,
                                                 name="rayipy-agent-watch", daemon=True)
                self._watcher.start()
                return self.address
            self.stop()  # the port was taken meanwhile: try another
            self._stopping = False
        raise exceptions.RayipySystemError("could not start the rayipy head (see its error above)")

    def _spawn_agent(self) -> subprocess.Popen[bytes]:
        return self._spawn("agent", "--head", self.address, "--num-cpus", str(self.num_cpus),
                           "--resources", _json(self.resources), "--node-id", self.node_id.hex(),
                           "--ip", self.host, "--watch-parent", *self.store)

    def _watch_agent(self) -> None:
        """Wait for the agent to exit; restart it if it died abnormally while the head
        runs and nobody is stopping the cluster, within the restart budget."""
        while True:
            with self._lock:
                if self._stopping or len(self.processes) < 2:
                    return
                head, agent = self.processes
            code = agent.wait()
            with self._lock:
                # Exit code 0: it stopped on purpose (told to by the head, or the head
                # fell silent); only a death (a signal, a crash) is worth a new agent.
                if self._stopping or code == 0 or head.poll() is not None:
                    return
                if not self.restart_budget.allow(time.monotonic()):
                    self.gave_up = (
                        f"the local node agent {describe_exit(code)}, its "
                        f"{RESTART_LIMIT + 1}th death within {RESTART_WINDOW_S:g} s: it is no "
                        f"longer restarted, and work that needs it fails after "
                        f"unschedulable_task_timeout_s. Call rayipy.shutdown() and "
                        f"rayipy.init() for a fresh cluster")
                    log.error("%s", self.gave_up)
                    return
                self.node_id = os.urandom(8)    # a new node: see the module's docstring
                self.processes[1] = self._spawn_agent()
                self.agent_restarts += 1
            log.warning("the local node agent %s: started a new one (restart %d; its tasks "
                        "are retried once the head drops the old node)",
                        describe_exit(code), self.agent_restarts)

    def agent_pid(self) -> int:
        """The pid of the node agent running now (tests kill it)."""
        with self._lock:
            return self.processes[1].pid

    def expect_stop(self) -> None:
        """The cluster is being stopped: an agent that exits from now on stays stopped."""
        with self._lock:
            self._stopping = True

    def _spawn(self, module: str, *args: str, stdout: int | None = None,
               env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        env = dict(os.environ, **(env or {}), RAYIPY_CLUSTER_KEY=self.key.hex(),
                   PYTHONPATH=driver_path())
        # A session of their own: Ctrl-C in a terminal, or a notebook kernel's interrupt,
        # signals the driver's whole process group, and must not stop the cluster (the
        # driver cancels what it waited on instead). They still die with the driver.
        return subprocess.Popen([sys.executable, "-m", f"rayipy.node.{module}", *args],
                                env=env, stdin=subprocess.DEVNULL, stdout=stdout,
                                start_new_session=True)

    @staticmethod
    def _wait_listening(head: subprocess.Popen, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([head.stdout], [], [], 0.05)
            if ready:
                line = head.stdout.readline()
                if line.startswith(b"rayipy head listening"):
                    return True
                if not line:
                    return False
            if head.poll() is not None:
                return False
        raise exceptions.RayipySystemError(f"the rayipy head did not start within {timeout:g} s")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the head and agent: they were asked already, so first give them a moment."""
        self.expect_stop()
        deadline = time.monotonic() + 1.0
        for proc in self.processes:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in self.processes:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        with self._lock:
            self.processes = []
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout)
            self._watcher = None


def driver_path() -> str:
    """The driver's import path, so local workers import the same modules it does by name
    (a test module, a script's sibling files), as the driver's own children."""
    entries = [os.getcwd() if p == "" else p for p in sys.path]
    return os.pathsep.join(p for p in entries if os.path.isdir(p))


def _json(value: dict) -> str:
    import json
    return json.dumps(value)
