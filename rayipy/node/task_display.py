"""Rich output from tasks: ``display()`` and matplotlib figures in a worker, as MIME bundles.

In a worker there is no IPython shell, so IPython's ``display()`` would only print the
object's repr. ``install(publish)`` (at worker start, ``rayipy.node.worker``) makes it
format the object as a notebook would (IPython's ``DisplayFormatter``: text/html,
image/png, ..., ``_repr_*_`` methods and ``_ipython_display_`` alike) and hand the bundle
to ``publish(data, metadata)``, which tags it with the running task and sends it along
the task output path to the task's owner (``rayipy.node.task_output``). A notebook shows
it under the submitting cell; a script prints its text/plain.

No shell is started and IPython is not imported at worker start: an import hook patches
``IPython.core.display_functions`` when a task first imports it (``IPython.display`` and
``IPython.core.display`` take their names from it, so they follow). A function pickled in
a notebook refers to ``display`` by that module's name, so it finds the patched one.

matplotlib: workers draw with Agg through ``rayipy.node.mpl_backend``, whose
``plt.show()`` publishes each open figure as image/png and closes it, as the inline
backend does in a kernel; ``display(fig)`` gives the same PNG. The backend is chosen with
``MPLBACKEND`` unless the worker's environment names a non-notebook one (a kernel's
inline backend, inherited by a local cluster, could not work in a worker).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import io
import os
import sys
import uuid
from types import ModuleType
from typing import Any, Callable

DISPLAY_MODULE = "IPython.core.display_functions"
MPL_BACKEND = "module://rayipy.node.mpl_backend"
NOTEBOOK_BACKENDS = ("inline", "ipympl", "widget", "nbagg")   # useless without a frontend

Publish = Callable[[dict[str, Any], dict[str, Any]], None]

_publish: Publish | None = None
_formatter: Any = None


def install(publish: Publish) -> None:
    """From now on, ``display()`` and ``plt.show()`` in this process call ``publish``."""
    global _publish
    _publish = publish
    backend = os.environ.get("MPLBACKEND", "")
    if not backend or any(name in backend.lower() for name in NOTEBOOK_BACKENDS):
        os.environ["MPLBACKEND"] = MPL_BACKEND
    module = sys.modules.get(DISPLAY_MODULE)
    if module is not None:
        _patch(module)
    elif not any(isinstance(finder, _PatchOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())


def publish(data: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
    """Send one MIME bundle (what ``display`` does once formatted)."""
    if _publish is None:
        raise RuntimeError("rayipy.node.task_display.install() was not called in this process")
    _publish(data, metadata or {})


def show_figure(figure: Any) -> None:
    """A matplotlib figure, as image/png with a text/plain fallback."""
    publish({"image/png": figure_png(figure), "text/plain": repr(figure)}, {})


def figure_png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.canvas.print_figure(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def formatter() -> Any:
    """IPython's DisplayFormatter, made once, with a PNG format for matplotlib figures."""
    global _formatter
    if _formatter is None:
        from IPython.core.formatters import DisplayFormatter
        made = DisplayFormatter()
        made.formatters["image/png"].for_type_by_name("matplotlib.figure", "Figure", figure_png)
        _formatter = made
    return _formatter


def display(*objs: Any, include: Any = None, exclude: Any = None, metadata: dict[str, Any] | None = None,
            transient: dict[str, Any] | None = None, display_id: Any = None, raw: bool = False,
            clear: bool = False, **kwargs: Any) -> Any:
    """IPython's ``display`` for a worker: each object formatted and published.
    ``display_id`` gives a handle, but an update is shown as a new output: the owner
    keeps no display ids for tasks."""
    for obj in objs:
        if raw:
            data, md = dict(obj), {}
        else:
            data, md = formatter().format(obj, include=include, exclude=exclude)
        if not data:
            continue   # nothing to show (``_ipython_display_`` published it itself)
        if metadata:
            md = {**md, **metadata}
        publish(data, md)
    if display_id:
        module = sys.modules[DISPLAY_MODULE]
        return module.DisplayHandle(uuid.uuid4().hex if display_id is True else display_id)
    return None


def publish_display_data(data: dict[str, Any], metadata: dict[str, Any] | None = None, *, transient: Any = None,
                         **kwargs: Any) -> None:
    """IPython's ``publish_display_data`` for a worker."""
    publish(dict(data), dict(metadata or {}))


def _patch(module: ModuleType) -> None:
    module.display = display                           # type: ignore[attr-defined]
    module.publish_display_data = publish_display_data  # type: ignore[attr-defined]
    # Modules that copied the names already (when IPython was imported before install).
    for name in ("IPython.display", "IPython.core.display"):
        other = sys.modules.get(name)
        if other is not None:
            for attr, value in (("display", display), ("publish_display_data", publish_display_data)):
                if hasattr(other, attr):
                    setattr(other, attr, value)


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Patches ``IPython.core.display_functions`` right after it is first executed."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != DISPLAY_MODULE:
            return None
        sys.meta_path.remove(self)   # once: find the real module, then step aside
        spec = importlib.util.find_spec(fullname)
        loader = spec.loader if spec is not None else None
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run = loader.exec_module

        def exec_and_patch(module: ModuleType) -> None:
            run(module)
            _patch(module)

        loader.exec_module = exec_and_patch   # type: ignore[method-assign]
        return spec
