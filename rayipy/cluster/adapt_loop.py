"""The thread that carries out ``Launcher.adapt``: look, decide, start or retire.

    launcher thread "rayipy-adapt"            head
    every interval ----- request "demand" ---->  core/demand.py
        AdaptivePolicy.decide  <--- queued, nodes ---
        launcher._grow(n)        (ssh: `rayipy start --address` on spare hosts;
                                  slurm: one `sbatch` job per node, joining the head)
        launcher._retire(node)   (ssh: `rayipy stop` there; slurm: `scancel` its job;
                                  either way its agent says NODE_LEAVING)

It runs in the process that made the launcher (a notebook kernel, a script), with a
driver connection of its own to the head, so it neither waits for nor disturbs the
user's session. Starting and retiring run on this thread, one decision at a time:
while hosts start, nothing else is decided, and the next look sees them registered
(``rayipy start`` returns once its node has; Slurm: ``_grow`` waits for the
jobs to join, up to a bound). A failure (a host that would not start,
a stop that failed) is kept in ``status().error`` and logged; the loop goes on. When
the head stops answering, the loop ends, saying why.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from rayipy.cluster.adaptive import AdaptivePolicy, Decision, NodeView

log = logging.getLogger("rayipy.cluster")


class Adaptable(Protocol):
    """What the loop needs of a launcher (``rayipy.cluster.base.Launcher`` has it)."""

    def _head_runtime(self) -> Any: ...

    def _close_head_runtime(self, runtime: Any) -> None: ...

    def _retirable(self, node: dict[str, Any]) -> bool: ...

    def _spare(self) -> int: ...

    def _grow(self, count: int) -> None: ...

    def _retire(self, node_id: str) -> None: ...


INTERVAL_S = 1.0         # between looks at the head
REQUEST_TIMEOUT_S = 10.0
LOST_AFTER = 5           # looks in a row without an answer: the head is gone


@dataclass(frozen=True)
class AdaptStatus:
    """What ``Launcher.adapt_status()`` says: the bounds, the size the cluster goes to
    (``target``) and the live nodes now (``current``)."""

    adapting: bool
    minimum: int
    maximum: int
    target: int
    current: int
    error: str = ""          # the last failure, if any

    def as_dict(self) -> dict[str, Any]:
        return {"adapting": self.adapting, "minimum": self.minimum, "maximum": self.maximum,
                "target": self.target, "current": self.current, "error": self.error}


class AdaptLoop:
    """One launcher's adapting thread; ``stop()`` ends it after the step it is in."""

    def __init__(self, launcher: Adaptable, policy: AdaptivePolicy,
                 interval: float = INTERVAL_S) -> None:
        self.launcher = launcher
        self.policy = policy
        self.interval = interval
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._current = 0
        self._target = policy.minimum
        self._error = ""
        self._runtime: Any = None
        self._thread = threading.Thread(target=self._run, name="rayipy-adapt", daemon=True)

    def start(self) -> None:
        self._runtime = self.launcher._head_runtime()
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop looking; wait for a start or stop in progress to end (``timeout``)."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def status(self) -> AdaptStatus:
        with self._lock:
            return AdaptStatus(self.running, self.policy.minimum, self.policy.maximum,
                               self._target, self._current, self._error)

    # -- the thread ------------------------------------------------------------------------
    def _run(self) -> None:
        misses = 0
        try:
            while not self._stop.is_set():
                try:
                    report = self._runtime.request("demand", timeout=REQUEST_TIMEOUT_S)
                    misses = 0
                except Exception as e:   # the head is slow, or gone
                    misses += 1
                    if misses >= LOST_AFTER:
                        self._failed(f"the head stopped answering, adapting ended: {e}")
                        return
                    self._stop.wait(self.interval)
                    continue
                self._step(report)
                self._stop.wait(self.interval)
        finally:
            self._stop.set()
            self.launcher._close_head_runtime(self._runtime)

    def _step(self, report: dict[str, Any]) -> None:
        nodes = [NodeView(n["node_id"], n["resources"], bool(n["busy"]),
                          bool(n["holds_objects"]), self.launcher._retirable(n))
                 for n in report["nodes"]]
        decision: Decision = self.policy.decide(time.monotonic(), nodes,
                                                [(tuple(map(tuple, r)), c) for r, c in report["queued"]],
                                                self.launcher._spare())
        with self._lock:
            self._current, self._target = len(nodes), decision.target
        if decision.start and not self._stop.is_set():
            log.info("adapt: starting %d node(s) (%d live)", decision.start, len(nodes))
            self._carry_out(lambda: self.launcher._grow(decision.start))
        for node_id in decision.retire:
            if self._stop.is_set():
                break
            if not self._still_idle(node_id):
                continue
            log.info("adapt: retiring node %s, idle", node_id[:8])
            self._carry_out(lambda: self.launcher._retire(node_id))

    def _still_idle(self, node_id: str) -> bool:
        """Ask again just before the stop: work may have landed there since the look
        (the head places tasks meanwhile; a task caught by the stop would be retried
        elsewhere, within its ``max_retries``). This narrows that window to one ssh
        round trip; the head has no drain state that would close it."""
        try:
            report = self._runtime.request("demand", timeout=REQUEST_TIMEOUT_S)
        except Exception:
            return False
        return any(n["node_id"] == node_id and not n["busy"] and not n["holds_objects"]
                   for n in report["nodes"])

    def _carry_out(self, action: Any) -> None:
        try:
            action()
        except Exception as e:
            self._failed(str(e) or type(e).__name__)

    def _failed(self, why: str) -> None:
        log.warning("adapt: %s", why)
        with self._lock:
            self._error = why
