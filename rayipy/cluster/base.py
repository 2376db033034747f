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
        self._adapting: Any = None     # an AdaptLoop while adapt() runs
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
        self.stop_adapting()
        self._stop()

    def detach(self) -> dict[str, Any]:
        """Leave the cluster running after this process ends: what ``record()`` returns,
        from which ``from_record`` (as ``rayipy down`` does) can stop it later."""
        with _open_lock:
            _open.discard(self)
        self.stop_adapting()   # this process's thread would end with it anyway
        return self.record()

    def record(self) -> dict[str, Any]:
        """What another process needs to find and stop this cluster (JSON-able)."""
        raise NotImplementedError

    def _stop(self) -> None:
        raise NotImplementedError

    def wait_for_nodes(self, count: int, timeout: float = 60.0) -> int:
        """Wait until the head lists ``count`` live nodes; how many it lists then."""
        runtime = self._head_runtime()
        try:
            def alive() -> int:
                nodes = runtime.request("nodes", timeout=10.0)
                return sum(1 for node in nodes if node.get("Alive", True))
            return int(wait_for(lambda: alive() >= count, timeout,
                                f"{count} node(s) in the {self.provider} cluster at "
                                f"{self.address}", then=alive))
        finally:
            self._close_head_runtime(runtime)

    def _head_runtime(self) -> Any:
        """A driver connection of the launcher's own to the head (not the user's session)."""
        from rayipy.node import connection
        from rayipy.node.client import Runtime
        key = connection.key_for(f"tcp://{self.address}", self.password)
        runtime = Runtime("driver", f"tcp://{self.address}", key)
        runtime.start(timeout=10.0)
        return runtime

    @staticmethod
    def _close_head_runtime(runtime: Any) -> None:
        try:
            runtime.request("disconnect", timeout=2.0)
        except Exception:   # the head may be gone already
            pass
        runtime.close()

    # -- autoscaling (adaptive.py decides, adapt_loop.py carries it out) ---------------------
    def adapt(self, minimum: int | bool = 1, maximum: int | None = None, *,
              wait_s: float = 5.0, idle_s: float = 60.0, interval: float = 1.0) -> None:
        """Keep between ``minimum`` and ``maximum`` nodes, following the demand: add nodes
        when tasks have waited ``wait_s`` seconds for resources no live node has free,
        retire nodes idle for ``idle_s`` seconds (never one whose object store holds
        objects someone may still read; never the head's). ``maximum`` defaults to every
        machine the launcher has (a launcher without a fixed list, as Slurm's, needs
        it). ``adapt(False)`` stops adapting, as ``stop_adapting()`` does; calling
        ``adapt`` again replaces the bounds. A thread of this process looks at the head
        every ``interval`` seconds."""
        from rayipy.cluster.adapt_loop import AdaptLoop
        from rayipy.cluster.adaptive import AdaptivePolicy
        if minimum is False:
            if maximum is not None:
                raise ValueError("adapt(False) stops adapting; it takes no maximum")
            self.stop_adapting()
            return
        if minimum is True:
            raise ValueError("adapt(True) says nothing: give adapt(minimum=, maximum=)")
        if self._closed:
            raise exceptions.ClusterLaunchError(f"the {self.provider} cluster is closed")
        capacity = self._capacity()
        if maximum is None:
            if capacity is None:
                raise ValueError(f"give adapt a maximum=: the {self.provider} launcher has no "
                                 f"fixed list of machines to count")
            maximum = capacity
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not interval > 0:
            raise ValueError(f"interval must be a number of seconds > 0, got {interval!r}")
        policy = AdaptivePolicy(minimum, maximum, wait_s, idle_s, template=self._node_template())
        if capacity is not None and maximum > capacity:
            raise ValueError(f"maximum={maximum} but the {self.provider} cluster has "
                             f"{capacity} machine(s) in all")
        self._prepare_adapting(policy)
        self.stop_adapting()
        loop = AdaptLoop(self, policy, interval)
        loop.start()
        self._adapting = loop

    def stop_adapting(self) -> None:
        """Stop adapting (after a start or stop in progress); the nodes stay as they are."""
        loop, self._adapting = self._adapting, None
        if loop is not None:
            loop.stop()

    def adapt_status(self) -> dict[str, Any] | None:
        """While adapting (or after it ended by itself): ``minimum``, ``maximum``,
        ``target`` (the size the cluster goes to), ``current`` (live nodes),
        ``adapting`` and the last ``error``; None when ``adapt`` was not called."""
        loop = self._adapting
        return loop.status().as_dict() if loop is not None else None

    # What a launcher that can adapt implements (the adapt thread calls these):
    def _capacity(self) -> int | None:
        """How many nodes this launcher can have at most (None: no fixed number, as on
        Slurm, where the queue decides; ``adapt`` then needs its ``maximum``)."""
        raise NotImplementedError(f"the {self.provider} launcher cannot adapt")

    def _prepare_adapting(self, policy: Any) -> None:
        """Called by ``adapt`` with the checked policy, before its thread starts (the
        launcher may keep the bounds it needs to count its spare nodes)."""

    def _spare(self) -> int:
        """How many more nodes it could start now."""
        raise NotImplementedError

    def _node_template(self) -> dict[str, float] | None:
        """A new node's resources, when the launcher knows them (None: like the largest)."""
        return None

    def _retirable(self, node: dict[str, Any]) -> bool:
        """Whether this node (the head's ``demand`` answer) is one the launcher started
        and can stop: never the head's."""
        raise NotImplementedError

    def _grow(self, count: int) -> None:
        """Start ``count`` more nodes; return once they have registered."""
        raise NotImplementedError

    def _retire(self, node_id: str) -> None:
        """Stop that node gracefully (its agent leaves: ``NODE_LEAVING``)."""
        raise NotImplementedError

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


def adapt_status_for(address: str) -> dict[str, Any] | None:
    """``adapt_status()`` of the open launcher of this process whose head is at
    ``address`` (``host:port``, ``tcp://`` or not), if it adapts; for the front ends
    (``%cluster status``, the JupyterLab sidebar), which know the address only."""
    wanted = address.removeprefix("tcp://")
    with _open_lock:
        launchers = list(_open)
    for launcher in launchers:
        if launcher._address == wanted and launcher._adapting is not None:
            return launcher.adapt_status()
    return None


@atexit.register
def _close_open_launchers() -> None:
    with _open_lock:
        left = list(_open)
    for launcher in left:
        try:
            launcher.close()
        except Exception:   # at exit, one failure must not keep the others running
            pass
