"""The head's journal: records, replay, a torn tail, compaction, the recovery merge, and
the file store (a temporary directory)."""

from __future__ import annotations

import pytest

from rayipy.core import head_journal
from rayipy.core.head_journal import (HEADER, DurableActor, DurableState, JournalError, decode,
                                      encode, job_record, merge, replay, restore_jobs)
from rayipy.core.jobs import FAILED, RUNNING, JobTable
from rayipy.node.head_store import HeadStore

SPEC = ("a creation spec stands here",)   # the journal never looks inside


def journal(*records) -> bytes:
    return HEADER + b"".join(encode(r) for r in records)


def test_replay_rebuilds_actors_names_deaths_functions_and_identity():
    state, end = replay(journal(("cluster", "c1", b"salt"), ("function", b"f1"),
                                ("actor", b"A1", SPEC), ("actor_name", b"A1", "ns", "counter"),
                                ("actor", b"A2", SPEC), ("actor_dead", b"A2", "killed")))
    assert (state.cluster_id, state.salt, state.functions) == ("c1", b"salt", {b"f1"})
    assert state.actors[b"A1"] == DurableActor(SPEC, "counter", "ns", "")
    assert state.actors[b"A2"].dead == "killed"
    assert list(state.live_actors()) == [b"A1"]


def test_a_torn_or_damaged_tail_ends_the_replay_where_the_sound_part_ends():
    sound = journal(("cluster", "c1", b""), ("function", b"f1"))
    torn = sound + encode(("function", b"f2"))[:-3]
    records, end = decode(torn)
    assert records == [("cluster", "c1", b""), ("function", b"f1")] and end == len(sound)
    damaged = bytearray(sound + encode(("function", b"f2")))
    damaged[-1] ^= 0xFF                                      # its crc no longer checks
    records, end = decode(bytes(damaged))
    assert len(records) == 2 and end == len(sound)


def test_another_version_or_a_foreign_file_is_refused():
    with pytest.raises(JournalError, match="version 99"):
        decode(head_journal.MAGIC + (99).to_bytes(4, "little"))
    with pytest.raises(JournalError, match="magic"):
        decode(b"something else")
    with pytest.raises(ValueError, match="not a journal record"):
        encode(("no such kind",))


def test_compaction_keeps_live_state_only():
    state, _ = replay(journal(("cluster", "c1", b"s"), ("actor", b"A1", SPEC),
                              ("actor_name", b"A1", "", "n"), ("actor", b"A2", SPEC),
                              ("actor_dead", b"A2", "gone"), ("job", "j1", {"x": 1}),
                              ("job", "j2", {}), ("job_deleted", "j2"), ("job", "j1", {"x": 2})))
    again = DurableState()
    for record in state.records():
        again.apply(record)
    assert list(again.actors) == [b"A1"] and again.actors[b"A1"].name == "n"
    assert again.jobs == {"j1": {"x": 2}} and again.cluster_id == "c1"


def test_job_records_round_trip():
    table = JobTable()
    record = table.submit("python x.py", b"N1", 10.0, "job1")
    table.running("job1")
    state = DurableState()
    state.apply(job_record(record))
    restored = JobTable()
    restore_jobs(restored, state.jobs)
    assert restored.get("job1").status == RUNNING and restored.get("job1").node_id == b"N1"
    assert head_journal.jobs_after_restart(restored, set(), "its node left", 20.0) == ["job1"]
    assert restored.get("job1").status == FAILED


def test_merge_binds_reported_actors_and_names_the_rest():
    actors = {b"A1": DurableActor(SPEC), b"A2": DurableActor(SPEC),
              b"A3": DurableActor(SPEC, dead="killed")}
    recovery = merge(actors, {b"W1": b"A1", b"W3": b"A3", b"W9": b"A9"})
    assert recovery.bound == {b"A1": b"W1"}
    assert recovery.unknown == {b"W3": b"A3", b"W9": b"A9"}
    assert recovery.missing == [b"A2"]


def test_the_store_keeps_records_and_functions_across_a_restart(tmp_path):
    store = HeadStore(tmp_path / "state")
    assert store.load() == DurableState()
    store.append(("cluster", "c1", b"s"))
    store.save_function(b"\x01\x02", b"function bytes")
    store.append(("actor", b"A1", SPEC))
    store.flush()                         # no close: as if SIGKILLed after the write
    again = HeadStore(tmp_path / "state")
    state = again.load()
    assert state.cluster_id == "c1" and state.functions == {b"\x01\x02"}
    assert again.function_bytes(b"\x01\x02") == b"function bytes"
    assert list(state.actors) == [b"A1"]
    with open(again.path, "ab") as f:     # a torn record at the end
        f.write(encode(("actor_dead", b"A1", "x"))[:5])
    assert list(HeadStore(tmp_path / "state").load().live_actors()) == [b"A1"]
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    again.close()


def test_the_scheduler_adopts_reported_actors_and_ends_the_rest():
    from rayipy.core.instructions import ActorLocation, KillWorker
    from rayipy.core.scheduler import Scheduler
    from rayipy.core.state import WorkerStatus
    from rayipy.protocol.messages import Payload, TaskSpec

    def creation(actor_id: bytes, **options) -> TaskSpec:
        fields = {f: None for f in TaskSpec._fields}
        fields.update(task_id=actor_id + b"\0" * 4, actor_id=actor_id, method="__init__",
                      name="Counter.__init__", resources=(), args=Payload(b"", ()),
                      options=tuple({"class_name": "Counter", "methods": [], **options}.items()))
        return TaskSpec(**fields)

    s = Scheduler()
    s.recover_actors({b"D1234567A1": creation(b"D1234567A1", name="c", lifetime="detached"),
                      b"D1234567A2": creation(b"D1234567A2")})
    assert s.actor_by_name("c")[0] == b"D1234567A1"
    s.add_node(b"N", b"agent", {"CPU": 2.0}, {})
    out = s.add_worker(b"W1", b"N", 1, "tcp://w1", "", b"D1234567A1")
    assert ActorLocation(b"D1234567A1", (b"D1234567",), "tcp://w1") in out
    assert s.workers[b"W1"].state is WorkerStatus.ACTOR
    assert s.add_worker(b"W9", b"N", 9, "", "", b"D1234567ZZ")[0] == KillWorker(b"agent", b"W9")
    s.recovery_over("its worker did not come back")
    assert s.actors[b"D1234567A2"].dead and not s.actors[b"D1234567A1"].dead
    assert ("actor_dead", b"D1234567A2", "its worker did not come back") in s.durable


def test_placement_groups_replay_with_their_nodes_and_go_when_removed():
    g1, g2 = b"\x01" * 16, b"\x02" * 16
    state, _ = replay(journal(("group", g1, [{"CPU": 1.0}], "PACK", "a", b"D" * 8, True),
                              ("group_placed", g1, [b"n1"]),
                              ("group", g2, [{"CPU": 1.0}], "PACK", "b", b"D" * 8, False),
                              ("group_removed", g2)))
    assert list(state.groups) == [g1]
    assert state.groups[g1].recovered(g1) == (g1, [{"CPU": 1.0}], "PACK", "a", b"D" * 8, True,
                                              [b"n1"])
    again = DurableState()
    for record in state.records():
        again.apply(record)
    assert again.groups == state.groups


def test_a_version_1_journal_is_still_read():
    old = head_journal.MAGIC + (1).to_bytes(4, "little") + encode(("function", b"f1"))
    state, end = replay(old)
    assert state.functions == {b"f1"} and end == len(old)
