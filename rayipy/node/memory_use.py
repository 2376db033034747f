"""A node's real memory use, for its agent's heartbeat: the machine's and each worker's.

The ``memory`` *resource* is a reservation (what tasks asked for with ``memory=``), not
what they use; users read "0 B / 23.5 GiB" as use. So the agent also reports what the
operating system says: the machine's memory in use (total minus available, as ``free``
and ``ray status`` count it) and each of its workers' resident set size (RSS). The
figures ride at the end of the agent's heartbeat body (``Kind.HEARTBEAT``), once a
second, and the head keeps the last ones in the node's info (``memory_use``). The same
sample carries CPU seconds per worker and for the machine, for the dashboard's charts.

Costs a few reads of /proc per worker per second, on the agent's thread. Reading the
figures back and writing them for people is pure: ``rayipy.core.memory_report``.
"""

from __future__ import annotations

from typing import Iterable

import psutil


def sample(pids: Iterable[int]) -> dict[str, object]:
    """``{"used": bytes, "total": bytes, "workers": {pid: rss bytes}, "cpu": {pid: CPU
    seconds so far}, "cpu_busy": the machine's busy CPU seconds so far, "cpus": cores}``;
    a worker that has just exited is left out. CPU figures are cumulative: the head's
    dashboard turns two samples into a share of a core (``rayipy.dashboard.live``)."""
    memory = psutil.virtual_memory()
    workers: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for pid in pids:
        try:
            process = psutil.Process(pid)
            with process.oneshot():      # one read of /proc/PID/stat for both figures
                workers[pid] = process.memory_info().rss
                times = process.cpu_times()
            cpu[pid] = round(times.user + times.system, 3)
        except (psutil.Error, OSError):
            continue
    machine = psutil.cpu_times()
    # Linux counts guest time inside user time already: left out so nothing counts twice.
    busy = (sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
            - getattr(machine, "guest", 0.0) - getattr(machine, "guest_nice", 0.0))
    return {"used": int(memory.total - memory.available), "total": int(memory.total),
            "workers": workers, "cpu": cpu, "cpu_busy": round(busy, 3),
            "cpus": psutil.cpu_count() or 1}
