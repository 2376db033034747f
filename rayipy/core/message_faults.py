"""What a process's loop does with a message it cannot handle: count it, log it, go on.

Each process (the head, a node agent) dispatches messages through a table
``{Kind: handler}``. A kind missing from the table is counted as ``"unexpected kind"``
and logged at most once per ``quiet_seconds`` (a peer that keeps sending it must not
flood the log); a handler that raises is counted as ``"handler error"`` and logged with
its traceback every time. Neither stops the loop: nothing a peer sends may stop a process.

The caller looks the handler up and runs it itself (the hot path stays one dict lookup
and one call); it comes here only when something went wrong.
"""

from __future__ import annotations

import collections
import logging
from typing import Any

UNEXPECTED = "unexpected kind"
HANDLER_ERROR = "handler error"
QUIET_SECONDS = 10.0


class MessageFaults:
    """Counts (into ``counts``, e.g. an endpoint's ``dropped``) and logs failed messages."""

    def __init__(self, log: logging.Logger, counts: collections.Counter[str],
                 quiet_seconds: float = QUIET_SECONDS) -> None:
        self.log = log
        self.counts = counts
        self.quiet_seconds = quiet_seconds
        self._next_unexpected_log = float("-inf")

    def unexpected(self, kind: Any, sender: bytes | None, now: float) -> None:
        """No handler for ``kind``: count it; log it unless one was logged lately."""
        self.counts[UNEXPECTED] += 1
        if now >= self._next_unexpected_log:
            self._next_unexpected_log = now + self.quiet_seconds
            self.log.warning("dropped a message of unexpected kind %s from %r (%d so far; "
                             "more are counted, not logged, for %.0f s)",
                             getattr(kind, "name", kind), sender, self.counts[UNEXPECTED],
                             self.quiet_seconds)

    def handler_failed(self, kind: Any, sender: bytes | None) -> None:
        """The handler for ``kind`` raised: count it and log the traceback.

        Call it from the ``except`` block, where the exception is the one being handled.
        """
        self.counts[HANDLER_ERROR] += 1
        self.log.exception("error handling %s from %r", getattr(kind, "name", kind), sender)
