"""The progress widget in a real JupyterLab: rendered by ipywidgets, updated while idle.

A notebook starts a cluster, submits tasks that wait on gate files this test creates, and
shows the progress widget. With the kernel idle, the test opens the first gate (half the
tasks finish) and then the second: the rendered bar must reach 50% and then 100% with no
cell running. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import pytest

import labkit

pytestmark = pytest.mark.timeout(300)   # the first test of a session may build the extension

TASKS = 20

SETUP = """\
import rayipy
rayipy.init(num_cpus=2)"""

# Tasks 0..9 wait for GATE-a, 10..19 for GATE-b: the test decides when they finish.
SUBMIT = """\
import ipywidgets
from IPython.display import display

GATE = {gate!r}

@rayipy.remote
def gated(i):
    import os, time
    path = GATE + ("-a" if i < {half} else "-b")
    while not os.path.exists(path):
        time.sleep(0.02)
    return i

refs = [gated.remote(i) for i in range({tasks})]
bar = ipywidgets.IntProgress(value=0, max=len(refs), description="tasks")
display(bar)

def one_done(ref):   # runs on rayipy's I/O thread, after this cell has finished
    bar.value += 1
    if bar.value == bar.max:
        bar.bar_style = "success"

for ref in refs:
    ref.add_done_callback(one_done)"""


def progress_bar(cell):
    return cell.locator(".jp-OutputArea-output .jupyter-widgets.widget-hprogress")


def test_progress_widget_reaches_100_percent_while_the_kernel_is_idle(lab, page, tmp_path):
    from playwright.sync_api import expect

    gate = tmp_path / "gate"
    labkit.write_notebook(lab.notebooks / "progress.ipynb",
                          [SETUP, SUBMIT.format(gate=str(gate), half=TASKS // 2, tasks=TASKS)])
    page.goto(lab.notebook_url("progress.ipynb"))
    page.wait_for_function(labkit.KERNEL_IDLE_JS)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")

    cell = page.locator(".jp-Notebook .jp-Cell").nth(1)
    bar = progress_bar(cell)
    expect(bar).to_be_visible()
    outputs = cell.locator(".jp-OutputArea-output")
    expect(cell.locator(".jp-OutputArea-output[data-mime-type='text/plain']")).to_have_count(0)
    expect(outputs).not_to_contain_text("Error displaying widget")
    fill = bar.locator(".progress-bar")

    # Both cells done, no task can finish yet: the bar is at 0 with the kernel idle.
    page.wait_for_function(labkit.KERNEL_IDLE_JS)
    expect(page.locator(".jp-Notebook .jp-Cell").nth(1).locator(".jp-InputPrompt")) \
        .to_contain_text("[2]")
    assert fill.evaluate("e => e.style.width") in ("", "0%")

    (gate.parent / "gate-a").touch()
    page.wait_for_function("e => e.style.width === '50%'", arg=fill.element_handle())
    assert page.evaluate(labkit.KERNEL_IDLE_JS), "a cell ran while the bar moved"
    labkit.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(labkit.ARTIFACTS / "progress-widget-50.png"))

    (gate.parent / "gate-b").touch()
    page.wait_for_function("e => e.style.width === '100%'", arg=fill.element_handle())
    assert page.evaluate(labkit.KERNEL_IDLE_JS), "a cell ran while the bar moved"
    expect(fill).to_have_class("progress-bar progress-bar-success")
    page.screenshot(path=str(labkit.ARTIFACTS / "progress-widget-100.png"))
    assert not page.errors, f"errors in the page: {page.errors}"
