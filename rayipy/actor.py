"""Actors: ``@rayipy.remote`` on a class. Each actor lives in a worker of its own.

``Cls.remote(*args)`` returns an ActorHandle at once; ``handle.method.remote(*args)``
returns ObjectRefs. Calls from one caller reach the actor in the order they were made
(they travel one connection to the head and one to the actor's worker, both in order).
Handles pickle, so tasks and other actors can call the same actor.

Named actors live in a namespace (Ray's): the one given by ``.options(namespace=)``,
else the creator's (``init(namespace=)``, or an anonymous one per driver, inherited by
its tasks and actors). ``get_actor`` looks in the caller's unless told another.
A handle carries the actor's ``max_task_retries``: how often a call in flight when the
actor's worker dies goes again to the restarted actor (``core/actor_routes.py``).
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, NoReturn

from rayipy import exceptions
from rayipy.core import options as option_table
from rayipy.core.runtime_env import with_env
from rayipy.node import runtime_env_pack
from rayipy.core.object_ref import current_runtime
from rayipy.core.strategies import apply_strategy
from rayipy.core.task_context import current_task
from rayipy.node import actor_exit
from rayipy.node.actor_host import CONCURRENCY_GROUP
from rayipy.protocol.kinds import Kind
from rayipy.remote_function import PickledOnce
from rayipy.session import require_runtime, runtime_for_submit

# Ray's defaults: an actor needs no CPU to run unless it asks for one.
ACTOR_OPTIONS = {**{k: v for k, v in option_table.TASK_OPTIONS.items()
                    if k not in option_table.TASK_ONLY_OPTIONS},
                 "max_restarts": option_table.Option((int,), lambda v: isinstance(v, int) and v >= -1,
                                                     "an int >= 0, or -1 for unlimited", 0),
                 "max_task_retries": option_table.Option((int,), lambda v: isinstance(v, int) and v >= -1,
                                                         "an int >= 0, or -1 for unlimited", 0),
                 "max_concurrency": option_table.Option((int,), lambda v: isinstance(v, int) and v >= 1,
                                                        "an int >= 1", 1),
                 "lifetime": option_table.Option((str,), lambda v: v in (None, "detached"),
                                                 'None or "detached"', None),
                 "namespace": option_table.Option((str,), lambda v: isinstance(v, str), "a string", None),
    "name": option_table.Option((str,), lambda v: isinstance(v, str) and v != "", "a non-empty string",
                                None),
                 "get_if_exists": option_table.Option((bool,), lambda v: isinstance(v, bool), "a bool",
                                                      False),
                 # Ray's: each group has its own threads (or event loop); see node/actor_host.py.
                 "concurrency_groups": option_table.CONCURRENCY_GROUPS}

# Options of one method (``@rayipy.method``) or one call (``handle.m.options``), as in Ray.
METHOD_OPTIONS = {"num_returns": option_table.TASK_OPTIONS["num_returns"],
                  "max_task_retries": ACTOR_OPTIONS["max_task_retries"],
                  "concurrency_group": option_table.CONCURRENCY_GROUP}

_METHOD_OPTIONS_ATTR = "__rayipy_method_options__"

# In a handle's method table (which travels wherever handles are made, get_actor too):
# the actor's concurrency groups, so that a call naming an unknown one fails at once. No
# method has this name (the handle refuses names starting with "__").
GROUPS_KEY = "__concurrency_groups__"


def method(**options: Any):
    """``@rayipy.method(num_returns=2, max_task_retries=1, concurrency_group="io")``:
    options for one actor method."""
    option_table.validate(options, METHOD_OPTIONS, "actor method")

    def decorate(fn):
        if isinstance(options.get("num_returns"), str) and not (
                inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)):
            raise ValueError(f"num_returns={options['num_returns']!r} can only be used with "
                             f"generator methods (that use 'yield'): {fn.__name__!r} is not one")
        setattr(fn, _METHOD_OPTIONS_ATTR, options)
        return fn
    return decorate


def _method_options(member: Any) -> dict:
    """A method's options: its ``@rayipy.method`` ones; a generator streams, as in Ray."""
    options = getattr(member, _METHOD_OPTIONS_ATTR, {})
    if "num_returns" not in options and (inspect.isgeneratorfunction(member)
                                         or inspect.isasyncgenfunction(member)):
        return {**options, "num_returns": "streaming"}
    return options


class ActorClass:
    """What ``@rayipy.remote`` makes of a class: ``Cls.remote(...)`` creates an actor."""

    def __init__(self, cls: type, options: dict[str, Any]) -> None:
        self._cls = cls
        self._options = option_table.validate(options, ACTOR_OPTIONS, "actor class",
                                              option_table.TASK_ONLY_OPTIONS)
        self._name = cls.__qualname__
        self._methods = {name: _method_options(member)
                         for name, member in inspect.getmembers(cls, callable)
                         if not name.startswith("__") or name == "__call__"}
        _check_method_groups(self._methods, self._options.get("concurrency_groups"), self._name)
        self._shared = PickledOnce(cls, f"actor class {cls.__module__}.{self._name}")
        self.__doc__ = cls.__doc__
        self.__name__ = cls.__name__
        self.__qualname__ = self._name
        self.__module__ = cls.__module__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"Actors cannot be instantiated directly. Instead of '{self._name}()', "
                        f"use '{self._name}.remote()'.")

    def options(self, **options: Any) -> "ActorClass":
        copy = ActorClass.__new__(ActorClass)
        copy.__dict__.update(self.__dict__)
        copy._options = option_table.validate({**self._options, **options}, ACTOR_OPTIONS,
                                              "actor class", option_table.TASK_ONLY_OPTIONS)
        _check_method_groups(copy._methods, copy._options.get("concurrency_groups"), copy._name)
        return copy

    def remote(self, *args: Any, **kwargs: Any) -> "ActorHandle":
        runtime = runtime_for_submit()
        env = runtime_env_pack.resolve(runtime, self._options.get("runtime_env"))
        name = self._options.get("name")
        namespace = self._options.get("namespace")
        if namespace is not None and name is None:
            raise ValueError(f"namespace={namespace!r} is where a named actor's name lives: "
                             f"give the actor a name= too, or leave namespace out")
        retries = self._options.get("max_task_retries") or 0
        actor_id = runtime.new_actor_id()
        if name is not None:
            namespace = namespace if namespace is not None else _namespace_here(runtime)
            holder = runtime.request("register_actor_name", name, actor_id, namespace)
            if holder is not None:
                if self._options.get("get_if_exists"):
                    return get_actor(name, namespace)
                raise exceptions.ActorAlreadyExistsError(
                                 f"an actor named {name!r} already exists in namespace "
                                 f"{namespace!r}: pick another name, use "
                                 f"rayipy.get_actor({name!r}), or pass get_if_exists=True")
        function_id, pickled = self._shared.get()
        runtime.ensure_function(function_id, pickled)
        resources = option_table.resource_request({"num_cpus": 0, **self._options})
        worker_options = {key: self._options[key] for key in
                          ("max_concurrency", "max_restarts", "max_task_retries", "lifetime",
                           "name", "scheduling_strategy", "concurrency_groups")
                          if self._options.get(key) is not None}
        if name is not None:
            worker_options["namespace"] = namespace
        methods = self._methods
        if worker_options.get("concurrency_groups"):
            methods = {**methods, GROUPS_KEY: dict(worker_options["concurrency_groups"])}
        worker_options.update(class_name=self._name, methods=methods)
        if env is not None:   # it runs on a worker started for its environment
            resources = with_env(resources, env["key"])
            worker_options["runtime_env"] = env
        strategy = worker_options.get("scheduling_strategy")
        if not isinstance(strategy, str):   # an object: it is in ``resources`` already
            worker_options.pop("scheduling_strategy", None)
            worker_options.update(apply_strategy(strategy, {})[1])   # a soft node affinity
        [creation] = runtime.submit(function_id, f"{self._name}.__init__", args, kwargs, 1,
                                    resources, 0, actor_id, "__init__",
                                    tuple(sorted(worker_options.items())))
        if name is None and self._options.get("lifetime") != "detached":
            # The actor lives while some handle does: handles carry this ref, which is
            # counted across processes like any other.
            runtime.objects.mark_actor(creation.id, actor_id)
            return ActorHandle(actor_id, self._name, methods, creation, retries)
        return ActorHandle(actor_id, self._name, methods, None, retries)

    def __repr__(self) -> str:
        return f"<rayipy actor class {self.__module__}.{self._name}>"


class ActorHandle:
    """A reference to one actor; ``handle.method.remote(...)`` calls it."""

    def __init__(self, actor_id: bytes, class_name: str, methods: dict[str, dict],
                 lifetime_ref: Any = None, max_task_retries: int = 0) -> None:
        self._actor_id = actor_id
        self._class_name = class_name
        self._methods = methods
        self._lifetime_ref = lifetime_ref   # an ObjectRef whose freeing stops the actor
        self._max_task_retries = max_task_retries

    def __getattr__(self, name: str) -> "ActorMethod":
        methods = self.__dict__.get("_methods")
        if name == actor_exit.TERMINATE_METHOD and methods is not None:
            return ActorMethod(self, name, {})
        if methods is None or name.startswith("__"):
            raise AttributeError(name)
        if name not in methods:
            close = difflib.get_close_matches(name, methods, n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise AttributeError(f"actor class {self._class_name!r} has no method {name!r}.{hint}")
        return ActorMethod(self, name, methods[name])

    def __reduce__(self):
        return (ActorHandle, (self._actor_id, self._class_name, self._methods, self._lifetime_ref,
                              self._max_task_retries))

    def __repr__(self) -> str:
        return f"Actor({self._class_name}, {self._actor_id.hex()})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __hash__(self) -> int:
        return hash(self._actor_id)


class ActorMethod:
    """One method of an actor, through a handle: ``.remote(...)`` calls it."""

    def __init__(self, handle: ActorHandle, name: str, options: dict) -> None:
        self._handle = handle
        self._name = name
        self._options = options
        self._num_returns = options.get("num_returns", 1)
        self._group = options.get("concurrency_group")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"Actor methods cannot be called directly. Instead of running "
                        f"'{self._name}()', try '{self._name}.remote()'.")

    def options(self, **options: Any) -> "ActorMethod":
        """A copy with options for its calls: ``num_returns``, ``max_task_retries``,
        ``concurrency_group`` (one of the actor's groups)."""
        option_table.validate(options, METHOD_OPTIONS, "actor method")
        group = options.get("concurrency_group")
        if group is not None:
            groups = self._handle._methods.get(GROUPS_KEY)
            if group not in (groups or ()):
                raise option_table.unknown_group(
                    group, groups, f"{self._name}.options(concurrency_group={group!r})")
        return ActorMethod(self._handle, self._name, {**self._options, **options})

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        runtime = runtime_for_submit()
        handle = self._handle
        # A pending call keeps the actor alive even if its handle is dropped meanwhile.
        keep = (handle._lifetime_ref.id,) if handle._lifetime_ref is not None else ()
        generator = isinstance(self._num_returns, str)   # "streaming" or "dynamic"
        count = 1 if generator else self._num_returns
        # In the spec's max_retries: how often it goes again if the actor restarts under it.
        retries = self._options.get("max_task_retries", handle._max_task_retries)
        options: tuple[tuple[str, Any], ...] = (
            (("generator", self._num_returns),) if generator else ())
        if self._group is not None:   # the worker runs it on that group's threads
            options += ((CONCURRENCY_GROUP, self._group),)
        refs = runtime.submit(b"", f"{handle._class_name}.{self._name}", args, kwargs,
                              count, (), retries, handle._actor_id, self._name,
                              options=options, keep_alive=keep)
        return refs[0] if count == 1 else refs


def kill(actor: ActorHandle, *, no_restart: bool = True) -> None:
    """Stop the actor at once; its pending and later calls raise ActorDiedError.

    ``no_restart=False``: kill its process as a crash would; with ``max_restarts`` left
    it restarts (calls in flight go again within ``max_task_retries``, later calls wait
    for it), else it is dead for good."""
    if not isinstance(actor, ActorHandle):
        raise TypeError(f"kill() expects an actor handle, got {type(actor).__name__}")
    if not isinstance(no_restart, bool):
        raise TypeError(f"kill(no_restart=) must be a bool, got {no_restart!r}")
    runtime = require_runtime()
    why = ("it was killed by rayipy.kill()" if no_restart else
           "it was killed by rayipy.kill(no_restart=False)")
    runtime.send(Kind.KILL_ACTOR, (actor._actor_id, why, no_restart))
    # Calls made after kill() returns must not reach the old worker, which they would
    # (straight, not through the head) before the head has stopped it: they fail, or
    # wait for the restarted actor.
    runtime.on_actor_gone(actor._actor_id, why, not no_restart)


def get_actor(name: str, namespace: str | None = None) -> ActorHandle:
    """The handle of the live actor created with ``name=`` in ``namespace`` (default: the
    caller's); ValueError naming both if there is none."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"get_actor() expects an actor name (a non-empty str), got {name!r}")
    if namespace is not None and not (isinstance(namespace, str) and namespace):
        raise TypeError(f"get_actor(namespace=) must be a non-empty str or None, got {namespace!r}")
    runtime = require_runtime()
    if namespace is None:
        namespace = _namespace_here(runtime)
    actor_id, class_name, methods, *rest = runtime.request("get_actor", name, namespace)
    return ActorHandle(actor_id, class_name, methods, None, rest[0] if rest else 0)


def exit_actor() -> NoReturn:
    """Inside an actor's method: end this actor for good, as Ray's ``exit_actor``.

    The call that exits returns no value: its caller, and every call still queued or
    made later, get ``ActorDiedError``; ``finally`` blocks and ``atexit`` handlers run.
    The actor is not restarted. TypeError outside an actor's method."""
    spec = current_task()
    where = f" in {spec.name!r}" if spec is not None else ""
    actor_exit.exit_actor(current_runtime(), f"it exited: exit_actor() was called{where}")


def _check_method_groups(methods: dict[str, dict[str, Any]], groups: dict[str, int] | None,
                         class_name: str) -> None:
    """Each ``@rayipy.method(concurrency_group=)`` names one of the class's groups."""
    for name, options in methods.items():
        group = options.get("concurrency_group")
        if group is not None and group not in (groups or ()):
            raise option_table.unknown_group(
                group, groups, f"method {class_name}.{name} (@rayipy.method)")


def _namespace_here(runtime: Any) -> str:
    namespace = runtime.namespace
    if namespace is None:
        raise RuntimeError("no namespace is known here (outside any task or actor call of "
                           "this worker): pass namespace= explicitly")
    return namespace
