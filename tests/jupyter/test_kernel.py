"""The extension in a real ipykernel, watched message by message through jupyter_client
(as a frontend sees it: nbclient does not record output routed to a finished cell)."""

from __future__ import annotations

import time

from jupyter_helpers import stream_text

DEFINE = ("import rayipy, time\n"
          "@rayipy.remote\n"
          "def late(tag, delay):\n"
          "    time.sleep(delay)\n"
          "    print('late output', tag, flush=True)\n"
          "    return tag\n"
          "@rayipy.remote\n"
          "def sleepy(seconds):\n"
          "    time.sleep(seconds)\n"
          "    return seconds\n")


def bar_shown_by(cell: str):
    """A condition on iopub messages: the cell's get shows its automatic progress bar,
    so the get is blocking (the moment to interrupt it, not a moment before)."""
    return lambda m: (m["msg_type"] == "comm_open" and m["parent_header"].get("msg_id") == cell
                      and m["content"]["data"]["state"].get("_model_name") == "HBoxModel")


def with_text(messages: list[dict], marker: str) -> list[dict]:
    return [m for m in messages if m["msg_type"] == "stream" and marker in m["content"]["text"]]


def test_task_output_lands_under_the_cell_that_submitted_it(kernel):
    k = kernel()
    k.run("%cluster start -n 2")
    # The stream route (the output widget's route is test_cell_output.py's)
    k.run("%config RayipyMagics.output_widget = False")
    k.run(DEFINE)
    a = k.execute("ref_a = late.remote('A-one', 1.0)")
    k.read_until_idle(a)
    a2 = k.execute("refs_a2 = [late.remote(f'A-two-{side}', 1.0) for side in ('left', 'right')]")
    k.read_until_idle(a2)
    # Cell B starts before A's tasks print, and is still running when they do.
    b = k.execute("import time\nprint('B starts', flush=True)\ntime.sleep(3)\nprint('B ends')")
    b_messages = k.read_until_idle(b, timeout=30)
    assert "B starts" in stream_text(b_messages) and "A-" not in stream_text(b_messages)
    [one] = with_text(k.messages, "A-one")
    assert one["parent_header"]["msg_id"] == a
    assert one["content"]["text"] == "late output A-one\n"          # one task: unlabelled
    two = with_text(k.messages, "A-two")
    assert {m["parent_header"]["msg_id"] for m in two} == {a2}
    text = "".join(m["content"]["text"] for m in two)
    assert text.count("(late pid=") == 2                             # several tasks: labelled

    # And while the kernel is idle: output of a task submitted by cell C arrives under C.
    c = k.execute("ref_c = late.remote('C-idle', 0.5)")
    k.read_until_idle(c)
    late_c = k.read_until(lambda m: m["msg_type"] == "stream" and "C-idle" in m["content"]["text"],
                          timeout=30)
    assert late_c["parent_header"]["msg_id"] == c


def test_the_widget_keeps_updating_while_the_kernel_is_idle(kernel):
    k = kernel()
    k.run("%cluster start -n 2")
    k.run(DEFINE)
    started = time.monotonic()
    cell = k.execute("refs = [sleepy.remote(0.15) for _ in range(16)]\nbar = rayipy.progress(refs)")
    messages = k.read_until_idle(cell)
    opens = [m for m in messages if m["msg_type"] == "comm_open"
             and m["content"]["data"]["state"].get("_model_name") == "HBoxModel"]
    assert len(opens) == 1, "one progress widget"
    comm_id = opens[0]["content"]["comm_id"]
    assert opens[0]["content"]["data"]["state"]["total"] == 16
    views = [m for m in messages if m["msg_type"] == "display_data"
             and "application/vnd.jupyter.widget-view+json" in m["content"]["data"]]
    # (the cell's output widget, for its tasks' output, is shown too)
    assert comm_id in [v["content"]["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
                       for v in views]
    idle_at = time.monotonic()

    def final_update(m: dict) -> bool:
        return (m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == comm_id
                and m["content"]["data"].get("state", {}).get("complete") is True)
    final = k.read_until(final_update, timeout=30)
    finished_at = time.monotonic()
    updates = [m for m in k.messages if m["msg_type"] == "comm_msg"
               and m["content"]["comm_id"] == comm_id]
    after_idle = [m for m in updates if m not in messages]
    assert after_idle, "the bar moved after the cell went idle"
    assert final["content"]["data"]["state"]["done"] == 16
    # At most ~10 updates a second, however many results arrive.
    assert len(updates) <= 12 * (finished_at - started) + 2, (len(updates), finished_at - started)
    assert finished_at > idle_at


def test_a_kernel_without_the_extension_shows_the_widget_too(kernel):
    # No %load_ext: importing rayipy registers the Jupyter layer's widget by itself.
    k = kernel(load_ext=False)
    k.run("import rayipy\nrayipy.init(num_cpus=2)")
    k.run(DEFINE)
    cell = k.execute("refs = [sleepy.remote(0.1) for _ in range(6)]\nbar = rayipy.progress(refs)")
    messages = k.read_until_idle(cell)
    opens = [m for m in messages if m["msg_type"] == "comm_open"
             and m["content"]["data"]["state"].get("_model_name") == "HBoxModel"]
    assert len(opens) == 1, "one progress widget, in the cell that asked for it"
    assert opens[0]["content"]["data"]["state"]["total"] == 6
    comm_id = opens[0]["content"]["comm_id"]
    final = k.read_until(lambda m: m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == comm_id
                         and m["content"]["data"].get("state", {}).get("complete") is True,
                         timeout=30)
    assert final["content"]["data"]["state"]["done"] == 6
    magics = k.run("print('cluster' in get_ipython().magics_manager.magics['line'])")
    assert stream_text(magics).strip() == "False", "the extension stayed unloaded"


def test_a_slow_get_shows_the_widget_in_its_cell(kernel):
    k = kernel()
    k.run("%cluster start -n 2")
    k.run(DEFINE)
    k.run("%config RayipyMagics.progress_threshold = 0.2")
    messages = k.run("values = rayipy.get([sleepy.remote(0.2) for _ in range(6)])")
    opens = [m for m in messages if m["msg_type"] == "comm_open"
             and m["content"]["data"]["state"].get("_model_name") == "HBoxModel"]
    assert len(opens) == 1
    comm_id = opens[0]["content"]["comm_id"]
    states = [m["content"]["data"]["state"] for m in messages
              if m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == comm_id]
    # The get returned after the bar showed its final state, inside the cell.
    assert any(s.get("complete") and s.get("done") == 6 for s in states)
    quiet = k.run("rayipy.get([sleepy.remote(0.01) for _ in range(3)])")   # fast: no bar
    assert not [m for m in quiet if m["msg_type"] == "comm_open"
                and m["content"]["data"]["state"].get("_model_name") == "HBoxModel"]


def test_interrupt_cancels_what_the_cell_waits_on_and_returns_at_once(kernel):
    k = kernel()
    k.run("%cluster start -n 2")
    k.run("%config RayipyMagics.progress_threshold = 0.1")
    k.run(DEFINE)
    cell = k.execute("refs = [sleepy.remote(600) for _ in range(3)]\n"
                     "other = sleepy.remote(2)\n"
                     "rayipy.get(refs)")
    k.read_until(bar_shown_by(cell))
    k.km.interrupt_kernel()
    reply = k.reply(cell, timeout=20)   # tasks of 600 s: the prompt came back without them
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
    k.read_until_idle(cell)
    messages = k.run("import rayipy.exceptions as rx\n"
                     "outcomes = []\n"
                     "for r in refs:\n"
                     "    try:\n"
                     "        rayipy.get(r, timeout=20)\n"
                     "    except rx.TaskCancelledError:\n"
                     "        outcomes.append('cancelled')\n"
                     "print(outcomes, rayipy.get(other), rayipy.get(sleepy.remote(0)))")
    # Only what the cell waited on was cancelled; the cluster survived the interrupt.
    assert "['cancelled', 'cancelled', 'cancelled'] 2 0" in stream_text(messages)


def test_tasks_that_ignore_the_interrupt_are_killed_after_the_grace_period(kernel):
    k = kernel()
    k.run("%cluster start -n 2")
    k.run("%config RayipyMagics.interrupt_grace = 0.5")
    k.run("%config RayipyMagics.progress_threshold = 0.1")
    k.run("%config RayipyMagics.output_widget = False")   # 'started' as stream messages
    k.run("import rayipy, time\n"
          "@rayipy.remote\n"
          "def stubborn():\n"
          "    print('started', flush=True)\n"
          "    while True:\n"
          "        try:\n"
          "            time.sleep(0.05)\n"
          "        except KeyboardInterrupt:\n"
          "            pass\n")
    cell = k.execute("refs = [stubborn.remote() for _ in range(2)]\n"
                     "rayipy.get(refs)")
    # Both run (their output is routed to this cell), and the get blocks, before the interrupt.
    k.read_until(lambda m: m["msg_type"] == "stream"
                 and stream_text(k.messages).count("started") >= 2, timeout=30)
    if not [m for m in k.messages if bar_shown_by(cell)(m)]:
        k.read_until(bar_shown_by(cell))
    k.km.interrupt_kernel()
    assert k.reply(cell, timeout=20)["content"]["ename"] == "KeyboardInterrupt"
    messages = k.run("import rayipy.exceptions as rx\n"
                     "kinds = []\n"
                     "for r in refs:\n"
                     "    try:\n"
                     "        rayipy.get(r, timeout=30)\n"
                     "    except rx.TaskCancelledError as e:\n"
                     "        kinds.append('cancelled')\n"
                     "print(kinds)")
    assert "['cancelled', 'cancelled']" in stream_text(messages)


def test_interrupt_while_a_cell_waits_on_an_actor_call(kernel):
    """The cell's thread reads the actor's answer itself (the kernel puts Python's default
    SIGINT handler back for each cell, and rayipy takes it over for the wait): an interrupt
    still stops the cell at once, cancels the call, and the actor serves the next cell."""
    k = kernel()
    k.run("%cluster start -n 1")
    k.run("%config RayipyMagics.output_widget = False")   # 'napping' as stream messages
    k.run("import rayipy, time\n"
          "@rayipy.remote\n"
          "class Slow:\n"
          "    def nap(self, seconds):\n"
          "        print('napping', flush=True)\n"
          "        time.sleep(seconds)\n"
          "        return seconds\n"
          "actor = Slow.remote()\n"
          "for _ in range(50):\n"
          "    rayipy.get(actor.nap.remote(0))\n")
    messages = k.run("import signal\n"
                     "from rayipy.node import interrupts\n"
                     "rayipy.get(actor.nap.remote(0))\n"
                     # one write: the actor's 'napping' may arrive between two
                     "print(f'handler taken over: {signal.getsignal(signal.SIGINT) is interrupts._on_sigint}')")
    assert "handler taken over: True" in stream_text(messages)
    cell = k.execute("ref = actor.nap.remote(600)\n"
                     "rayipy.get(ref)")
    k.read_until(lambda m: m["msg_type"] == "stream" and m["parent_header"].get("msg_id") == cell
                 and "napping" in m["content"]["text"], timeout=30)
    k.km.interrupt_kernel()
    reply = k.reply(cell, timeout=20)
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
    k.read_until_idle(cell)
    messages = k.run("import rayipy.exceptions as rx\n"
                     "try:\n"
                     "    rayipy.get(ref, timeout=20)\n"
                     "except rx.TaskCancelledError:\n"
                     "    print('cancelled')\n"
                     "print([rayipy.get(actor.nap.remote(0)) for _ in range(20)])")
    assert "cancelled" in stream_text(messages)
    assert "[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]" in stream_text(messages)
