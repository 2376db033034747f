"""A short-lived driver connection to the head, for the job client and the job bootstrap.

``Runtime.start`` makes the new runtime the one unpickled refs attach to; a JobClient
made in a process that also called ``rayipy.init()`` must not take that place from the
session, so ``open_runtime`` gives it back at once (or leaves none: a JobClient made
before ``rayipy.init()`` must not make ``init`` think this process is connected). The job's refs (the package) are
made by this runtime's own calls, which name it explicitly.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from rayipy.core.object_ref import current_runtime, set_runtime

START_TIMEOUT = 15.0


def open_runtime(head_address: str, key: bytes, keep_current: bool = True) -> Any:
    """A started driver ``Runtime`` connected to ``tcp://host:port`` with ``key``."""
    from rayipy.node.client import Runtime
    previous = current_runtime()
    runtime = Runtime("driver", head_address, key)
    try:
        runtime.start(timeout=START_TIMEOUT)
    finally:
        if keep_current:   # None too: a later rayipy.init() must not find this one
            set_runtime(previous)
    return runtime


def close_runtime(runtime: Any) -> None:
    """Leave the cluster at once (the head drops us now, not after a silence)."""
    with contextlib.suppress(Exception):
        runtime.request("disconnect", timeout=2.0)
    runtime.close()


@contextlib.contextmanager
def connected(head_address: str, key: bytes) -> Iterator[Any]:
    """``open_runtime`` for the length of a ``with`` block."""
    runtime = open_runtime(head_address, key)
    try:
        yield runtime
    finally:
        close_runtime(runtime)
