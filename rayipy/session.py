"""This process's session with a cluster: ``init``, ``shutdown``, and the current runtime.

``init`` starts a local cluster or connects to a running one, by Ray's rules, and makes
the driver ``Runtime`` that every call of this process goes through; ``shutdown`` ends it.
``runtime_for_submit`` is what ``f.remote()``, ``Cls.remote()`` and ``put`` use: like
Ray, the first of them starts a local cluster when ``init`` was not called.

It sits below everything that submits work (``remote_function``, ``actor``, ``api``,
the Jupyter layer), so they all import it and it imports none of them. Front ends attach
to every new driver runtime through ``runtime_hooks``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import numbers
import os
import threading
import time
import uuid
from typing import Any, Callable

from rayipy import exceptions
from rayipy.core import liveness
from rayipy.core import runtime_env as runtime_env_rules
from rayipy.core.object_ref import current_runtime
from rayipy.core.unschedulable import TIMEOUT_ENVIRONMENT, TIMEOUT_SETTING, parse_timeout
from rayipy.dashboard import DEFAULT_PORT as DEFAULT_DASHBOARD_PORT
from rayipy.node import connection
from rayipy.node.client import Runtime
from rayipy.node import runtime_env_pack
from rayipy.node.launch import LocalCluster

log = logging.getLogger("rayipy")

_lock = threading.RLock()
_cluster: LocalCluster | None = None   # the local cluster this driver started, if any
_context: "ClusterContext | None" = None

# Called with each new driver Runtime before init() returns: how a front end (the
# Jupyter layer) attaches its hooks (output routing, progress) to every cluster.
runtime_hooks: list[Callable[[Runtime], None]] = []

# Ray's other init() keywords: None means "as Ray's default", which is what rayipy does;
# another value is refused, saying what to do instead (never accepted and ignored).
# ``accepted`` holds values that match what rayipy does anyway.
_RAY_INIT_OPTIONS: dict[str, tuple[tuple[Any, ...], str]] = {
    "configure_logging": ((True,), "rayipy leaves Python's logging to you: configure it "
                          "with logging.basicConfig() or logging.getLogger('rayipy')"),
    "logging_format": ((), "set a format on your own handler of logging.getLogger('rayipy')"),
    "log_to_driver": ((True,), "task output is always shown on the driver; to silence a "
                      "task, redirect its output inside it (contextlib.redirect_stdout)"),
    "job_config": ((), "rayipy has no jobs: pass code and settings to tasks as arguments"),
    "_temp_dir": ((), "set RAYIPY_HOME for the connection file and logs, and the spilling "
                  "directory with _system_config={'object_spilling_config': ...}"),
    "_plasma_directory": ((), "the object store lives in /dev/shm; size it with "
                          "object_store_memory"),
    "_node_ip_address": ((), "start the node with rayipy start --node-ip-address"),
    "_metrics_export_port": ((), "rayipy exports no metrics; the dashboard's /api/status "
                             "serves the cluster's figures as JSON"),
    "storage": ((), "rayipy has no cluster storage: write to a shared file system yourself"),
    "_enable_object_reconstruction": ((True,), "lost objects are always remade from their "
                                      "task when it can be retried"),
    "_memory": ((), "give tasks a memory request with .options(memory=...)"),
    "_node_name": ((), "nodes are named by their id and IP address"),
    "_driver_object_store_memory": ((), "the driver uses its node's object store: size it "
                                    "with object_store_memory"),
}
_IGNORED_INIT_OPTIONS = set(_RAY_INIT_OPTIONS)


def _check_ray_init_options(kwargs: dict[str, Any]) -> None:
    """Ray's init() keywords rayipy does not act on: refused unless their value is
    Ray's default or what rayipy does anyway; ``logging_level`` sets rayipy's logger."""
    unknown = set(kwargs) - _IGNORED_INIT_OPTIONS - {"logging_level"}
    if unknown:
        raise TypeError(f"init() got unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    for name, value in kwargs.items():
        if name in _RAY_INIT_OPTIONS and value is not None:
            accepted, instead = _RAY_INIT_OPTIONS[name]
            if value not in accepted:
                raise ValueError(f"init({name}={value!r}) is not supported by rayipy: {instead}")
    level = kwargs.get("logging_level")
    if level is not None:
        if not isinstance(level, (int, str)) or isinstance(level, bool):
            raise TypeError(f"logging_level must be a logging level (logging.INFO or 'INFO'), "
                            f"got {level!r}")
        logging.getLogger("rayipy").setLevel(level)   # ValueError names a bad level name


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
         dashboard_port: int | None = None, object_store_memory: int | None = None,
         _system_config: dict[str, Any] | None = None, local_mode: bool = False,
         runtime_env: dict[str, Any] | None = None, namespace: str | None = None,
         **kwargs: Any) -> ClusterContext:
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
    where. When connecting, the dashboard options raise: the head was started with its
    own.

    ``object_store_memory``: bytes of the new local node's object store (default: 30% of
    the machine's memory). Objects that do not fit spill to disk, under the temporary
    directory, or where Ray's ``_system_config={"object_spilling_config": json.dumps(
    {"type": "filesystem", "params": {"directory_path": "/some/dir"}})}`` says.

    ``_system_config={"unschedulable_task_timeout_s": S}``: queued work that no live node
    of the new local cluster could ever run (its only capable node left) fails after S
    seconds (default 60; ``float("inf")``: wait for ever), with a warning printed first.
    The local cluster's node agent is restarted if it dies (at most 3 times a minute).
    ``_system_config={"driver_grace_period_s": S}`` (for a new local cluster; default 300):
    a driver that stops answering (a stopped or sleeping process; a busy one still
    answers) keeps its actors, tasks and objects for S seconds, then its next call raises
    ``SessionLostError`` saying what was lost (docs/cluster.md, "A busy or sleeping driver").

    ``runtime_env``: the environment every task and actor of this driver runs in
    (merged with their own ``.options(runtime_env=)``): ``env_vars``, ``working_dir``,
    ``py_modules``, ``pip``, ``excludes``; see docs/environments.md.

    ``namespace``: where this driver's named actors live and are looked up (its tasks and
    actors inherit it); default: an anonymous namespace of this driver's own, as in Ray.
    """
    global _cluster, _context
    _check_ray_init_options(kwargs)
    if namespace is not None and not (isinstance(namespace, str) and namespace):
        raise TypeError(f"namespace must be a non-empty string, got {namespace!r}")
    _check_count("num_cpus", num_cpus)
    _check_count("num_gpus", num_gpus)
    _check_dashboard_options(include_dashboard, dashboard_host, dashboard_port)
    if object_store_memory is not None and (not isinstance(object_store_memory, int)
                                            or isinstance(object_store_memory, bool)
                                            or object_store_memory < 2**20):
        raise ValueError(f"object_store_memory must be a number of bytes, at least 1 MiB "
                         f"(e.g. 2 * 1024**3 for 2 GiB), got {object_store_memory!r}")
    spill_directory = _spill_directory(_system_config)
    unschedulable_timeout = _unschedulable_timeout(_system_config)
    grace = _driver_grace_period(_system_config)
    if local_mode:
        raise ValueError("local_mode=True is not supported: Ray deprecated it, and rayipy runs "
                         "tasks in worker processes only. To debug a task, call its function "
                         "directly, or use rayipy.init(num_cpus=1) to run one task at a time")
    job_env = runtime_env_rules.check(runtime_env)   # conda, container...: refused at once
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
                                   object_store_memory=object_store_memory,
                                   spill_directory=spill_directory,
                                   dashboard_port=(None if include_dashboard is False else
                                                   DEFAULT_DASHBOARD_PORT if dashboard_port is None
                                                   else dashboard_port),
                                   dashboard_host=dashboard_host,
                                   unschedulable_timeout=unschedulable_timeout,
                                   driver_grace=grace)
            head_address = cluster.start()
            key = cluster.key
        else:
            if num_cpus is not None or num_gpus is not None or resources is not None or \
                    object_store_memory is not None or spill_directory or \
                    unschedulable_timeout is not None:
                raise ValueError(
                    f"init() connects to the running cluster at "
                    f"{target.head_address.removeprefix('tcp://')} (from {target.found_in}), so "
                    f"num_cpus, num_gpus, resources, object_store_memory, the spilling "
                    f"directory and unschedulable_task_timeout_s, which set up a new local "
                    f"cluster, do not apply: set them on its nodes (rayipy start --num-cpus ... "
                    f"--object-store-memory ...; ${TIMEOUT_ENVIRONMENT} for its head), or pass "
                    f"address='local' for a separate local cluster")
            if include_dashboard is not None or dashboard_host is not None or \
                    dashboard_port is not None:
                raise ValueError(
                    f"init() connects to the running cluster at "
                    f"{target.head_address.removeprefix('tcp://')}, whose dashboard was set up "
                    f"when its head started: include_dashboard, dashboard_host and "
                    f"dashboard_port apply to a new local cluster only. Give them to its "
                    f"head (rayipy start --head --dashboard-port N --dashboard-host H, or "
                    f"--no-dashboard), or pass address='local' for a separate local cluster")
            if grace is not None:
                raise ValueError(
                    f"init() connects to the running cluster at "
                    f"{target.head_address.removeprefix('tcp://')}, whose head keeps silent "
                    f"drivers for the grace period it was started with: set "
                    f"{liveness.GRACE_SETTING} there (rayipy start --head "
                    f"--driver-grace-period SECONDS, or $RAYIPY_DRIVER_GRACE_PERIOD_S)")
            cluster = None
            head_address = target.head_address
            host, port = connection.parse_address(head_address)
            connection.check_reachable(host, port)
            key = target.cluster_key()
            with contextlib.suppress(OSError):
                info["ip"] = connection.local_ip_toward(host, port)
        runtime = Runtime("driver", head_address, key, info=info,
                          node_id=cluster.node_id if cluster is not None else target.node_id)
        runtime.driver_namespace = namespace or anonymous_namespace()
        try:
            welcome = runtime.start(timeout=30.0 if cluster else 10.0)
            if cluster is not None:
                _wait_for_nodes(runtime, 1)
            # Packs and uploads its directories now: a missing one fails init, not a task.
            runtime_env_pack.set_job_env(runtime, job_env)
        except BaseException:
            if cluster is not None:
                cluster.stop()
            runtime.close()
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


def anonymous_namespace() -> str:
    """A namespace of one driver's own (Ray gives each job one): its named actors are
    found by its tasks and actors, not by other drivers."""
    return f"anonymous-{uuid.uuid4()}"


def _spill_directory(system_config: Any) -> str:
    """The spilling directory from Ray's ``_system_config`` (its only key rayipy knows)."""
    if system_config is None:
        return ""
    if not isinstance(system_config, dict):
        raise TypeError(f"_system_config must be a dict, got {type(system_config).__name__}")
    known = {"object_spilling_config", TIMEOUT_SETTING, liveness.GRACE_SETTING}
    unknown = set(system_config) - known
    if unknown:
        raise ValueError(f"_system_config key(s) {', '.join(sorted(unknown))} are not supported "
                         f"by rayipy; it knows {', '.join(repr(k) for k in sorted(known))}")
    raw = system_config.get("object_spilling_config")
    if raw is None:
        return ""
    try:
        spec = json.loads(raw) if isinstance(raw, str) else raw
        directory = spec["params"]["directory_path"]
        kind = spec.get("type", "filesystem")
    except (ValueError, KeyError, TypeError):
        raise ValueError(
            'object_spilling_config must be JSON like {"type": "filesystem", "params": '
            f'{{"directory_path": "/tmp/spill"}}}}, got {raw!r}') from None
    if kind != "filesystem":
        raise ValueError(f"rayipy spills to a local directory only (type 'filesystem'), "
                         f"not {kind!r}")
    if isinstance(directory, list):   # Ray takes several: spilling over them is not built
        if len(directory) > 1:
            raise ValueError(f"rayipy spills to one directory, got {len(directory)}: "
                             f"{directory!r}; give one directory_path")
        directory = directory[0] if directory else ""
    if not isinstance(directory, str) or not directory:
        raise ValueError(f"object_spilling_config needs a directory_path, got {directory!r}")
    return directory


def _unschedulable_timeout(system_config: Any) -> float | None:
    """``unschedulable_task_timeout_s`` from ``_system_config``: how long queued work that
    no live node could ever run waits before it fails (None: the head's default)."""
    if not isinstance(system_config, dict) or TIMEOUT_SETTING not in system_config:
        return None
    return parse_timeout(system_config[TIMEOUT_SETTING])


def _driver_grace_period(system_config: Any) -> float | None:
    """``_system_config["driver_grace_period_s"]``: how long the head keeps the actors,
    tasks and objects of a driver that stopped answering (None: the default, 5 minutes)."""
    if not isinstance(system_config, dict) or liveness.GRACE_SETTING not in system_config:
        return None
    return liveness.check_grace_period(system_config[liveness.GRACE_SETTING])


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
    deadline = time.monotonic() + timeout
    while runtime.request("wait_nodes") < count:
        if time.monotonic() > deadline:
            raise exceptions.RayipySystemError("the local node agent did not register in time")
        time.sleep(0.005)


def _check_count(name: str, value: Any) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise TypeError(f"{name} must be an int >= 0, got {value!r}")


def is_initialized() -> bool:
    """True while this process is a driver connected to a cluster (``init`` ran, and
    neither ``shutdown`` nor the loss of the cluster ended it)."""
    runtime = current_runtime()
    return runtime is not None and runtime.role == "driver" and runtime.lost is None


def shutdown() -> None:
    """Disconnect; stop the local cluster if this driver started it."""
    global _cluster, _context
    with _lock:
        runtime = current_runtime()
        if runtime is not None and runtime.role == "driver":
            if _cluster is not None:
                _cluster.expect_stop()   # its agent now exits on purpose: no restart
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


def require_runtime() -> Runtime:
    """This process's runtime (a driver's, or the worker's inside a task); raises
    NotInitializedError before ``init``."""
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


def context() -> ClusterContext | None:
    """What the last ``init`` returned, until ``shutdown``; None before."""
    return _context
