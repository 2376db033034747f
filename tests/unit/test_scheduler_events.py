"""The scheduler's events that the head used to decide itself: owners joining and leaving,
worker deaths and their errors, cancels wherever a task went, lost nodes, actor names.

Pure: a Scheduler driven by events, its instructions checked with plain asserts.
"""

from __future__ import annotations

import pytest

from rayipy.core.instructions import (ActorLocation, CancelRunning, Execute, Fail, ForgetPeer,
                                      KillWorker, LeaseAnswer, LeaseEnded)
from rayipy.core.scheduler import Scheduler
from rayipy.core.state import LostNode
from rayipy.exceptions import TaskCancelledError, WorkerCrashedError
from rayipy.protocol.messages import CANCELLED, CRASHED, Payload, TaskSpec

DRIVER, OTHER = b"D" * 8, b"E" * 8
NODE, AGENT = b"node-1", b"agent-1"
W1, W2 = b"worker-1", b"worker-2"
CPU1 = (("CPU", 1.0),)


def spec(n: int, owner: bytes = DRIVER, max_retries: int = 3) -> TaskSpec:
    return TaskSpec(owner + n.to_bytes(8, "big"), b"f", f"task{n}", Payload(b""), (), 1, CPU1,
                    max_retries)


def actor_spec(owner: bytes = DRIVER, name: str = "counter", n: int = 1,
               namespace: str = "", **options) -> TaskSpec:
    actor_id = owner + n.to_bytes(8, "big")
    return TaskSpec(owner + (100 + n).to_bytes(8, "big"), b"A", "Counter.__init__", Payload(b""),
                    (), 1, (), 0, actor_id=actor_id, method="__init__",
                    options=(("class_name", "Counter"), ("methods", {"inc": {}}), ("name", name),
                             ("namespace", namespace), *options.items()))


def make(workers: tuple[bytes, ...] = (W1, W2), cpu: float = 2.0) -> Scheduler:
    s = Scheduler()
    s.add_function(b"f", b"code")
    s.add_node(NODE, AGENT, {"CPU": cpu}, {"ip": "10.0.0.1"})
    for i, w in enumerate(workers):
        s.add_worker(w, NODE, 100 + i, f"tcp://w{i}")
    s.owner_joined(DRIVER, driver=True)
    return s


def of(out: list, cls: type) -> list:
    return [x for x in out if isinstance(x, cls)]


# -- owners -----------------------------------------------------------------------------
def test_a_driver_leaving_takes_its_tasks_and_actors_and_frees_workers_for_others():
    s = make(workers=(W1,), cpu=1.0)
    s.owner_joined(OTHER, driver=True)
    s.submit([spec(1), spec(3)])                # W1 runs 1, 3 queued behind it
    s.submit([spec(2, owner=OTHER)])            # waits: W1's pipeline is full
    s.submit([actor_spec()])                    # waits for a worker
    assert s.tasks[spec(2, owner=OTHER).task_id].worker is None
    out = s.owner_left(DRIVER)
    assert of(out, ActorLocation)[0].why == "the driver that created it exited"
    # W1 is free again: the other driver's task runs now, not at the next event.
    assert [(x.worker, [sp.task_id for sp in x.specs]) for x in of(out, Execute)] == [
        (W1, [spec(2, owner=OTHER).task_id])]
    assert s.owner_left(DRIVER) == []           # once only


def test_a_worker_leaving_is_no_longer_a_live_owner():
    s = make()
    s.owner_joined(W1, driver=False)
    child = actor_spec(owner=W1)
    assert s.locate_actor(child.actor_id, DRIVER) == []   # its creation may be on its way
    assert s.owner_left(W1) == []                          # a worker's leaving drops nothing
    [location] = s.locate_actor(actor_spec(owner=W1, n=2).actor_id, DRIVER)
    assert location.why == "the process that created it has exited"


# -- worker deaths -------------------------------------------------------------------------
def test_a_dead_workers_tasks_fail_with_errors_the_scheduler_makes():
    s = make(workers=(W1,))
    s.submit([spec(1, max_retries=0), spec(2)])   # W1 runs 1, 2 queued behind it
    s.cancel(spec(2).task_id, True, CANCELLED, RuntimeError("not this one"))
    out = s.worker_died(W1, "killed by SIGKILL")
    fails = {f.task.task_id: f for f in of(out, Fail)}
    crashed, cancelled = fails[spec(1).task_id], fails[spec(2).task_id]
    assert crashed.status == CRASHED and isinstance(crashed.error, WorkerCrashedError)
    assert str(crashed.error) == "the worker process (pid 100) died: killed by SIGKILL"
    assert cancelled.status == CANCELLED and isinstance(cancelled.error, TaskCancelledError)
    assert "its worker was killed (force=True)" in str(cancelled.error)


def test_a_dead_leased_worker_tells_its_holder_why():
    s = make()
    [answer] = s.lease(DRIVER, CPU1)
    out = s.worker_died(answer.worker, "exited with code 1")
    [ended] = of(out, LeaseEnded)
    assert ended.owner == DRIVER and ended.why.endswith("died: exited with code 1")


def test_a_worker_that_died_before_its_node_registered_never_attaches():
    s = Scheduler()
    s.add_worker(W1, NODE, 7)
    assert s.worker_died(W1, "exited") == []
    s.add_node(NODE, AGENT, {"CPU": 1.0}, {})
    assert W1 not in s.workers


def test_a_lost_node_forgets_each_worker_before_failing_its_tasks():
    s = make()
    s.submit([spec(1, max_retries=0)])
    runner = s.tasks[spec(1).task_id].worker
    out = s.node_lost(NODE, "its node stopped answering for 5 s")
    assert sorted(x.process_id for x in of(out, ForgetPeer)) == [W1, W2]
    [fail] = of(out, Fail)
    assert out.index(ForgetPeer(runner)) < out.index(fail)   # as the head did, one by one
    assert str(fail.error).endswith("died: its node stopped answering for 5 s")
    assert s.nodes == {} and s.workers == {}
    assert list(s.lost_nodes) == [LostNode(NODE, {"CPU": 2.0}, {"ip": "10.0.0.1"},
                                           "its node stopped answering for 5 s")]
    assert s.node_lost(NODE, "again") == [] and len(s.lost_nodes) == 1


# -- cancels -------------------------------------------------------------------------------
def test_cancel_of_a_task_through_the_head_fails_it_before_it_starts():
    s = make(workers=())
    s.submit([spec(1)])
    [fail] = s.cancel_requested(spec(1).task_id, False, b"", b"")
    assert fail.status == CANCELLED and isinstance(fail.error, TaskCancelledError)
    assert "cancelled before it started" in str(fail.error)


def test_cancel_of_a_task_on_a_leased_worker_goes_to_that_worker():
    s = make()
    [answer] = s.lease(DRIVER, CPU1)
    task = spec(9).task_id
    assert s.cancel_requested(task, True, b"", answer.worker) == [
        CancelRunning(answer.worker, task, True, direct=True)]
    assert s.cancel_requested(task, True, b"", b"nobody") == []


def test_cancel_of_an_actor_call_goes_to_the_actors_worker():
    s = make()
    creation = actor_spec()
    s.submit([creation])
    worker = s.actors[creation.actor_id].worker
    assert s.cancel_requested(b"call", False, creation.actor_id, b"") == [
        CancelRunning(worker, b"call", False, direct=True)]


# -- actor names -------------------------------------------------------------------------
def test_an_actor_is_found_by_name_while_alive():
    s = make()
    creation = actor_spec(name="counter")
    assert s.register_actor_name("counter", creation.actor_id) is None   # as the driver does
    s.submit([creation])
    assert s.actor_by_name("counter") == (creation.actor_id, "Counter", {"inc": {}}, 0)
    out = s.kill_actor(creation.actor_id, "killed")
    assert of(out, KillWorker)
    with pytest.raises(ValueError, match=r"^no live actor is named 'counter' in namespace ''; "
                                         r"named actors there now: none$"):
        s.actor_by_name("counter")


def test_an_unknown_name_lists_the_live_names():
    s = make()
    for n, name in enumerate("ab"):
        creation = actor_spec(name=name, n=n)
        s.register_actor_name(name, creation.actor_id)
        s.submit([creation])
    s.register_actor_name("c", b"not created yet")   # named before its creation arrives
    with pytest.raises(ValueError,
                       match=r"no live actor is named 'x' in namespace ''; named actors there "
                             r"now: 'a', 'b'$"):
        s.actor_by_name("x")
    with pytest.raises(ValueError, match="no live actor is named 'c'"):
        s.actor_by_name("c")


def test_names_live_in_namespaces():
    s = make()
    colors, fruits = actor_spec(name="orange", namespace="colors", n=1), \
        actor_spec(name="orange", namespace="fruits", n=2, max_task_retries=2)
    assert s.register_actor_name("orange", colors.actor_id, "colors") is None
    assert s.register_actor_name("orange", fruits.actor_id, "fruits") is None  # another namespace
    s.submit([colors, fruits])
    assert s.register_actor_name("orange", b"third", "colors") == colors.actor_id   # taken there
    assert s.actor_by_name("orange", "colors")[0] == colors.actor_id
    assert s.actor_by_name("orange", "fruits") == (fruits.actor_id, "Counter", {"inc": {}}, 2)
    with pytest.raises(ValueError, match=r"^no live actor is named 'orange' in namespace 'veg'; "
                                         r"named actors there now: none; an actor of that name "
                                         r"lives in namespace\(s\) 'colors', 'fruits': pass "
                                         r"namespace=$"):
        s.actor_by_name("orange", "veg")
    s.kill_actor(colors.actor_id, "killed")
    assert s.register_actor_name("orange", b"third", "colors") is None   # free there again
    assert s.actor_by_name("orange", "fruits")[0] == fruits.actor_id


def test_kill_without_no_restart_restarts_the_actor_within_max_restarts():
    s = make()
    creation = actor_spec(max_restarts=1)
    s.submit([creation])
    actor = s.actors[creation.actor_id]
    first = actor.worker
    out = s.kill_actor(creation.actor_id, "killed by kill(no_restart=False)", no_restart=False)
    assert out == [KillWorker(AGENT, first)] and not actor.dead
    out = s.worker_died(first, "killed by SIGKILL")
    [gone] = [x for x in of(out, ActorLocation) if not x.address]
    assert gone.restarting and gone.why.startswith("killed by kill(no_restart=False)")
    assert actor.worker not in (None, first)                  # placed again at once
    # No restarts left: the same kill is for good.
    out = s.kill_actor(creation.actor_id, "killed again", no_restart=False)
    assert actor.dead == "killed again" and of(out, ActorLocation)[0].restarting is False


def test_kill_with_no_restart_kills_a_restartable_actor_for_good():
    s = make()
    creation = actor_spec(max_restarts=-1)
    s.submit([creation])
    worker = s.actors[creation.actor_id].worker
    out = s.kill_actor(creation.actor_id, "killed")
    assert KillWorker(AGENT, worker) in out
    s.worker_died(worker, "killed by SIGKILL")
    assert s.actors[creation.actor_id].dead == "killed"
    assert s.actors[creation.actor_id].worker == worker          # not placed again


def test_an_actor_that_exits_itself_is_not_killed_nor_restarted():
    s = make()
    creation = actor_spec(max_restarts=3)
    s.submit([creation])
    worker = s.actors[creation.actor_id].worker
    out = s.kill_actor(creation.actor_id, "it exited", sender=worker)
    assert of(out, KillWorker) == [] and of(out, ActorLocation)[0].why == "it exited"
    s.worker_died(worker, "exit code 0")
    assert s.actors[creation.actor_id].dead == "it exited" and not s.creating


def test_lease_answers_name_the_worker_and_its_address():
    s = make()
    [answer] = s.lease(DRIVER, CPU1)
    assert answer == LeaseAnswer(DRIVER, CPU1, answer.worker, s.workers[answer.worker].address)
