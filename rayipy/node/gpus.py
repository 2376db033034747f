"""The GPU devices the running task or actor may use, as Ray does it.

The head assigns device ids with each lease; the worker shows a task only its own
devices through ``CUDA_VISIBLE_DEVICES`` while it runs (an actor keeps its devices for
its whole life), and ``rayipy.get_gpu_ids()`` returns them.
"""

from __future__ import annotations

import os

_UNSET = object()
_assigned: tuple[str, ...] = ()


def use(ids: tuple[str, ...]) -> object:
    """Show the process only ``ids``; returns what to pass to ``restore``."""
    global _assigned
    previous = (_assigned, os.environ.get("CUDA_VISIBLE_DEVICES", _UNSET))
    _assigned = tuple(ids)
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(ids)
    return previous


def restore(previous: object) -> None:
    global _assigned
    _assigned, env = previous
    if env is _UNSET:
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = env


def assigned() -> list:
    """The ids as Ray gives them: ints for numbered devices, strings otherwise (UUIDs)."""
    return [int(i) if i.isdigit() else i for i in _assigned]
