"""RemoteFunction: what ``@rayipy.remote`` makes of a function."""

from __future__ import annotations

import hashlib
import inspect
import threading
from typing import Any, Callable

from rayipy.core import options as option_table
from rayipy.core.runtime_env import with_env
from rayipy.core.strategies import apply_strategy
from rayipy.node import runtime_env_modules, runtime_env_pack
from rayipy.protocol import serialization
from rayipy.session import runtime_for_submit


class RemoteFunction:
    """A function that runs as tasks on the cluster: ``f.remote(*args)`` returns ObjectRef(s)."""

    def __init__(self, function: Callable, options: dict[str, Any]) -> None:
        self._function = function
        self._name = getattr(function, "__qualname__", getattr(function, "__name__", "task"))
        self._module = getattr(function, "__module__", "__main__")
        self._set_options(options)
        self._shared = PickledOnce(function, f"remote function {self._module}.{self._name}")
        self.__doc__ = function.__doc__
        self.__name__ = getattr(function, "__name__", "task")
        self.__qualname__ = self._name
        self.__module__ = self._module
        self.__wrapped__ = function

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"Remote functions cannot be called directly. Instead of running "
                        f"'{self._module}.{self._name}()', try '{self._module}.{self._name}.remote()'.")

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        runtime = runtime_for_submit()
        resources, spec_options = self._resources, self._spec_options
        env = runtime_env_pack.resolve(runtime, self._options.get("runtime_env"))
        if env is not None:   # its tasks go to workers of that environment only
            resources, spec_options = with_env(resources, env["key"]), tuple(sorted(
                (*spec_options, ("runtime_env", env)), key=lambda item: item[0]))
        function_id, pickled = self._shared.get()
        runtime.ensure_function(function_id, pickled)
        refs = runtime.submit(function_id, self._task_name, args, kwargs, self._returns_count,
                              resources, self._max_retries, options=spec_options)
        return refs[0] if self._returns_count == 1 else refs

    def _set_options(self, options: dict[str, Any]) -> None:
        """Validate the options and work out, once, what every ``.remote()`` sends."""
        self._options = option_table.validate(options)
        self._resources = option_table.resource_request(self._options)
        # A generator function streams unless told otherwise, as in Ray.
        default = "streaming" if is_generator_function(self._function) else 1
        self._num_returns = self._options.get("num_returns", default)
        if isinstance(self._num_returns, str) and default == 1:
            raise ValueError(f"num_returns={self._num_returns!r} can only be used with "
                             f"generator functions (functions that use 'yield'): "
                             f"{self._name!r} is not one")
        # A generator task has one return object (its end); its values are items.
        self._returns_count = 1 if isinstance(self._num_returns, str) else self._num_returns
        retries = self._options.get("max_retries", option_table.TASK_OPTIONS["max_retries"].default)
        self._max_retries = 2**31 if retries == -1 else retries
        self._spec_options = _spec_options(self._options, self._num_returns)
        # ``.options(name=...)``: the tasks' name wherever one is shown (progress bars,
        # the dashboard, `rayipy status`, errors), as in Ray.
        self._task_name = self._options.get("name") or self._name

    def options(self, **options: Any) -> "RemoteFunction":
        """A copy with some options changed; the function is pickled only once for all."""
        copy = RemoteFunction.__new__(RemoteFunction)
        copy.__dict__.update(self.__dict__)
        copy._set_options({**self._options, **options})
        return copy

    def __repr__(self) -> str:
        return f"<rayipy remote function {self._module}.{self._name}>"

    def __reduce__(self):
        return (RemoteFunction, (self._function, self._options))


def is_generator_function(function: Any) -> bool:
    """A function written with ``yield`` (sync or async)."""
    return inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(function)


def _spec_options(options: dict[str, Any], num_returns: Any = 1) -> tuple:
    """What the worker needs to know beyond the spec's own fields (sent with each task)."""
    out: list = []
    if isinstance(num_returns, str):   # "streaming" or "dynamic": a generator task
        out.append(("generator", num_returns))
    retry = options.get("retry_exceptions", False)
    if retry is True:
        out.append(("retry_exceptions", True))
    elif retry:  # exception classes, pickled once here (they may live in __main__)
        out.append(("retry_exceptions", serialization.dumps_inband(tuple(retry))))
    strategy = options.get("scheduling_strategy")
    if strategy == "SPREAD":
        out.append(("scheduling_strategy", "SPREAD"))
    out.extend(apply_strategy(strategy, {})[1])   # a node affinity's soft flag
    if options.get("max_calls"):   # the head counts them per worker (core/scheduler.py)
        out.append(("max_calls", options["max_calls"]))
    return tuple(sorted(out))


class PickledOnce:
    """The function's pickled bytes and content id, made on first use and then reused."""

    def __init__(self, function: Callable, what: str) -> None:
        self._function = function
        self._what = what
        self._lock = threading.Lock()
        self._value: tuple[bytes, bytes] | None = None
        self._generation = 0

    def get(self) -> tuple[bytes, bytes]:
        # A local module edited since (the %autoreload habit): pickle again, by value.
        generation = runtime_env_modules.watch.generation()
        value = self._value
        if value is None or generation != self._generation:
            with self._lock:
                if self._value is None or generation != self._generation:
                    pickled = serialization.dumps_function(self._function, self._what)
                    self._value = (hashlib.sha256(pickled).digest()[:16], pickled)
                    self._generation = generation
                value = self._value
        return value
