"""Real memory use beside the memory *reservation*: the agent's figures and how each place
shows them (rayipy status, %cluster status, the dashboard)."""

from __future__ import annotations

import os

from rayipy.cli_status import format_status
from rayipy.core.scheduler import Scheduler
from rayipy.dashboard.history import TaskHistory
from rayipy.dashboard.page import render_body
from rayipy.dashboard.snapshot import HeadFacts, build_snapshot
from rayipy.jupyter.reprs import status_html, status_text
from rayipy.core.memory_report import memory_in_use
from rayipy.core.memory_report import node_memory_figures as figures
from rayipy.node.memory_use import sample

GIB, MIB = 2**30, 2**20
NODE = "aa" * 8
USE = {"used": 3 * GIB, "total": 16 * GIB, "workers": {101: 200 * MIB, 102: 100 * MIB}}
STATUS = {"cluster_id": "c", "address": "tcp://10.0.0.1:6379", "uptime": 1.0,
          "nodes": [{"NodeID": NODE, "NodeManagerAddress": "10.0.0.1",
                     "Resources": {"CPU": 2.0, "memory": 12 * GIB}}],
          "available": {NODE: {"CPU": 2.0, "memory": 12 * GIB}},
          "memory_use": {NODE: USE}, "tasks": {}}


def test_the_sample_is_the_machines_use_and_each_live_workers_rss():
    use = sample([os.getpid(), 2**22 + 12345])        # the second pid does not exist
    assert 0 < use["used"] < use["total"]
    assert list(use["workers"]) == [os.getpid()] and use["workers"][os.getpid()] > 0


def test_figures_from_the_network_are_checked_for_shape():
    assert figures({}) == {} and figures({"memory_use": "junk"}) == {}
    assert figures({"memory_use": USE}) == USE


def test_rayipy_status_shows_use_per_node_and_calls_the_resource_a_reservation():
    text = format_status(STATUS)
    assert ("      memory in use 3.0 GiB / 16.0 GiB; workers' RSS 300.0 MiB (2 workers, "
            "largest 200.0 MiB)") in text.splitlines()
    assert "  memory  0 B/12.00 GiB reserved by tasks (real use: under Nodes)" in text.splitlines()
    assert memory_in_use({}) == ""


def test_cluster_status_shows_use_per_node():
    html = status_html(STATUS, [], {}, {}, "")
    assert "<th>memory in use</th>" in html and "memory in use 3.0 GiB / 16.0 GiB" in html
    assert "memory reservation 12.0 GiB" in html
    assert "node aaaaaaaa memory in use 3.0 GiB / 16.0 GiB" in status_text(STATUS, [], {})


def test_dashboard_shows_node_use_and_each_workers_rss():
    scheduler = Scheduler()
    scheduler.add_node(b"node-001", b"agent-01", {"CPU": 1.0, "memory": 12.0 * GIB},
                       {"ip": "10.0.0.7", "hostname": "h1", "memory_use": USE})
    scheduler.add_worker(b"worker-1", b"node-001", 101)
    facts = HeadFacts("c", "tcp://10.0.0.1:6379", "", 0.0, "0")
    snapshot = build_snapshot(scheduler, TaskHistory(), facts, 1.0)
    [node] = snapshot.status["nodes"]
    assert node["memory"] == {"used": 3 * GIB, "total": 16 * GIB}
    assert node["workers"][0]["rss_bytes"] == 200 * MIB
    page = render_body(snapshot, 1.0)
    assert "memory reserved" in page and "memory in use" in page and "200.0 MiB" in page
