"""``rayipy.get_runtime_context()``: where the calling code runs, with Ray's method names."""

from __future__ import annotations

import json
from typing import Any

from rayipy.core.placement import group_of, is_group_resource
from rayipy.core.task_context import actor_creation, current_task, function_names, placed_spec
from rayipy.node import gpus
from rayipy.protocol.messages import TaskSpec


class RuntimeContext:
    """The node, job, task and actor some code runs in, as they were when it was made.

    ``runtime`` is the process's connection to the cluster (``node/client.py``), asked
    only by the methods that need the head (``current_actor``,
    ``was_current_actor_reconstructed``) or the driver's own settings."""

    def __init__(self, node_id: bytes, task: TaskSpec | None = None,
                 namespace: str | None = None, *, job_id: str | None = None,
                 worker_id: bytes = b"", role: str = "driver", runtime: Any = None) -> None:
        self._node_id = node_id
        self._task = task          # the TaskSpec being run, in a worker
        self._namespace = namespace
        self._job_id = job_id
        self._worker_id = worker_id
        self._role = role
        self._runtime = runtime

    @classmethod
    def here(cls, runtime: Any) -> "RuntimeContext":
        """The context of the calling code in this process: the task running in this
        thread (or asyncio task), if any, and its job."""
        job = runtime.job
        return cls(runtime.node_id, current_task(), job[0] if job else None,
                   job_id=job[1] if job else None, worker_id=runtime.process_id,
                   role=runtime.role, runtime=runtime)

    # -- where -------------------------------------------------------------------------------
    def get_namespace(self) -> str | None:
        """The namespace the calling code runs in: its driver's (``init(namespace=)``, or an
        anonymous one of its own), inherited by its tasks and actors, as in Ray."""
        return self._namespace

    @property
    def namespace(self) -> str | None:
        return self.get_namespace()

    def get_job_id(self) -> str | None:
        """The id (hex) of the job the calling code belongs to: its driver's, inherited by
        every task and actor that driver's work submits, as in Ray."""
        return self._job_id

    def get_node_id(self) -> str:
        """The id of the node this process runs on (hex, as in ``nodes()``)."""
        return self._node_id.hex()

    def get_worker_id(self) -> str:
        """The id (hex) of this process, driver or worker, as the state API lists it."""
        return self._worker_id.hex()

    @property
    def gcs_address(self) -> str:
        """The head's address, ``host:port`` (Ray's GCS address)."""
        return str(self._runtime.head_address).removeprefix("tcp://") if self._runtime else ""

    # -- the task ----------------------------------------------------------------------------
    def get_task_id(self) -> str | None:
        """The running task's id (hex); None in a driver."""
        return self._task.task_id.hex() if self._task is not None else None

    def get_task_name(self) -> str | None:
        """The running task's name: ``.options(name=)``, else its function's (or
        ``Class.method``); None in a driver."""
        return self._task.name if self._task is not None else None

    def get_task_function_name(self) -> str | None:
        """The running task's function, ``module.qualified_name`` as Ray gives it (its
        name option aside); None in a driver."""
        task = self._task
        if task is None:
            return None
        if task.actor_id and task.method != "__init__":
            creation = actor_creation()
            cls = function_names.get(creation.function_id) if creation is not None else None
            return f"{cls}.{task.method}" if cls else task.name
        name = function_names.get(task.function_id)
        if name and task.method == "__init__":
            return f"{name}.__init__"
        return name or task.name

    def get_assigned_resources(self) -> dict[str, float]:
        return dict(self._task.resources) if self._task is not None else {}

    def get_accelerator_ids(self) -> dict[str, list]:
        return {"GPU": [str(i) for i in gpus.assigned()]}

    def get_placement_group_id(self) -> str | None:
        """The id (hex) of the placement group the calling task or actor runs in; None
        when it runs in none."""
        spec = placed_spec() if self._task is not None else None
        for name, _ in (spec.resources if spec is not None else ()):
            if is_group_resource(name):
                return group_of(name)
        return None

    def get_runtime_env_string(self) -> str:
        """The runtime environment of the calling code, as JSON: its task's (resolved:
        directories named by their content's id), or the driver's ``init(runtime_env=)``."""
        return json.dumps(self.runtime_env)

    @property
    def runtime_env(self) -> dict[str, Any]:
        """The runtime environment of the calling code, as a dict (see
        ``get_runtime_env_string``); {} when there is none."""
        if self._task is not None:
            spec = placed_spec() or self._task
            for key, value in spec.options:
                if key == "runtime_env":
                    return dict(value or {})
            return {}
        if self._runtime is None:
            return {}
        from rayipy.node import runtime_env_pack
        return dict(runtime_env_pack.job_env(self._runtime) or {})

    # -- the actor ---------------------------------------------------------------------------
    def _actor_creation(self) -> TaskSpec | None:
        if self._task is None or not self._task.actor_id:
            return None
        return self._task if self._task.method == "__init__" else actor_creation()

    def get_actor_id(self) -> str | None:
        """The actor's id (hex) inside an actor's method; None elsewhere."""
        if self._task is None or not self._task.actor_id:
            return None
        return self._task.actor_id.hex()

    def get_actor_name(self) -> str | None:
        """Inside an actor: its name, "" when it has none; None elsewhere (Ray's answers)."""
        creation = self._actor_creation()
        if creation is None:
            return None
        return str(dict(creation.options).get("name") or "")

    @property
    def current_actor(self) -> Any:
        """A handle to the actor the calling method runs in (RuntimeError elsewhere)."""
        creation = self._actor_creation()
        if creation is None:
            raise RuntimeError("current_actor is only available in an actor's method")
        from rayipy.actor import ActorHandle
        options = dict(creation.options)
        return ActorHandle(creation.actor_id, options["class_name"], options["methods"], None,
                           options.get("max_task_retries", 0))

    @property
    def was_current_actor_reconstructed(self) -> bool:
        """Whether the actor the calling method runs in was ever restarted (asked of the
        head's state API, as Ray asks its own). AssertionError outside an actor, as in Ray."""
        actor_id = self.get_actor_id()
        assert actor_id is not None, "was_current_actor_reconstructed is only for actors"
        answer = self._runtime.request("state_list", "actors", [("actor_id", "=", actor_id)],
                                       1, True)
        rows = answer["rows"]
        return bool(rows and rows[0]["num_restarts"] > 0)

    # -- Ray's old names -----------------------------------------------------------------------
    @property
    def node_id(self) -> str:
        return self.get_node_id()

    @property
    def job_id(self) -> str | None:
        return self.get_job_id()

    @property
    def task_id(self) -> str | None:
        return self.get_task_id()

    @property
    def actor_id(self) -> str | None:
        return self.get_actor_id()

    @property
    def current_placement_group_id(self) -> str | None:
        return self.get_placement_group_id()

    def get(self) -> dict[str, Any]:
        """Ray's old dict form: job_id, node_id, namespace, and task_id / actor_id when
        there are."""
        out: dict[str, Any] = {"job_id": self.get_job_id(), "node_id": self.get_node_id(),
                               "namespace": self.get_namespace()}
        if self._task is not None:
            out["task_id"] = self.get_task_id()
            if self._task.actor_id:
                out["actor_id"] = self.get_actor_id()
        return out

    def __repr__(self) -> str:
        return (f"RuntimeContext(node_id={self.get_node_id()!r}, job_id={self._job_id!r}, "
                f"task_id={self.get_task_id()!r}, actor_id={self.get_actor_id()!r}, "
                f"namespace={self._namespace!r})")
