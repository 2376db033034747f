"""The public API, with Ray's names and meanings: init, remote, get, wait, put, cancel...

Every call checks its arguments and says precisely what was wrong; a bad call never
leaves the cluster unusable for the next one.

``init``, ``shutdown`` and the current runtime belong to ``rayipy.session``, below this
module and below ``remote_function`` and ``actor``, which submit through it too; they are
re-exported here.
"""

from __future__ import annotations

import numbers
from typing import Any, Sequence

from rayipy import session
from rayipy.actor import ActorClass
from rayipy.actor import method as method
from rayipy.core.memory_report import format_memory
from rayipy.core.object_ref import ObjectRef
from rayipy.node import gpus, memory_listing
from rayipy.node.connection import key_from_password as key_from_password  # public before it moved
from rayipy.runtime_context import RuntimeContext
from rayipy.remote_function import RemoteFunction
from rayipy.session import ClusterContext as ClusterContext
from rayipy.session import init as init
from rayipy.session import is_initialized as is_initialized
from rayipy.session import require_runtime as _runtime
from rayipy.session import runtime_for_submit
from rayipy.session import shutdown as shutdown


def get_dashboard_url() -> str:
    """The dashboard's "host:port", as Ray gives it ("" when the cluster serves none):
    open ``f"http://{rayipy.get_dashboard_url()}"``. Works in tasks too (asks the head)."""
    runtime = _runtime()
    context = session.context()
    if context is not None and runtime.role == "driver":
        return context.dashboard_url
    return runtime.request("dashboard_url")


def remote(*args: Any, **options: Any) -> Any:
    """``@remote`` or ``@remote(num_cpus=..., num_returns=..., max_retries=...)``."""
    if len(args) == 1 and not options and callable(args[0]):
        return _make_remote(args[0], {})
    if args:
        raise TypeError("@rayipy.remote takes a function or class, or only keyword options: "
                        "@rayipy.remote(num_cpus=2)")
    return lambda target: _make_remote(target, options)


def _make_remote(target: Any, options: dict) -> Any:
    if isinstance(target, type):
        return ActorClass(target, options)
    if not callable(target):
        raise TypeError(f"@rayipy.remote expects a function or a class, got {target!r}")
    return RemoteFunction(target, options)


def put(value: Any) -> ObjectRef:
    """Store ``value`` in the cluster once; pass the ref to many tasks instead of the value."""
    return runtime_for_submit().put(value)


def _as_ref_list(object_refs: Any, what: str) -> tuple[list[ObjectRef], bool]:
    if isinstance(object_refs, ObjectRef):
        return [object_refs], True
    if isinstance(object_refs, (list, tuple)):
        for i, ref in enumerate(object_refs):
            if not isinstance(ref, ObjectRef):
                raise TypeError(f"{what}() expects ObjectRefs, but item {i} of the list is "
                                f"{type(ref).__name__} {_short(ref)}")
        return list(object_refs), False
    raise TypeError(f"{what}() expects an ObjectRef or a list of ObjectRefs, got "
                    f"{type(object_refs).__name__} {_short(object_refs)}")


def _check_timeout(timeout: Any) -> None:
    if timeout is not None and (not isinstance(timeout, numbers.Real) or isinstance(timeout, bool)
                                or timeout < 0):
        raise TypeError(f"timeout must be None or a number of seconds >= 0, got {timeout!r}")


def get(object_refs: Any, *, timeout: float | None = None) -> Any:
    """The value(s): one ref gives one value, a list gives a list, in order."""
    refs, single = _as_ref_list(object_refs, "get")
    _check_timeout(timeout)
    if not refs:
        return []
    values = _runtime().get_values(refs, timeout)
    return values[0] if single else values


def wait(object_refs: Sequence[ObjectRef], *, num_returns: int = 1, timeout: float | None = None,
         fetch_local: bool = True) -> tuple[list[ObjectRef], list[ObjectRef]]:
    """(ready, not_ready): returns once ``num_returns`` are ready or ``timeout`` passes.
    ``fetch_local`` (as in Ray): a ready value stored on another node is pulled into this
    node's object store before ``wait`` returns, so a ``get`` after it copies nothing over
    the network; False returns as soon as values exist anywhere."""
    if isinstance(object_refs, ObjectRef):
        raise TypeError("wait() expects a list of ObjectRefs; wrap a single ref: wait([ref])")
    refs, _ = _as_ref_list(object_refs, "wait")
    _check_timeout(timeout)
    if not isinstance(num_returns, int) or isinstance(num_returns, bool) or num_returns < 1:
        raise TypeError(f"num_returns must be an int >= 1, got {num_returns!r}")
    if num_returns > len(refs):
        raise ValueError(f"num_returns ({num_returns}) is larger than the number of refs ({len(refs)})")
    if len(set(refs)) != len(refs):
        raise ValueError("wait() got the same ObjectRef more than once")
    if not isinstance(fetch_local, bool):
        raise TypeError(f"fetch_local must be True or False, got {fetch_local!r}")
    return _runtime().wait_refs(refs, num_returns, timeout, fetch_local=fetch_local)


def cancel(object_ref: ObjectRef, *, force: bool = False, recursive: bool = True) -> None:
    """Cancel the task that makes ``object_ref``; its ``get`` raises TaskCancelledError.

    ``force``: kill its worker process instead of interrupting it. ``recursive`` (as in
    Ray, the default): cancel the tasks it submitted too, and theirs; False leaves them
    running. An ``ObjectRefGenerator`` cancels its generator task."""
    from rayipy.generator import ObjectRefGenerator
    for name, value in (("force", force), ("recursive", recursive)):
        if not isinstance(value, bool):
            raise TypeError(f"cancel(): {name} must be True or False, got {value!r}")
    if isinstance(object_ref, ObjectRefGenerator):
        _runtime().cancel_task(object_ref.task_id(), force, recursive)
        return
    if not isinstance(object_ref, ObjectRef):
        raise TypeError(f"cancel() expects an ObjectRef, got {type(object_ref).__name__}")
    _runtime().cancel(object_ref, force, recursive)


def get_runtime_context() -> RuntimeContext:
    """Where the calling code runs: ``.get_node_id()``, ``.get_task_id()``, ``.get_actor_id()``."""
    return RuntimeContext.here(_runtime())


def get_gpu_ids() -> list:
    """The GPU devices the calling task or actor may use (also in CUDA_VISIBLE_DEVICES);
    empty outside a task that asked for ``num_gpus``."""
    return gpus.assigned()


def nodes() -> list[dict]:
    return _runtime().request("nodes")


def cluster_resources() -> dict[str, float]:
    return _runtime().request("cluster_resources")


def available_resources() -> dict[str, float]:
    return _runtime().request("available_resources")


def cluster_status() -> dict:
    """The head's view: nodes, task counts, dropped messages (what `rayipy status` prints)."""
    return _runtime().request("status")


def memory_summary(stats_only: bool = False) -> str:
    """What holds memory in the nodes' object stores (Ray's name), as text to print.

    Per node: the store's use (used / capacity, primary and secondary copies, what is
    spilled to disk, and how many objects were evicted, spilled, restored and pulled so
    far); then, unless ``stats_only``, each object, largest first: its size, whether it is
    in memory or spilled (and where), primary or secondary copy, how many processes read
    it now, its owner, where it was made (the file and line of the ``put``, or the task's
    name), and for objects this process owns how many refs to it are alive here, so that
    you know what to ``del``.
    """
    if not isinstance(stats_only, bool):
        raise TypeError(f"stats_only must be True or False, got {stats_only!r}")
    return format_memory(memory_listing.collect(_runtime()), stats_only)


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        return ""
    return text if len(text) <= 60 else text[:57] + "..."

