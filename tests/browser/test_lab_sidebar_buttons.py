"""The rayipy sidebar's buttons, worker rows, per-function progress and dashboard panes, in
a real JupyterLab: start a local cluster from the panel, see each worker's task and RSS and
a function's progress, open the task stream and the worker table as Lab panes (the
dashboard through Jupyter's server proxy), stop (refused while a task runs, then "Stop
anyway"), and a connect that fails says why. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import json
import re

import pytest

from . import labkit

pytestmark = pytest.mark.timeout(300)

SUBMIT = """\
import rayipy, time

@rayipy.remote
def crunch(seconds):
    time.sleep(seconds)
    return seconds

done = rayipy.get([crunch.remote(0.05) for _ in range(3)])
slow = crunch.remote(120)"""


@pytest.fixture(scope="module")
def lab(browser, request, tmp_path_factory):
    """JupyterLab with the extension and rayipy's server proxy (as a pip install enables it)."""
    if labkit.missing_node():
        pytest.skip(labkit.missing_node())
    extension = request.getfixturevalue("labextension")
    home = tmp_path_factory.mktemp("lab-buttons")
    notebooks = home / "notebooks"
    notebooks.mkdir()
    server = labkit.LabServer(home, notebooks, extension)
    config = home / "config" / "jupyter_server_config.json"
    config.write_text(json.dumps(
        {"ServerApp": {"jpserver_extensions": {"rayipy.jupyter.server_proxy": True}}}))
    try:
        server.start()
        yield server
    finally:
        server.stop()


def field(panel, name: str):
    return panel.locator(f"[data-rayipy='{name}']")


def run_cell(page, index: int) -> None:
    page.evaluate("""(index) => {
        const panel = window.jupyterapp.shell.currentWidget;
        panel.content.activeCellIndex = index;
        return window.jupyterapp.commands.execute('notebook:run-cell');
    }""", index)


def test_buttons_rows_progress_and_dashboard_panes(lab, page):
    from playwright.sync_api import expect

    labkit.write_notebook(lab.notebooks / "buttons.ipynb", [SUBMIT])
    page.goto(lab.notebook_url("buttons.ipynb"))
    page.wait_for_function(labkit.KERNEL_IDLE_JS)
    page.evaluate("window.jupyterapp.commands.execute('rayipy:show-cluster')")
    panel = page.locator("#rayipy-cluster-panel")
    expect(field(panel, "state")).to_have_attribute("data-connected", "false")
    expect(field(panel, "controls-connected")).to_be_hidden()

    # A connect that cannot work says why, and leaves the notebook unconnected.
    field(panel, "address-input").fill("127.0.0.1:1")
    field(panel, "password-input").fill("wrong")
    field(panel, "connect").click()
    expect(field(panel, "action-message")).to_contain_text("could not connect", timeout=60_000)
    expect(field(panel, "action-message")).to_have_attribute("data-ok", "false")

    # Start: the panel's own button, 2 workers.
    field(panel, "num-cpus").fill("2")
    field(panel, "start").click()
    expect(field(panel, "state")).to_have_attribute("data-connected", "true", timeout=60_000)
    expect(field(panel, "action-message")).to_contain_text("Started a local cluster")
    expect(field(panel, "controls-disconnected")).to_be_hidden()
    expect(field(panel, "worker-row")).to_have_count(2)

    # A task running: its worker's row names it; RSS per worker; the function's progress.
    run_cell(page, 0)
    busy = panel.locator("[data-rayipy='worker-row'][data-state='RUNNING']")
    expect(busy.locator("[data-rayipy='worker-task']")).to_have_text("crunch", timeout=30_000)
    expect(field(panel, "worker-rss").first).to_have_text(re.compile(r"^[\d.]+ \w?i?B$"))
    function = panel.locator("[data-rayipy='function'][data-name='crunch']")
    expect(function).to_contain_text("3 / 4")
    expect(function).to_contain_text("1 running")
    labkit.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(labkit.ARTIFACTS / "sidebar-buttons-rows.png"))

    # The dashboard panes: the page through the proxy, one section each.
    field(panel, "pane-stream").click()
    stream = page.locator("#rayipy-pane-stream")
    expect(stream).to_be_visible()
    src = stream.locator("iframe").get_attribute("src")
    assert re.search(r"/rayipy-dashboard/\d+/\?view=stream$", src), src
    frame = page.frame_locator("#rayipy-pane-stream iframe")
    expect(frame.locator("#stream-section")).to_be_visible()
    expect(frame.locator("#workers-section")).to_be_hidden()
    expect(frame.locator("#conn")).to_be_hidden()
    page.screenshot(path=str(labkit.ARTIFACTS / "sidebar-pane-stream.png"))
    field(panel, "pane-workers").click()
    workers = page.frame_locator("#rayipy-pane-workers iframe")
    expect(workers.locator("#workers-section")).to_be_visible()
    expect(workers.locator("#stream-section")).to_be_hidden()
    expect(workers.locator("#workers")).to_contain_text("crunch", timeout=30_000)
    page.screenshot(path=str(labkit.ARTIFACTS / "sidebar-pane-workers.png"))

    # Stop: refused while the task runs, then "Stop anyway" goes ahead.
    field(panel, "stop").click()
    expect(field(panel, "action-message")).to_contain_text("--force")
    expect(field(panel, "stop")).to_have_text("Stop anyway")
    field(panel, "stop").click()
    expect(field(panel, "action-message")).to_contain_text("Stopped")
    expect(field(panel, "state")).to_have_attribute("data-connected", "false")
    assert not page.errors, page.errors
