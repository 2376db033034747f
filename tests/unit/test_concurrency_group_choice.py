"""Concurrency groups without a cluster: validation of the options, the group a call
runs in, and the per-group hosts (real threads and event loops, no sockets)."""

from __future__ import annotations

import threading

import pytest

import rayipy
from rayipy.actor import GROUPS_KEY, ActorHandle
from rayipy.core.options import check_concurrency_groups
from rayipy.node.actor_host import (DEFAULT_GROUP, AsyncActorHost, GroupedActorHost,
                                    ThreadedActorHost, group_of, group_sizes, make_host)
from rayipy.protocol.messages import OK, TaskResult, TaskSpec

WAIT = 10.0


def spec(task: int, group: str | None = None, method: str = "f") -> TaskSpec:
    options = (("concurrency_group", group),) if group is not None else ()
    return TaskSpec(task.to_bytes(16, "big"), b"", f"A.{method}", None, (), 1, (), 0, 0,
                    b"a" * 16, method, options)


# -- validation ---------------------------------------------------------------------------

@pytest.mark.parametrize("groups, error, words", [
    ([("io", 2)], TypeError, r"must be a dict of group name"),
    ("io", TypeError, r"must be a dict of group name"),
    ({"io": 0}, ValueError, r"'io' has max concurrency 0; each group's size must be an int >= 1"),
    ({"io": -1}, ValueError, r"int >= 1"),
    ({"io": 1.5}, ValueError, r"int >= 1"),
    ({"io": True}, ValueError, r"int >= 1"),
    ({"": 1}, TypeError, r"non-empty strings"),
    ({3: 1}, TypeError, r"non-empty strings"),
    ({"_ray_system": 1}, ValueError, r"reserved"),
])
def test_bad_concurrency_groups_are_refused_naming_what_is_valid(groups, error, words):
    with pytest.raises(error, match=words):
        rayipy.remote(concurrency_groups=groups)(type("A", (), {}))
    with pytest.raises(error, match=words):
        rayipy.remote(type("A", (), {})).options(concurrency_groups=groups)


def test_good_concurrency_groups_are_accepted():
    check_concurrency_groups({"io": 2, "compute": 4})
    rayipy.remote(concurrency_groups=None)(type("A", (), {}))
    rayipy.remote(concurrency_groups={})(type("A", (), {}))


def test_a_method_group_must_be_a_name():
    with pytest.raises(TypeError, match="concurrency_group.*non-empty str"):
        rayipy.method(concurrency_group=3)
    with pytest.raises(TypeError, match="concurrency_group.*non-empty str"):
        rayipy.method(concurrency_group="")


def test_a_method_in_an_undeclared_group_is_refused_at_decoration():
    class A:
        @rayipy.method(concurrency_group="compte")
        def f(self):
            pass

    with pytest.raises(ValueError, match=r"A\.f .*'compte'.*its groups are 'compute', "
                                         r"'io'\. Did you mean 'compute'\?"):
        rayipy.remote(concurrency_groups={"io": 1, "compute": 2})(A)
    with pytest.raises(ValueError, match=r"declares none: declare it with "
                                         r"@rayipy.remote\(concurrency_groups=\{'compte': 1\}\)"):
        rayipy.remote(A)
    cls = rayipy.remote(concurrency_groups={"compte": 1})(A)
    with pytest.raises(ValueError, match="'compte'"):   # options replace the groups
        cls.options(concurrency_groups={"io": 1})
    assert cls.options(concurrency_groups={"compte": 3})._options["concurrency_groups"] == \
        {"compte": 3}


def test_a_call_naming_an_unknown_group_is_refused_at_options():
    grouped = ActorHandle(b"a" * 16, "A", {"f": {}, GROUPS_KEY: {"io": 1}})
    assert grouped.f.options(concurrency_group="io")._group == "io"
    with pytest.raises(ValueError, match=r"f\.options\(concurrency_group='iox'\).*its groups "
                                         r"are 'io'\. Did you mean 'io'\?"):
        grouped.f.options(concurrency_group="iox")
    plain = ActorHandle(b"a" * 16, "A", {"f": {}})
    with pytest.raises(ValueError, match="declares none"):
        plain.f.options(concurrency_group="io")
    with pytest.raises(AttributeError):   # the groups are not a method
        getattr(grouped, GROUPS_KEY)


def test_functions_have_no_concurrency_groups():
    with pytest.raises(ValueError, match="invalid option 'concurrency_groups'"):
        rayipy.remote(concurrency_groups={"io": 1})(lambda: None)


# -- which group, how big ---------------------------------------------------------------

def test_a_call_runs_in_the_group_its_options_name_else_the_default():
    assert group_of(()) == DEFAULT_GROUP
    assert group_of((("generator", "streaming"),)) == DEFAULT_GROUP
    assert group_of((("generator", "streaming"), ("concurrency_group", "io"))) == "io"


def test_the_default_group_is_max_concurrency_or_rays_default():
    groups = {"io": 2}
    assert group_sizes({}, is_async=False) == {}
    assert group_sizes({"concurrency_groups": {}}, is_async=True) == {}
    assert group_sizes({"concurrency_groups": groups}, is_async=False) == {"": 1, "io": 2}
    assert group_sizes({"concurrency_groups": groups}, is_async=True) == {"": 1000, "io": 2}
    assert group_sizes({"concurrency_groups": groups, "max_concurrency": 3},
                       is_async=True) == {"": 3, "io": 2}


class Sync:
    def f(self):
        pass


class Async:
    async def f(self):
        pass


def test_hosts_are_made_per_group_only_when_groups_are_declared():
    def none(*_):
        raise AssertionError("not called")

    assert make_host(Sync, {}, none, none, none, none) is None
    host = make_host(Sync, {"concurrency_groups": {"io": 2}}, none, none, none, none)
    assert isinstance(host, GroupedActorHost)
    assert {g: type(h) for g, h in host.hosts.items()} == {"": ThreadedActorHost,
                                                            "io": ThreadedActorHost}
    assert host.hosts["io"].pool._max_workers == 2
    assert host.hosts[""].pool._max_workers == 1
    async_host = make_host(Async, {"concurrency_groups": {"io": 2}}, none, none, none, none)
    assert {g: type(h) for g, h in async_host.hosts.items()} == {"": AsyncActorHost,
                                                                  "io": AsyncActorHost}
    loops = {h.loop for h in async_host.hosts.values()}
    assert len(loops) == 2 and async_host.hosts["io"].limit == 2
    for h in async_host.hosts.values():
        h.loop.call_soon_threadsafe(h.loop.stop)


def test_a_blocked_group_leaves_the_others_running():
    gate = threading.Event()
    results: list[bytes] = []
    done = threading.Condition()

    def run(s: TaskSpec) -> TaskResult:
        if s.method == "block":
            assert gate.wait(WAIT)
        return TaskResult(s.task_id, OK, (), 0.0, "here")

    def report(result: TaskResult) -> None:
        with done:
            results.append(result.task_id)
            done.notify_all()

    host = make_host(Sync, {"concurrency_groups": {"io": 1}}, run, None, report, None)
    host.submit(spec(1, "io", "block"))
    host.submit(spec(2, "io"))          # queued behind the blocked one: "io" has one thread
    host.submit(spec(3))                # the default group's thread is free
    with done:
        assert done.wait_for(lambda: spec(3).task_id in results, WAIT)
        assert results == [spec(3).task_id]
    gate.set()
    with done:
        assert done.wait_for(lambda: len(results) == 3, WAIT)
    assert results == [spec(3).task_id, spec(1).task_id, spec(2).task_id]
    for h in host.hosts.values():
        h.pool.shutdown()


def test_a_call_in_a_group_the_actor_lacks_fails_without_running():
    failed: list[tuple[TaskSpec, BaseException]] = []

    def run(s: TaskSpec) -> TaskResult:
        raise AssertionError("must not run")

    host = make_host(Sync, {"concurrency_groups": {"io": 1}}, run, None, None,
                     lambda s, e: failed.append((s, e)))
    host.submit(spec(1, "nope"))
    [(s, error)] = failed
    assert s.task_id == spec(1).task_id
    assert isinstance(error, ValueError) and "'nope'" in str(error) and "'io'" in str(error)
    for h in host.hosts.values():
        h.pool.shutdown()
