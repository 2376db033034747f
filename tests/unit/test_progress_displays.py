"""Which display ``rayipy.progress`` draws with: the registry in ``rayipy.progress_bars``
and what the Jupyter layer registers in it (``rayipy.jupyter.displays``), without kernels."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

import rayipy
from rayipy import progress_bars
from rayipy.jupyter import displays
from rayipy.progress_bars import TerminalBar, bar_factory, set_bar_factory


@pytest.fixture(autouse=True)
def registry():
    """Every test leaves the registry as ``import rayipy`` made it."""
    saved = dict(progress_bars._factories)
    yield
    progress_bars._factories.clear()
    progress_bars._factories.update(saved)


@pytest.fixture
def fake_kernel(monkeypatch):
    """This process looks like a running notebook kernel (IPython with a kernel)."""
    shell = types.SimpleNamespace(kernel=object(), parent_header={})
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    return shell


class Recorded:
    """A display that only records what it was asked to draw."""

    def __init__(self, total: int, description: str) -> None:
        self.total, self.description, self.drawn, self.closed = total, description, [], False

    def draw(self, counts) -> None:
        self.drawn.append(counts)

    def close(self) -> None:
        self.closed = True


def test_loading_rayipy_registers_the_jupyter_displays():
    assert bar_factory("auto") is displays.auto_bar
    assert bar_factory("widget") is displays.widget_bar
    assert bar_factory("terminal") is TerminalBar


def test_importing_rayipy_imports_no_ipython_ipykernel_or_ipywidgets():
    code = ("import sys, rayipy\n"
            "print(sorted(m for m in ('IPython', 'ipykernel', 'ipywidgets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "[]"


def test_without_the_jupyter_layer_auto_is_the_terminal_bar_even_in_a_kernel(fake_kernel):
    # progress_bars itself never looks for IPython: only what is registered decides.
    set_bar_factory("auto", None)
    set_bar_factory("widget", None)
    bar = rayipy.progress([], description="x")
    assert isinstance(bar.frontend, TerminalBar) and bar.widget is None
    with pytest.raises(RuntimeError, match=r'display="widget" needs the Jupyter layer'):
        rayipy.progress([], display="widget")


def test_a_registered_factory_draws_the_bar():
    made: list[Recorded] = []

    def factory(total: int, description: str) -> Recorded:
        made.append(Recorded(total, description))
        return made[-1]
    set_bar_factory("auto", factory)
    bar = rayipy.progress([], description="work")
    assert bar.frontend is made[0] and made[0].description == "work" and made[0].total == 0
    assert bar.wait(5) and made[0].closed and made[0].drawn[-1].complete


def test_the_jupyter_layer_picks_the_widget_only_in_a_kernel(monkeypatch):
    monkeypatch.setattr(displays, "widget_bar", Recorded)
    assert not displays.in_kernel()
    assert isinstance(displays.auto_bar(3, "t"), TerminalBar)
    shell = types.SimpleNamespace(kernel=None)   # a terminal IPython: no kernel
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    assert not displays.in_kernel()
    shell.kernel = object()
    assert displays.in_kernel()
    assert isinstance(displays.auto_bar(3, "t"), Recorded)


def test_bad_registrations_say_what_was_wrong():
    with pytest.raises(ValueError, match='"auto" or "widget", got \'terminal\''):
        set_bar_factory("terminal", Recorded)
    with pytest.raises(TypeError, match="a callable"):
        set_bar_factory("auto", "widget")
    set_bar_factory("auto", Recorded)
    set_bar_factory("auto", None)
    assert bar_factory("auto") is TerminalBar
