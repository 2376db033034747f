"""Queued work that no live node could ever run: first a warning, then a failure.

A task is refused at submit when nodes exist and none could ever hold it
(``SchedulerState._fits_nowhere``). Two cases slip past that check and would wait
forever: work submitted while the cluster has no node at all, and work already queued
when the only nodes that could run it leave (an agent killed, a host lost). Ray warns
and keeps waiting for its autoscaler; rayipy has no autoscaler, so after a wait
(``timeout``, 60 s by default, enough for a restarted agent to come back) it fails the
work with ``TaskUnschedulableError`` naming what is missing, and says so on the owner's
driver beforehand (``warn_after``).

``UnschedulableWatch`` is the clock part, per resource request (all queued work with
the same request shares its fate): the scheduler's ``tick`` hands it the requests that
wait and a test of whether a live node could ever fit one, and gets back which to warn
about and which to fail now. It reads no clock: ``now`` is passed in.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Mapping, NamedTuple

from rayipy.core.state import Node, Request

DEFAULT_TIMEOUT_S = 60.0     # Ray waits for ever (for its autoscaler); we have none
WARN_AFTER_S = 5.0           # the warning comes this soon, or at half the timeout if sooner
TIMEOUT_SETTING = "unschedulable_task_timeout_s"   # its name in init(_system_config=...)
TIMEOUT_ENVIRONMENT = "RAYIPY_UNSCHEDULABLE_TASK_TIMEOUT_S"   # how the head is told


def parse_timeout(value: object) -> float:
    """A timeout setting as seconds (> 0, ``inf`` to wait for ever); a clear error else."""
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        seconds = math.nan
    if isinstance(value, bool) or not seconds > 0:
        raise ValueError(f"{TIMEOUT_SETTING} must be a number of seconds > 0 (float('inf') "
                         f"to wait for ever), got {value!r}")
    return seconds


class Verdict(NamedTuple):
    """What ``UnschedulableWatch.check`` decided at one tick."""
    warn: list[Request]      # warn the owners of these requests' work now (once each)
    fail: list[Request]      # fail these requests' work now
    waited: dict[Request, float]   # for each of those, since when no live node could run it


class UnschedulableWatch:
    """Since when each waiting request has had no live node that could ever run it."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.timeout = timeout
        self.since: dict[Request, float] = {}
        self.warned: set[Request] = set()

    @property
    def warn_after(self) -> float:
        """Seconds before the warning: ``WARN_AFTER_S``, or half the timeout if shorter."""
        return min(WARN_AFTER_S, self.timeout / 2)

    def check(self, now: float, waiting: Iterable[Request],
              could_run: Callable[[Request], bool]) -> Verdict:
        """Look at the requests that wait now; forget those that no longer wait or that a
        live node could run (a node joined, or came back)."""
        stuck = {request for request in waiting if not could_run(request)}
        for request in list(self.since):
            if request not in stuck:
                del self.since[request]
                self.warned.discard(request)
        verdict = Verdict([], [], {})
        for request in stuck:
            since = self.since.setdefault(request, now)
            waited = now - since
            if waited >= self.timeout:
                verdict.fail.append(request)
                verdict.waited[request] = since
                del self.since[request]
                self.warned.discard(request)
            elif waited >= self.warn_after and request not in self.warned:
                self.warned.add(request)
                verdict.warn.append(request)
                verdict.waited[request] = since
        return verdict


def missing_resources(request: Request, nodes: Mapping[bytes, Node]) -> str:
    """What no live node has, e.g. "GPU=1 (the largest live node has 0)", or, without
    live nodes, the whole request and that there are none."""
    live = [node for node in nodes.values() if not node.leaving]
    if not live:
        shown = ", ".join(f"{name}={amount:g}" for name, amount in request) or "nothing"
        return f"{shown} (the cluster has no live node)"
    missing = []
    for name, amount in request:
        best = max(node.total.get(name, 0.0) for node in live)
        if best < amount - 1e-9:
            missing.append(f"{name}={amount:g} (the largest live node has {best:g})")
    return " and ".join(missing) or "them all at once on one node"


def warning_text(what: str, request: Request, missing: str, others: int, waited: float,
                 timeout: float) -> str:
    """The warning a driver prints once for a request its work waits on."""
    more = f" (and {others} more of yours with the same request)" if others else ""
    then = (f"it fails in {max(0.0, timeout - waited):.0f} s unless a node with them joins"
            if math.isfinite(timeout) else "it waits until a node with them joins")
    return (f"Warning: {what}{more} cannot be scheduled: it asks for "
            f"{', '.join(f'{n}={a:g}' for n, a in request) or 'nothing'}, and no live node "
            f"has {missing}. {then[0].upper()}{then[1:]} (unschedulable_task_timeout_s="
            f"{timeout:g}).")


def failure_text(what: str, request: Request, missing: str, waited: float) -> str:
    """The error of work that waited ``timeout`` seconds for a node that could run it."""
    return (f"{what} asks for {', '.join(f'{n}={a:g}' for n, a in request) or 'nothing'}, "
            f"but for {waited:.0f} s no live node has had {missing}. Add a node with these "
            f"resources, lower the request, or raise unschedulable_task_timeout_s "
            f"(init(_system_config=...), or ${TIMEOUT_ENVIRONMENT} for the head).")
