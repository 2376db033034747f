"""The matplotlib backend of rayipy workers: Agg, and ``plt.show()`` publishes the figures.

Chosen by ``rayipy.node.task_display.install`` (``MPLBACKEND``). As the inline
backend does in a kernel, ``show()`` sends each open figure (PNG, under the cell that
submitted the task) and closes it, so a worker running many tasks keeps no figures.
"""

from __future__ import annotations

from typing import Any

from matplotlib._pylab_helpers import Gcf
from matplotlib.backend_bases import FigureManagerBase
from matplotlib.backends.backend_agg import FigureCanvasAgg

from rayipy.node import task_display

FigureCanvas = FigureCanvasAgg
FigureManager = FigureManagerBase


def show(*args: Any, **kwargs: Any) -> None:
    """Publish every open figure, then close them."""
    try:
        for manager in Gcf.get_all_fig_managers():
            task_display.show_figure(manager.canvas.figure)
    finally:
        Gcf.destroy_all()
