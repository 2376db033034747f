"""Ctrl-C while a script waits in get/wait: the tasks it waited on are cancelled, the
cluster survives (a terminal signals the whole foreground process group)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import sys, threading, time
    import rayipy
    rayipy.init(num_cpus=2)

    def say_when_blocked():
        # Tell the test once the main thread waits inside get/wait (ObjectTable.wait): a
        # Ctrl-C a moment earlier would interrupt the script before the call, not in it.
        main = threading.main_thread().ident
        while True:
            frame = sys._current_frames().get(main)
            while frame is not None:
                if frame.f_code.co_name == "wait" and "objects.py" in frame.f_code.co_filename:
                    print("blocked", flush=True)
                    return
                frame = frame.f_back
            time.sleep(0.01)

    @rayipy.remote
    def sleepy(seconds):
        time.sleep(seconds)
        return seconds

    refs = [sleepy.remote(600) for _ in range(3)]
    threading.Thread(target=say_when_blocked, daemon=True).start()
    try:
        if sys.argv[1] == "get":
            rayipy.get(refs)
        else:
            rayipy.wait(refs, num_returns=3)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    outcomes = []
    for ref in refs:
        try:
            rayipy.get(ref, timeout=30)
        except rayipy.exceptions.TaskCancelledError:
            outcomes.append("cancelled")
    print(outcomes, rayipy.get(sleepy.remote(0)), flush=True)
""")


@pytest.mark.parametrize("call", ["get", "wait"])
def test_ctrl_c_cancels_the_tasks_a_script_waits_on(call, tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, call], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stdout.readline() == "blocked\n"
        os.killpg(proc.pid, signal.SIGINT)   # what a terminal does on Ctrl-C
        out, err = proc.communicate(timeout=60)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    assert out == "interrupted\n['cancelled', 'cancelled', 'cancelled'] 0\n", err
