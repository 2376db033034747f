"""Who is alive: the pure rules behind silence, stalls and a driver's grace period.

A Python heartbeat proves that a process's interpreter runs, not that the process is
there: a kernel holding the GIL for a minute (a long regex, a C extension) or stopped
(SIGSTOP, a closed laptop, a paused VM) sends nothing, yet comes back with its state.
So liveness is judged by the connection, and Python silence only ever delays a verdict:

- ``SilenceClock`` (every driver and worker, about its head): the head is gone after
  ``limit`` seconds without word *while this process ran*. A turn of the I/O loop that
  comes long after the last one means this process did not run meanwhile (stopped, or
  its I/O thread starved of the GIL): that gap does not count as the head's silence,
  and the process asks the head again (``stalled``) before it trusts anything.
- ``DriverSessions`` (the head, about its drivers): a driver is alive while its
  connection is. The head's socket pings every peer at the ZeroMQ level (ZMTP
  heartbeats, answered by libzmq's own I/O thread, which needs no GIL), and closes a
  connection that has not answered within the grace period. A send to a driver whose
  connection is closed fails (``ROUTER_MANDATORY``); a driver unreachable for
  ``reconnect_s`` is dropped: its non-detached actors are killed, its queued tasks and
  its objects dropped. A driver that comes back afterwards is told what it lost
  (``Lost``), once a second at most, for as long as the head remembers it.

Both take times from the caller (``time.monotonic()``) and are tested without sockets
(tests/unit/test_liveness.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

DEFAULT_DRIVER_GRACE_S = 300.0   # 5 minutes: a coffee break, a laptop carried to a meeting
MIN_DRIVER_GRACE_S = 1.0         # below the head's ping interval, pings could not tell
MAX_DRIVER_GRACE_S = 7 * 86400.0
STALL_SECONDS = 2.0              # an I/O loop turns every 0.1 s; a gap this long is a stop
RECONNECT_SECONDS = 3.0          # unreachable this long (after the grace, or dead): dropped
SILENT_AFTER_SECONDS = 10.0      # shown as "silent" (busy, stopped, asleep) after this
KEEP_LOST = 100                  # dropped drivers remembered, to tell them when they return
NOTICE_INTERVAL = 1.0            # the "session lost" answer, at most this often per driver

GRACE_SETTING = "driver_grace_period_s"
#: How long agents, workers and drivers wait for a head that keeps a journal to come
#: back after it fell silent (``rayipy start --head --head-restart-wait``), on top of the
#: silence that made them think it gone. A head without a journal cannot come back: 0.
DEFAULT_HEAD_RESTART_WAIT_S = 60.0


def check_grace_period(value: Any) -> float:
    """``driver_grace_period_s`` as a float, or a ValueError that says what is allowed."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) \
            or not MIN_DRIVER_GRACE_S <= value <= MAX_DRIVER_GRACE_S:
        raise ValueError(
            f"{GRACE_SETTING} is how many seconds a silent driver (a stopped or sleeping "
            f"process) keeps its actors, tasks and objects: a number from "
            f"{MIN_DRIVER_GRACE_S:g} to {MAX_DRIVER_GRACE_S:g}, got {value!r}")
    return float(value)


class SilenceClock:
    """How long a peer has been silent, counting only the time this process ran."""

    def __init__(self, limit: float, now: float, stall: float = STALL_SECONDS) -> None:
        self.limit = limit
        self.stall = stall
        self.last_heard = now
        self.last_turn = now

    def heard(self, now: float) -> None:
        """A message came from the peer."""
        self.last_heard = now

    def turn(self, now: float) -> bool:
        """One turn of the loop that watches the peer; True if this process stalled
        since the last turn (it was stopped, or starved), so the caller checks again."""
        gap = now - self.last_turn
        self.last_turn = now
        if gap <= self.stall:
            return False
        # The time we did not run is nobody's silence: it is left out of the count.
        self.last_heard += gap
        return True

    def silent(self, now: float) -> float:
        """Seconds of counted silence."""
        return now - self.last_heard

    def gone(self, now: float) -> bool:
        """The peer has been silent longer than ``limit`` while we ran."""
        return self.silent(now) > self.limit


class Lost(NamedTuple):
    """What the head dropped with a driver's session, to tell the driver if it returns."""

    actors: int          # non-detached actors killed
    tasks: int           # tasks the head held (queued or running), forgotten
    leases: int          # workers lent to it, taken back (with the task it ran there)
    groups: int          # placement groups removed
    grace: float         # the grace period it outlived
    unreachable: float   # seconds it had been unreachable when dropped

    def describe(self) -> str:
        """The error text a returning driver raises on its next call."""
        parts = [f"{_count(self.actors, 'actor')} killed", f"{_count(self.tasks, 'task')} "
                 f"dropped (not run, or results discarded)"]
        if self.leases:
            parts.append(f"{_count(self.leases, 'leased worker')} taken back")
        if self.groups:
            parts.append(f"{_count(self.groups, 'placement group')} removed")
        parts.append("its objects freed")
        return (f"the head ended this driver's session: its connection was silent for longer "
                f"than the grace period of {self.grace:g} s (the process was stopped or "
                f"asleep, or the network was cut). Lost: {', '.join(parts)}. Detached actors "
                f"remain. Call rayipy.shutdown() and rayipy.init() to start a new session; "
                f"init(_system_config={{'{GRACE_SETTING}': ...}}) or `rayipy start --head "
                f"--driver-grace-period ...` sets a longer grace period.")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


@dataclass
class _Session:
    joined: float
    last_heard: float
    unreachable_since: float | None = None


@dataclass
class _Dropped:
    lost: Lost
    last_notice: float = -math.inf


class DriverSessions:
    """The head's drivers: connected, silent or unreachable, and those it dropped."""

    def __init__(self, grace: float = DEFAULT_DRIVER_GRACE_S,
                 reconnect_s: float = RECONNECT_SECONDS,
                 silent_after: float = SILENT_AFTER_SECONDS, keep_lost: int = KEEP_LOST) -> None:
        self.grace = check_grace_period(grace)
        self.reconnect_s = reconnect_s
        self.silent_after = silent_after
        self.keep_lost = keep_lost
        self.sessions: dict[bytes, _Session] = {}
        self.dropped: dict[bytes, _Dropped] = {}

    def joined(self, driver: bytes, now: float) -> None:
        """A driver registered."""
        self.sessions[driver] = _Session(now, now)
        self.dropped.pop(driver, None)

    def heard(self, driver: bytes, now: float) -> None:
        """A message came from the driver: it is connected (again)."""
        session = self.sessions.get(driver)
        if session is not None:
            session.last_heard = now
            session.unreachable_since = None

    def beat(self, driver: bytes, reachable: bool, now: float) -> bool:
        """The head's heartbeat to the driver was taken (``reachable``: its connection is
        up) or refused (no connection); True when the driver is to be dropped now."""
        session = self.sessions.get(driver)
        if session is None:
            return False
        if reachable:
            session.unreachable_since = None
            return False
        if session.unreachable_since is None:
            session.unreachable_since = now
        return now - session.unreachable_since >= self.reconnect_s

    def unreachable_for(self, driver: bytes, now: float) -> float:
        """Seconds since the driver's connection was found gone (0 if it is up)."""
        session = self.sessions.get(driver)
        if session is None or session.unreachable_since is None:
            return 0.0
        return now - session.unreachable_since

    def state(self, driver: bytes, now: float) -> str:
        """"connected", "silent" (connected, no message for a while: busy, stopped or
        asleep; it keeps everything) or "disconnected" (no connection)."""
        session = self.sessions[driver]
        if session.unreachable_since is not None:
            return "disconnected"
        return "silent" if now - session.last_heard > self.silent_after else "connected"

    def left(self, driver: bytes) -> None:
        """The driver said goodbye (``shutdown``): nothing to tell it later."""
        self.sessions.pop(driver, None)

    def drop(self, driver: bytes, lost: Lost) -> None:
        """The head dropped the driver; remember what it lost (the last ``keep_lost``)."""
        self.sessions.pop(driver, None)
        self.dropped[driver] = _Dropped(lost)
        while len(self.dropped) > self.keep_lost:
            del self.dropped[next(iter(self.dropped))]

    def lost_by(self, driver: bytes) -> Lost | None:
        """What a driver the head dropped lost (None: not dropped, or long forgotten)."""
        dropped = self.dropped.get(driver)
        return dropped.lost if dropped is not None else None

    def notice_for(self, sender: bytes, now: float) -> Lost | None:
        """A message came from an unregistered sender: what it lost, if it is a driver
        the head dropped and was not told in the last ``NOTICE_INTERVAL``."""
        dropped = self.dropped.get(sender)
        if dropped is None or now - dropped.last_notice < NOTICE_INTERVAL:
            return None
        dropped.last_notice = now
        return dropped.lost

    def summary(self, now: float) -> dict[str, int]:
        """How many drivers are in each state (``rayipy status``)."""
        counts = {"connected": 0, "silent": 0, "disconnected": 0}
        for driver in self.sessions:
            counts[self.state(driver, now)] += 1
        return counts
