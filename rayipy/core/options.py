"""Options of remote functions as data: name, accepted types, check, default.

Validated when the decorator or ``.options()`` is applied, so a typo fails at the line
that made it, not when a task runs.
"""

from __future__ import annotations

import difflib
import numbers
from typing import Any, Callable, NamedTuple

from rayipy.core import runtime_env
from rayipy.core.strategies import STRATEGY_TYPES, apply_strategy, is_strategy


class Option(NamedTuple):
    """One option: the types it accepts, its check, the check in words, its default."""
    types: tuple[type, ...]
    check: Callable[[Any], bool]
    requirement: str
    default: Any


def _number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _resources_ok(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and _number(v) and v >= 0 and k not in ("CPU", "GPU")
        for k, v in value.items())


TASK_OPTIONS: dict[str, Option] = {
    "num_cpus": Option((int, float), lambda v: _number(v) and v >= 0, "a number >= 0", 1),
    "num_gpus": Option((int, float), lambda v: _number(v) and v >= 0, "a number >= 0", 0),
    "memory": Option((int, float), lambda v: _number(v) and v >= 0, "a number of bytes >= 0", 0),
    "resources": Option((dict,), _resources_ok,
                        "a dict of resource name -> amount >= 0 (use num_cpus/num_gpus for CPU/GPU)",
                        None),
    "num_returns": Option((int, str), lambda v: v in ("streaming", "dynamic") or (
        isinstance(v, int) and not isinstance(v, bool) and v >= 1),
        'an int >= 1, "streaming" or "dynamic" (generator tasks)', 1),
    "max_retries": Option((int,), lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= -1,
                          "an int >= 0, or -1 for unlimited", 3),
    "retry_exceptions": Option((bool, list, tuple), lambda v: isinstance(v, bool) or (
        isinstance(v, (list, tuple)) and all(isinstance(t, type) and issubclass(t, BaseException)
                                             for t in v)),
        "a bool or a list of exception types", False),
    "name": Option((str,), lambda v: isinstance(v, str), "a string", None),
    "scheduling_strategy": Option((str, *STRATEGY_TYPES), is_strategy,
                                  '"DEFAULT", "SPREAD", a NodeAffinitySchedulingStrategy or a '
                                  'PlacementGroupSchedulingStrategy', "DEFAULT"),
    # Its keys are checked here (``runtime_env.check``); its directories are packed and
    # uploaded at the first ``.remote()`` (``node/runtime_env_pack.py``).
    "runtime_env": Option((dict,), lambda v: v is None or isinstance(v, dict), "a dict", None),
    # Refused rather than ignored (``validate``): generator tasks have no back-pressure yet.
    "_generator_backpressure_num_objects": Option((int,), lambda v: isinstance(v, int), "an int",
                                                  None),
    "max_calls": Option((int,), lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                        "an int >= 0", 0),
}


# Task options that mean nothing for an actor class: refused there, saying what to use.
TASK_ONLY_OPTIONS: dict[str, str] = {
    "num_returns": "num_returns is an option of a remote function or of an actor method "
                   "(@rayipy.method(num_returns=2)), not of an actor class",
    "max_retries": "max_retries is for tasks; an actor is restarted with max_restarts, "
                   "and its calls retried with max_task_retries",
    "retry_exceptions": "retry_exceptions is for tasks; catch and retry inside the actor's "
                        "method instead",
    "max_calls": "max_calls is for tasks (a worker is replaced after N calls); an actor "
                 "lives until it is killed: use rayipy.kill(handle) and make a new one",
}


# -- concurrency groups (an actor class's ``concurrency_groups``, a method's ``concurrency_group``)

CONCURRENCY_GROUPS_REQUIREMENT = ("a dict of group name (a non-empty str) -> that group's max "
                                  "concurrency (an int >= 1), e.g. {'io': 2, 'compute': 4}")


def _group_size_ok(size: Any) -> bool:
    return isinstance(size, int) and not isinstance(size, bool) and size >= 1


def check_concurrency_groups(groups: Any) -> None:
    """An actor class's ``concurrency_groups``: TypeError/ValueError naming the bad entry."""
    if not isinstance(groups, dict):
        raise TypeError(f"concurrency_groups must be {CONCURRENCY_GROUPS_REQUIREMENT}, "
                        f"got {type(groups).__name__} {groups!r}")
    for name, size in groups.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"concurrency_groups: group names must be non-empty strings, "
                            f"got {name!r} in {groups!r}")
        if name.startswith("_ray"):   # Ray keeps these for its own system groups
            raise ValueError(f"concurrency_groups: {name!r} is reserved (names starting "
                             f"with '_ray' are Ray's own): pick another name")
        if not _group_size_ok(size):
            raise ValueError(f"concurrency_groups: group {name!r} has max concurrency "
                             f"{size!r}; each group's size must be an int >= 1")


def unknown_group(group: str, groups: dict[str, int] | None, where: str) -> ValueError:
    """The error for ``group`` not among an actor's ``groups``; ``where``: who named it."""
    if groups:
        close = difflib.get_close_matches(group, groups, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        valid = f"its groups are {', '.join(map(repr, sorted(groups)))}.{hint}"
    else:
        valid = (f"it declares none: declare it with "
                 f"@rayipy.remote(concurrency_groups={{{group!r}: 1}})")
    return ValueError(f"{where} names concurrency group {group!r}, which the actor class "
                      f"does not have: {valid} Methods in no group run in the default "
                      f"group (of size max_concurrency).")


CONCURRENCY_GROUPS = Option((dict,), lambda v: isinstance(v, dict), CONCURRENCY_GROUPS_REQUIREMENT,
                            None)
CONCURRENCY_GROUP = Option((str,), lambda v: isinstance(v, str) and v != "",
                           "the name (a non-empty str) of one of the actor's concurrency_groups",
                           None)


BACKPRESSURE_UNSUPPORTED = (
    "_generator_backpressure_num_objects is not supported by rayipy, and is refused rather "
    "than ignored: a generator task runs ahead of its consumer. To bound what it holds, "
    "yield fewer, larger values, or have the task wait for a signal (an actor, or "
    "rayipy.get of a ref) before yielding more")


def validate(options: dict[str, Any], table: dict[str, Option] = TASK_OPTIONS,
             what: str = "remote function",
             refused: dict[str, str] | None = None) -> dict[str, Any]:
    """Check options against the table; raises ValueError/TypeError naming the bad one.
    ``refused``: names known not to apply here, with what to do instead."""
    for name, value in options.items():
        option = table.get(name)
        if option is None and refused and name in refused:
            raise ValueError(f"invalid option {name!r}: {refused[name]}")
        if option is None:
            close = difflib.get_close_matches(name, table, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            article = "an" if what[0] in "aeiou" else "a"
            raise ValueError(f"invalid option {name!r} for {article} {what}.{hint} "
                             f"Valid options: {', '.join(sorted(table))}.")
        if value is None and option.default is None:
            continue
        if not option.check(value):
            raise TypeError(f"option {name!r} of {'an' if what[0] in 'aeiou' else 'a'} {what} must be "
                            f"{option.requirement}, "
                            f"got {value!r}")
        if name == "runtime_env" and value:
            runtime_env.check(value)   # conda, container...: refused, saying what instead
        if name == "concurrency_groups":
            check_concurrency_groups(value)
        if name == "_generator_backpressure_num_objects" and value not in (None, -1):
            raise ValueError(BACKPRESSURE_UNSUPPORTED)
    return dict(options)


def resource_request(options: dict[str, Any]) -> tuple[tuple[str, float], ...]:
    """The scheduler's form: a sorted tuple of (name, amount), zero amounts left out."""
    amounts: dict[str, float] = {
        "CPU": float(options.get("num_cpus", TASK_OPTIONS["num_cpus"].default)),
        "GPU": float(options.get("num_gpus") or 0),
        "memory": float(options.get("memory") or 0),
    }
    for name, amount in (options.get("resources") or {}).items():
        amounts[name] = float(amount)
    amounts, _ = apply_strategy(options.get("scheduling_strategy"), amounts)
    return tuple(sorted((k, v) for k, v in amounts.items() if v > 0))
