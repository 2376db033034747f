"""ActorRoutes: a caller's actor calls leave in the order they were made, or fail."""

from __future__ import annotations

from rayipy.core.actor_routes import ActorRoutes, Failed, Locate, Requeued, Send
from rayipy.protocol.messages import Payload, TaskSpec

ACTOR = b"A" * 16


def spec(n: int, retries: int = 0) -> TaskSpec:
    """Call n; ``retries``: its max_task_retries."""
    return TaskSpec(bytes([n]) * 16, b"", f"call{n}", Payload(b""), (), 1, (), retries, 0,
                    ACTOR, "m")


def call(routes: ActorRoutes, n: int, retries: int = 0) -> list:
    """Make call n and fill it at once (its arguments are ready)."""
    return routes.reserve(ACTOR, spec(n).task_id) + routes.fill(ACTOR, spec(n, retries))


def sent(steps: list) -> list:
    return [(s.address, s.spec.name) for s in steps if type(s) is Send]


def failed(steps: list) -> list:
    return [(s.task_id, s.why) for s in steps if type(s) is Failed]


def test_calls_wait_for_the_address_then_leave_in_order():
    routes = ActorRoutes()
    steps = [step for n in range(3) for step in call(routes, n)]
    assert steps == [Locate(ACTOR)]  # asked the head once, sent nothing
    assert sent(routes.located(ACTOR, "tcp://w:1")) == [
        ("tcp://w:1", "call0"), ("tcp://w:1", "call1"), ("tcp://w:1", "call2")]
    assert sent(call(routes, 3)) == [("tcp://w:1", "call3")]


def test_a_call_waiting_for_its_arguments_holds_back_later_calls():
    routes = ActorRoutes()
    routes.created(ACTOR)
    routes.located(ACTOR, "tcp://w:1")
    routes.reserve(ACTOR, spec(1).task_id)
    assert call(routes, 2) == []  # call 2 is ready, but call 1 is not
    assert [name for _, name in sent(routes.fill(ACTOR, spec(1)))] == ["call1", "call2"]


def test_the_creator_does_not_ask_where_its_actor_is():
    routes = ActorRoutes()
    routes.created(ACTOR)
    assert routes.reserve(ACTOR, spec(1).task_id) == []


def test_death_fails_calls_in_flight_and_waiting():
    routes = ActorRoutes()
    routes.located(ACTOR, "tcp://w:1")
    call(routes, 1)
    routes.reserve(ACTOR, spec(2).task_id)
    assert failed(routes.lost(ACTOR, "killed", restarting=False)) == [(spec(1).task_id, "killed")]
    later = routes.fill(ACTOR, spec(2)) + call(routes, 3)
    assert failed(later) == [(spec(2).task_id, "killed (while calling 'call2')"),
                             (spec(3).task_id, "killed (while calling 'call3')")]


def test_restart_fails_only_calls_in_flight_and_later_calls_wait_for_the_new_address():
    routes = ActorRoutes()
    routes.located(ACTOR, "tcp://old:1")
    assert sent(call(routes, 1)) == [("tcp://old:1", "call1")]
    assert failed(routes.lost(ACTOR, "crashed", restarting=True)) == [(spec(1).task_id, "crashed")]
    assert call(routes, 2) == []
    assert sent(routes.located(ACTOR, "tcp://new:1")) == [("tcp://new:1", "call2")]


def test_finished_calls_are_not_failed_later():
    routes = ActorRoutes()
    routes.located(ACTOR, "tcp://w:1")
    call(routes, 1)
    routes.finished(spec(1).task_id)
    assert routes.lost(ACTOR, "killed", restarting=False) == []


def test_a_dropped_call_lets_the_calls_behind_it_go():
    routes = ActorRoutes()
    routes.located(ACTOR, "tcp://w:1")
    routes.reserve(ACTOR, spec(1).task_id)
    assert call(routes, 2) == []
    assert sent(routes.drop(ACTOR, spec(1).task_id)) == [("tcp://w:1", "call2")]
    assert routes.drop(ACTOR, spec(2).task_id) == []      # it had left: nothing to drop


# -- max_task_retries ----------------------------------------------------------------------
def test_calls_in_flight_with_retries_go_again_first_to_the_restarted_actor():
    routes = ActorRoutes()
    routes.located(ACTOR, "tcp://old:1")
    call(routes, 1, retries=1)
    call(routes, 2)                       # no retries: fails as before
    call(routes, 3, retries=-1)
    lost = routes.lost(ACTOR, "crashed", restarting=True)
    assert failed(lost) == [(spec(2).task_id, "crashed")]
    assert [(s.spec.name, s.spec.attempt) for s in lost if type(s) is Requeued] == [
        ("call1", 1), ("call3", 1)]
    assert call(routes, 4) == []          # waits, behind the retried calls
    assert [(a, s.name, s.attempt) for a, s in
            [(x.address, x.spec) for x in routes.located(ACTOR, "tcp://new:1")]] == [
        ("tcp://new:1", "call1", 1), ("tcp://new:1", "call3", 1), ("tcp://new:1", "call4", 0)]


def test_retries_run_out_then_the_call_fails():
    routes = ActorRoutes()
    routes.located(ACTOR, "tcp://a:1")
    call(routes, 1, retries=1)
    assert [type(s) for s in routes.lost(ACTOR, "crashed", restarting=True)] == [Requeued]
    routes.located(ACTOR, "tcp://b:1")
    assert failed(routes.lost(ACTOR, "crashed again", restarting=True)) == [
        (spec(1).task_id, "crashed again")]


def test_unlimited_retries_never_run_out():
    routes = ActorRoutes()
    for n in range(5):
        routes.located(ACTOR, f"tcp://w{n}:1")
        if n == 0:
            call(routes, 1, retries=-1)
        assert failed(routes.lost(ACTOR, "crashed", restarting=True)) == []


def test_a_dead_actor_fails_calls_whatever_their_retries():
    routes = ActorRoutes()
    routes.located(ACTOR, "tcp://a:1")
    call(routes, 1, retries=-1)
    assert failed(routes.lost(ACTOR, "killed", restarting=False)) == [(spec(1).task_id, "killed")]


def test_a_retried_call_that_answers_late_gives_up_its_place():
    routes = ActorRoutes()
    routes.located(ACTOR, "tcp://a:1")
    call(routes, 1, retries=1)
    routes.lost(ACTOR, "crashed", restarting=True)
    assert routes.drop(ACTOR, spec(1).task_id) == []   # its first answer came after all
    assert sent(routes.located(ACTOR, "tcp://b:1")) == []


def test_the_address_of_calls_is_known_until_the_worker_dies():
    routes = ActorRoutes()
    assert routes.address_of(ACTOR) == ""
    routes.located(ACTOR, "tcp://a:1")
    assert routes.address_of(ACTOR) == "tcp://a:1"   # the client reads it there first
    routes.lost(ACTOR, "crashed", restarting=True)
    assert routes.address_of(ACTOR) == ""
