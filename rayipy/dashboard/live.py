"""What the dashboard draws over time: resource rings per worker and node, logs per worker.

    head's loop (writer)                         LiveData                HTTP threads (readers)
    agent heartbeat  -- node_sample() ------>   rings per worker/node  <-- series_view()
    LOG (worker)     -- log_lines() -------->   ring per worker        <-- logs_view(after, search)

The head's ``TaskHistory`` says which tasks ran; this module keeps what changes with time
but is not a task: each worker's CPU and resident memory (RSS), each node's memory and
object store use, one sample a second from its agent's heartbeat (``memory_use.sample``),
and each worker's recent output lines as the head forwards them to their owners.

Everything is bounded: ``SERIES_POINTS`` samples per worker and node (ten minutes),
``LOG_LINES`` lines per worker, ``MAX_KEYS`` workers (the longest silent is forgotten
first), ``MAX_LINE`` characters a line. The head's thread writes, HTTP threads read, both
under one lock held only to append or to copy: a LOG message costs the head a lock and a
few appends, whether or not anyone looks.

Pure: no sockets, no clock read (``now`` is passed in, epoch seconds).
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Iterable

SERIES_POINTS = 600        # one a second: the last ten minutes
LOG_LINES = 2000           # per worker
MAX_KEYS = 512             # workers (and nodes) remembered
MAX_LINE = 2000            # characters of one output line kept
MAX_LOG_ANSWER = 2000      # lines in one answer


def worker_key(address: str, pid: int) -> str:
    """How the dashboard names a worker: "address:pid" (a pid alone repeats across nodes)."""
    return f"{address}:{pid}" if address else f"?:{pid}"


def cpu_fraction(before: tuple[float, float] | None, after: tuple[float, float]) -> float | None:
    """A process's CPU use between two (epoch seconds, cumulative CPU seconds) samples, as
    a share of one core (1.0: one core busy); None without an earlier sample, or when the
    counter went back (a new process behind the same pid)."""
    if before is None:
        return None
    elapsed = after[0] - before[0]
    used = after[1] - before[1]
    if elapsed <= 0 or used < 0:
        return None
    return round(used / elapsed, 3)


class LiveData:
    """The rings; see the module's docstring. One per head."""

    def __init__(self, points: int = SERIES_POINTS, log_lines: int = LOG_LINES,
                 max_keys: int = MAX_KEYS) -> None:
        self._lock = threading.Lock()
        self.points = points
        self.lines_per_worker = log_lines
        self.max_keys = max_keys
        # worker key -> deque of (t, cpu share or None, rss bytes or None)
        self.workers: collections.OrderedDict[str, collections.deque[tuple]] = collections.OrderedDict()
        # node address -> deque of (t, memory used, memory total, store used, store capacity, cpu share)
        self.nodes: collections.OrderedDict[str, collections.deque[tuple]] = collections.OrderedDict()
        self._cpu_seen: dict[str, tuple[float, float]] = {}   # key -> last (t, cpu seconds)
        # worker key -> deque of (seq, t, stream, text, task name)
        self.logs: collections.OrderedDict[str, collections.deque[tuple]] = collections.OrderedDict()
        self.log_seq = 0           # lines added so far: the cursor an incremental reader keeps

    # -- writers (the head's thread) ---------------------------------------------------------
    def node_sample(self, address: str, now: float, store: Any, memory: Any) -> None:
        """A node agent's heartbeat: its store summary and its ``memory_use.sample`` (what
        the network sent: shapes are checked, anything odd is skipped)."""
        if not isinstance(memory, dict):
            return
        rss = memory.get("workers") if isinstance(memory.get("workers"), dict) else {}
        cpu = memory.get("cpu") if isinstance(memory.get("cpu"), dict) else {}
        store = store if isinstance(store, dict) else {}
        with self._lock:
            node_cpu = None
            busy = memory.get("cpu_busy")
            if isinstance(busy, (int, float)):
                node_key = "node " + address
                node_cpu = cpu_fraction(self._cpu_seen.get(node_key), (now, float(busy)))
                self._cpu_seen[node_key] = (now, float(busy))
            self._ring(self.nodes, address).append((
                now, _int(memory.get("used")), _int(memory.get("total")),
                _int(store.get("used")), _int(store.get("capacity")), node_cpu))
            for pid in {*rss, *cpu}:
                key = worker_key(address, _int(pid) or 0)
                share = None
                seconds = cpu.get(pid)
                if isinstance(seconds, (int, float)):
                    share = cpu_fraction(self._cpu_seen.get(key), (now, float(seconds)))
                    self._cpu_seen[key] = (now, float(seconds))
                self._ring(self.workers, key).append((now, share, _int(rss.get(pid))))
            if len(self._cpu_seen) > 2 * self.max_keys:
                keep = {*self.workers, *("node " + a for a in self.nodes)}
                self._cpu_seen = {k: v for k, v in self._cpu_seen.items() if k in keep}

    def log_lines(self, key: str, lines: Iterable[Any], now: float) -> None:
        """Output lines a worker sent (``Kind.LOG``: (stream, text, task name, task id)),
        as the head forwards them to their owner."""
        with self._lock:
            ring = self._ring(self.logs, key, self.lines_per_worker)
            seq = self.log_seq
            for line in lines:
                try:
                    stream, text, name = str(line[0]), str(line[1]), str(line[2])
                except (TypeError, IndexError):
                    continue
                seq += 1
                ring.append((seq, now, stream, text[:MAX_LINE], name))
            self.log_seq = seq

    def _ring(self, table: collections.OrderedDict, key: str, size: int | None = None) -> collections.deque:
        ring = table.get(key)
        if ring is None:
            ring = table[key] = collections.deque(maxlen=size or self.points)
            while len(table) > self.max_keys:
                table.popitem(last=False)        # the one silent longest
        else:
            table.move_to_end(key)
        return ring

    # -- readers (HTTP threads) --------------------------------------------------------------
    def series_view(self, since: float = 0.0) -> dict:
        """``{"workers": {key: [[t, cpu, rss], ...]}, "nodes": {address: [[t, used, total,
        store used, store capacity, cpu], ...]}}``, the samples newer than ``since``."""
        with self._lock:
            workers = {k: [list(p) for p in ring if p[0] > since] for k, ring in self.workers.items()}
            nodes = {k: [list(p) for p in ring if p[0] > since] for k, ring in self.nodes.items()}
        return {"workers": workers, "nodes": nodes}

    def logs_view(self, after: int = 0, search: str = "", worker: str = "",
                  limit: int = MAX_LOG_ANSWER) -> dict:
        """The lines after cursor ``after`` (0: all kept), oldest first, of ``worker`` (a
        key; "" all) whose text or task name contains ``search`` (case-insensitive); at
        most ``limit``, the newest. ``next`` is the cursor for the following call."""
        needle = search.lower()
        with self._lock:
            chosen = [(key, ring) for key, ring in self.logs.items() if not worker or key == worker]
            found = []
            for key, ring in chosen:
                for seq, t, stream, text, name in reversed(ring):
                    if seq <= after:
                        break
                    if needle and needle not in text.lower() and needle not in name.lower():
                        continue
                    found.append((seq, t, key, stream, text, name))
            cursor = self.log_seq
        found.sort()
        more = max(0, len(found) - limit)
        return {"next": cursor, "not_shown": more,
                "lines": [{"seq": s, "t": t, "worker": k, "stream": st, "text": x, "task": n}
                          for s, t, k, st, x, n in found[more:]]}

    def log_workers(self) -> list[str]:
        """The workers with output kept."""
        with self._lock:
            return list(self.logs)


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
