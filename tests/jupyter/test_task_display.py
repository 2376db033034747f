"""Rich output from tasks: captured in the worker (``task_display``), routed by the owner
(``OutputRouter``) and saved under the submitting cell (nbclient, a real kernel)."""

from __future__ import annotations

import base64
import importlib.util
import json
import subprocess
import sys
import types

from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from rayipy.jupyter.output import OutputRouter
from rayipy.node.task_output import DISPLAY_STREAM, encode_bundle
from test_output_router import FakeRef, FakeShell, FakeStream, cell, task

CAPTURE = """
import json, sys
from rayipy.node import task_display
got = []
task_display.install(lambda data, md: got.append(sorted(data)))
assert "IPython.core.display_functions" not in sys.modules   # nothing imported at install
from IPython.display import display, HTML
display(HTML('<b>x</b>'), {'a': 1})
handle = display(HTML('<i>y</i>'), display_id=True)
handle.update(HTML('<i>z</i>'))
try:
    import matplotlib.pyplot as plt
except ImportError:
    pass
else:
    plt.plot([1, 2]); plt.show()
    assert plt.get_fignums() == []        # show closes what it sent
    display(plt.figure())
print(json.dumps(got))
"""


def test_display_and_plt_show_in_a_worker_process_publish_bundles():
    done = subprocess.run([sys.executable, "-c", CAPTURE], capture_output=True, text=True,
                          timeout=60, env={**__import__("os").environ, "MPLBACKEND": ""})
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.splitlines()[-1])
    assert got[:4] == [["text/html", "text/plain"], ["text/plain"],
                       ["text/html", "text/plain"], ["text/html", "text/plain"]]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert got[4:] == [["image/png", "text/plain"], ["image/png", "text/plain"]]


class FakeArea:
    def __init__(self) -> None:
        self.got: list = []

    def append_text(self, stream, text):
        self.got.append((stream, text))

    def append_display(self, data, metadata=None):
        self.got.append(("display", data))


def test_a_display_goes_into_the_cells_widget_after_the_text_before_it(monkeypatch):
    monkeypatch.setattr(sys, "stdout", FakeStream())
    shell = FakeShell()
    area = FakeArea()
    router = OutputRouter(shell, widget=True, make_area=lambda: area)
    shell.current = cell("A")
    router.on_submit(task(1), [FakeRef(task(1))])
    bundle = encode_bundle({"text/html": "<b>x</b>", "text/plain": "x"})
    router.on_log([("stdout", "before\n", "f", task(1)),
                   (DISPLAY_STREAM, "x\n", "f", task(1), bundle)], "pid=7")
    assert area.got == [("stdout", "before\n"), ("display", {"text/html": "<b>x</b>", "text/plain": "x"})]


def test_without_a_widget_a_display_is_a_display_data_message_under_the_cell(monkeypatch):
    out = FakeStream()
    monkeypatch.setattr(sys, "stdout", out)
    sent: list = []
    shell = FakeShell()
    shell.kernel = types.SimpleNamespace(
        iopub_socket="iopub",
        session=types.SimpleNamespace(send=lambda *a, **k: sent.append((a, k))))
    router = OutputRouter(shell)
    shell.current = cell("A")
    router.on_submit(task(1), [FakeRef(task(1))])
    shell.current = cell("B")
    router.on_log([(DISPLAY_STREAM, "x\n", "f", task(1), encode_bundle({"text/html": "<b>x</b>"}))],
                  "pid=7")
    [(args, kwargs)] = sent
    assert args[1] == "display_data" and args[2]["data"] == {"text/html": "<b>x</b>"}
    assert kwargs["parent"] == cell("A")
    # A line that says display but carries no bundle is shown as its text.
    router.on_log([(DISPLAY_STREAM, "just text\n", "f", task(1))], "pid=7")
    assert out.writes == [(cell("A"), "just text\n")] and len(sent) == 1


TASKS = ("import rayipy, time\n"
         "from IPython.display import display, HTML\n"
         "@rayipy.remote\n"
         "def rich(i):\n"
         "    print('before', i, flush=True)\n"
         "    display(HTML(f'<b>bold {i}</b>'))\n"
         "    return i\n"
         "@rayipy.remote\n"
         "def plot():\n"
         "    import matplotlib.pyplot as plt\n"
         "    plt.plot([1, 3, 2])\n"
         "    plt.show()\n"
         "    return 'plotted'\n")


def widget_outputs(nb, index: int) -> list[dict]:
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    views = [o.data["application/vnd.jupyter.widget-view+json"]["model_id"]
             for o in nb.cells[index].outputs if o.output_type == "display_data"
             and "application/vnd.jupyter.widget-view+json" in o.data]
    [area] = [state[v] for v in views if state[v]["model_name"] == "OutputModel"]
    return area["state"]["outputs"]


def test_html_and_a_figure_shown_by_tasks_are_saved_under_the_submitting_cell():
    # Without matplotlib (the kernel shares this environment) the figure part is left out.
    have_matplotlib = importlib.util.find_spec("matplotlib") is not None
    submit = "refs = [rich.remote(1), plot.remote()]" if have_matplotlib else "refs = [rich.remote(1)]"
    nb = new_notebook(cells=[new_code_cell("%load_ext rayipy\n%cluster start -n 2"),
                             new_code_cell(TASKS),
                             new_code_cell(submit),
                             new_code_cell("rayipy.get(refs); time.sleep(1.0)"),
                             # the stream route: display_data messages with the cell's parent
                             new_code_cell("%config RayipyMagics.output_widget = False\n"
                                           "rayipy.get(rich.remote(2)); time.sleep(1.0)"),
                             new_code_cell("%cluster stop")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    NotebookClient(nb, timeout=120, kernel_name="python3", store_widget_state=True).execute()
    outputs = widget_outputs(nb, 2)
    displays = [o for o in outputs if o["output_type"] == "display_data"]
    assert any({"text/html", "text/plain"} <= set(o["data"]) for o in displays), outputs
    html = [o["data"]["text/html"] for o in displays if "text/html" in o["data"]]
    assert html == ["<b>bold 1</b>"]
    pngs = [o["data"]["image/png"] for o in displays if "image/png" in o["data"]]
    assert len(pngs) == (1 if have_matplotlib else 0)
    if have_matplotlib:
        assert base64.b64decode(pngs[0]).startswith(b"\x89PNG")
    text = "".join(o.get("text", "") for o in outputs)
    assert "before 1" in text and "<IPython.core.display.HTML" not in text
    # Printed text before the display comes before it.
    kinds = [o["output_type"] for o in outputs
             if o["output_type"] == "display_data" and "text/html" in o["data"]
             or o["output_type"] == "stream" and "before 1" in o["text"]]
    assert kinds == ["stream", "display_data"]
    # No widget: the bundle is a display_data output of the cell itself.
    direct = [o for o in nb.cells[4].outputs if o.output_type == "display_data"]
    assert [o.data.get("text/html") for o in direct] == ["<b>bold 2</b>"]
