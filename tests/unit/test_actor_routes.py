"""ActorRoutes: a caller's actor calls leave in the order they were made, or fail."""

from __future__ import annotations

from types import SimpleNamespace

from rayipy.core.actor_routes import ActorRoutes, Failed, Locate, Send

ACTOR = b"A" * 16


def spec(n: int):
    return SimpleNamespace(task_id=bytes([n]) * 16, name=f"call{n}")


def call(routes: ActorRoutes, n: int) -> list:
    """Make call n and fill it at once (its arguments are ready)."""
    return routes.reserve(ACTOR, spec(n).task_id) + routes.fill(ACTOR, spec(n))


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
