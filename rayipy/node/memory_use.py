"""A node's real memory use, for its agent's heartbeat: the machine's and each worker's.

The ``memory`` *resource* is a reservation (what tasks asked for with ``memory=``), not
what they use; users read "0 B / 23.5 GiB" as use. So the agent also reports what the
operating system says: the machine's memory in use (total minus available, as ``free``
and ``ray status`` count it) and each of its workers' resident set size (RSS). The
figures ride at the end of the agent's heartbeat body (``Kind.HEARTBEAT``), once a
second, and the head keeps the last ones in the node's info (``memory_use``).

Costs a few reads of /proc per worker per second, on the agent's thread. Reading the
figures back and writing them for people is pure: ``rayipy.core.memory_report``.
"""

from __future__ import annotations

from typing import Iterable

import psutil



def sample(pids: Iterable[int]) -> dict[str, object]:
    """``{"used": bytes, "total": bytes, "workers": {pid: rss bytes}}``; a worker that
    has just exited is left out."""
    memory = psutil.virtual_memory()
    workers: dict[int, int] = {}
    for pid in pids:
        try:
            workers[pid] = psutil.Process(pid).memory_info().rss
        except (psutil.Error, OSError):
            continue
    return {"used": int(memory.total - memory.available), "total": int(memory.total),
            "workers": workers}
