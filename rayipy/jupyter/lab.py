"""The kernel side of rayipy's JupyterLab sidebar: this kernel's cluster, pushed over a comm.

The sidebar (``extension/``) shows, for the active notebook's kernel, whether rayipy is
connected, its nodes, resources in use and task counts. The data path:

    sidebar                                   kernel (this module)
      | silent execute_request, user_expressions:
      |   open_status_channel(client, interval)  -> status() now, as application/json
      | <------------------------------ comm_open "rayipy.status" {client, status}
      | <------------------------------ comm_msg {type: "status", status}  (on change)
      | comm_msg {action: "refresh"} -------->   (push now)
      | comm_msg {action: "start"|"connect"|"stop", ...} ->  (the sidebar's buttons)
      | <------------------------------ comm_msg {type: "action", action, ok, message}
      | comm_close (panel hidden) ----------->   (thread stops)

Why this path: no server extension and no CORS (the kernel is the one process that knows
its cluster: the address, the key and its own tasks), and the kernel *pushes* from a
thread of its own, so the sidebar keeps updating while a cell runs (a request from the
sidebar would queue behind that cell), and it sends nothing while nothing changes (each
request would flash the kernel's busy/idle status and every message keeps the server's
idle-kernel culler away). Only the first request needs the kernel's shell: it waits if a
cell is running.

``status()`` never raises and never starts or connects a cluster.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

import rayipy
from rayipy.cluster.base import adapt_status_for
from rayipy.core.object_ref import current_runtime
from rayipy.jupyter import cluster

log = logging.getLogger("rayipy.jupyter.lab")

COMM_TARGET = "rayipy.status"
STATUS_VERSION = 1               # bumped when the sidebar must change to read the status
MIN_INTERVAL, MAX_INTERVAL = 0.2, 60.0
TASK_SCOPES = {"queued": "cluster", "running": "cluster", "done": "notebook",
               "failed": "notebook", "cancelled": "notebook"}
MAX_CHANNELS = 8                 # browser tabs closed without closing their comm leak one each

NOT_STARTED = ("rayipy is not started in this kernel: run rayipy.init() or "
               "%load_ext rayipy then %cluster start")


def status() -> dict[str, Any]:
    """What the sidebar shows: a JSON-ready dict; ``connected`` says if the rest is there."""
    runtime = current_runtime()
    base: dict[str, Any] = {"version": STATUS_VERSION, "rayipy_version": rayipy.__version__}
    if runtime is not None and runtime.role == "driver" and runtime.lost is not None:
        return {**base, "connected": False, "reason": f"the cluster is unreachable: {runtime.lost}"}
    if not rayipy.is_initialized():
        return {**base, "connected": False, "reason": NOT_STARTED}
    try:
        head = rayipy.cluster_status()
        total = rayipy.cluster_resources()
        available = rayipy.available_resources()
    except Exception as error:   # shut down or lost between the check and the requests
        return {**base, "connected": False, "reason": f"the head did not answer: {error}"}
    context = cluster.context()
    head_tasks = head.get("tasks", {})
    own = runtime.task_counts() if runtime is not None else {}
    return {
        **base,
        "connected": True,
        "reason": "",
        "address": context.address if context else str(head.get("address", "")),
        "cluster_id": str(head.get("cluster_id", "")),
        "started_locally": bool(context and context.started_locally),
        "dashboard_url": cluster.dashboard_url(),
        "nodes": [_node(n, head.get("memory_use", {}).get(n.get("NodeID", ""), {}))
                  for n in head.get("nodes", [])],
        "resources": resource_usage(total, available),
        "tasks": {
            # Waiting at the head, or queued at a worker behind the task it runs.
            "queued": int(head_tasks.get("queued", 0)) + max(0, int(head_tasks.get("assigned", 0))
                                                              - int(head_tasks.get("running", 0))),
            # The head's running tasks, and ours on a leased worker, which it does not see.
            "running": int(head_tasks.get("running", 0)) + int(own.get("on_lease", 0)),
            "pending": int(own.get("pending", 0)),
            "done": int(own.get("done", 0)),
            "failed": int(own.get("failed", 0)),
            "cancelled": int(own.get("cancelled", 0)),
        },
        # Each count's scope, which the sidebar writes on its tile: queued and running
        # are the whole cluster's, now; the others this notebook's, since rayipy started.
        "scopes": TASK_SCOPES,
        "workers": int(head_tasks.get("workers", 0)),
        # While a launcher of this kernel adapts the cluster (Launcher.adapt): minimum,
        # maximum, target and current node counts, its last error; else None.
        "adapt": adapt_status_for(str(head.get("address", ""))),
        "worker_rows": worker_rows(runtime, head),
        "functions": function_progress(runtime),
    }


def worker_rows(runtime: Any, head: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per worker process: pid, node, state, the task it runs now and its
    resident memory (RSS, from its node's last memory figures), for the sidebar."""
    if runtime is None:
        return []
    try:
        workers = runtime.request("state_list", "workers", [], 1000, True, timeout=5.0)["rows"]
        running = runtime.request("state_list", "tasks", [("state", "=", "RUNNING")], 1000,
                                  False, timeout=5.0)["rows"]
    except Exception:   # an older head, or it went away: the rows are a nicety
        return []
    task_of = {row.get("worker_pid"): row.get("name") or row.get("func_or_class_name", "")
               for row in running}
    rss: dict[int, int] = {}
    for memory in head.get("memory_use", {}).values():
        for pid, value in (memory.get("workers") or {}).items():
            rss[int(pid)] = int(value)
    return [{"pid": int(w.get("pid", 0)), "node_id": str(w.get("node_id", "")),
             "ip": str(w.get("ip", "")), "state": str(w.get("state", "")),
             "task": str(task_of.get(w.get("pid"), "") or ""),
             "rss": rss.get(int(w.get("pid", 0)), 0)}
            for w in workers if w.get("worker_type") == "WORKER"]


def function_progress(runtime: Any) -> dict[str, dict[str, int]]:
    """Per function, the cluster's tasks by state (Ray's task summary): done, failed,
    running and waiting, for the sidebar's per-function bars."""
    if runtime is None:
        return {}
    try:
        summary = runtime.request("state_summary", "tasks", timeout=5.0)
    except Exception:
        return {}
    out: dict[str, dict[str, int]] = {}
    by_name = (summary.get("cluster") or {}).get("summary") or {}
    for name, entry in by_name.items():
        counts = entry.get("state_counts", {}) if isinstance(entry, dict) else {}
        done, failed = int(counts.get("FINISHED", 0)), int(counts.get("FAILED", 0))
        running = int(counts.get("RUNNING", 0))
        waiting = sum(int(v) for k, v in counts.items()
                      if k not in ("FINISHED", "FAILED", "RUNNING"))
        out[str(name)] = {"done": done, "failed": failed, "running": running, "waiting": waiting,
                          "total": done + failed + running + waiting}
    return out


ACTIONS = ("start", "connect", "stop")


def run_action(data: dict[str, Any]) -> dict[str, Any]:
    """One of the sidebar's buttons, run in the kernel as the ``%cluster`` magic would:
    ``{"action": "start", "num_cpus": N}``, ``{"action": "connect", "address": A,
    "password": P}``, ``{"action": "stop", "force": bool}``. The answer the sidebar shows:
    ``{"type": "action", "action", "ok", "message"}``; never raises."""
    import contextlib
    import io
    action = data.get("action")
    answer: dict[str, Any] = {"type": "action", "action": action, "ok": False, "message": ""}
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            if action == "start":
                num_cpus = data.get("num_cpus")
                if num_cpus is not None and (not isinstance(num_cpus, int) or num_cpus < 1):
                    raise ValueError(f"the number of CPUs must be a whole number above 0, "
                                     f"got {num_cpus!r}")
                ctx = cluster.start(num_cpus, None)
                message = f"Started a local cluster at {ctx.address}."
            elif action == "connect":
                address = data.get("address")
                password = data.get("password")
                if not isinstance(address, str) or not address.strip():
                    raise ValueError("give the address of the cluster's head, like 10.0.0.5:6379")
                if password is not None and not isinstance(password, str):
                    raise ValueError("the password must be text")
                ctx = cluster.connect(address.strip(), password or None)
                message = f"Connected to {ctx.address}."
            elif action == "stop":
                message = cluster.stop(force=bool(data.get("force", False)))
            else:
                raise ValueError(f"the sidebar asks for one of {', '.join(ACTIONS)}, not {action!r}")
        answer.update(ok=True, message=(printed.getvalue().strip() or message))
    except Exception as error:   # UsageError included: its text says what to do
        answer["message"] = str(error) or type(error).__name__
    return answer


def resource_usage(total: dict[str, float], available: dict[str, float]) -> dict[str, dict]:
    """``{name: {"total", "used"}}``, CPU and GPU always first (GPU 0 when there is none).

    ``available`` leaves out what is used up, so a missing name means all of it is used.
    """
    names = ["CPU", "GPU"] + sorted(set(total) - {"CPU", "GPU"})
    usage = {}
    for name in names:
        amount = float(total.get(name, 0.0))
        used = max(0.0, amount - float(available.get(name, 0.0)))
        usage[name] = {"total": amount, "used": min(used, amount)}
    return usage


def _node(info: dict, memory: dict) -> dict[str, Any]:
    """A node for the sidebar; ``memory`` is its real use (``rayipy.node.memory_use``
    figures, {} before its agent's first), apart from the ``memory`` resource, which is
    a reservation."""
    workers = memory.get("workers") or {}
    return {"node_id": str(info.get("NodeID", "")),
            "host": str(info.get("NodeManagerHostname", "")),
            "address": str(info.get("NodeManagerAddress", "")),
            "alive": bool(info.get("Alive", info.get("alive", False))),
            "resources": {k: float(v) for k, v in dict(info.get("Resources", {})).items()},
            "memory_used": int(memory.get("used", 0)),
            "memory_total": int(memory.get("total", 0)),
            # pid (as a string: JSON) -> resident memory of each of its workers
            "workers_rss": {str(pid): int(rss) for pid, rss in workers.items()}}


class JSONReply:
    """Shown as application/json, so the sidebar reads a user expression without parsing reprs."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def _repr_json_(self) -> dict[str, Any]:
        return self.data

    def __repr__(self) -> str:
        return f"JSONReply({self.data!r})"


class StatusPublisher:
    """A thread that takes a snapshot every ``interval`` seconds and sends it when it changed.

    ``send`` and ``snapshot`` are plain callables, so the loop is tested without a kernel.
    """

    def __init__(self, send: Callable[[dict], None], snapshot: Callable[[], dict] = status,
                 interval: float = 2.0, last: dict | None = None) -> None:
        self.send = send
        self.snapshot = snapshot
        self.interval = interval
        self.last = last              # what the other side already has
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rayipy-lab-status", daemon=True)

    def start(self) -> "StatusPublisher":
        self._thread.start()
        return self

    def refresh(self) -> None:
        """Send a snapshot now, changed or not (the sidebar asks when it is shown again)."""
        self.last = None
        self._wake.set()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stopped.is_set():
                return
            try:
                current = self.snapshot()
                if current != self.last:
                    self.send({"type": "status", "status": current})
                    self.last = current
            except Exception:   # the kernel is going away, or the comm broke: nobody listens
                log.debug("rayipy sidebar channel stopped", exc_info=True)
                return


_channels: list[tuple[Any, StatusPublisher]] = []
_channels_lock = threading.Lock()


def open_status_channel(client: str, interval: float = 2.0) -> JSONReply:
    """Open the comm the sidebar listens on; return the first status at once.

    The sidebar calls this in a silent ``execute_request``'s ``user_expressions``;
    ``client`` tells that sidebar's comm apart from those other browser tabs open on the
    same kernel (every frontend sees every ``comm_open``).
    """
    if not isinstance(client, str) or not client:
        raise TypeError(f"client must be a non-empty string naming the sidebar, got {client!r}")
    if not isinstance(interval, (int, float)) or not MIN_INTERVAL <= interval <= MAX_INTERVAL:
        raise ValueError(f"interval must be between {MIN_INTERVAL} and {MAX_INTERVAL} seconds, "
                         f"got {interval!r}")
    from comm import create_comm   # the kernel's Comm class once ipykernel has started

    first = status()
    channel = create_comm(target_name=COMM_TARGET,
                          data={"client": client, "version": STATUS_VERSION, "status": first})
    publisher = StatusPublisher(channel.send, interval=float(interval), last=first)

    def on_msg(msg: dict) -> None:
        data = msg.get("content", {}).get("data", {})
        if not isinstance(data, dict):
            return
        if data.get("action") == "refresh":
            publisher.refresh()
        elif data.get("action") in ACTIONS:
            # On the kernel's shell thread, between cells, as a cell's magic would run.
            channel.send(run_action(data))
            publisher.refresh()

    channel.on_msg(on_msg)
    channel.on_close(lambda msg: _forget(publisher))   # the sidebar closed it (panel hidden)
    with _channels_lock:
        _channels.append((channel, publisher))
        stale = _channels[:-MAX_CHANNELS]
    for old_channel, old_publisher in stale:   # a sidebar still showing it opens a new one
        _forget(old_publisher)
        old_channel.close()
    publisher.start()
    return JSONReply({"version": STATUS_VERSION, "status": first})


def _forget(publisher: StatusPublisher) -> None:
    publisher.stop()
    with _channels_lock:
        _channels[:] = [c for c in _channels if c[1] is not publisher]


def open_channel_count() -> int:
    with _channels_lock:
        return len(_channels)

