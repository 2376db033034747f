"""What a process's loop does with a message it cannot handle: count it, log it, go on.

Each process (the head, a node agent) dispatches messages through a table
``{Kind: handler}``. A kind missing from the table is counted as ``"unexpected kind"``
and logged at most once per ``quiet_seconds`` (a peer that keeps sending it must not
flood the log); a handler that raises is counted as ``"handler error"`` and logged with
its traceback, at most once per ``quiet_seconds`` for each kind, the next line saying how
many were not logged (a peer that sends a malformed body in a loop once wrote a traceback
per message). Neither stops the loop: nothing a peer sends may stop a process.

The caller looks the handler up and runs it itself (the hot path stays one dict lookup
and one call); it comes here only when something went wrong.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any

UNEXPECTED = "unexpected kind"
HANDLER_ERROR = "handler error"
QUIET_SECONDS = 10.0
MAX_KINDS = 256


class MessageFaults:
    """Counts (into ``counts``, e.g. an endpoint's ``dropped``) and logs failed messages."""

    def __init__(self, log: logging.Logger, counts: collections.Counter[str],
                 quiet_seconds: float = QUIET_SECONDS) -> None:
        self.log = log
        self.counts = counts
        self.quiet_seconds = quiet_seconds
        self._next_unexpected_log = float("-inf")
        # kind -> (when its next traceback may be logged, failures not logged since)
        self._handler_logs: dict[Any, tuple[float, int]] = {}

    def unexpected(self, kind: Any, sender: bytes | None, now: float) -> None:
        """No handler for ``kind``: count it; log it unless one was logged lately."""
        self.counts[UNEXPECTED] += 1
        if now >= self._next_unexpected_log:
            self._next_unexpected_log = now + self.quiet_seconds
            self.log.warning("dropped a message of unexpected kind %s from %r (%d so far; "
                             "more are counted, not logged, for %.0f s)",
                             getattr(kind, "name", kind), sender, self.counts[UNEXPECTED],
                             self.quiet_seconds)

    def handler_failed(self, kind: Any, sender: bytes | None, now: float | None = None) -> None:
        """The handler for ``kind`` raised: count it and log the traceback, unless one
        was logged for this kind within ``quiet_seconds`` (``now``: monotonic seconds,
        by default the clock's).

        Call it from the ``except`` block, where the exception is the one being handled.
        """
        self.counts[HANDLER_ERROR] += 1
        now = time.monotonic() if now is None else now
        next_log, unlogged = self._handler_logs.get(kind, (float("-inf"), 0))
        if now < next_log:
            self._handler_logs[kind] = (next_log, unlogged + 1)
            return
        if len(self._handler_logs) > MAX_KINDS:   # kinds are a closed enum; be safe anyway
            self._handler_logs.clear()
        self._handler_logs[kind] = (now + self.quiet_seconds, 0)
        more = (f" ({unlogged} more since the last one logged, counted, not logged)"
                if unlogged else "")
        self.log.exception("error handling %s from %r%s", getattr(kind, "name", kind), sender,
                           more)
