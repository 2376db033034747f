"""The rayipy sidebar in a real JupyterLab: it follows the active notebook's kernel.

Before the notebook starts a cluster the panel says so; once it has, it shows the node and
its CPUs and links to the dashboard; while gated tasks run (the kernel idle) it shows them running and the CPUs in
use; when they finish, the done and failed counts.
"""

from __future__ import annotations

import re

import pytest

from helpers import wait_until

from . import labkit

pytestmark = pytest.mark.timeout(300)   # the first test of a session may build the extension

START = """\
import rayipy
%load_ext rayipy
%cluster start -n 2"""

# Six tasks wait for GATE; the last one raises once it may go on.
SUBMIT = """\
GATE = {gate!r}

@rayipy.remote
def gated(i):
    import os, time
    while not os.path.exists(GATE):
        time.sleep(0.02)
    if i == 5:
        raise ValueError("task 5 fails on purpose")
    return i

refs = [gated.remote(i) for i in range(6)]"""

STOP = "%cluster stop"


def run_cell(page, index: int) -> None:
    """Run one cell from the page (as Shift+Enter would) and wait for the kernel to be idle."""
    page.evaluate("""(index) => {
        const panel = window.jupyterapp.shell.currentWidget;
        panel.content.activeCellIndex = index;
        return window.jupyterapp.commands.execute('notebook:run-cell');
    }""", index)
    page.wait_for_function(labkit.KERNEL_IDLE_JS)


def field(panel, name: str):
    return panel.locator(f"[data-rayipy='{name}']")


def test_sidebar_shows_the_cluster_of_the_active_notebooks_kernel(lab, labextension, page,
                                                                    tmp_path):
    from playwright.sync_api import expect

    gate = tmp_path / "gate"
    labkit.write_notebook(lab.notebooks / "sidebar.ipynb",
                          [START, SUBMIT.format(gate=str(gate)), STOP])
    page.goto(lab.notebook_url("sidebar.ipynb"))
    page.wait_for_function(labkit.KERNEL_IDLE_JS)

    tab = page.locator(".jp-SideBar.jp-mod-left [data-id='rayipy-cluster-panel']")
    expect(tab).to_be_visible()   # the extension activated and added its sidebar tab
    page.evaluate("window.jupyterapp.commands.execute('rayipy:show-cluster')")
    panel = page.locator("#rayipy-cluster-panel")
    expect(panel).to_be_visible()
    expect(panel.locator(".jp-RayipyPanel-subtitle")).to_contain_text("sidebar.ipynb")

    # No cluster yet: the panel says so and how to start one (the sidebar never starts one).
    expect(field(panel, "state")).to_have_attribute("data-connected", "false")
    expect(field(panel, "reason")).to_contain_text("rayipy.init()")

    run_cell(page, 0)
    expect(field(panel, "state")).to_have_attribute("data-connected", "true")
    expect(field(panel, "state")).to_contain_text("local cluster")
    expect(field(panel, "nodes-heading")).to_have_text("Nodes (1)")
    expect(field(panel, "node")).to_have_count(1)
    expect(field(panel, "node").first).to_contain_text("2 CPU")
    expect(field(panel, "resource-CPU")).to_contain_text("0 / 2")
    expect(field(panel, "address")).to_contain_text("127.0.0.1:")
    # Memory: the resource is labelled a reservation; the node shows real use.
    expect(field(panel, "resource-memory")).to_contain_text("memory reserved")
    expect(field(panel, "node-memory")).to_have_text(re.compile(r"^[\d.]+ \w?i?B / [\d.]+ GiB$"))
    link = field(panel, "dashboard")   # the cluster's dashboard, served by its head
    expect(link).to_have_attribute("href", re.compile(r"^http://127\.0\.0\.1:\d+/?$"))
    assert page.request.get(link.get_attribute("href")).ok

    # Tasks hold both CPUs while the kernel is idle: the kernel pushes the change.
    run_cell(page, 1)
    expect(field(panel, "resource-CPU")).to_contain_text("2 / 2")
    expect(field(panel, "tasks-running").locator(".jp-RayipyPanel-countValue")).to_have_text("2")
    expect(field(panel, "tasks-queued").locator(".jp-RayipyPanel-countValue")).to_have_text("4")
    assert page.evaluate(labkit.KERNEL_IDLE_JS)
    labkit.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(labkit.ARTIFACTS / "sidebar-running.png"))

    # Each tile says whose tasks it counts: the whole cluster's, or this notebook's.
    expect(field(panel, "tasks-cluster")).to_contain_text("whole cluster")
    expect(field(panel, "tasks-notebook")).to_contain_text("this notebook")
    for name, scope in (("queued", "cluster"), ("running", "cluster"), ("done", "notebook"),
                        ("failed", "notebook"), ("cancelled", "notebook")):
        expect(field(panel, f"tasks-{name}")).to_have_attribute("data-scope", scope)
        expect(field(panel, f"tasks-{name}").locator(".jp-RayipyPanel-countScope")).to_have_text(scope)
        expect(field(panel, f"tasks-{scope}").locator(f"[data-rayipy='tasks-{name}']")).to_have_count(1)

    gate.touch()
    expect(field(panel, "tasks-done").locator(".jp-RayipyPanel-countValue")).to_have_text("5")
    expect(field(panel, "tasks-failed").locator(".jp-RayipyPanel-countValue")).to_have_text("1")
    expect(field(panel, "tasks-running").locator(".jp-RayipyPanel-countValue")).to_have_text("0")
    assert page.evaluate(labkit.KERNEL_IDLE_JS)
    page.screenshot(path=str(labkit.ARTIFACTS / "sidebar-done.png"))

    run_cell(page, 2)
    expect(field(panel, "state")).to_have_attribute("data-connected", "false")
    assert not page.errors, f"errors in the page: {page.errors}"


def test_sidebar_follows_the_active_notebook_and_kernel_restarts(lab, labextension, page):
    from playwright.sync_api import expect

    labkit.write_notebook(lab.notebooks / "with-cluster.ipynb", [START])
    labkit.write_notebook(lab.notebooks / "without.ipynb", ["x = 1"])
    page.goto(lab.notebook_url("with-cluster.ipynb"))
    page.wait_for_function(labkit.KERNEL_IDLE_JS)
    page.evaluate("window.jupyterapp.commands.execute('rayipy:show-cluster')")
    panel = page.locator("#rayipy-cluster-panel")
    run_cell(page, 0)
    expect(field(panel, "state")).to_have_attribute("data-connected", "true")

    # Another notebook, another kernel: nothing started there.
    page.evaluate("window.jupyterapp.commands.execute('docmanager:open', {path: 'without.ipynb'})")
    expect(panel.locator(".jp-RayipyPanel-subtitle")).to_contain_text("without.ipynb")
    page.wait_for_function(labkit.KERNEL_IDLE_JS)
    expect(field(panel, "state")).to_have_attribute("data-connected", "false")

    page.evaluate("window.jupyterapp.commands.execute('docmanager:open', "
                  "{path: 'with-cluster.ipynb'})")
    expect(panel.locator(".jp-RayipyPanel-subtitle")).to_contain_text("with-cluster.ipynb")
    expect(field(panel, "state")).to_have_attribute("data-connected", "true")
    expect(field(panel, "resource-CPU")).to_contain_text("/ 2")

    # A restarted kernel has lost its cluster; the panel reconnects to the new kernel.
    page.evaluate("window.jupyterapp.shell.currentWidget.sessionContext.restartKernel()")
    page.wait_for_function(labkit.KERNEL_IDLE_JS)
    expect(field(panel, "state")).to_have_attribute("data-connected", "false")
    expect(field(panel, "reason")).to_contain_text("%cluster start")

    # Hidden, the panel keeps no channel open in the kernel (its thread has stopped).
    assert kernel_channels(page) == 1
    page.evaluate("window.jupyterapp.commands.execute('application:toggle-left-area')")
    expect(panel).to_be_hidden()
    wait_until(lambda: kernel_channels(page) == 0, timeout=20,
               message="the hidden panel's comm is still open in the kernel")
    page.evaluate("window.jupyterapp.commands.execute('rayipy:show-cluster')")
    expect(panel).to_be_visible()
    expect(field(panel, "state")).to_have_attribute("data-connected", "false")
    assert kernel_channels(page) == 1
    assert not page.errors, f"errors in the page: {page.errors}"


def kernel_channels(page) -> int:
    """How many sidebar channels the current notebook's kernel has open."""
    return int(page.evaluate("""async () => {
        const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
        const reply = await kernel.requestExecute({code: '', silent: true, store_history: false,
            user_expressions: {n: "__import__('rayipy.jupyter.lab', fromlist=['_'])"
                                  + ".open_channel_count()"}}).done;
        return reply.content.user_expressions.n.data['text/plain'];
    }"""))
