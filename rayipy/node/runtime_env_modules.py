"""Local modules edited after import (the notebook's ``%autoreload`` habit) reach the
workers on the next call, and no worker runs stale code.

A *local* module is one imported from a file outside the interpreter's installation
(its prefixes and site directories) and outside rayipy: the user's own code beside the
notebook. Workers import such a module by name once, and would keep that version. So the
driver remembers each local module's file (size, mtime, and a digest of its content),
and each ``.remote()`` asks ``generation()``. That looks at the files only when a
module was reloaded since the last call (``importlib.reload``, which ``%autoreload``
calls, gives the module a new ``__spec__``: one attribute compared per module) or when
``STAT_INTERVAL_S`` has passed (an edit without a reload): a stat per file on every
call cost 25 microseconds a task. When a file's content differs from what was recorded, the module is
shipped by value from then on (``serialization.ship_by_value``: its functions, and the
module itself where a function refers to it, travel with their current code) and the
generation goes up, so every ``PickledOnce`` pickles its function again: its bytes, and
so its id, change, and workers load the new code. A module never edited keeps
travelling by name, as before.
"""

from __future__ import annotations

import hashlib
import os
import sys
import sysconfig
import threading
import time
import types
from typing import NamedTuple

from rayipy.protocol import serialization


#: How old a look at the files may be when no module was reloaded meanwhile: an edit
#: without a reload is seen by the calls made this long after it.
STAT_INTERVAL_S = 0.05


class _Seen(NamedTuple):
    module: types.ModuleType
    spec: object              # the module's __spec__ when last looked at (a reload renews it)
    path: str
    stat: tuple[int, int]     # (mtime_ns, size)
    digest: bytes


def _installed_roots() -> tuple[str, ...]:
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    for name in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(name)
        if path:
            roots.add(path)
    rayipy_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    roots.add(rayipy_dir)
    return tuple(os.path.realpath(r) + os.sep for r in roots)


def is_local(module: types.ModuleType, roots: tuple[str, ...]) -> str:
    """The module's source file if it is a local module, else ""."""
    path = getattr(module, "__file__", None)
    if not isinstance(path, str) or not path.endswith(".py"):
        return ""
    real = os.path.realpath(path)
    return "" if real.startswith(roots) else real


def _digest(path: str) -> bytes:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).digest()


class ModuleWatch:
    """The local modules of this process, and the generation of what they hold."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.roots = _installed_roots()
        self.seen: dict[str, _Seen] = {}
        self.modules_count = -1
        self.value = 0
        self.next_look = 0.0

    def generation(self) -> int:
        """A number that changes whenever a local module's content changed: checked now
        if a module was reloaded since the last call, else at most ``STAT_INTERVAL_S``
        ago."""
        if len(sys.modules) != self.modules_count:
            self._scan()
        now = time.monotonic()
        if now < self.next_look and all(
                seen.module.__dict__.get("__spec__") is seen.spec
                for seen in self.seen.values()):
            return self.value
        self.next_look = now + STAT_INTERVAL_S
        return self._look()

    def _look(self) -> int:
        changed = False
        for name, seen in list(self.seen.items()):
            spec = seen.module.__dict__.get("__spec__")
            if spec is not seen.spec:
                seen = self.seen[name] = seen._replace(spec=spec)
            try:
                st = os.stat(seen.path)
            except OSError:
                continue
            if (st.st_mtime_ns, st.st_size) == seen.stat:
                continue
            with self.lock:
                digest = _digest(seen.path)
                self.seen[name] = seen._replace(stat=(st.st_mtime_ns, st.st_size),
                                                digest=digest)
                if digest != seen.digest:
                    serialization.ship_by_value(seen.module)
                    changed = True
        if changed:
            self.value += 1
        return self.value

    def _scan(self) -> None:
        with self.lock:
            self.modules_count = len(sys.modules)
            for name, module in list(sys.modules.items()):
                if name in self.seen or name == "__main__" or module is None:
                    continue
                path = is_local(module, self.roots)
                if not path:
                    continue
                try:
                    st = os.stat(path)
                    digest = _digest(path)
                except OSError:
                    continue
                self.seen[name] = _Seen(module, module.__dict__.get("__spec__"), path,
                                        (st.st_mtime_ns, st.st_size), digest)


watch = ModuleWatch()
"""This process's watch (the driver's, or a worker's for the tasks it submits)."""
