"""Fixtures for the Jupyter layer: an IPython shell with the extension, and real kernels.

Every kernel a test starts is shut down by its fixture, even when the test fails, after
asking it to stop its cluster; every cluster the shell starts is stopped likewise.
"""

from __future__ import annotations

import pytest

import rayipy
from helpers import child_processes, wait_until
from jupyter_helpers import Kernel


def stop_cluster() -> None:
    """Shut rayipy down in this process and make sure its cluster's processes are gone."""
    rayipy.shutdown()
    try:
        wait_until(lambda: not child_processes(), timeout=10,
                   message=f"processes left after shutdown: {child_processes()}")
    finally:
        for proc in child_processes():
            proc.kill()


@pytest.fixture(scope="module")
def shell():
    """A real InteractiveShell with %load_ext rayipy; the cluster it starts is stopped."""
    from IPython.core.interactiveshell import InteractiveShell
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "rayipy")
    try:
        yield ip
    finally:
        try:
            ip.run_line_magic("unload_ext", "rayipy")
        finally:
            stop_cluster()


@pytest.fixture
def kernel():
    """A fresh kernel of its own (with the extension loaded, unless ``load_ext=False``),
    always shut down."""
    started: list[Kernel] = []

    def start(env: dict[str, str] | None = None, load_ext: bool = True) -> Kernel:
        k = Kernel(env)
        started.append(k)
        if load_ext:
            k.run("%load_ext rayipy")
        return k
    try:
        yield start
    finally:
        for k in started:
            k.shutdown()
