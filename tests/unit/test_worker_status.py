"""A worker's one status in the scheduler (WorkerStatus), one meaning of "idle", and the two words
"allocation" (resources a worker holds) and "lease" (a worker lent to a driver).

The last part drives a scheduler with random events and checks after each one that
every worker's state agrees with its data and that no resource is lost or counted twice.
"""

from __future__ import annotations

import random

import pytest

from rayipy.core.actor_scheduling import ActorScheduling
from rayipy.core.instructions import Execute, LeaseEnded, Steal
from rayipy.core.lease_scheduling import LeaseScheduling
from rayipy.core.scheduler import IDLE_RETIRE_SECONDS, Scheduler
from rayipy.core.state import Node, Worker, WorkerStatus
from rayipy.protocol.messages import CANCELLED, CRASHED, Payload, TaskSpec

IDLE, RUNNING, BLOCKED = WorkerStatus.IDLE, WorkerStatus.RUNNING, WorkerStatus.BLOCKED
ACTOR, LEASED = WorkerStatus.ACTOR, WorkerStatus.LEASED
OWNER, OTHER = b"O" * 8, b"P" * 8
NODE, AGENT = b"node-1", b"agent-1"
W1, W2, W3 = b"worker-1", b"worker-2", b"worker-3"
CPU1 = (("CPU", 1.0),)


def spec(n: int, owner: bytes = OWNER, resources: tuple = CPU1) -> TaskSpec:
    return TaskSpec(owner + n.to_bytes(8, "big"), b"f", f"t{n}", Payload(b""), (), 1, resources, 3)


def tid(n: int, owner: bytes = OWNER) -> bytes:
    return owner + n.to_bytes(8, "big")


def make(workers: tuple[bytes, ...] = (W1, W2), cpu: float = 2.0, **extra: float) -> Scheduler:
    s = Scheduler()
    s.add_function(b"f", b"code")
    s.add_node(NODE, AGENT, {"CPU": cpu, **extra}, {})
    for i, w in enumerate(workers):
        s.add_worker(w, NODE, 100 + i, f"tcp://w{i}")
    return s


def states(s: Scheduler) -> dict[bytes, WorkerStatus]:
    return {w.worker_id: w.state for w in s.workers.values()}


def check(s: Scheduler) -> None:
    """Each state agrees with the worker's data; nodes' resources add up."""
    for w in s.workers.values():
        held = w.allocation is not None
        if w.state is IDLE:
            assert not held and not w.queue and w.actor is None and w.leased_to is None
            assert not w.steal_pending and w.gpu_ids == ()
        elif w.state is RUNNING:
            assert held and w.actor is None and w.leased_to is None
        elif w.state is BLOCKED:
            assert w.actor is None
        elif w.state is ACTOR:
            assert held and w.actor is not None and w.leased_to is None
        elif w.state is LEASED:
            assert held and w.leased_to is not None and not w.queue
        if w.leased_to is not None:
            assert w.state in (LEASED, BLOCKED)
        if w.steal_pending:
            assert w.state in (RUNNING, BLOCKED)
    for node in s.nodes.values():
        if node.leaving:
            continue
        used: dict[str, float] = {}
        for w in (s.workers[i] for i in node.workers):
            for name, amount in w.allocation or ():
                if w.state is BLOCKED and name != "GPU":
                    continue   # given back while its task waits in get
                used[name] = used.get(name, 0.0) + amount
        for name, total in node.total.items():
            assert node.available.get(name, 0.0) + used.get(name, 0.0) == pytest.approx(total)


# -- one state ---------------------------------------------------------------------------
def test_a_worker_goes_through_its_states():
    s = make(workers=(W1,))
    assert states(s) == {W1: IDLE}
    s.submit([spec(1)])
    assert states(s) == {W1: RUNNING}
    s.blocked(W1, [])
    assert states(s) == {W1: BLOCKED}
    s.unblocked(W1)
    assert states(s) == {W1: RUNNING}
    s.finished(W1, [tid(1)], [0.1])
    assert states(s) == {W1: IDLE}
    s.lease(OWNER, CPU1)
    assert states(s) == {W1: LEASED}
    s.blocked(W1, [])
    assert states(s) == {W1: BLOCKED} and s.workers[W1].leased_to == OWNER
    s.unblocked(W1)
    assert states(s) == {W1: LEASED}
    s.return_lease(OWNER, W1)
    assert states(s) == {W1: IDLE}
    check(s)


def test_a_blocked_worker_whose_task_ends_is_idle_when_it_resumes():
    s = make(workers=(W1,))
    s.submit([spec(1)])
    s.blocked(W1, [])
    s.finished(W1, [tid(1)], [0.1])
    assert states(s) == {W1: BLOCKED} and s.workers[W1].allocation is None
    s.unblocked(W1)
    assert states(s) == {W1: IDLE}
    check(s)


# -- one meaning of idle ------------------------------------------------------------------
@pytest.mark.parametrize("busy", ["running", "blocked", "leased"])
def test_only_an_idle_worker_takes_a_task_a_lease_or_an_actor(busy):
    s = make(workers=(W1,), cpu=4.0)
    if busy == "running":
        s.submit([spec(1, resources=(("CPU", 2.0),))])   # another request: no pipelining
    elif busy == "blocked":
        s.submit([spec(1, resources=(("CPU", 2.0),))])
        s.blocked(W1, [])
    else:
        s.lease(OTHER, CPU1)
    assert s.lease(OWNER, CPU1)[0].worker == b""
    assert not any(isinstance(x, Execute) for x in s.submit([spec(2)]))
    creation = spec(3)._replace(actor_id=b"A" * 16, method="__init__", resources=())
    assert not any(isinstance(x, Execute) for x in s.submit([creation]))
    assert s.tick(0.0) == [] and s.workers[W1].idle_since is None


def test_a_worker_that_ran_out_of_work_before_a_steal_answer_is_idle():
    s = make()
    s.submit([spec(1), spec(2), spec(3), spec(4)])       # W1 [1, 3], W2 [2, 4]
    out = s.finished(W2, [tid(2), tid(4)], [0.01, 0.01])
    assert out == [Steal(W1, 1)] and s.workers[W1].steal_pending
    s.finished(W1, [tid(1), tid(3)], [0.01, 0.01])       # it ran both before the Steal came
    assert states(s) == {W1: IDLE, W2: IDLE} and not s.workers[W1].steal_pending
    s.returned(W1, [])                                   # its empty answer
    check(s)


def test_idle_workers_are_counted_once_when_deciding_to_spawn():
    s = make(workers=(W1, W2), cpu=4.0)
    s.lease(OWNER, CPU1)                                 # W1 lent: not idle
    out = s.submit([spec(n, resources=(("CPU", 2.0),)) for n in range(1, 4)])
    # W2 takes one; two wait, 1 CPU left over: not enough for a 2-CPU task, no spawn.
    assert [type(x).__name__ for x in out].count("Spawn") == 0
    assert states(s) == {W1: LEASED, W2: RUNNING}
    check(s)


def test_extra_idle_workers_retire_but_a_leased_one_does_not():
    s = make(workers=(W1, W2, W3))                       # 2 CPUs, 3 workers
    s.lease(OWNER, CPU1)
    s.tick(0.0)
    out = s.tick(IDLE_RETIRE_SECONDS + 1)
    assert [x.worker for x in out] in ([W2], [W3]) and W1 in s.workers


# -- allocation and lease, two words ---------------------------------------------------------
def test_allocation_is_what_a_worker_holds_and_lease_is_who_it_is_lent_to():
    s = make(workers=(W1, W2))
    s.submit([spec(1)])
    running = next(w for w in s.workers.values() if w.state is RUNNING)
    assert running.allocation == CPU1 and running.leased_to is None
    [answer] = s.lease(OTHER, CPU1)
    lent = s.workers[answer.worker]
    assert lent.allocation == CPU1 and lent.leased_to == OTHER and lent.state is LEASED
    assert not hasattr(lent, "lease")


def test_a_lease_recalled_then_ended_by_its_holder_leaving_can_be_recalled_again():
    s = make(workers=(W1,), cpu=1.0)
    s.lease(OWNER, CPU1)
    out = s.submit([spec(1, owner=OTHER)])
    assert LeaseEnded(OWNER, W1, "") in out
    s.drop_owner(OWNER)                       # it left instead of giving the worker back
    assert list(s.dispatch()[0].specs) == [spec(1, owner=OTHER)]
    s.finished(W1, [tid(1, OTHER)], [0.1])
    s.lease(OTHER, CPU1)
    assert LeaseEnded(OTHER, W1, "") in s.submit([spec(2, owner=OWNER)])


# -- the parts declare what they read ----------------------------------------------------------
class LeasesOnly(LeaseScheduling):
    def dispatch(self) -> list:
        return []


class ActorsOnly(ActorScheduling):
    def dispatch(self) -> list:
        return self._place_actors()


def one_node(part: LeasesOnly | ActorsOnly) -> None:
    part.nodes[NODE] = Node(NODE, AGENT, {"CPU": 1.0}, {})
    part.nodes[NODE].workers.add(W1)
    part.workers[W1] = Worker(W1, NODE, 1)
    part.workers[W1].address = "tcp://w1"


def test_each_part_runs_on_its_declared_state_alone():
    """Each part works without ``Scheduler``: it reads nothing it does not declare."""
    leases = LeasesOnly()
    one_node(leases)
    [answer] = leases.lease(OWNER, CPU1)
    assert answer.worker == W1 and leases.workers[W1].state is LEASED
    assert leases.return_lease(OWNER, W1) == [] and leases.workers[W1].state is IDLE
    actors = ActorsOnly()
    one_node(actors)
    creation = spec(1)._replace(actor_id=b"A" * 16, method="__init__", resources=())
    assert actors._submit_actor_spec(creation) == []
    out = actors.dispatch()
    assert any(isinstance(x, Execute) and x.worker == W1 for x in out)
    assert actors.workers[W1].state is ACTOR


# -- random events keep every state consistent -----------------------------------------------
@pytest.mark.parametrize("seed", range(20))
def test_random_events_keep_states_and_resources_consistent(seed):
    rng = random.Random(seed)
    s = make(workers=(W1, W2, W3), cpu=3.0, GPU=1.0)
    s.owner_joined(OWNER, driver=True)
    s.owner_joined(OTHER, driver=True)
    requests = [CPU1, (("CPU", 2.0),), (("CPU", 1.0), ("GPU", 1.0))]
    n = 0
    for step in range(300):
        workers = list(s.workers.values())
        event = rng.randrange(9)
        if event == 0 or not workers:
            n += 1
            owner = rng.choice((OWNER, OTHER))
            s.submit([spec(n, owner=owner, resources=rng.choice(requests))])
        elif event == 1:
            w = rng.choice(workers)
            done = list(w.queue)[:rng.randrange(len(w.queue) + 1)]
            s.finished(w.worker_id, done, [rng.choice((0.001, 0.5))] * len(done))
        elif event == 2:
            w = rng.choice(workers)
            s.blocked(w.worker_id, list(w.queue)[1:])
        elif event == 3:
            s.unblocked(rng.choice(workers).worker_id)
        elif event == 4:
            w = rng.choice(workers)
            s.returned(w.worker_id, list(w.queue)[1:] if rng.random() < 0.5 else [])
        elif event == 5:
            s.lease(rng.choice((OWNER, OTHER)), rng.choice(requests[:2]))
        elif event == 6:
            w = rng.choice(workers)
            if w.leased_to:
                s.return_lease(w.leased_to, w.worker_id)
        elif event == 7:
            w = rng.choice(workers)
            s.remove_worker(w.worker_id, RuntimeError("died"), CRASHED, CANCELLED)
            s.add_worker(b"new-%d" % step, NODE, 1000 + step, "tcp://new")
        else:
            s.tick(step * 5.0)
        check(s)
