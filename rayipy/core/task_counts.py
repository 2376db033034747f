"""The one definition of the cluster-wide task counts, and the tally that keeps them.

Every place that shows how many tasks ended (``rayipy status``, ``%cluster status``, the
dashboard's ``/api/status``, the JupyterLab sidebar) reads these figures from the head's
``Scheduler.summary()``, so they always agree:

- ``finished``: the task's function returned normally (status ``OK``);
- ``failed``: it raised, its worker died out of retries, or the head refused or failed it
  (``ERROR``, ``CRASHED``);
- ``cancelled``: ``rayipy.cancel`` stopped it, queued or running (``CANCELLED``); never
  counted as failed or finished.

Tasks sent through the head and work that bypasses it (actor method calls, tasks run on a
worker leased to a driver) are both counted: the head sees the first kind one by one, and
the second in each worker's heartbeat, as cumulative counts per function name (done,
failed, cancelled), of which ``DirectTally`` keeps only what is new. A direct call
cancelled before it ran is answered through the head, which counts it as cancelled; one
cancelled while it runs, by its worker's heartbeat, likewise as cancelled.

Pure: no sockets, no clock; the head's thread owns it.
"""

from __future__ import annotations

from typing import Mapping

from rayipy.protocol.messages import CANCELLED, OK, RETURNED

FINISHED, FAILED, CANCELLED_COUNT = "finished", "failed", "cancelled"
OUTCOMES = (FINISHED, FAILED, CANCELLED_COUNT)
SLACK = 64     # gone workers remembered before a sweep


def outcome(status: int) -> str | None:
    """Which count a task result with this protocol status adds to (None: not an end;
    a ``RETURNED`` task was handed back unrun and will end elsewhere)."""
    if status == OK:
        return FINISHED
    if status == CANCELLED:
        return CANCELLED_COUNT
    if status == RETURNED:
        return None
    return FAILED


class DirectTally:
    """What is new in each worker's cumulative direct-work counts.

    A heartbeat's counts are ``{name: (done, failed, cancelled, seconds)}`` since the
    worker started (``rayipy.dashboard.direct_work``); ``new`` returns the (done, failed,
    cancelled) added since that worker's previous heartbeat. A worker that is gone keeps
    what it reported.
    """

    def __init__(self) -> None:
        # worker id -> (done, failed, cancelled) so far
        self.seen: dict[bytes, tuple[int, int, int]] = {}

    def new(self, worker_id: bytes,
            counts: Mapping[str, tuple[int, int, int, float]]) -> tuple[int, int, int]:
        done = failed = cancelled = 0
        for entry in counts.values():
            done += int(entry[0])
            failed += int(entry[1])
            cancelled += int(entry[2])
        was_done, was_failed, was_cancelled = self.seen.get(worker_id, (0, 0, 0))
        self.seen[worker_id] = (done, failed, cancelled)
        return (max(0, done - was_done), max(0, failed - was_failed),
                max(0, cancelled - was_cancelled))

    def prune(self, live: Mapping[bytes, object]) -> None:
        """Forget workers no longer in ``live`` (the scheduler's worker table), once there
        are more than a few of them, so that a long session stays bounded."""
        if len(self.seen) > len(live) + SLACK:
            for worker_id in [w for w in self.seen if w not in live]:
                del self.seen[worker_id]
