"""rayipy in Jupyter: ``%load_ext rayipy``.

- ``%cluster start|connect|status|stop|dashboard`` (``magics``, ``cluster``)
- ``%%remote`` and ``%remote``: cells whose code runs on the cluster (``remote``)
- progress widgets for refs, shown by ``rayipy.progress`` and by slow ``get`` s (``progress``)
- task output routed to the cell that submitted the task (``output``)
- HTML for ObjectRefs and the cluster (``reprs``)

The only package of rayipy that imports IPython, ipykernel or ipywidgets. Importing it
imports none of them (every rayipy process imports it, and workers import ``cell_tasks``
from here); ``extension`` and ``progress`` do. Loading it registers its progress
displays with ``rayipy.progress_bars`` (``displays``), which is how a notebook kernel
gets widgets even without ``%load_ext rayipy``.
"""

from __future__ import annotations

from typing import Any

from rayipy.jupyter import displays

displays.register()


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext rayipy``: magics, output routing, automatic progress, HTML reprs."""
    from rayipy.jupyter.extension import load  # IPython: only when the extension loads
    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext rayipy``: takes back all that ``load_ipython_extension`` did."""
    from rayipy.jupyter.extension import unload
    unload(ipython)
