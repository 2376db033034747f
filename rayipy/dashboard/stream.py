"""The task stream and the failures list, read from a snapshot (HTTP threads; pure).

The task stream draws one lane per worker and one bar per task, from the records the
head's ``TaskHistory`` keeps (start, duration, worker, status). A page asks for the bars
newer than a cursor (``after``: the ``next`` of its previous answer), so each update
carries only the tasks that ended since; the cursor counts records, not time, because a
worker's direct calls reach the head up to a second after they ended.

Bars are compact ([lane, function, start, duration, outcome], with the lane and function
names in tables of their own) because a busy cluster ends thousands of tasks a second;
an answer carries at most ``limit`` of them (the newest), and says how many it left out.

Failures are kept apart by the history (``TaskHistory.failures``), so that 30 identical
successes never push the 3 failures out of sight; ``failures_view`` filters them by
function and by outcome.
"""

from __future__ import annotations

from typing import Any

from rayipy.dashboard.history import FAILURES_CAPACITY, failure_of
from rayipy.dashboard.live import worker_key
from rayipy.dashboard.snapshot import Snapshot
from rayipy.protocol.messages import CANCELLED, CRASHED, OK

STREAM_LIMIT = 5_000      # bars in one answer
FAILURES_LIMIT = 1_000
HEAD_LANE = "head"        # tasks the head failed before they ran (no worker)
# The outcome codes a bar carries: 0 finished, then the failures by cause.
OUTCOMES = ("finished", "raised", "cancelled", "worker died")


def outcome_code(status: int) -> int:
    """A protocol status as the stream's small outcome code (``OUTCOMES``' index)."""
    if status == OK:
        return 0
    if status == CANCELLED:
        return 2
    if status == CRASHED:
        return 3
    return 1


def records_after(snapshot: Snapshot, after: int) -> tuple:
    """The history records appended after cursor ``after`` (all kept when it is older)."""
    recent = snapshot.recent
    first = snapshot.recent_seq - len(recent) + 1      # the cursor of recent[0]
    skip = max(0, after - first + 1)
    return recent[skip:] if skip else recent


def stream_view(snapshot: Snapshot, after: int = 0, since: float = 0.0,
                limit: int = STREAM_LIMIT) -> dict[str, Any]:
    """The bars of tasks recorded after cursor ``after`` that ended after ``since`` (epoch
    seconds), at most ``limit`` (the newest). ``next`` is the cursor for the next call."""
    chosen = [item for item in records_after(snapshot, after) if item[6] > since]
    left_out = max(0, len(chosen) - limit)
    if left_out:
        chosen = chosen[left_out:]
    lanes: dict[str, int] = {}
    names: dict[str, int] = {}
    bars = []
    addresses = snapshot.node_addresses
    for item in chosen:
        task_id, name, status, node_id, pid, duration, ended, worker_id = item[:8]
        lane = worker_key(addresses.get(node_id, ""), pid) if pid else HEAD_LANE
        started = item[11] if item[11] else ended - duration
        bars.append([lanes.setdefault(lane, len(lanes)), names.setdefault(name, len(names)),
                     round(started, 4), round(duration, 5), outcome_code(status)])
    return {"now": snapshot.taken_at, "next": snapshot.recent_seq, "lanes": list(lanes),
            "names": list(names), "bars": bars, "not_shown": left_out, "outcomes": list(OUTCOMES)}


def split_error(error: str) -> tuple[str, str]:
    """"ClassName: message" as (type, message); ("", error) when it has no type."""
    head, sep, rest = error.partition(": ")
    if sep and head and " " not in head:
        return head, rest
    return "", error


def failures_view(snapshot: Snapshot, function: str = "", state: str = "", after: int = 0,
                  limit: int = FAILURES_LIMIT) -> dict[str, Any]:
    """The failed tasks kept, newest first: those of ``function`` (exact name; "" all) that
    failed as ``state`` ("raised", "cancelled", "worker died"; "" all) and were recorded
    after cursor ``after``. ``functions`` and ``counts`` describe every kept failure, so a
    page can offer its filters."""
    if state and state not in OUTCOMES[1:]:
        raise ValueError(f"state must be one of {', '.join(OUTCOMES[1:])}, got {state!r}")
    rows = []
    functions: dict[str, int] = {}
    counts: dict[str, int] = {}
    addresses = snapshot.node_addresses
    for seq, item in reversed(snapshot.failures):
        name, status = item[1], item[2]
        failure = failure_of(status)
        functions[name] = functions.get(name, 0) + 1
        counts[failure] = counts.get(failure, 0) + 1
        if seq <= after or (function and name != function) or (state and failure != state):
            continue
        if len(rows) >= limit:
            continue
        error_type, message = split_error(item[10])
        rows.append({"seq": seq, "task_id": item[0].hex(), "name": name, "failure": failure,
                     "error_type": error_type, "message": message,
                     "address": addresses.get(item[3], ""), "worker_pid": item[4],
                     "duration_s": item[5], "ended_at": item[6]})
    newest = snapshot.failures[-1][0] if snapshot.failures else 0
    return {"next": max(after, newest), "failures": rows, "functions": functions, "counts": counts,
            "capacity": FAILURES_CAPACITY}
