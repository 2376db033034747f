"""Driving a real ipykernel from tests through jupyter_client."""

from __future__ import annotations

import os
import queue
import time

import psutil

from helpers import wait_until


class Kernel:
    """A real ipykernel, driven through jupyter_client; iopub read by hand so messages of
    every cell are seen (execute_interactive drops those of other cells)."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        from jupyter_client.manager import start_new_kernel
        kwargs = {"env": {**os.environ, **env}} if env else {}
        self.km, self.kc = start_new_kernel(kernel_name="python3", **kwargs)
        self.messages: list[dict] = []   # every iopub message read so far

    def execute(self, code: str) -> str:
        return self.kc.execute(code)

    def read_until_idle(self, msg_id: str, timeout: float = 60.0) -> list[dict]:
        """Read iopub until the cell ``msg_id`` is idle (at once if its idle was read
        already); returns that cell's messages."""
        deadline = time.monotonic() + timeout
        idle = any(_is_idle(m, msg_id) for m in self.messages)
        while not idle:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"cell {msg_id} not idle within {timeout} s")
            msg = self.kc.get_iopub_msg(timeout=left)
            self.messages.append(msg)
            idle = _is_idle(msg, msg_id)
        return [m for m in self.messages if m["parent_header"].get("msg_id") == msg_id]

    def read_for(self, seconds: float) -> None:
        """Read whatever arrives during ``seconds`` (the kernel idle meanwhile)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                self.messages.append(self.kc.get_iopub_msg(timeout=left))
            except queue.Empty:
                return

    def read_until(self, condition, timeout: float = 60.0) -> dict:
        """Read iopub until a message satisfies ``condition``; returns it."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching iopub message within {timeout} s")
            msg = self.kc.get_iopub_msg(timeout=left)
            self.messages.append(msg)
            if condition(msg):
                return msg

    def reply(self, msg_id: str, timeout: float = 60.0) -> dict:
        """The cell's execute_reply. After an error, also waits for the cell's idle:
        ipykernel sends the reply, then aborts what reached it meanwhile (a cell sent at
        once would be "aborted", as in Jupyter), and is done with that by its idle."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.kc.get_shell_msg(timeout=max(0.01, deadline - time.monotonic()))
            if msg["parent_header"].get("msg_id") == msg_id:
                if msg["content"]["status"] == "error":
                    self.settle(msg_id, max(1.0, deadline - time.monotonic()))
                return msg

    def settle(self, msg_id: str, timeout: float = 60.0) -> None:
        """Wait until the cell ``msg_id`` is idle, if it is not known to be already."""
        self.read_until_idle(msg_id, timeout)

    def run(self, code: str, timeout: float = 60.0) -> list[dict]:
        """Execute and read until idle; fails the test if the cell raised."""
        msg_id = self.execute(code)
        messages = self.read_until_idle(msg_id, timeout)
        reply = self.reply(msg_id, timeout)
        errors = [m["content"] for m in messages if m["msg_type"] == "error"]
        assert reply["content"]["status"] == "ok", f"cell failed: {code!r}: {errors or reply['content']}"
        return messages

    def shutdown(self) -> None:
        """Stop the kernel's cluster, then the kernel; nothing it started may outlive it."""
        try:
            descendants = psutil.Process(self.km.provisioner.process.pid).children(recursive=True)
        except Exception:
            descendants = []
        try:
            msg_id = self.execute("import rayipy; rayipy.shutdown()")
            self.read_until_idle(msg_id, timeout=20)
        except Exception:
            pass
        finally:
            self.kc.stop_channels()
            self.km.shutdown_kernel(now=True)
            try:
                wait_until(lambda: not [p for p in descendants if alive(p)], timeout=10,
                           message="processes of the kernel outlived it")
            finally:
                for proc in descendants:
                    if alive(proc):
                        proc.kill()


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _is_idle(msg: dict, msg_id: str) -> bool:
    return (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status"
            and msg["content"]["execution_state"] == "idle")


def stream_text(messages: list[dict], name: str = "stdout") -> str:
    return "".join(m["content"]["text"] for m in messages
                   if m["msg_type"] == "stream" and m["content"]["name"] == name)
