"""Leases after the head restarts (pure): the holders name them when they register again,
and the restarted head lends those workers to them again, never to anyone else."""

from __future__ import annotations

from rayipy.core.scheduler import Execute, LeaseEnded, Scheduler
from rayipy.protocol.messages import Payload, TaskSpec

OWNER, OTHER = b"D" * 8, b"E" * 8
CPU1 = (("CPU", 1.0),)


def spec(n: int) -> TaskSpec:
    return TaskSpec(OTHER + n.to_bytes(8, "big"), b"f", f"t{n}", Payload(b""), (), 1, CPU1, 3,
                    0, b"", "", ())


def restarted() -> Scheduler:
    """A restarted head: its node registered again, its workers not yet."""
    s = Scheduler()
    s.add_function(b"f", b"code")
    s.add_node(b"n", b"agent", {"CPU": 2.0}, {})
    return s


def executed_on(out: list) -> set[bytes]:
    return {x.worker for x in out if isinstance(x, Execute)}


def test_a_declared_lease_keeps_its_worker_out_of_dispatch_and_holds_its_cpu():
    s = restarted()
    s.add_worker(b"w1", b"n", 1, "tcp://w1")
    s.add_worker(b"w2", b"n", 2, "tcp://w2")
    assert s.leases_declared(OWNER, [(b"w1", CPU1)]) == []
    assert s.workers[b"w1"].leased_to == OWNER
    assert s.nodes[b"n"].available["CPU"] == 1.0
    out = s.submit([spec(1), spec(2)])
    assert executed_on(out) == {b"w2"}                # never the busy leased worker
    assert s.lease(OTHER, CPU1)[0].worker == b""      # nor lent to another driver
    s.return_lease(OWNER, b"w1")                      # given back as before the restart
    assert s.workers[b"w1"].leased_to is None


def test_a_claim_waits_for_its_worker_to_register():
    s = restarted()
    s.leases_declared(OWNER, [(b"w1", CPU1)])
    assert s.lease_claims == {b"w1": (OWNER, CPU1)}
    s.add_worker(b"w1", b"n", 1, "tcp://w1")
    assert s.settle_lease_claims() == [] and s.workers[b"w1"].leased_to == OWNER
    assert not s.lease_claims


def test_a_claimed_worker_the_head_already_gave_work_is_asked_back():
    s = restarted()
    s.add_worker(b"w1", b"n", 1, "tcp://w1")
    s.submit([spec(1)])                                # w1 runs it now
    assert s.leases_declared(OWNER, [(b"w1", CPU1)]) == [LeaseEnded(OWNER, b"w1", "")]


def test_a_claim_whose_worker_never_came_back_ends_as_a_dead_lease():
    s = restarted()
    s.leases_declared(OWNER, [(b"w9", CPU1)])
    [ended] = s.lease_claims_over("its worker did not come back")
    assert ended == LeaseEnded(OWNER, b"w9", "its worker did not come back")
    assert not s.lease_claims


def test_a_malformed_declaration_is_ignored():
    s = restarted()
    assert s.leases_declared(OWNER, "junk") == []
    assert s.leases_declared(OWNER, [("no", "pair", "here"), (b"w1", [("CPU", "x")])]) == []
    assert not s.lease_claims
