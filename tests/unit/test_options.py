"""Unit tests of rayipy.core.options: validation of remote options and resource requests."""

from __future__ import annotations

import pytest

from rayipy.core.options import TASK_OPTIONS, resource_request, validate


@pytest.mark.parametrize("options", [
    {},
    {"num_cpus": 0}, {"num_cpus": 2}, {"num_cpus": 0.5},
    {"num_gpus": 1}, {"memory": 2**30},
    {"resources": {"TPU": 2, "disk": 0.5}}, {"resources": None},
    {"num_returns": 3}, {"max_retries": 0}, {"max_retries": -1},
    {"retry_exceptions": True}, {"retry_exceptions": [ValueError]},
    {"name": "train"}, {"name": None},
    {"scheduling_strategy": "SPREAD"}, {"runtime_env": {}}, {"runtime_env": None},
    {"max_calls": 0}, {"max_calls": 10},
    {"num_cpus": 1, "num_gpus": 0, "num_returns": 2, "max_retries": 5, "name": "x"},
])
def test_valid_options_are_accepted_and_copied(options):
    got = validate(options)
    assert got == options
    assert got is not options


@pytest.mark.parametrize("typo, suggestion", [
    ("num_cpu", "num_cpus"), ("num_gpu", "num_gpus"), ("num_return", "num_returns"),
    ("max_retry", "max_retries"), ("resource", "resources"), ("memroy", "memory"),
])
def test_unknown_option_suggests_the_close_match(typo, suggestion):
    with pytest.raises(ValueError) as info:
        validate({typo: 1})
    message = str(info.value)
    assert f"invalid option {typo!r} for a remote function." in message
    assert f"Did you mean {suggestion!r}?" in message
    assert "Valid options: " in message and "num_cpus" in message


def test_unknown_option_without_close_match_lists_valid_ones():
    with pytest.raises(ValueError) as info:
        validate({"zzzzzz": 1}, what="actor class")
    message = str(info.value)
    assert "Did you mean" not in message
    assert "for a actor class" in message or "for an actor class" in message
    assert ", ".join(sorted(TASK_OPTIONS)) in message


@pytest.mark.parametrize("name, value", [
    ("num_cpus", -1), ("num_cpus", "2"), ("num_cpus", None), ("num_cpus", True),
    ("num_cpus", float("nan")), ("num_gpus", -0.5), ("memory", "1G"),
    ("resources", {"CPU": 1}), ("resources", {"GPU": 1}), ("resources", {"TPU": -1}),
    ("resources", {1: 1}), ("resources", [("TPU", 1)]), ("resources", {"TPU": "1"}),
    ("num_returns", 0), ("num_returns", 1.0), ("num_returns", True),
    ("max_retries", -2), ("max_retries", 1.5), ("max_retries", False),
    ("name", 3), ("runtime_env", "env"), ("max_calls", -1), ("max_calls", 2.0),
])
def test_bad_values_raise_type_error_naming_the_option(name, value):
    with pytest.raises(TypeError) as info:
        validate({name: value})
    message = str(info.value)
    assert message.startswith(f"option {name!r} of a remote function must be ")
    assert TASK_OPTIONS[name].requirement in message
    assert message.endswith(f"got {value!r}")


def test_first_bad_option_is_reported():
    with pytest.raises(TypeError, match="'num_returns'"):
        validate({"num_cpus": 1, "num_returns": 0, "max_retries": -5})


def test_custom_table_and_what():
    with pytest.raises(TypeError, match="option 'num_cpus' of an actor class"):
        validate({"num_cpus": -1}, TASK_OPTIONS, what="actor class")


def test_defaults():
    assert TASK_OPTIONS["num_cpus"].default == 1
    assert TASK_OPTIONS["num_returns"].default == 1
    assert TASK_OPTIONS["max_retries"].default == 3


# -- resource_request --------------------------------------------------------------------
def test_default_request_is_one_cpu():
    assert resource_request({}) == (("CPU", 1.0),)


def test_zero_amounts_are_left_out():
    assert resource_request({"num_cpus": 0}) == ()
    assert resource_request({"num_cpus": 0, "resources": {"TPU": 0}}) == ()


def test_full_request_is_sorted_floats():
    request = resource_request({"num_cpus": 2, "num_gpus": 1, "memory": 100,
                                "resources": {"b_custom": 3, "a_custom": 0.5, "zero": 0}})
    assert request == (("CPU", 2.0), ("GPU", 1.0), ("a_custom", 0.5), ("b_custom", 3.0),
                       ("memory", 100.0))
    assert all(type(amount) is float for _, amount in request)
    assert list(request) == sorted(request)


def test_none_gpus_memory_and_resources_are_zero():
    assert resource_request({"num_gpus": None, "memory": None, "resources": None}) == (
        ("CPU", 1.0),)


def test_validated_options_make_a_request():
    options = validate({"num_cpus": 0.5, "resources": {"TPU": 1}})
    assert resource_request(options) == (("CPU", 0.5), ("TPU", 1.0))


# -- known gaps ---------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["yes", 5, {"a": 1}])
def test_retry_exceptions_rejects_non_bool_non_list(value):
    with pytest.raises(TypeError, match="'retry_exceptions'"):
        validate({"retry_exceptions": value})


def test_max_calls_rejects_bool():
    with pytest.raises(TypeError, match="'max_calls'"):
        validate({"max_calls": True})


def test_misspelt_scheduling_strategy_is_rejected():
    with pytest.raises(TypeError, match="'scheduling_strategy'"):
        validate({"scheduling_strategy": "SPRAED"})


def test_runtime_env_keys_rayipy_lacks_are_refused_with_what_to_do_instead():
    assert validate({"runtime_env": {"env_vars": {"A": "1"}}})["runtime_env"] == {
        "env_vars": {"A": "1"}}
    with pytest.raises(ValueError, match="conda.*use 'pip'"):
        validate({"runtime_env": {"conda": "environment.yml"}})
    with pytest.raises(ValueError, match="unknown runtime_env key 'pipp'"):
        validate({"runtime_env": {"pipp": ["x"]}})
