"""What every launcher is: an address to connect to, a password, and a ``close()`` that
stops everything the launcher started.

A launcher left open when the Python process ends is closed then (``atexit``), as
Dask's clusters are, so a notebook that forgets ``close()`` leaves no machines busy;
``detach()`` hands the cluster over to ``rayipy down`` instead (``record()`` says how to
find it again, and ``from_record`` rebuilds the launcher from that).
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from typing import Any, Callable

from rayipy import exceptions

_open: "weakref.WeakSet[Launcher]" = weakref.WeakSet()
_open_lock = threading.Lock()


class Launcher:
    """A cluster started where the machines are. Subclasses set ``provider`` and
    implement ``_stop`` and ``record``."""

    provider = ""

    def __init__(self, password: str) -> None:
        self.password = password
        self._address: str | None = None
        self._closed = False
        with _open_lock:
            _open.add(self)

    @property
    def address(self) -> str:
        """``host:port`` of the cluster's head, for ``rayipy.init(address=...)``."""
        if self._address is None:
            raise exceptions.ClusterLaunchError(f"the {self.provider} cluster has no head "
                                                f"address (it did not start, or was closed)")
        return self._address

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop every process this launcher started; again is a no-op."""
        if self._closed:
            return
        self._closed = True
        with _open_lock:
            _open.discard(self)
        self._stop()

    def detach(self) -> dict[str, Any]:
        """Leave the cluster running after this process ends: what ``record()`` returns,
        from which ``from_record`` (as ``rayipy down`` does) can stop it later."""
        with _open_lock:
            _open.discard(self)
        return self.record()

    def record(self) -> dict[str, Any]:
        """What another process needs to find and stop this cluster (JSON-able)."""
        raise NotImplementedError

    def _stop(self) -> None:
        raise NotImplementedError

    def wait_for_nodes(self, count: int, timeout: float = 60.0) -> int:
        """Wait until the head lists ``count`` live nodes; how many it lists then."""
        from rayipy.node import connection
        from rayipy.node.client import Runtime
        key = connection.key_for(f"tcp://{self.address}", self.password)
        runtime = Runtime("driver", f"tcp://{self.address}", key)
        runtime.start(timeout=10.0)
        try:
            def alive() -> int:
                nodes = runtime.request("nodes", timeout=10.0)
                return sum(1 for node in nodes if node.get("Alive", True))
            return wait_for(lambda: alive() >= count, timeout,
                            f"{count} node(s) in the {self.provider} cluster at "
                            f"{self.address}", then=alive)
        finally:
            try:
                runtime.request("disconnect", timeout=2.0)
            except Exception:
                pass
            runtime.close()

    def __enter__(self) -> "Launcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else (self._address or "starting")
        return f"{type(self).__name__}({state})"


def wait_for(condition: Callable[[], bool], timeout: float, what: str,
             then: Callable[[], Any] | None = None, interval: float = 0.1) -> Any:
    """Poll ``condition`` until true (then ``then()``'s value), or raise ClusterLaunchError
    naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise exceptions.ClusterLaunchError(f"gave up after {timeout:g} s waiting for {what}")
        time.sleep(interval)
    return then() if then is not None else True


@atexit.register
def _close_open_launchers() -> None:
    with _open_lock:
        left = list(_open)
    for launcher in left:
        try:
            launcher.close()
        except Exception:   # at exit, one failure must not keep the others running
            pass
