"""Placement groups and node affinity across two real hosts (network namespaces)."""

from __future__ import annotations

import json

PASSWORD = "5241590000000000"


def start(a, b):
    started = a.rayipy("start", "--head", "--node-ip-address", a.ip, "--num-cpus", "2",
                       "--password", PASSWORD)
    assert started.returncode == 0, started.stderr
    joined = b.rayipy("start", f"--address={a.ip}:6379", "--password", PASSWORD, "--num-cpus", "2")
    assert joined.returncode == 0, joined.stderr


def test_strict_spread_bundles_land_on_both_hosts_and_affinity_pins_a_task(two_hosts):
    a, b = two_hosts
    start(a, b)
    result = a.python("""
        import json
        import rayipy
        from rayipy.util.placement_group import placement_group, placement_group_table
        from rayipy.util.scheduling_strategies import (NodeAffinitySchedulingStrategy,
                                                        PlacementGroupSchedulingStrategy)
        rayipy.init(address="auto")

        @rayipy.remote(num_cpus=1)
        def where():
            return rayipy.get_runtime_context().get_node_id()

        import time
        deadline = time.monotonic() + 60
        while len([n for n in rayipy.nodes() if n["Alive"]]) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
        assert pg.wait(60)
        bundles = placement_group_table(pg)["bundles_to_node_id"]
        ran = [rayipy.get(where.options(
            scheduling_strategy=PlacementGroupSchedulingStrategy(pg, i)).remote(), timeout=60)
            for i in (0, 1)]
        nodes = {n["NodeManagerAddress"]: n["NodeID"] for n in rayipy.nodes() if n["Alive"]}
        pinned = [rayipy.get(where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            nodes[ip], soft=False)).remote(), timeout=60) for ip in sorted(nodes)]
        print(json.dumps({"bundles": [bundles[0], bundles[1]], "ran": ran,
                          "nodes": [nodes[ip] for ip in sorted(nodes)], "pinned": pinned}))
    """, timeout=180)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(set(out["bundles"])) == 2                  # one bundle per host
    assert out["ran"] == out["bundles"]                   # each task in its bundle's host
    assert out["pinned"] == out["nodes"]                  # each pinned task on its host
