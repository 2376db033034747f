"""Starting a local cluster: a head and a node agent on loopback, children of this process.

Both start at once (the agent's connection waits for the head by itself); we wait only
for the head to say it listens. They die with us: the kernel signals them when we exit
(even by SIGKILL), and they also watch our pid and their connection to the head.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time

from rayipy import exceptions
from rayipy.transport.endpoint import free_tcp_port


class LocalCluster:
    def __init__(self, num_cpus: int, resources: dict, host: str = "127.0.0.1",
                 dashboard_port: int | None = None, dashboard_host: str | None = None,
                 object_store_memory: int | None = None, spill_directory: str = "",
                 driver_grace: float | None = None) -> None:
        self.key = os.urandom(32)
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
        self.processes: list[subprocess.Popen] = []
        self.address = ""

    def start(self, timeout: float = 30.0) -> str:
        for attempt in range(3):
            port = free_tcp_port(self.host)
            self.address = f"tcp://{self.host}:{port}"
            head = self._spawn("head", "--host", self.host, "--port", str(port), "--watch-parent",
                               *self.dashboard, *self.grace, stdout=subprocess.PIPE)
            agent = self._spawn("agent", "--head", self.address, "--num-cpus", str(self.num_cpus),
                                "--resources", _json(self.resources), "--node-id", self.node_id.hex(),
                                "--ip", self.host, "--watch-parent", *self.store)
            self.processes = [head, agent]
            if self._wait_listening(head, timeout):
                return self.address
            self.stop()  # the port was taken meanwhile: try another
        raise exceptions.RayipySystemError("could not start the rayipy head (see its error above)")

    def _spawn(self, module: str, *args: str, stdout=None) -> subprocess.Popen:
        env = dict(os.environ, RAYIPY_CLUSTER_KEY=self.key.hex(), PYTHONPATH=driver_path())
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
        self.processes = []


def driver_path() -> str:
    """The driver's import path, so local workers import the same modules it does by name
    (a test module, a script's sibling files), as the driver's own children."""
    entries = [os.getcwd() if p == "" else p for p in sys.path]
    return os.pathsep.join(p for p in entries if os.path.isdir(p))


def _json(value: dict) -> str:
    import json
    return json.dumps(value)
