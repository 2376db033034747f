"""The scheduler keeps tasks of a runtime_env on workers started for it (pure)."""

from __future__ import annotations

from rayipy.core.runtime_env import with_env
from rayipy.core.scheduler import Execute, Scheduler, Spawn
from rayipy.core.state import WorkerStatus
from rayipy.protocol.messages import Payload, TaskSpec

OWNER = b"O" * 8
NODE, AGENT = b"node-1", b"agent-1"
CPU1 = (("CPU", 1.0),)
ENV_A = {"key": "aaa", "env_vars": {"A": "1"}, "working_dir": None, "py_modules": [], "pip": []}
ENV_B = {**ENV_A, "key": "bbb", "env_vars": {"A": "2"}}


def spec(n: int, env: dict | None = None, actor: bytes = b"") -> TaskSpec:
    options = (("runtime_env", env),) if env else ()
    resources = with_env(CPU1, env["key"]) if env else CPU1
    return TaskSpec(OWNER + n.to_bytes(8, "big"), b"f", f"t{n}", Payload(b""), (), 1, resources,
                    3, actor_id=actor, method="__init__" if actor else "", options=options)


def make(workers: dict[bytes, str]) -> Scheduler:
    s = Scheduler()
    s.add_function(b"f", b"code")
    s.add_node(NODE, AGENT, {"CPU": 2.0}, {})
    for i, (worker, env) in enumerate(workers.items()):
        s.add_worker(worker, NODE, 100 + i, "", env)
    return s


def placed(out: list) -> dict[bytes, list[int]]:
    return {x.worker: [int.from_bytes(sp.task_id[8:], "big") for sp in x.specs]
            for x in out if isinstance(x, Execute)}


def test_a_task_of_an_env_never_goes_to_a_pool_worker_but_asks_for_a_worker_of_it():
    s = make({b"pool-1": "", b"pool-2": ""})
    s.nodes[NODE].spawning = 0
    out = s.submit([spec(1, ENV_A)])
    assert placed(out) == {}
    assert [x for x in out if isinstance(x, Spawn)] == [Spawn(AGENT, 1, ENV_A)]
    assert s.submit([spec(2, ENV_A)]) == [Spawn(AGENT, 1, ENV_A)]   # one more slot free
    # Two asked for, not yet registered: a third task asks for none (no CPU left for it).
    assert [x for x in s.submit([spec(3, ENV_A)]) if isinstance(x, Spawn)] == []
    out = s.add_worker(b"env-a", NODE, 200, "", "aaa")
    assert placed(out) == {b"env-a": [1, 2]}   # the second queues behind the first
    assert s.env_spawning == {(NODE, "aaa"): 1}


def test_pool_tasks_never_go_to_a_worker_of_an_env_and_envs_do_not_mix():
    s = make({b"env-a": "aaa", b"env-b": "bbb", b"pool": ""})
    out = s.submit([spec(1), spec(2, ENV_B), spec(3, ENV_A)])
    assert placed(out) == {b"pool": [1], b"env-b": [2]}
    assert s.workers[b"env-a"].state is WorkerStatus.IDLE    # no CPU left for task 3
    out = s.finished(b"pool", [spec(1).task_id], [0.1])
    assert placed(out) == {b"env-a": [3]}


def test_an_idle_worker_of_another_env_does_not_steal_from_a_busy_one():
    s = make({b"env-a": "aaa", b"env-b": "bbb"})
    s.durations[b"f"] = 0.001     # deep pipelines
    out = s.submit([spec(n, ENV_A) for n in range(1, 6)])
    assert placed(out) == {b"env-a": [1, 2, 3, 4, 5]}
    assert s.workers[b"env-b"].state is WorkerStatus.IDLE
    assert not [x for x in s.dispatch() if type(x).__name__ == "Steal"]


def test_an_actor_of_an_env_gets_a_worker_of_it_and_the_pool_no_replacement():
    s = make({b"pool": ""})
    s.nodes[NODE].spawning = 0
    out = s.submit([spec(1, ENV_A, actor=b"actor-1")])
    assert [x for x in out if isinstance(x, Spawn)] == [Spawn(AGENT, 1, ENV_A)]
    out = s.add_worker(b"env-a", NODE, 200, "", "aaa")
    assert placed(out) == {b"env-a": [1]}
    assert s.workers[b"env-a"].state is WorkerStatus.ACTOR
    assert [x for x in out if isinstance(x, Spawn)] == []


def test_a_lease_for_an_env_request_takes_only_a_worker_of_that_env():
    s = make({b"pool": "", b"env-a": "aaa"})
    s.workers[b"pool"].address = s.workers[b"env-a"].address = "tcp://x"
    [answer] = s.lease(OWNER, with_env(CPU1, "aaa"))
    assert answer.worker == b"env-a"
    [answer] = s.lease(OWNER, with_env(CPU1, "bbb"))
    assert answer.worker == b""
