"""Every option rayipy accepts either changes behaviour or is refused (issue 14).

Walks the option tables (remote functions: ``core/options.TASK_OPTIONS``; actor
classes: ``actor.ACTOR_OPTIONS``; actor methods: ``actor.METHOD_OPTIONS``; ``init``'s keywords: its signature and Ray's other
keywords in ``session``). Each name must have an entry here:

- ``Shown(file, test)``: a test that shows what it does (checked to exist);
- ``Refused(call, error, words)``: passing it raises ``error`` naming the alternative
  (run here);
- ``Pending(why)``: accepted, and another part of issue 14 gives it meaning; listed, so
  the lead sees what is left.

A new option added to a table without an entry fails ``test_every_option_has_an_entry``.
"""

from __future__ import annotations

import inspect
import logging
import pathlib
import re
from typing import Any, Callable, NamedTuple

import pytest

import rayipy
from rayipy import session
from rayipy.actor import ACTOR_OPTIONS, METHOD_OPTIONS
from rayipy.core.options import TASK_OPTIONS

ROOT = pathlib.Path(__file__).resolve().parents[2]


class Shown(NamedTuple):
    file: str
    test: str


class Refused(NamedTuple):
    call: Callable[[], Any]
    error: type[BaseException]
    words: str            # a regex the message must match: what to do instead


class Pending(NamedTuple):
    why: str


def task(**options: Any) -> Callable[[], Any]:
    return lambda: rayipy.remote(**options)(lambda: None)


def actor(**options: Any) -> Callable[[], Any]:
    return lambda: rayipy.remote(**options)(type("A", (), {}))


def init(**kwargs: Any) -> Callable[[], Any]:
    return lambda: rayipy.init(**kwargs)   # refused before any cluster starts


TASKS = "tests/integration/test_tasks.py"
TASK_OPTS = "tests/integration/test_task_options.py"
FAILURES = "tests/integration/test_failures.py"
NODES = "tests/integration/test_nodes.py"
ACTORS = "tests/integration/test_actors.py"
UNIT_OPTIONS = "tests/unit/test_options.py"
RUNTIME_ENV = "tests/integration/test_runtime_env.py"
GROUPS = "tests/integration/test_concurrency_groups.py"

TASK_ENTRIES: dict[str, Any] = {
    "num_cpus": Shown(TASKS, "test_impossible_resource_request_is_an_error"),
    "num_gpus": Shown(NODES, "test_gpu_tasks_see_only_their_own_devices"),
    "memory": Shown(UNIT_OPTIONS, "test_full_request_is_sorted_floats"),
    "resources": Shown(TASKS, "test_impossible_resource_request_is_an_error"),
    "num_returns": Shown(TASKS, "test_num_returns_and_options"),
    "max_retries": Shown(FAILURES, "test_retry_exceptions"),
    "retry_exceptions": Shown(FAILURES, "test_retry_exceptions"),
    "name": Shown(TASKS, "test_a_task_name_given_in_options_names_its_tasks"),
    "scheduling_strategy": Shown(NODES, "test_spread_places_actors_on_different_nodes"),
    "runtime_env": Shown(RUNTIME_ENV, "test_env_vars_reach_the_task_and_workers_of_other_envs_are_other_processes"),
    "max_calls": Shown(TASK_OPTS, "test_max_calls_one_runs_each_call_in_a_fresh_worker"),
    "_generator_backpressure_num_objects": Refused(task(_generator_backpressure_num_objects=2),
                                                   ValueError, "yield fewer"),
}

ACTOR_ENTRIES: dict[str, Any] = {
    "num_cpus": Shown(ACTORS, "test_actor_holding_a_cpu_takes_it_from_the_pool"),
    "num_gpus": Shown(NODES, "test_gpu_tasks_see_only_their_own_devices"),
    "memory": Shown(UNIT_OPTIONS, "test_full_request_is_sorted_floats"),
    "resources": Shown(ACTORS, "test_actor_holding_a_cpu_takes_it_from_the_pool"),
    "name": Shown(ACTORS, "test_named_actors"),
    "scheduling_strategy": Shown(NODES, "test_spread_places_actors_on_different_nodes"),
    "runtime_env": Shown(RUNTIME_ENV, "test_an_actor_runs_in_its_environment"),
    "_generator_backpressure_num_objects": Refused(actor(_generator_backpressure_num_objects=2),
                                                   ValueError, "yield fewer"),
    "max_restarts": Shown(ACTORS, "test_misuse"),
    "max_task_retries": Shown("tests/integration/test_actor_lifecycle.py",
                              "test_calls_in_flight_go_again_to_the_restarted_actor_with_max_task_retries"),
    "max_concurrency": Shown(ACTORS, "test_misuse"),
    "lifetime": Shown(ACTORS, "test_named_and_detached_actors_outlive_their_handles"),
    "namespace": Shown("tests/integration/test_actor_lifecycle.py",
                       "test_an_actor_named_in_another_namespace_is_found_only_there"),
    "get_if_exists": Shown(ACTORS, "test_named_actors"),
    "concurrency_groups": Shown(GROUPS, "test_a_blocked_group_does_not_block_the_default_group"),
}
# ``@rayipy.method(...)`` and ``handle.method.options(...)``.
METHOD_ENTRIES: dict[str, Any] = {
    "num_returns": Shown(ACTORS, "test_multiple_returns_and_ref_arguments"),
    "max_task_retries": Shown("tests/integration/test_actor_lifecycle.py",
                              "test_a_methods_max_task_retries_overrides_the_actors"),
    "concurrency_group": Shown(GROUPS, "test_a_call_can_choose_its_group_with_options"),
}
# Task options an actor class refuses, naming what to use.
ACTOR_REFUSED: dict[str, Any] = {
    "num_returns": Refused(actor(num_returns=2), ValueError, r"rayipy\.method"),
    "max_retries": Refused(actor(max_retries=1), ValueError, "max_restarts"),
    "retry_exceptions": Refused(actor(retry_exceptions=True), ValueError, "inside the actor"),
    "max_calls": Refused(actor(max_calls=1), ValueError, "rayipy.kill"),
}

INIT_ENTRIES: dict[str, Any] = {
    "address": Shown("tests/integration/test_cli.py",
                     "test_a_driver_joining_with_auto_reports_its_machines_node"),
    "num_cpus": Shown(NODES, "test_spread_places_actors_on_different_nodes"),
    "num_gpus": Shown(NODES, "test_gpu_tasks_see_only_their_own_devices"),
    "resources": Shown(NODES, "test_gpu_tasks_see_only_their_own_devices"),
    "password": Shown("tests/integration/test_cli.py",
                      "test_start_head_prints_how_to_join_and_runs_detached"),
    "_redis_password": Shown("tests/integration/test_cli.py",
                             "test_start_head_prints_how_to_join_and_runs_detached"),
    "ignore_reinit_error": Shown(FAILURES, "test_misuse_errors"),
    "include_dashboard": Shown("tests/integration/test_dashboard.py",
                               "test_without_the_dashboard_nothing_else_listens"),
    "dashboard_host": Shown("tests/integration/test_dashboard.py",
                            "test_bad_dashboard_options_say_what_is_wrong"),
    "dashboard_port": Shown("tests/integration/test_dashboard.py",
                            "test_a_taken_port_moves_the_dashboard_to_the_next_one"),
    "object_store_memory": Shown("tests/integration/test_object_spilling.py",
                                 "test_over_the_budget_objects_spill_and_come_back"),
    "_system_config": Shown("tests/integration/test_object_spilling.py",
                            "test_over_the_budget_objects_spill_and_come_back"),
    "local_mode": Refused(init(local_mode=True), ValueError, "num_cpus=1"),
    "runtime_env": Shown("tests/integration/test_runtime_env_job.py",
                         "test_init_runtime_env_applies_to_every_task_and_merges_env_vars"),
    "logging_level": Shown("tests/unit/test_option_walk.py",
                           "test_logging_level_sets_rayipys_logger"),
    "namespace": Shown("tests/integration/test_actor_namespaces.py",
                       "test_detached_actors_are_found_from_another_driver_in_the_same_namespace"),
    "configure_logging": Refused(init(configure_logging=False), ValueError, "basicConfig"),
    "logging_format": Refused(init(logging_format="%(message)s"), ValueError, "handler"),
    "log_to_driver": Refused(init(log_to_driver=False), ValueError, "redirect_stdout"),
    "job_config": Refused(init(job_config=object()), ValueError, "arguments"),
    "_temp_dir": Refused(init(_temp_dir="/tmp/x"), ValueError, "RAYIPY_HOME"),
    "_plasma_directory": Refused(init(_plasma_directory="/tmp"), ValueError, "object_store_memory"),
    "_node_ip_address": Refused(init(_node_ip_address="10.0.0.1"), ValueError, "--node-ip-address"),
    "_metrics_export_port": Refused(init(_metrics_export_port=8080), ValueError, "api/status"),
    "storage": Refused(init(storage="s3://b"), ValueError, "shared file system"),
    "_enable_object_reconstruction": Refused(init(_enable_object_reconstruction=False), ValueError,
                                             "remade"),
    "_memory": Refused(init(_memory=10**9), ValueError, r"options\(memory"),
    "_node_name": Refused(init(_node_name="n"), ValueError, "id and IP"),
    "_driver_object_store_memory": Refused(init(_driver_object_store_memory=10**9), ValueError,
                                           "object_store_memory"),
}


def init_options() -> set[str]:
    params = inspect.signature(rayipy.init).parameters
    named = {n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}
    return named | session._IGNORED_INIT_OPTIONS | {"logging_level"}


def test_nothing_is_left_pending():
    assert [name for _, name, entry in entries() if isinstance(entry, Pending)] == []


TABLES = [("remote function", set(TASK_OPTIONS), TASK_ENTRIES),
          ("actor class", set(ACTOR_OPTIONS), ACTOR_ENTRIES),
          ("actor method", set(METHOD_OPTIONS), METHOD_ENTRIES),
          ("init", init_options(), INIT_ENTRIES)]


@pytest.mark.parametrize("what, names, entries", TABLES, ids=[t[0] for t in TABLES])
def test_every_option_has_an_entry(what, names, entries):
    assert names - set(entries) == set(), (
        f"{what} options without an entry in {__file__}: give each a test that shows what "
        f"it does, or make it raise saying what to do instead")
    assert set(entries) - names == set(), f"entries for {what} options that no longer exist"


def entries() -> list[tuple[str, str, Any]]:
    return [(what, name, entry) for what, _, table in TABLES for name, entry in table.items()] + \
           [("actor class (refused)", name, e) for name, e in ACTOR_REFUSED.items()]


@pytest.mark.parametrize("what, name, entry", entries(), ids=lambda v: v if isinstance(v, str) else "")
def test_each_entry_holds(what, name, entry):
    if isinstance(entry, Shown):
        source = (ROOT / entry.file).read_text()
        assert re.search(rf"^(async )?def {entry.test}\(", source, re.M), \
            f"{entry.test} not found in {entry.file} (it shows {what} option {name!r})"
    elif isinstance(entry, Refused):
        assert not rayipy.is_initialized()
        with pytest.raises(entry.error, match=entry.words):
            entry.call()
        assert not rayipy.is_initialized()
    else:
        assert isinstance(entry, Pending) and entry.why


def test_task_only_options_are_refused_by_actor_classes():
    assert set(ACTOR_REFUSED) == set(TASK_OPTIONS) - set(ACTOR_OPTIONS)


def test_logging_level_sets_rayipys_logger():
    logger = logging.getLogger("rayipy")
    before = logger.level
    try:
        session._check_ray_init_options({"logging_level": logging.ERROR})
        assert logger.level == logging.ERROR
        session._check_ray_init_options({"logging_level": "DEBUG"})
        assert logger.level == logging.DEBUG
        with pytest.raises(TypeError, match="logging_level"):
            session._check_ray_init_options({"logging_level": 1.5})
    finally:
        logger.setLevel(before)


def test_rays_defaults_are_accepted_where_rayipy_does_the_same():
    session._check_ray_init_options({"log_to_driver": True, "configure_logging": True,
                                     "_enable_object_reconstruction": True, "job_config": None})
