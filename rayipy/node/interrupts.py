"""Holding Ctrl-C for a moment: while a thread reads and handles an answer itself.

A thread waiting for a direct call's answer reads it from the connection itself
(``direct_calls.wait_on_direct``). A KeyboardInterrupt between taking the bytes from
the socket and handling them would lose the answer and leave the stream cut in the
middle of a message, and one between taking the connection and letting it go would
keep it taken; so the main thread holds the interrupt all that time: a SIGINT that
comes meanwhile ends the wait within a poll slice (20 ms) and is raised as
KeyboardInterrupt then, with nothing half done.

Python runs signal handlers in the main thread between bytecodes, so holding needs a
handler that can wait. Swapping handlers around each read costs two ``sigaction``
calls (about 8 us here, most of what reading it ourselves saves), so the first wait
that could use it (``can_hold``) installs ``_on_sigint`` in place of Python's default
handler only, and it acts exactly like that one (raises KeyboardInterrupt) except while
held. A notebook kernel puts the default handler back for each cell (and its own
after), and the next wait takes it over again. Where someone has put a handler of their
own, the answer is left to the I/O thread, as before. The driver puts the default back
when it shuts down.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import _signal   # getsignal without signal's enum conversion (see _handler)


class _Held:
    depth = 0
    pending = False


_held = _Held()


def _on_sigint(signum: int, frame: Any) -> None:
    if _held.depth:
        _held.pending = True
        return
    raise KeyboardInterrupt


def _handler() -> Any:
    """SIGINT's handler now. ``signal.getsignal`` converts what it finds through an enum,
    which raises and catches a ValueError for every Python handler: 5-8 us, on every
    ``get`` of a direct call's answer; the C function underneath does not."""
    return _signal.getsignal(signal.SIGINT)


def install() -> None:
    """Main thread: take over SIGINT if it has Python's default handler."""
    if threading.current_thread() is threading.main_thread() and \
            _handler() is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)


def uninstall() -> None:
    """Put Python's default handler back, if ours is still the one."""
    if threading.current_thread() is threading.main_thread() and _handler() is _on_sigint:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def can_hold() -> bool:
    """True when this thread can hold Ctrl-C: it is not the main thread (signals only
    interrupt the main thread), or our handler is installed (again, if Python's default
    is back)."""
    if threading.current_thread() is not threading.main_thread():
        return True
    handler = _handler()
    if handler is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)
        return True
    return handler is _on_sigint


def hold() -> None:
    _held.depth += 1


def pending() -> bool:
    """A Ctrl-C came during the hold (it is raised by the last ``release``)."""
    return _held.pending


def release() -> None:
    """End a hold (call in a ``finally``); raises the KeyboardInterrupt that came during
    it, if any, once no hold is left."""
    _held.depth -= 1
    if not _held.depth and _held.pending:
        _held.pending = False
        raise KeyboardInterrupt
