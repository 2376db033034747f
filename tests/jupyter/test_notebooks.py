"""Every notebook in notebooks/ runs top to bottom on a real kernel (nbclient); its outputs
and the widget state it saves say it did what its text promises."""

from __future__ import annotations

from pathlib import Path

import nbformat
import psutil
import pytest
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from rayipy.api import key_from_password
from rayipy.node.launch import LocalCluster
from helpers import wait_until
from jupyter_helpers import alive

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
PASSWORD = "notebook-test-password"


def execute(name: str) -> nbformat.NotebookNode:
    """Run the notebook on a kernel of our own, stopped here with all it started, even when
    a cell fails (the notebooks stop their clusters; a failed one may not have)."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(NOTEBOOKS))
    descendants: list = []
    try:
        client = NotebookClient(nb, km=km, timeout=180, store_widget_state=True)
        try:
            client.execute()
        finally:
            descendants = psutil.Process(km.provisioner.process.pid).children(recursive=True)
    finally:
        km.shutdown_kernel(now=True)
        try:
            wait_until(lambda: not [p for p in descendants if alive(p)], timeout=10,
                       message=f"processes of the kernel running {name} outlived it")
        finally:
            for proc in descendants:
                if alive(proc):
                    proc.kill()
    return nb


def cell(nb, starts: str, exact: bool = False):
    found = [c for c in nb.cells if c.cell_type == "code"
             and (c.source == starts if exact else c.source.startswith(starts))]
    assert len(found) == 1, f"one cell starting with {starts!r}"
    return found[0]


def result(c) -> str:
    [value] = [o.data["text/plain"] for o in c.outputs if o.output_type == "execute_result"]
    return value


def stdout(c, nb=None) -> str:
    """What cell ``c`` printed; with ``nb``, its tasks' output too (in the output widget
    the cell shows, from the widget state saved in ``nb``)."""
    text = "".join(o.text for o in c.outputs if o.output_type == "stream" and o.name == "stdout")
    if nb is not None:
        for model in models_shown(nb, c, "OutputModel"):
            text += "".join(o.get("text", "") for o in model["state"]["outputs"]
                            if o.get("output_type") == "stream" and o.get("name") == "stdout")
    return text


def models_shown(nb, c, name: str) -> list[dict]:
    """The saved state of each widget of model ``name`` displayed by cell ``c``."""
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json",
                                               {}).get("state", {})
    return [state[view["model_id"]] for view in data(c, "application/vnd.jupyter.widget-view+json")
            if state.get(view["model_id"], {}).get("model_name") == name]


def stderr(c) -> str:
    return "".join(o.text for o in c.outputs if o.output_type == "stream" and o.name == "stderr")


def data(c, mime: str) -> list:
    return [o.data[mime] for o in c.outputs if o.output_type in ("execute_result", "display_data")
            and mime in o.data]


def widget_states(nb, c) -> list[dict]:
    """The saved state of each progress widget displayed by cell ``c``."""
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    views = data(c, "application/vnd.jupyter.widget-view+json")
    out = []
    for view in views:
        model = state[view["model_id"]]
        if model["model_name"] == "OutputModel":
            continue   # the cell's task output (models_shown)
        assert model["model_name"] == "HBoxModel" and model["model_module"] == "@jupyter-widgets/controls"
        bar = state[model["state"]["children"][0].removeprefix("IPY_MODEL_")]
        assert bar["model_name"] == "IntProgressModel"
        out.append({**model["state"], "bar_value": bar["state"]["value"], "bar_max": bar["state"]["max"],
                    "bar_style": bar["state"]["bar_style"]})
    return out


def test_notebooks_are_committed_clean():
    names = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert names == ["01-quickstart.ipynb", "02-remote-magic.ipynb", "03-progress-and-output.ipynb",
                     "04-cluster-connect.ipynb"]
    for name in names:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        for c in nb.cells:
            if c.cell_type == "code":
                assert not c.outputs and c.execution_count is None, f"{name}: outputs committed"
        assert "widgets" not in nb.metadata


def test_01_quickstart():
    nb = execute("01-quickstart.ipynb")
    assert result(cell(nb, "%cluster start")).startswith("ClusterContext(local cluster at")
    assert stdout(cell(nb, "import rayipy as ray"), nb) == "[0, 1, 4, 9]\n"
    ref_html = data(cell(nb, "futures[3]"), "text/html")[0]
    assert "done" in ref_html and "task <code>f</code>" in ref_html and "worker pid" in ref_html
    assert stdout(cell(nb, "@ray.remote\nclass Counter"), nb) == "[3, 3, 3, 3]\n"
    assert result(cell(nb, "ray.get([cube")) == "[0, 1, 8, 27]"
    status = data(cell(nb, "%cluster status"), "text/html")[0]
    assert "tasks of this notebook" in status and "CPU 2" in status
    assert "Stopped the local cluster" in stdout(cell(nb, "%cluster stop"))


def test_02_remote_magic():
    nb = execute("02-remote-magic.ipynb")
    assert stdout(cell(nb, "import rayipy\nresults"), nb).startswith("8 simulations, mean of means ")
    run = cell(nb, "%%remote --run\nimport os")
    assert "running in worker process" in stdout(run, nb) and float(result(run)) >= 0
    assert stdout(cell(nb, "print(f'spread"), nb).startswith("spread ")
    assert result(cell(nb, "%remote len(results)")).startswith("(8, ")
    everywhere = stdout(cell(nb, "%%remote --all"), nb)
    assert everywhere.count("has math.tau = 6.28319") == 2 and everywhere.count("--- node ") == 2
    [error] = [o for o in cell(nb, "%%remote --run\nvalues").outputs if o.output_type == "error"]
    shown = "\n".join(error.traceback)
    assert "ZeroDivisionError" in shown and "raised in remote task 'In[" in shown
    assert "[10 / v for v in values]" in shown  # the cell's own line, from the worker


def test_03_progress_and_output():
    nb = execute("03-progress-and-output.ipynb")
    [bar] = widget_states(nb, cell(nb, "refs = [step.remote(i)"))
    assert (bar["total"], bar["done"], bar["failed"], bar["complete"]) == (100, 96, 4, True)
    assert (bar["bar_value"], bar["bar_max"], bar["bar_style"]) == (100, 100, "danger")
    assert bar["summary"].startswith("96/100 done, 4 failed")
    assert stdout(cell(nb, "bar.wait()")) == "96 done, 4 failed\n"
    automatic = cell(nb, "squares = rayipy.get(")
    [auto] = widget_states(nb, automatic)
    assert (auto["total"], auto["done"], auto["complete"], auto["bar_style"]) == (39, 39, True, "success")
    assert result(automatic) == "39"
    alone = stdout(cell(nb, "@rayipy.remote\ndef chatty"), nb)
    assert alone == "alone: line 0\nalone: line 1\nalone: line 2\n"   # one task: no labels
    pair = stdout(cell(nb, "rayipy.get([chatty.remote"), nb)
    for name in ("left", "right"):
        for i in range(2):
            assert f"{name}: line {i}\n" in pair
    assert all(line.startswith("(chatty pid=") for line in pair.splitlines())


@pytest.fixture
def cluster_to_join(monkeypatch):
    """A cluster with a password for 04 to join; the kernel learns where from its environment."""
    cluster = LocalCluster(2, {})
    cluster.key = key_from_password(PASSWORD)
    address = cluster.start().removeprefix("tcp://")
    monkeypatch.setenv("RAYIPY_ADDRESS", address)
    monkeypatch.setenv("RAYIPY_PASSWORD", PASSWORD)
    try:
        yield address
    finally:
        cluster.stop(timeout=5)


def test_04_cluster_connect(cluster_to_join):
    nb = execute("04-cluster-connect.ipynb")
    dead = stderr(cell(nb, "%cluster connect 127.0.0.1:9"))
    assert "cannot reach a rayipy head at 127.0.0.1:9 (Connection refused)" in dead
    wrong = stderr(cell(nb, "%cluster connect {address} --password"))
    assert "the password (cluster key) is wrong" in wrong
    joined = result(cell(nb, "%cluster connect {address}", exact=True))
    assert f"ClusterContext(cluster at {cluster_to_join})" == joined
    seed = cell(nb, "from collections import Counter")
    assert "1 nodes in total\n    2.0 CPU resources in total" in stdout(seed, nb)
    assert "10000 tasks on 127.0.0.1" in stdout(seed, nb)
    [auto] = widget_states(nb, seed)   # 10,000 tasks take more than a second: a bar
    assert (auto["total"], auto["done"], auto["complete"]) == (10000, 10000, True)
    assert "Disconnected from the cluster at" in stdout(cell(nb, "%cluster stop"))
