"""rayipy in Jupyter: ``%load_ext rayipy``.

- ``%cluster start|connect|status|stop|dashboard`` (``magics``, ``cluster``)
- ``%%remote`` and ``%remote``: cells whose code runs on the cluster (``remote``)
- progress widgets for refs, shown by ``rayipy.progress`` and by slow ``get`` s (``progress``)
- task output routed to the cell that submitted the task (``output``)
- HTML for ObjectRefs and the cluster (``reprs``)

The only package of rayipy that imports IPython, ipykernel or ipywidgets. Importing it
imports none of them (workers import ``cell_tasks`` from here); ``extension`` does.
"""

from __future__ import annotations

from typing import Any


def load_ipython_extension(ipython: Any) -> None:
    from rayipy.jupyter.extension import load
    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from rayipy.jupyter.extension import unload
    unload(ipython)
