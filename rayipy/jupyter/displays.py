"""The Jupyter layer's progress displays, registered with ``rayipy.progress_bars``.

``register()`` runs when the layer loads: ``import rayipy`` imports this package (so
``rayipy.progress(refs)`` in a kernel shows a widget with or without ``%load_ext
rayipy``), and ``%load_ext rayipy`` imports rayipy first. It registers

- for ``display="widget"``: the ipywidgets bar (``rayipy.jupyter.progress``);
- for ``display="auto"``: that widget when this process is a running notebook kernel,
  else the terminal bar, decided each time a bar is made, the way ``tqdm.auto`` does.

Light on purpose: every rayipy process imports it (workers too), so it imports neither
IPython nor ipywidgets; it looks for a kernel in ``sys.modules`` only, and imports the
widget module when the first widget is made.
"""

from __future__ import annotations

import sys

from rayipy import progress_bars
from rayipy.progress_bars import Frontend, TerminalBar


def in_kernel() -> bool:
    """True in a running Jupyter kernel (not a terminal IPython): widgets can show."""
    ipython = sys.modules.get("IPython")
    if ipython is None or "ipykernel" not in sys.modules:
        return False
    shell = ipython.get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def widget_bar(total: int, description: str) -> Frontend:
    """An ipywidgets bar, shown in the running cell."""
    from rayipy.jupyter.progress import NotebookBar  # ipywidgets: only once a widget is made
    return NotebookBar(total, description)


def auto_bar(total: int, description: str) -> Frontend:
    """The widget in a notebook kernel; the terminal bar anywhere else."""
    if in_kernel():
        return widget_bar(total, description)
    return TerminalBar(total, description)


def register() -> None:
    """Make ``rayipy.progress`` draw with this layer's displays (idempotent)."""
    progress_bars.set_bar_factory("widget", widget_bar)
    progress_bars.set_bar_factory("auto", auto_bar)
