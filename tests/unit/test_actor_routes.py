"""ActorRoutes: a caller's actor calls leave in the order they were made, or fail."""

from __future__ import annotations

from types import SimpleNamespace

from rayipy.core.actor_routes import ActorRoutes

ACTOR = b"A" * 16


def spec(n: int):
    return SimpleNamespace(task_id=bytes([n]) * 16, name=f"call{n}")


def make():
    sent, failed, located = [], [], []
    routes = ActorRoutes(lambda address, s: sent.append((address, s.name)),
                         lambda s, why: failed.append((s.name, why)),
                         located.append)
    return routes, sent, failed, located


def test_calls_wait_for_the_address_then_leave_in_order():
    routes, sent, failed, located = make()
    for n in range(3):
        routes.fill(ACTOR, routes.reserve(ACTOR), spec(n))
    assert sent == [] and located == [ACTOR]  # asked the head once
    routes.located(ACTOR, "tcp://w:1")
    assert sent == [("tcp://w:1", "call0"), ("tcp://w:1", "call1"), ("tcp://w:1", "call2")]
    routes.fill(ACTOR, routes.reserve(ACTOR), spec(3))
    assert sent[-1] == ("tcp://w:1", "call3") and failed == []


def test_a_call_waiting_for_its_arguments_holds_back_later_calls():
    routes, sent, _, _ = make()
    routes.created(ACTOR)
    routes.located(ACTOR, "tcp://w:1")
    first = routes.reserve(ACTOR)
    routes.fill(ACTOR, routes.reserve(ACTOR), spec(2))
    assert sent == []  # call 2 is ready, but call 1 is not
    routes.fill(ACTOR, first, spec(1))
    assert [name for _, name in sent] == ["call1", "call2"]


def test_the_creator_does_not_ask_where_its_actor_is():
    routes, _, _, located = make()
    routes.created(ACTOR)
    routes.reserve(ACTOR)
    assert located == []


def test_death_fails_calls_in_flight_and_waiting():
    routes, sent, failed, _ = make()
    routes.located(ACTOR, "tcp://w:1")
    routes.fill(ACTOR, routes.reserve(ACTOR), spec(1))
    waiting = routes.reserve(ACTOR)
    inflight = routes.lost(ACTOR, "killed", restarting=False)
    assert inflight == [spec(1).task_id]
    routes.fill(ACTOR, waiting, spec(2))
    routes.fill(ACTOR, routes.reserve(ACTOR), spec(3))
    assert failed == [("call2", "killed"), ("call3", "killed")]


def test_restart_fails_only_calls_in_flight_and_later_calls_wait_for_the_new_address():
    routes, sent, failed, _ = make()
    routes.located(ACTOR, "tcp://old:1")
    routes.fill(ACTOR, routes.reserve(ACTOR), spec(1))
    assert routes.lost(ACTOR, "crashed", restarting=True) == [spec(1).task_id]
    routes.fill(ACTOR, routes.reserve(ACTOR), spec(2))
    assert sent == [("tcp://old:1", "call1")] and failed == []
    routes.located(ACTOR, "tcp://new:1")
    assert sent[-1] == ("tcp://new:1", "call2")


def test_finished_calls_are_not_failed_later():
    routes, _, _, _ = make()
    routes.located(ACTOR, "tcp://w:1")
    routes.fill(ACTOR, routes.reserve(ACTOR), spec(1))
    routes.finished(spec(1).task_id)
    assert routes.lost(ACTOR, "killed", restarting=False) == []
