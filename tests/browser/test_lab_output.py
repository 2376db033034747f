"""Task output survives a page reload: the cell's output widget, in a real JupyterLab.

A cell submits 10 tasks that print 4 lines each over a few seconds. The page is saved
and reloaded while they still print (the kernel lives on); after the reload all 40 lines
are in the cell, and, saved again, in the .ipynb (the widget state rayipy's extension
turns on). Before, routed by parent header, the lines printed after the reload were
dropped. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import json

import pytest

from . import labkit
from helpers import wait_until

pytestmark = pytest.mark.timeout(300)

SETUP = """\
import os
os.environ["RAYIPY_DEDUP_LOGS"] = "0"
import rayipy
%load_ext rayipy
%cluster start -n 2"""

SUBMIT = """\
import time

@rayipy.remote
def talk(i):
    for j in range(4):
        print(f"task {i} line {j}", flush=True)
        time.sleep(0.4)
    return i

refs = [talk.remote(i) for i in range(10)]"""


def task_lines(text: str) -> set[str]:
    return {line[line.index("task "):] for line in text.splitlines() if " line " in line}


def test_task_output_survives_a_reload_and_is_saved(lab, page):
    from playwright.sync_api import expect

    path = labkit.write_notebook(lab.notebooks / "output.ipynb", [SETUP, SUBMIT])
    page.goto(lab.notebook_url("output.ipynb"))
    page.wait_for_function(labkit.KERNEL_IDLE_JS)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    cell = page.locator(".jp-Notebook .jp-Cell").nth(1)
    output = cell.locator(".rayipy-task-output")
    expect(output).to_contain_text("line 0", timeout=60_000)   # the tasks print ...
    page.wait_for_function(labkit.KERNEL_IDLE_JS)
    page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")
    wait_until(lambda: "rayipy-task-output" in path.read_text()
               or "OutputModel" in path.read_text() or "widget-view" in path.read_text(),
               timeout=30, message="the notebook was not saved")
    shown_before = task_lines(output.inner_text())
    assert len(shown_before) < 40, "the tasks should still be printing at the reload"

    page.reload()                                               # ... mid-run
    page.wait_for_function(labkit.KERNEL_IDLE_JS)
    cell = page.locator(".jp-Notebook .jp-Cell").nth(1)
    output = cell.locator(".rayipy-task-output")
    expect(output).to_contain_text("task 9 line 3", timeout=60_000)
    wait_until(lambda: len(task_lines(output.inner_text())) == 40, timeout=30,
               message="not every line reached the page after the reload")
    labkit.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(labkit.ARTIFACTS / "task-output-after-reload.png"))

    page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")

    def saved_lines() -> set[str]:
        nb = json.loads(path.read_text())
        state = nb["metadata"].get("widgets", {}).get(
            "application/vnd.jupyter.widget-state+json", {}).get("state", {})
        text = "".join(o.get("text", "") for model in state.values()
                       if model["model_name"] == "OutputModel"
                       for o in model["state"].get("outputs", []))
        return task_lines(text)
    wait_until(lambda: len(saved_lines()) == 40, timeout=30,
               message="the saved notebook does not hold all 40 lines")
    assert not page.errors, f"errors in the page: {page.errors}"
