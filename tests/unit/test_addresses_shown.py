"""Addresses as users read them: host:port everywhere, and a loopback note that asks
for what the user has not given yet."""

from __future__ import annotations

from rayipy.cli import loopback_note
from rayipy.cli_status import format_status
from rayipy.core.scheduler import Scheduler
from rayipy.dashboard.history import TaskHistory
from rayipy.dashboard.snapshot import HeadFacts, build_snapshot
from rayipy.jupyter.reprs import status_html, status_text

STATUS = {"cluster_id": "c", "address": "tcp://10.0.0.1:6379", "uptime": 1.0, "nodes": [],
          "tasks": {}}


def test_a_loopback_address_the_user_gave_asks_for_another_not_for_the_option():
    given = loopback_note("127.0.0.1", ip_given=True)
    assert "127.0.0.1 is a loopback address" in given
    assert "give --node-ip-address" not in given and "not 127.x or localhost" in given
    guessed = loopback_note("127.0.0.1", ip_given=False)
    assert "give --node-ip-address" in guessed


def test_every_status_writes_the_head_address_without_tcp():
    assert "tcp://" not in format_status(STATUS) and "10.0.0.1:6379" in format_status(STATUS)
    assert "tcp://" not in status_text(STATUS, [], {}) and "10.0.0.1:6379" in status_text(STATUS, [], {})
    assert "tcp://" not in status_html(STATUS, [], {}, {}, "")
    facts = HeadFacts("c", "tcp://10.0.0.1:6379", "10.0.0.1:8265", 0.0, "0")
    snapshot = build_snapshot(Scheduler(), TaskHistory(), facts, 1.0)
    assert snapshot.status["cluster"]["address"] == "10.0.0.1:6379"
