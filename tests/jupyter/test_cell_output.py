"""A cell's task output in its output widget: merged, bounded, and saved by nbclient.
(The page reload is tests/browser/test_lab_output.py's.)"""

from __future__ import annotations

import nbformat
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from rayipy.jupyter import cell_output
from rayipy.jupyter.cell_output import merge_outputs


def stream(name: str, text: str) -> dict:
    return {"output_type": "stream", "name": name, "text": text}


def test_text_of_one_stream_is_merged_and_display_data_kept_apart():
    merged = merge_outputs([stream("stdout", "a\n")],
                           [stream("stdout", "b\n"), stream("stderr", "oops\n"),
                            {"output_type": "display_data", "data": {"text/html": "<b>x</b>"},
                             "metadata": {}},
                            stream("stdout", "c\n"), stream("stdout", "d\n")])
    assert [o["output_type"] for o in merged] == ["stream", "stream", "display_data", "stream"]
    assert merged[0]["text"] == "a\nb\n" and merged[1]["text"] == "oops\n"
    assert merged[3]["text"] == "c\nd\n"


def test_the_kept_text_is_bounded_and_says_what_it_dropped(monkeypatch):
    monkeypatch.setattr(cell_output, "MAX_CHARS", 100)
    lines = "".join(f"line {i:03d}\n" for i in range(30))     # 270 characters
    merged = merge_outputs([], [stream("stdout", lines)])
    text = merged[0]["text"]
    assert text.startswith("[earlier task output dropped") and text.endswith("line 029\n")
    assert len(text) <= 100 + 60 and "line 000" not in text


CELL_TASKS = ("import rayipy, time\n"
              "@rayipy.remote\n"
              "def talk(i):\n"
              "    for j in range(4):\n"
              "        print(f'task {i} line {j}', flush=True)\n"
              "        time.sleep(0.05)\n"
              "    return i\n"
              "refs = [talk.remote(i) for i in range(10)]\n")


def test_forty_lines_from_a_cells_tasks_are_saved_in_its_output_widget(monkeypatch):
    monkeypatch.setenv("RAYIPY_DEDUP_LOGS", "0")   # the kernel's: every line, as printed
    nb = new_notebook(cells=[new_code_cell("%load_ext rayipy\n%cluster start -n 2"),
                             new_code_cell(CELL_TASKS),
                             # the cell above returned at once; this one waits for the rest
                             new_code_cell("rayipy.get(refs); time.sleep(1.0)"),
                             new_code_cell("%cluster stop")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    NotebookClient(nb, timeout=120, kernel_name="python3", store_widget_state=True).execute()
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    views = [o.data["application/vnd.jupyter.widget-view+json"]["model_id"]
             for o in nb.cells[1].outputs if o.output_type == "display_data"
             and "application/vnd.jupyter.widget-view+json" in o.data]
    outputs = [state[v] for v in views if state[v]["model_name"] == "OutputModel"]
    assert len(outputs) == 1, "one output widget, shown by the submitting cell"
    text = "".join(o.get("text", "") for o in outputs[0]["state"]["outputs"])
    lines = [line for line in text.splitlines() if " line " in line]
    assert len(lines) == 40, text
    for i in range(10):
        for j in range(4):
            assert f"task {i} line {j}" in text
    # ... and none of it went to the cell that happened to run when it arrived
    assert not [o for o in nb.cells[2].outputs if o.output_type == "stream"
                and "line" in o.text]
