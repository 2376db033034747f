"""Failed authentications, counted per peer address: answered at a bounded rate and
logged once per interval. Pure: the caller passes the time.

A peer with the wrong key (or someone guessing the password) gets at most
``answers_per_second`` answers a second per address; beyond that its failures are only
counted. The log gets one line per interval with the counts, not one per failure: a
flood from one socket once grew ``head.log`` by hundreds of MiB.
"""

from __future__ import annotations

import collections

ANSWERS_PER_SECOND = 5
LOG_INTERVAL_SECONDS = 10.0
MAX_ADDRESSES = 4096     # addresses remembered at once; the oldest window is dropped first


class FailureThrottle:
    """Failures per peer address in the current second, and what to log."""

    def __init__(self, answers_per_second: int = ANSWERS_PER_SECOND,
                 log_interval: float = LOG_INTERVAL_SECONDS) -> None:
        if answers_per_second < 0 or log_interval <= 0:
            raise ValueError("answers_per_second must be >= 0 and log_interval > 0")
        self.answers_per_second = answers_per_second
        self.log_interval = log_interval
        # address -> (second the window started, failures in it)
        self._windows: collections.OrderedDict[str, tuple[float, int]] = collections.OrderedDict()
        self._unlogged: collections.Counter[tuple[str, str]] = collections.Counter()
        self._last_log: float | None = None
        self.total = 0                               #: failures counted, ever

    def failed(self, address: str, reason: str, now: float, rated: bool = True) -> bool:
        """Count one failure from ``address``; True when it may still be answered (or
        logged on its own), False once the address is over its rate this second.
        ``rated=False``: only logged (a malformed message, not a failed authentication)."""
        self.total += 1
        self._unlogged[(address, reason)] += 1
        if not rated:
            return True
        start, count = self._windows.pop(address, (now, 0))
        if now - start >= 1.0:
            start, count = now, 0
        count += 1
        self._windows[address] = (start, count)
        if len(self._windows) > MAX_ADDRESSES:
            self._windows.popitem(last=False)
        return count <= self.answers_per_second

    def over_limit(self, address: str, now: float) -> bool:
        """Whether ``address`` is past its rate in the current second (a listener
        refuses its new connections then)."""
        window = self._windows.get(address)
        return (window is not None and now - window[0] < 1.0
                and window[1] > self.answers_per_second)

    def report(self, now: float) -> str | None:
        """Once per interval at most: one line with the failures since the last report,
        per address and reason; None when there is nothing to say or it is too soon."""
        if not self._unlogged:
            return None
        if self._last_log is not None and now - self._last_log < self.log_interval:
            return None
        self._last_log = now
        parts = [f"{count} from {address} ({reason})"
                 for (address, reason), count in self._unlogged.most_common(10)]
        others = len(self._unlogged) - len(parts)
        self._unlogged.clear()
        more = f" and {others} more sources" if others > 0 else ""
        return "refused unauthenticated messages: " + ", ".join(parts) + more
