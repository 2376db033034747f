"""Ctrl-C while a script waits in get/wait: the tasks it waited on are cancelled, the
cluster survives (a terminal signals the whole foreground process group)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

SAY_WHEN_BLOCKED = textwrap.dedent("""
    import sys, threading, time

    def say_when_blocked(*places):
        # Tell the test once the main thread waits in one of places, (file, function): a
        # Ctrl-C a moment earlier would interrupt the script before the call, not in it.
        main = threading.main_thread().ident
        while True:
            frame = sys._current_frames().get(main)
            while frame is not None:
                code = frame.f_code
                if any(code.co_filename.endswith(file) and code.co_name == function
                       for file, function in places):
                    print("blocked", flush=True)
                    return
                frame = frame.f_back
            time.sleep(0.01)

    WAITING = ("objects.py", "wait")                        # ObjectTable.wait: the I/O thread reads
    READING_ITS_OWN = ("direct_calls.py", "_read_until")    # this thread reads the answers
""")


def run_interrupted(script: str, *args: str, cwd) -> tuple[str, str]:
    """Run a script; once it says "blocked", Ctrl-C it as a terminal does (its whole
    process group). Returns its stdout and stderr."""
    proc = subprocess.Popen([sys.executable, "-c", SAY_WHEN_BLOCKED + script, *args], cwd=cwd,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        assert proc.stdout.readline() == "blocked\n"
        os.killpg(proc.pid, signal.SIGINT)
        return proc.communicate(timeout=60)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


SCRIPT = textwrap.dedent("""
    import rayipy
    rayipy.init(num_cpus=2)

    @rayipy.remote
    def sleepy(seconds):
        time.sleep(seconds)
        return seconds

    refs = [sleepy.remote(600) for _ in range(3)]
    threading.Thread(target=say_when_blocked, args=(WAITING, READING_ITS_OWN),
                     daemon=True).start()
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
    out, err = run_interrupted(SCRIPT, call, cwd=tmp_path)
    assert out == "interrupted\n['cancelled', 'cancelled', 'cancelled'] 0\n", err


ACTOR_SCRIPT = textwrap.dedent("""
    import rayipy
    rayipy.init(num_cpus=1)

    @rayipy.remote
    class Slow:
        def nap(self, seconds):
            time.sleep(seconds)
            return seconds

    actor = Slow.remote()
    rayipy.get(actor.nap.remote(0))
    ref = actor.nap.remote(600)
    threading.Thread(target=say_when_blocked, args=(READING_ITS_OWN,), daemon=True).start()
    try:
        rayipy.get(ref)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    try:
        rayipy.get(ref, timeout=30)
    except rayipy.exceptions.TaskCancelledError:
        print("cancelled", flush=True)
    print(rayipy.get(actor.nap.remote(0)), flush=True)
""")


def test_ctrl_c_while_a_script_waits_on_an_actor_call(tmp_path):
    """The main thread reads the actor's answer itself (direct_calls.wait_on_direct);
    Ctrl-C still interrupts it at once, cancels the call, and the actor goes on."""
    out, err = run_interrupted(ACTOR_SCRIPT, cwd=tmp_path)
    assert out == "interrupted\ncancelled\n0\n", err


STORM_SCRIPT = textwrap.dedent("""
    import os, signal, threading, time
    import rayipy
    rayipy.init(num_cpus=1)

    @rayipy.remote
    class Echo:
        def echo(self, value):
            return value

    actor = Echo.remote()
    in_get = threading.Event()
    done = threading.Event()
    lock = threading.Lock()
    sent, consumed = [0], [0]

    def storm():
        # Ctrl-C again and again while the main thread may be in get, one at a time (the
        # next only once the last was caught), never while it submits: submitting is the
        # one step of this loop that cannot simply be done again.
        while not done.is_set():
            time.sleep(0.0005)
            with lock:
                if in_get.is_set() and consumed[0] == sent[0]:
                    sent[0] += 1
                    os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=storm, daemon=True).start()
    i, ref = 0, None
    while i < 2000:
        try:
            if ref is None:
                in_get.clear()
                with lock:
                    pass
                while consumed[0] != sent[0]:   # one in flight lands here
                    time.sleep(0.0001)
                ref = actor.echo.remote(i)
            in_get.set()
            value = rayipy.get(ref, timeout=30)
            assert value == i, (value, i)
            ref = None
            i += 1
        except KeyboardInterrupt:
            consumed[0] += 1
        except rayipy.exceptions.TaskCancelledError:
            ref = None                          # cancelled by the interrupt: send it again
    in_get.clear()
    done.set()
    while True:
        try:
            with lock:
                pass
            while consumed[0] != sent[0]:   # the last one in flight lands here
                time.sleep(0.0001)
            break
        except KeyboardInterrupt:
            consumed[0] += 1
    print("ok", sent[0] > 100, flush=True)
""")


def test_a_storm_of_ctrl_c_during_actor_calls_loses_no_answer(tmp_path):
    """Interrupts land at every point of reading and handling answers: none is lost, the
    connection is never cut mid-message (a lost answer would make get time out)."""
    proc = subprocess.run([sys.executable, "-c", STORM_SCRIPT], cwd=tmp_path, text=True,
                          capture_output=True, timeout=90, start_new_session=True)
    assert proc.stdout == "ok True\n", proc.stderr[-3000:]
