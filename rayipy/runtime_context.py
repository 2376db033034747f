"""``rayipy.get_runtime_context()``: where the calling code runs, with Ray's method names."""

from __future__ import annotations

from rayipy.core.task_context import current_task
from rayipy.node import gpus
from rayipy.protocol.messages import TaskSpec


class RuntimeContext:
    """The node, task and actor some code runs in, as they were when it was made."""

    def __init__(self, node_id: bytes, task: TaskSpec | None = None,
                 namespace: str | None = None) -> None:
        self._node_id = node_id
        self._task = task          # the TaskSpec being run, in a worker
        self._namespace = namespace

    @classmethod
    def here(cls, node_id: bytes, namespace: str | None = None) -> "RuntimeContext":
        """The context of the calling code, in a process on node ``node_id`` whose code
        runs in ``namespace``: the task running in this thread (or asyncio task), if any."""
        return cls(node_id, current_task(), namespace)

    def get_namespace(self) -> str | None:
        """The namespace the calling code runs in: its driver's (``init(namespace=)``, or an
        anonymous one of its own), inherited by its tasks and actors, as in Ray."""
        return self._namespace

    @property
    def namespace(self) -> str | None:
        return self.get_namespace()

    def get_node_id(self) -> str:
        """The id of the node this process runs on (hex, as in ``nodes()``)."""
        return self._node_id.hex()

    def get_task_id(self) -> str | None:
        """The running task's id (hex); None in a driver."""
        return self._task.task_id.hex() if self._task is not None else None

    def get_actor_id(self) -> str | None:
        """The actor's id (hex) inside an actor's method; None elsewhere."""
        if self._task is None or not self._task.actor_id:
            return None
        return self._task.actor_id.hex()

    def get_assigned_resources(self) -> dict[str, float]:
        return dict(self._task.resources) if self._task is not None else {}

    def get_accelerator_ids(self) -> dict[str, list]:
        return {"GPU": [str(i) for i in gpus.assigned()]}

    @property
    def node_id(self) -> str:
        return self.get_node_id()

    @property
    def task_id(self) -> str | None:
        return self.get_task_id()

    @property
    def actor_id(self) -> str | None:
        return self.get_actor_id()

    def __repr__(self) -> str:
        return (f"RuntimeContext(node_id={self.get_node_id()!r}, task_id={self.get_task_id()!r}, "
                f"actor_id={self.get_actor_id()!r}, namespace={self._namespace!r})")
