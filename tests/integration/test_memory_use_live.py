"""A real cluster reports real memory use: the node's, and each worker's RSS."""

from __future__ import annotations

from helpers import wait_until


def test_the_head_knows_each_nodes_memory_use_and_its_workers_rss(cluster):
    from rayipy.core.object_ref import current_runtime
    runtime = current_runtime()
    pids = wait_until(lambda: {w["pid"] for w in runtime.request("workers")}, timeout=20)

    def reported():
        use = cluster.cluster_status()["memory_use"]
        return len(use) == 1 and set(next(iter(use.values())).get("workers", {})) >= pids and use

    use = next(iter(wait_until(reported, timeout=20, message="no memory figures").values()))
    assert 0 < use["used"] < use["total"]
    assert all(use["workers"][pid] > 1 << 20 for pid in pids)   # a Python process: > 1 MiB
