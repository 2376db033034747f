"""What the page's event stream (``api/events``, Server-Sent Events) carries, event by event.

One stream per open page; the server sends an ``update`` about once a second, built on
the HTTP thread from the latest snapshot (shared by every page: the head's loop builds
at most two a second however many look) and the head's rings (``live.py``). The first
event carries what the page draws at once: the task stream's last ``WINDOW`` seconds,
the failures kept, the CPU and memory samples of that window, the last log lines. Each
later one carries only what is new since the previous event (cursors in
``EventCursor``), so an open page costs the head the tasks that ended since, not the
whole picture again; an event with nothing new is not sent (a keep-alive comment is).

The server-rendered part of the page (tiles, tables: ``page.render_body``) rides along
when the snapshot changed, rendered once per snapshot for every page.

Pure: functions of their arguments, no sockets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rayipy.dashboard.live import LiveData, worker_key
from rayipy.dashboard.snapshot import Snapshot
from rayipy.dashboard.stream import failures_view, stream_view

WINDOW = 300.0            # seconds of task stream and samples a page is given at first
MAX_WINDOW = 600.0        # what it may ask for (?window=): the rings keep ten minutes
MAX_STREAMS = 8           # pages open at once; more are answered 503
FIRST_LOG_LINES = 500     # log lines in the first event (the page asks api/logs for more)
LOG_LINES_PER_EVENT = 1000


@dataclass
class EventCursor:
    """Where one page's stream is: what it has been sent already."""
    tasks: int = 0          # the history's record cursor (``stream_view``'s ``next``)
    failures: int = 0
    logs: int = 0
    series_t: float = 0.0   # the newest sample sent (epoch seconds)
    snapshot_at: float = 0.0


def workers_now(snapshot: Snapshot) -> dict[str, dict]:
    """Each worker by its stream lane name ("address:pid"): state, current task."""
    out = {}
    for node in snapshot.status["nodes"]:
        for worker in node["workers"]:
            task = worker["task"]
            out[worker_key(node["address"], worker["pid"])] = {
                "state": worker["state"], "node": node["address"],
                "task": task["name"] if task else None,
                "task_started_at": task["started_at"] if task else None,
                "actor": worker["actor"]["class_name"] if worker["actor"] else None}
    return out


def nodes_now(snapshot: Snapshot) -> dict[str, dict]:
    """Each node by address: its object store's figures and memory in use."""
    return {node["address"]: {"object_store": node["object_store"], "memory": node["memory"],
                              "hostname": node["hostname"]}
            for node in snapshot.status["nodes"]}


def first_event(snapshot: Snapshot, fresh: bool, body: str, live: LiveData,
                cursor: EventCursor, window: float | None = None) -> dict[str, Any]:
    """The first event of a stream: the last ``window`` seconds; moves ``cursor``."""
    window = WINDOW if window is None else min(float(window), MAX_WINDOW)
    since = snapshot.taken_at - window
    cursor.series_t = since
    return _event(snapshot, fresh, body, live, cursor, since, FIRST_LOG_LINES, first=True)


def next_event(snapshot: Snapshot, fresh: bool, body: str, live: LiveData,
               cursor: EventCursor) -> dict[str, Any] | None:
    """What is new since ``cursor`` (None: nothing); moves ``cursor``."""
    return _event(snapshot, fresh, body, live, cursor, 0.0, LOG_LINES_PER_EVENT, first=False)


def _event(snapshot: Snapshot, fresh: bool, body: str, live: LiveData, cursor: EventCursor,
           since: float, log_limit: int, first: bool) -> dict[str, Any] | None:
    changed = first or snapshot.taken_at != cursor.snapshot_at
    stream = stream_view(snapshot, cursor.tasks, since)
    failures = failures_view(snapshot, after=cursor.failures)
    series = live.series_view(cursor.series_t)
    logs = live.logs_view(after=cursor.logs, limit=log_limit)
    newest = [p[0] for points in (*series["workers"].values(), *series["nodes"].values())
              for p in points[-1:]]
    if not (changed or stream["bars"] or failures["failures"] or logs["lines"] or newest):
        return None
    cursor.tasks = stream["next"]
    cursor.failures = failures["next"]
    cursor.logs = logs["next"]
    cursor.series_t = max([cursor.series_t, *newest])
    cursor.snapshot_at = snapshot.taken_at
    event: dict[str, Any] = {"first": first, "now": snapshot.taken_at, "fresh": fresh,
                             "stream": stream, "failures": failures, "series": series,
                             "logs": logs}
    if changed:
        event["body"] = body
        event["tasks"] = snapshot.status["tasks"]
        event["workers"] = workers_now(snapshot)
        event["nodes"] = nodes_now(snapshot)
    return event
