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


class RejectPacer:
    """Keeps the share of a thread's time spent rejecting unauthenticated messages under
    ``share``: after each rejection, how long to rest. Pure: the caller passes the
    time and the cost of the rejection.

    A flood from a stranger arrives as fast as its sender can write; a head that
    rejects it flat out holds a whole core, and on a small machine the processes doing
    real work (a driver, a worker) wait for the scheduler behind it: a busy loop on the
    same core adds about 3.5 ms to a round trip's p99 here. Resting in slices of at
    most ``slice_seconds`` bounds that, and what a legitimate message read meanwhile
    waits. Time the thread spends on anything else counts as rest.
    """

    def __init__(self, share: float = 0.5, slice_seconds: float = 0.001) -> None:
        if not 0 < share <= 1 or slice_seconds <= 0:
            raise ValueError("share must be in (0, 1] and slice_seconds positive")
        self.share = share
        self.slice_seconds = slice_seconds
        self._owed = 0.0                 # rest owed for rejections so far
        self._last: float | None = None  # when the last rejection ended (or its rest)
        self.rested = 0.0                #: seconds of rest prescribed, ever

    def rejected(self, cost: float, now: float) -> float:
        """A rejection that took ``cost`` seconds ended at ``now``: seconds to rest now
        (0.0: none yet)."""
        if self._last is not None:   # what passed since, besides this rejection, was rest
            self._owed = max(0.0, self._owed - max(0.0, now - self._last - cost))
        self._owed += cost * (1.0 - self.share) / self.share
        self._last = now
        if self._owed < self.slice_seconds:
            return 0.0
        rest, self._owed = self._owed, 0.0
        self._last = now + rest
        self.rested += rest
        return rest
