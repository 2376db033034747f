"""The text of memory_summary / `rayipy memory`, and each node's object store figure in
`rayipy status`, `%cluster status` and the dashboard: pure formatting, no cluster."""

from __future__ import annotations

import datetime
import json

import pytest

from rayipy.cli_status import format_status
from rayipy.core.memory_report import (LocalRefs, MemoryData, NodeMemory, Owner, format_memory,
                                       store_figure, store_usage)
from rayipy.core.objects import ObjectTable
from rayipy.core.scheduler import Scheduler
from rayipy.dashboard.history import TaskHistory
from rayipy.dashboard.page import render_body
from rayipy.dashboard.snapshot import HeadFacts, build_snapshot, store_figures
from rayipy.jupyter.reprs import status_html, status_text
from rayipy.protocol.messages import Payload, Stored
from rayipy.units import format_bytes

MIB = 2**20
ME, WORKER, GONE = "d1" * 8, "e2" * 8, "f3" * 8
SUMMARY = {"capacity": 7 * 2**30, "used": 310 * MIB, "objects": 4, "in_memory": 2,
           "spilled_objects": 2, "spilled_bytes": 200 * MIB, "primary_bytes": 300 * MIB,
           "secondary_bytes": 10 * MIB, "evicted": 1, "spilled": 3, "restored": 1, "pulled": 2}


def entry(object_id: str, size: int, state: str = "sealed", primary: bool = True,
          owner: str = ME, readers: int = 0, site: str = "nb.py:3", spill_path: str = "") -> dict:
    return {"object_id": object_id, "size": size, "state": state, "primary": primary,
            "owner": owner, "readers": readers, "site": site, "spill_path": spill_path}


OBJECTS = [
    entry(ME + "01", 1 * MIB, site="/home/u/nb.py:10"),
    entry(WORKER + "02", 100 * MIB, state="spilled", owner=WORKER, site="make_big",
          spill_path="/tmp/spill/abc"),
    entry(GONE + "03", 10 * MIB, primary=False, owner=GONE, readers=2, site="pulled from x"),
    entry(ME + "04", 200 * MIB, readers=1, site="/home/u/nb.py:12"),
]


def data(**kw) -> MemoryData:
    node = NodeMemory("aa" * 8, "10.0.0.1", "alpha", SUMMARY, OBJECTS)
    defaults = dict(nodes=[node], owners={WORKER: Owner("worker", 4242, "aa" * 8),
                                          ME: Owner("driver", 99, "aa" * 8)},
                    local={ME + "01": LocalRefs(2, 0, 0), ME + "04": LocalRefs(1, 1, 3)},
                    me=ME, inline_objects=5, inline_bytes=3000)
    return MemoryData(**{**defaults, **kw})


@pytest.mark.parametrize("n, text", [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"),
                                     (200_000_000 - 512, "190.7 MiB"), (7 * 2**30, "7.0 GiB")])
def test_format_bytes(n, text):
    assert format_bytes(n) == text


def test_store_figure_is_used_over_capacity_and_what_is_spilled():
    assert store_usage(SUMMARY) == "object store 310.0 MiB / 7.0 GiB, 2 spilled (200.0 MiB)"
    quiet = {**SUMMARY, "spilled_objects": 0, "spilled_bytes": 0}
    assert store_figure(quiet) == "310.0 MiB / 7.0 GiB"
    assert store_usage({"capacity": 64 * MIB}) == "object store 64.0 MiB (no figures yet)"
    assert store_usage({}) == "" and store_figure({}) == ""


def test_report_lists_each_nodes_figures_then_its_objects_largest_first():
    lines = format_memory(data()).splitlines()
    assert lines[0] == "======== Object stores: 1 node(s), 4 object(s) ========"
    assert "Node aaaaaaaa  10.0.0.1 (alpha)" in lines
    assert ("  used 310.0 MiB of 7.0 GiB (4.3%): primary copies 300.0 MiB, "
            "secondary copies 10.0 MiB") in lines
    assert "  spilled to disk: 2 object(s), 200.0 MiB" in lines
    assert "  since start: 1 evicted, 3 spilled, 1 restored, 2 pulled" in lines
    header = next(i for i, line in enumerate(lines) if line.strip().startswith("object id"))
    rows = lines[header + 1:header + 5]
    assert [r.split()[0] for r in rows] == [ME + "04", WORKER + "02", GONE + "03", ME + "01"]
    biggest, spilled, pulled, small = rows
    assert "200.0 MiB" in biggest and " memory " in biggest and "primary" in biggest
    assert "this process" in biggest and "1 ref(s), 1 task(s), 3 borrower(s)" in biggest
    assert biggest.endswith("/home/u/nb.py:12")
    assert "spilled: /tmp/spill/abc" in spilled and "worker pid 4242" in spilled
    assert spilled.endswith("make_big") and " - " in spilled   # not ours: no local counts
    assert "secondary" in pulled and f"{GONE[:8]} (gone)" in pulled
    assert pulled.split()[pulled.split().index("secondary") + 1] == "2"   # readers now
    assert "2 ref(s)" in small and small.endswith("/home/u/nb.py:10")
    assert any("owns 2 of the objects above with live refs" in line for line in lines)
    assert any("5 small object(s) in its own memory (2.9 KiB)" in line for line in lines)


def test_columns_line_up():
    lines = format_memory(data()).splitlines()
    header = next(i for i, line in enumerate(lines) if line.strip().startswith("object id"))
    table = lines[header:header + 5]
    column = table[0].index("made at")
    assert all(line[column - 2:column] == "  " for line in table)
    sizes = [line.index("MiB") for line in table[1:]]
    assert len(set(sizes)) == 1   # right-aligned


def test_stats_only_shows_no_objects():
    text = format_memory(data(), stats_only=True)
    assert "used 310.0 MiB of 7.0 GiB" in text and "since start:" in text
    assert ME + "04" not in text and "object id" not in text and "owns" not in text


def test_a_store_that_cannot_be_asked_and_a_node_without_figures():
    broken = NodeMemory("bb" * 8, "10.0.0.2", "", {"capacity": 64 * MIB}, [],
                        "cannot connect to tcp://10.0.0.2:1: ECONNREFUSED")
    empty = NodeMemory("cc" * 8, "10.0.0.3", "", SUMMARY, [])
    text = format_memory(data(nodes=[empty, broken], local={}, me=""))
    assert "(could not list its objects: cannot connect" in text
    assert "no figures from its store yet" in text
    assert "  (no objects)" in text and "owns" not in text   # no caller: the CLI
    assert "Object stores: 2 node(s), 0 object(s)" in text
    assert "no node has an object store" in format_memory(data(nodes=[]))


def test_object_table_counts_for_the_report():
    me = bytes.fromhex(ME)
    table = ObjectTable(me)
    stored, inline, pending = me + b"\x00" * 9 + b"\x01", me + b"\x00" * 9 + b"\x02", \
        me + b"\x00" * 9 + b"\x03"
    table.add_ready(stored, Stored(stored, 5 * MIB, b"n" * 8, "tcp://x:1"))
    table.add_ready(inline, Payload(b"x" * 100))
    table.add_pending(pending)
    table.pin([stored])
    table.add_borrower(stored, b"B" * 8, 2)
    table.on_ref_rebuilt(stored)
    table.on_ref_rebuilt(b"O" * 8 + b"\x00" * 10)      # borrowed: not ours, not counted
    counts = table.reference_counts()
    assert counts == {stored: (2, 1, 1), inline: (1, 0, 0), pending: (1, 0, 0)}
    assert table.inline_usage() == (1, 100)


# -- the same figure in rayipy status, %cluster status and the dashboard ------------------
STATUS = {
    "cluster_id": "3f2a", "address": "tcp://10.0.0.1:6379", "uptime": 5.0,
    "nodes": [{"NodeID": "aa" * 8, "NodeManagerAddress": "10.0.0.1", "NodeManagerHostname": "alpha",
               "Resources": {"CPU": 2.0}},
              {"NodeID": "bb" * 8, "NodeManagerAddress": "10.0.0.2", "NodeManagerHostname": "",
               "Resources": {"CPU": 2.0}}],
    "available": {"aa" * 8: {"CPU": 2.0}, "bb" * 8: {"CPU": 1.0}},
    "object_stores": {"aa" * 8: SUMMARY, "bb" * 8: {"capacity": 64 * MIB}},
    "tasks": {}, "peers": {"driver": 1},
}


def test_rayipy_status_shows_each_nodes_object_store_under_it():
    lines = format_status(STATUS, datetime.datetime(2025, 1, 2)).splitlines()
    first = lines.index("  node aaaaaaaa  10.0.0.1 (alpha)  head  0/2 CPU")
    assert lines[first + 1] == "      object store 310.0 MiB / 7.0 GiB, 2 spilled (200.0 MiB)"
    assert lines[first + 2] == "  node bbbbbbbb  10.0.0.2  1/2 CPU"
    assert lines[first + 3] == "      object store 64.0 MiB (no figures yet)"
    without = format_status({**STATUS, "object_stores": {}}).splitlines()
    assert not any("object store" in line for line in without)


def test_cluster_status_magic_shows_each_nodes_object_store():
    html = status_html(STATUS, [], {"CPU": 3.0}, {}, "")
    assert "<th>object store</th>" in html
    assert "310.0 MiB / 7.0 GiB, 2 spilled (200.0 MiB)" in html
    assert "64.0 MiB (no figures yet)" in html
    text = status_text(STATUS, [], {})
    assert "node aaaaaaaa object store 310.0 MiB / 7.0 GiB, 2 spilled (200.0 MiB)" in text


def test_dashboard_shows_each_nodes_object_store_in_its_row_and_the_api():
    scheduler = Scheduler()
    scheduler.add_node(b"node-001", b"agent-01", {"CPU": 1.0},
                       {"ip": "10.0.0.7", "hostname": "h1", "store_capacity": 64 * MIB,
                        "store_summary": SUMMARY})
    scheduler.add_node(b"node-002", b"agent-02", {"CPU": 1.0},
                       {"ip": "10.0.0.8", "hostname": "h2", "store_capacity": 64 * MIB})
    facts = HeadFacts("c0ffee", "tcp://127.0.0.1:6379", "127.0.0.1:8265", 1000.0, "0.1.0")
    snapshot = build_snapshot(scheduler, TaskHistory(10), facts, 2000.0)
    stores = {n["address"]: n["object_store"] for n in snapshot.status["nodes"]}
    assert stores == {"10.0.0.7": SUMMARY, "10.0.0.8": {"capacity": 64 * MIB}}
    json.dumps(snapshot.status)
    page = render_body(snapshot, 2000.0)
    assert "object store <meter" in page
    assert "310.0 MiB / 7.0 GiB, 2 spilled (200.0 MiB)" in page
    assert "object store 64.0 MiB" in page and "no figures yet" in page


def test_store_figures_from_a_nodes_info():
    assert store_figures({"store_summary": SUMMARY, "store_capacity": 1}) == SUMMARY
    assert store_figures({"store_capacity": 5}) == {"capacity": 5}
    assert store_figures({}) == {}


# -- rayipy start --object-store-memory / --object-spilling-directory --------------------
def store_args(memory=None, directory=None):
    import argparse
    return argparse.Namespace(object_store_memory=memory, object_spilling_directory=directory)


def test_start_passes_checked_store_options_to_the_agent(tmp_path):
    from rayipy.cli import CommandError, object_store_options
    assert object_store_options(store_args()) == []
    target = tmp_path / "a" / "spill"
    assert object_store_options(store_args("200_000_000", str(target))) == \
        ["--object-store-memory", "200000000", "--spill-dir", str(target)]
    assert target.is_dir()
    for memory, directory, says in [("2GB", None, "is a number of bytes"),
                                    ("-5", None, "is a number of bytes"),
                                    ("1000", None, "at least 1048576"),
                                    (None, " ", "must name a directory"),
                                    (None, str(tmp_path / "x\0y"), "cannot make it"),
                                    (None, "/proc/no/such", "cannot make it")]:
        with pytest.raises(CommandError, match=says):
            object_store_options(store_args(memory, directory))
