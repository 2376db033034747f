"""Unit tests of rayipy.core.lineage: which finished tasks are kept to remake lost values."""

from __future__ import annotations

from rayipy.core.lineage import Lineage, Remake
from rayipy.protocol.messages import Payload, TaskSpec


def spec(n: int, retries: int = 3, attempt: int = 0, actor: bytes = b"") -> TaskSpec:
    return TaskSpec(b"O" * 8 + n.to_bytes(8, "big"), b"f", "f", Payload(b""), (), 2,
                    (("CPU", 1.0),), retries, attempt, actor)


def rid(n: int, i: int) -> bytes:
    return b"O" * 8 + n.to_bytes(8, "big") + i.to_bytes(2, "big")


def test_a_lost_value_is_remade_with_one_more_attempt_and_its_arguments_held():
    lineage = Lineage()
    remake = Remake(spec(1), (rid(1, 0), rid(1, 1)), (b"arg",))
    lineage.record(remake, [rid(1, 0)])
    again, release = lineage.take(rid(1, 0))
    assert again == remake._replace(spec=spec(1, attempt=1)) and release == []
    assert len(lineage) == 0                      # the new run records it again
    assert lineage.take(rid(1, 0)) == (None, [])


def test_retries_used_up_lets_the_arguments_go():
    lineage = Lineage()
    lineage.record(Remake(spec(1, retries=1, attempt=1), (rid(1, 0),), (b"arg",)), [rid(1, 0)])
    assert lineage.take(rid(1, 0)) == (None, [b"arg"])


def test_arguments_go_when_the_last_stored_value_of_the_task_is_freed():
    lineage = Lineage()
    lineage.record(Remake(spec(1), (rid(1, 0), rid(1, 1)), (b"a", b"b")), [rid(1, 0), rid(1, 1)])
    assert lineage.freed([rid(1, 0)]) == []
    assert lineage.take(rid(1, 1))[0] is not None       # still remakable
    lineage.record(Remake(spec(2), (rid(2, 0),), (b"c",)), [rid(2, 0)])
    assert lineage.freed([rid(2, 0), b"unknown"]) == [b"c"]
    assert len(lineage) == 0


def test_actor_calls_and_tasks_without_retries_are_not_kept():
    lineage = Lineage()
    assert lineage.keeps(spec(1), pinned_by_worker=False)
    assert not lineage.keeps(spec(1, actor=b"A" * 16), pinned_by_worker=False)
    assert not lineage.keeps(spec(1, retries=0), pinned_by_worker=False)
    assert not lineage.keeps(spec(1), pinned_by_worker=True)
