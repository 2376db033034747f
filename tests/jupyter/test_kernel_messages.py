"""What a notebook user reads, checked in a real ipykernel through jupyter_client: cell
numbers, tracebacks of %%remote functions, the line an interrupt leaves, the saved
fallback of a progress bar."""

from __future__ import annotations

import re

from test_kernel import DEFINE, bar_shown_by


def errors(messages: list[dict]) -> list[dict]:
    return [m["content"] for m in messages if m["msg_type"] == "error"]


def failing_cell(k, code: str) -> tuple[int, str]:
    """Run a cell that fails: (its execution count, its traceback as one text)."""
    msg_id = k.execute(code)
    messages = k.read_until_idle(msg_id)
    reply = k.reply(msg_id)
    assert reply["content"]["status"] == "error", code
    [error] = errors(messages)
    return reply["content"]["execution_count"], "\n".join(error["traceback"])


def test_an_error_names_the_cell_by_its_own_number(kernel):
    k = kernel()
    k.run("%cluster start -n 1")
    k.run("x = 1")
    number, text = failing_cell(k, "%%remote --run\nvalue = 5\nraise KeyError(value)\n")
    assert f"remote task 'In[{number}]'" in text, (number, text)
    assert f"<cell In[{number}] (remote)>" in text
    number, text = failing_cell(k, "%remote 1 / 0")
    assert f"remote task 'In[{number}]'" in text, (number, text)


def test_a_remote_cells_functions_show_their_cell_as_ipython_does(kernel):
    k = kernel()
    k.run("%cluster start -n 1")
    define = k.execute("%%remote\ndef boom(x):\n    y = x + 1\n    raise ValueError(f'bad {y}')\n")
    k.read_until_idle(define)
    defined_in = k.reply(define)["content"]["execution_count"]
    number, text = failing_cell(k, "import rayipy\nrayipy.get(boom.remote(3))")
    # The remote frame of the %%remote cell's function, as IPython writes its own frames:
    assert f"Cell In[{defined_in}], line 3, in boom" in text, text
    assert "ipykernel_" not in text and "bad 4" in text


def test_an_interrupted_wait_says_in_one_line_what_it_cancelled(kernel):
    k = kernel()
    k.run("%cluster start -n 2")
    k.run("%config RayipyMagics.progress_threshold = 0.1")
    k.run(DEFINE)
    cell = k.execute("refs = [sleepy.remote(600) for _ in range(3)]\n"
                     "rayipy.get(refs)")
    k.read_until(bar_shown_by(cell))
    k.km.interrupt_kernel()
    reply = k.reply(cell, timeout=20)
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
    [error] = errors(k.read_until_idle(cell))
    assert len(error["traceback"]) == 1, error["traceback"]
    assert re.sub(r"\x1b\[\d*m", "", error["traceback"][0]) == \
        "KeyboardInterrupt: interrupted: 3 tasks cancelled"
    # An interrupt outside rayipy keeps IPython's own traceback.
    cell = k.execute("import time\nprint('sleeping', flush=True)\ntime.sleep(600)")
    # Interrupt once the cell's code runs: "busy" comes before it does, and an interrupt
    # then lands in the kernel's own code, with no error for this cell.
    k.read_until(lambda m: m["msg_type"] == "stream" and m["parent_header"].get("msg_id") == cell
                 and "sleeping" in m["content"]["text"])
    k.km.interrupt_kernel()
    [error] = errors(k.read_until_idle(cell, timeout=20))
    assert "time.sleep(600)" in re.sub(r"\x1b\[\d*m", "", "\n".join(error["traceback"]))


def test_a_saved_bar_falls_back_to_its_final_counts_not_its_first():
    """Where the widget's model is gone (a saved notebook reopened with JupyterLab's
    default settings), the display's text/plain is what remains: it must be the end."""
    import nbformat
    from nbclient import NotebookClient
    from nbformat.v4 import new_code_cell, new_notebook
    nb = new_notebook(cells=[
        new_code_cell("%load_ext rayipy\n%cluster start -n 2"),
        new_code_cell("import rayipy\n"
                      "@rayipy.remote\n"
                      "def f(x):\n"
                      "    if x % 10 == 9:\n"
                      "        raise ValueError(x)\n"
                      "    return x\n"
                      "bar = rayipy.progress([f.remote(i) for i in range(40)])"),
        new_code_cell("bar.wait(60)"),
        new_code_cell("%cluster stop"),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(nb, timeout=120, kernel_name="python3", store_widget_state=True).execute()
    # The cell shows the bar, and the output widget its tasks print into: the bar's is
    # the display whose text fallback is the progress line.
    [shown] = [o for o in nb.cells[1].outputs if o.output_type == "display_data"
               and o["data"].get("text/plain", "").startswith("rayipy progress")]
    assert "application/vnd.jupyter.widget-view+json" in shown["data"]
    assert shown["data"]["text/plain"].startswith("rayipy progress: 36/40 done, 4 failed"), shown
    nbformat.validate(nb)
