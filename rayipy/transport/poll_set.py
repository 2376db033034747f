"""One poller for an I/O thread's ZeroMQ socket and its plain sockets, with a record of
what each plain socket is watched for.

The parts of a runtime that own plain sockets (the data port, the direct connections)
say before each poll what they want from each (``watch``); registering only when that
changes keeps the poller's syscalls off the per-message path.
"""

from __future__ import annotations

from typing import Any

import zmq


class PollSet:
    """Owned by one thread (the I/O thread that polls it)."""

    def __init__(self) -> None:
        self.poller = zmq.Poller()
        self._watched: dict[int, int] = {}        # plain fd -> poll flags

    def register(self, sock: Any, flags: int = zmq.POLLIN) -> None:
        """A socket watched for good (a ZeroMQ socket, a listener, a wake-up pipe)."""
        self.poller.register(sock, flags)

    def watch(self, fd: int, flags: int) -> None:
        """Poll ``fd`` for ``flags`` from now on (0: not at all)."""
        if self._watched.get(fd, 0) == flags:
            return
        if flags:
            self.poller.register(fd, flags)
            self._watched[fd] = flags
        else:
            self.poller.unregister(fd)
            del self._watched[fd]

    def watching(self, fd: int) -> bool:
        return fd in self._watched

    def events_for(self, fd: int, events: dict[Any, int]) -> int:
        """The flags the last poll gave ``fd`` (0 if it is not watched: a number the
        kernel gave to a new socket after the old one was closed is not ours)."""
        return events.get(fd, 0) if fd in self._watched else 0

    def poll(self, timeout_ms: int) -> dict[Any, int]:
        return dict(self.poller.poll(timeout_ms))
