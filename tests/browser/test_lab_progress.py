"""The progress widget in a real JupyterLab: rendered by ipywidgets, updated while idle.

A notebook starts a cluster with %cluster, submits tasks and shows ``rayipy.progress``.
All tasks but the last finish on their own; the last waits for a gate file that this
test creates only once the kernel is idle, so the bar's last step can only be drawn
from the kernel's background thread. (Only one task waits: with two workers, tasks
queued behind a waiting one are handed to the free worker, whatever their order.)
Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import pytest

from . import labkit

pytestmark = pytest.mark.timeout(300)   # the first test of a session may build the extension

TASKS = 20

SETUP = """\
import rayipy
%load_ext rayipy
%cluster start -n 2"""

# Every task but the last takes 0.1 s; the last waits for GATE.
SUBMIT = """\
GATE = {gate!r}

@rayipy.remote
def work(i, last):
    import os, time
    time.sleep(0.1)
    while last and not os.path.exists(GATE):
        time.sleep(0.02)
    return i

refs = [work.remote(i, i == {tasks} - 1) for i in range({tasks})]
rayipy.progress(refs, description="work")"""


def progress_widget(cell):
    return cell.locator(".jp-OutputArea-output .jupyter-widgets.rayipy-progress")


def test_progress_widget_reaches_100_percent_while_the_kernel_is_idle(lab, page, tmp_path):
    from playwright.sync_api import expect

    gate = tmp_path / "gate"
    labkit.write_notebook(lab.notebooks / "progress.ipynb",
                          [SETUP, SUBMIT.format(gate=str(gate), tasks=TASKS)])
    page.goto(lab.notebook_url("progress.ipynb"))
    page.wait_for_function(labkit.KERNEL_IDLE_JS)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")

    cell = page.locator(".jp-Notebook .jp-Cell").nth(1)
    widget = progress_widget(cell)
    expect(widget).to_be_visible()
    bar = widget.locator(".widget-hprogress")
    label = widget.locator(".rayipy-progress-text")
    outputs = cell.locator(".jp-Cell-outputArea")   # the bar, and the tasks' output widget
    expect(cell.locator(".jp-OutputArea-output[data-mime-type='text/plain']")).to_have_count(0)
    expect(outputs).not_to_contain_text("Error displaying widget")
    fill = bar.locator(".progress-bar")

    # Both cells done; all but the gated task finish (maybe before, maybe after idle).
    page.wait_for_function(labkit.KERNEL_IDLE_JS)
    expect(page.locator(".jp-Notebook .jp-Cell").nth(1).locator(".jp-InputPrompt")) \
        .to_contain_text("[2]")
    page.wait_for_function("e => e.style.width === '95%'", arg=fill.element_handle())
    expect(label).to_contain_text("19/20 done")
    assert page.evaluate(labkit.KERNEL_IDLE_JS)
    labkit.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(labkit.ARTIFACTS / "progress-widget-95.png"))

    gate.touch()   # the kernel is idle: only its background thread can draw what follows
    page.wait_for_function("e => e.style.width === '100%'", arg=fill.element_handle())
    assert page.evaluate(labkit.KERNEL_IDLE_JS), "a cell ran while the bar moved"
    expect(fill).to_have_class("progress-bar progress-bar-success")
    expect(label).to_contain_text("20/20 done")
    page.screenshot(path=str(labkit.ARTIFACTS / "progress-widget-100.png"))
    assert not page.errors, f"errors in the page: {page.errors}"
