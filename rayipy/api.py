"""The public API, with Ray's names and meanings: init, remote, get, wait, put, cancel...

Every call checks its arguments and says precisely what was wrong; a bad call never
leaves the cluster unusable for the next one.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import numbers
import os
import threading
from typing import Any, Callable, Sequence

from rayipy import exceptions
from rayipy.core.object_ref import ObjectRef, current_runtime
from rayipy.dashboard import DEFAULT_PORT as DEFAULT_DASHBOARD_PORT
from rayipy.node import connection
from rayipy.node.client import Runtime
from rayipy.node.connection import key_from_password as key_from_password  # public before it moved
from rayipy.node.launch import LocalCluster
from rayipy.runtime_context import RuntimeContext
from rayipy.remote_function import RemoteFunction

log = logging.getLogger("rayipy")

_lock = threading.RLock()
_cluster: LocalCluster | None = None   # the local cluster this driver started, if any
_context: "ClusterContext | None" = None

# Called with each new driver Runtime before init() returns: how a front end (the
# Jupyter layer) attaches its hooks (output routing, progress) to every cluster.
runtime_hooks: list[Callable[[Runtime], None]] = []

# Ray's init() keywords that have no meaning here: accepted, so Ray programs run.
_IGNORED_INIT_OPTIONS = {"object_store_memory", "local_mode", "configure_logging", "logging_level",
                         "logging_format", "log_to_driver", "namespace", "runtime_env", "job_config",
                         "_system_config", "_temp_dir", "_plasma_directory", "_node_ip_address",
                         "_metrics_export_port", "storage", "_enable_object_reconstruction",
                         "_memory", "_node_name", "_driver_object_store_memory"}


class ClusterContext:
    """What ``init`` returns (Ray's RayContext): the address, the dashboard's, and a
    context manager. ``dashboard_url`` is "host:port" as in Ray ("" without a dashboard)."""

    def __init__(self, address: str, started_locally: bool, cluster_id: str,
                 dashboard_url: str = "") -> None:
        self.address = address
        self.started_locally = started_locally
        self.cluster_id = cluster_id
        self.dashboard_url = dashboard_url
        self.address_info = {"address": address, "gcs_address": address, "webui_url": dashboard_url}

    def __getitem__(self, key: str) -> Any:
        return self.address_info[key]

    def __enter__(self) -> "ClusterContext":
        return self

    def __exit__(self, *exc: Any) -> None:
        shutdown()

    def __repr__(self) -> str:
        where = "local cluster" if self.started_locally else "cluster"
        dashboard = f", dashboard http://{self.dashboard_url}" if self.dashboard_url else ""
        return f"ClusterContext({where} at {self.address}{dashboard})"


def init(address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None,
         resources: dict[str, float] | None = None, password: str | None = None,
         _redis_password: str | None = None, ignore_reinit_error: bool = False,
         include_dashboard: bool | None = None, dashboard_host: str | None = None,
         dashboard_port: int | None = None, **kwargs: Any) -> ClusterContext:
    """Start a local cluster, or connect to a running one, by Ray's rules.

    ``address``: None connects to ``$RAYIPY_ADDRESS`` or to the cluster ``rayipy start``
    started on this machine, and otherwise starts a local cluster; ``"auto"`` connects to
    that cluster or raises ``ClusterNotFoundError``; ``"local"`` always starts a local
    cluster; ``"host:port"`` connects there, with ``password`` (Ray's ``_redis_password``
    is accepted too; else ``$RAYIPY_PASSWORD``) unless this machine's connection file has
    that address.

    ``num_cpus`` (default: this machine's CPUs), ``num_gpus`` and ``resources`` size a new
    local cluster. It serves a dashboard (``include_dashboard=False``: none) on
    ``dashboard_port`` (default 8265, or the next free port; 0: any free port) of
    ``dashboard_host`` (default loopback); the returned context's ``dashboard_url`` says
    where. When connecting, the dashboard options are ignored: the head was started with
    its own.
    """
    global _cluster, _context
    unknown = set(kwargs) - _IGNORED_INIT_OPTIONS
    if unknown:
        raise TypeError(f"init() got unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    _check_count("num_cpus", num_cpus)
    _check_count("num_gpus", num_gpus)
    _check_dashboard_options(include_dashboard, dashboard_host, dashboard_port)
    if resources is not None and not (isinstance(resources, dict) and all(
            isinstance(k, str) and isinstance(v, numbers.Real) and v >= 0 for k, v in resources.items())):
        raise TypeError(f"resources must be a dict of name -> amount >= 0, got {resources!r}")
    if password is not None and not isinstance(password, str):
        raise TypeError(f"password must be a string, got {type(password).__name__}")
    with _lock:
        if is_initialized():
            if ignore_reinit_error:
                return _context
            raise RuntimeError("rayipy.init() was already called: call rayipy.shutdown() first, "
                               "or pass ignore_reinit_error=True")
        password = password if password is not None else _redis_password
        target = connection.resolve(address, password)
        info: dict = {}
        if target is None:
            cluster = LocalCluster(num_cpus if num_cpus is not None else (os.cpu_count() or 1),
                                   _node_resources(num_gpus, resources),
                                   dashboard_port=(None if include_dashboard is False else
                                                   DEFAULT_DASHBOARD_PORT if dashboard_port is None
                                                   else dashboard_port),
                                   dashboard_host=dashboard_host)
            head_address = cluster.start()
            key = cluster.key
        else:
            if num_cpus is not None or num_gpus is not None or resources is not None:
                raise ValueError(
                    f"init() connects to the running cluster at "
                    f"{target.head_address.removeprefix('tcp://')} (from {target.found_in}), so "
                    f"num_cpus, num_gpus and resources, which size a new local cluster, do not "
                    f"apply: set them on its nodes (rayipy start --num-cpus ...), or pass "
                    f"address='local' for a separate local cluster")
            cluster = None
            head_address, key = target.head_address, target.key
            host, port = connection.parse_address(head_address)
            connection.check_reachable(host, port)
            with contextlib.suppress(OSError):
                info["ip"] = connection.local_ip_toward(host, port)
        runtime = Runtime("driver", head_address, key, info=info,
                          node_id=cluster.node_id if cluster is not None else b"")
        try:
            welcome = runtime.start(timeout=30.0 if cluster else 10.0)
            if cluster is not None:
                _wait_for_nodes(runtime, 1)
        except BaseException:
            if cluster is not None:
                cluster.stop()
            raise
        for hook in list(runtime_hooks):
            try:
                hook(runtime)
            except Exception:
                log.exception("a runtime hook raised")
        _cluster = cluster
        dashboard_url = welcome.info.get("dashboard_url", "")
        _context = ClusterContext(head_address.removeprefix("tcp://"), cluster is not None,
                                  welcome.cluster_id, dashboard_url)
        if dashboard_url:
            # INFO, as Ray logs it: silent by default (notebooks); the context's repr shows it.
            log.info("View the dashboard at http://%s", dashboard_url)
        return _context


def get_dashboard_url() -> str:
    """The dashboard's "host:port", as Ray gives it ("" when the cluster serves none):
    open ``f"http://{rayipy.get_dashboard_url()}"``. Works in tasks too (asks the head)."""
    runtime = _runtime()
    if _context is not None and runtime.role == "driver":
        return _context.dashboard_url
    return runtime.request("dashboard_url")


def _check_dashboard_options(include: Any, host: Any, port: Any) -> None:
    if include is not None and not isinstance(include, bool):
        raise TypeError(f"include_dashboard must be True, False or None, got {include!r}")
    if host is not None and not (isinstance(host, str) and host):
        raise TypeError(f"dashboard_host must be an address string such as '127.0.0.1' "
                        f"(or '0.0.0.0' for every interface), got {host!r}")
    if port is not None and (not isinstance(port, int) or isinstance(port, bool)
                             or not 0 <= port <= 65535):
        raise TypeError(f"dashboard_port must be an int from 0 to 65535 (0: any free port), "
                        f"got {port!r}")


def _node_resources(num_gpus: int | None, resources: dict | None) -> dict:
    out = dict(resources or {})
    if num_gpus:
        out["GPU"] = float(num_gpus)
    return out


def _wait_for_nodes(runtime: Runtime, count: int, timeout: float = 30.0) -> None:
    import time
    deadline = time.monotonic() + timeout
    while runtime.request("wait_nodes") < count:
        if time.monotonic() > deadline:
            raise exceptions.RayipySystemError("the local node agent did not register in time")
        time.sleep(0.005)


def _check_count(name: str, value: Any) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise TypeError(f"{name} must be an int >= 0, got {value!r}")


def is_initialized() -> bool:
    runtime = current_runtime()
    return runtime is not None and runtime.role == "driver" and runtime.lost is None


def shutdown() -> None:
    """Disconnect; stop the local cluster if this driver started it."""
    global _cluster, _context
    with _lock:
        runtime = current_runtime()
        if runtime is not None and runtime.role == "driver":
            if runtime.lost is None:
                try:
                    # Stop the local cluster; leave a shared one (its non-detached actors
                    # of ours stop now rather than when the head notices our silence).
                    runtime.request("shutdown" if _cluster is not None else "disconnect",
                                    timeout=2.0)
                except Exception:
                    pass
            runtime.close()
        if _cluster is not None:
            _cluster.stop()
        _cluster = None
        _context = None


atexit.register(shutdown)


def _runtime() -> Runtime:
    runtime = current_runtime()
    if runtime is None:
        raise exceptions.NotInitializedError(
            "rayipy is not initialized: call rayipy.init() first (or rayipy.init(address=...) "
            "to connect to a running cluster)")
    return runtime


def runtime_for_submit() -> Runtime:
    """The runtime to submit to; like Ray, the first remote call starts a local cluster."""
    runtime = current_runtime()
    if runtime is None:
        log.warning("rayipy.init() was not called: starting a local cluster")
        init()
        runtime = current_runtime()
    return runtime


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
        from rayipy import actor
        return actor.make_actor_class(target, options)
    if not callable(target):
        raise TypeError(f"@rayipy.remote expects a function or a class, got {target!r}")
    return RemoteFunction(target, options)


def method(**options: Any) -> Callable:
    """``@rayipy.method(num_returns=2)`` on an actor method."""
    from rayipy import actor
    return actor.method(**options)


def put(value: Any) -> ObjectRef:
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
    """(ready, not_ready): returns once ``num_returns`` are ready or ``timeout`` passes."""
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
    return _runtime().wait_refs(refs, num_returns, timeout)


def cancel(object_ref: ObjectRef, *, force: bool = False, recursive: bool = True) -> None:
    """Cancel the task that makes ``object_ref``; its ``get`` raises TaskCancelledError."""
    if not isinstance(object_ref, ObjectRef):
        raise TypeError(f"cancel() expects an ObjectRef, got {type(object_ref).__name__}")
    _runtime().cancel(object_ref, bool(force))


def get_runtime_context() -> RuntimeContext:
    """Where the calling code runs: ``.get_node_id()``, ``.get_task_id()``, ``.get_actor_id()``."""
    return RuntimeContext.here(_runtime().node_id)


def get_gpu_ids() -> list:
    """The GPU devices the calling task or actor may use (also in CUDA_VISIBLE_DEVICES);
    empty outside a task that asked for ``num_gpus``."""
    from rayipy.node import gpus
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


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        return ""
    return text if len(text) <= 60 else text[:57] + "..."

