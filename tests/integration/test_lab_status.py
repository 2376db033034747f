"""The kernel side of the JupyterLab sidebar (rayipy/jupyter/lab.py), without a browser.

The status snapshot on a real cluster; the publisher thread with a fake comm; and the
whole channel through a real ipykernel, spoken to as the sidebar does: a silent
execute_request whose user_expressions open the comm, then pushes, then comm_close.
"""

from __future__ import annotations

import queue
import time

import pytest

import rayipy
from helpers import child_processes, wait_until
from rayipy.jupyter import lab


def test_status_without_a_cluster_says_how_to_start_one_and_starts_nothing():
    assert not rayipy.is_initialized()
    status = lab.status()
    assert status["connected"] is False and status["version"] == lab.STATUS_VERSION
    assert "rayipy.init()" in status["reason"] and "%cluster start" in status["reason"]
    assert not rayipy.is_initialized() and not child_processes()


def test_status_shows_nodes_resources_in_use_and_this_drivers_tasks(fresh_cluster, tmp_path):
    fresh_cluster(num_cpus=2, num_gpus=1)
    gate = tmp_path / "gate"

    @rayipy.remote
    def gated(i):
        import os
        import time
        while not os.path.exists(str(gate)):
            time.sleep(0.01)
        if i == 2:
            raise ValueError("fails on purpose")
        return i

    status = lab.status()
    assert status["connected"] is True and status["reason"] == ""
    assert status["started_locally"] is True and status["address"].startswith("127.0.0.1:")
    assert [n["resources"]["CPU"] for n in status["nodes"]] == [2.0]
    assert status["nodes"][0]["alive"] is True
    assert status["resources"]["CPU"] == {"total": 2.0, "used": 0.0}
    assert status["resources"]["GPU"] == {"total": 1.0, "used": 0.0}

    rayipy.get(rayipy.remote(lambda: 0).remote())   # leaves a worker leased to us, mostly
    one = gated.remote(0)   # alone: on that leased worker, which the head does not see run
    wait_until(lambda: lab.status()["tasks"]["running"] == 1,
               message="a task running alone did not show as running")
    refs = [one] + [gated.remote(i) for i in (1, 2)]
    busy = wait_until(lambda: (s := lab.status())["tasks"]["running"] == 2
                      and s["resources"]["CPU"]["used"] == 2.0 and s,
                      message="the running tasks never showed as running, using both CPUs")
    assert busy["tasks"]["pending"] == 3 and busy["tasks"]["queued"] == 1
    gate.touch()
    rayipy.wait(refs, num_returns=3, timeout=30)
    done = wait_until(lambda: (s := lab.status())["tasks"]["pending"] == 0 and s)
    assert (done["tasks"]["done"], done["tasks"]["failed"]) == (3, 1)   # with the quick one


def test_status_after_shutdown_is_not_connected(fresh_cluster):
    fresh_cluster(num_cpus=1)
    assert lab.status()["connected"] is True
    rayipy.shutdown()
    assert lab.status()["connected"] is False


def test_resource_usage_puts_cpu_and_gpu_first_and_counts_used_up_resources():
    usage = lab.resource_usage({"memory": 8.0, "CPU": 4.0, "disk": 1.0},
                               {"memory": 8.0, "CPU": 1.5})
    assert list(usage) == ["CPU", "GPU", "disk", "memory"]
    assert usage["CPU"] == {"total": 4.0, "used": 2.5}
    assert usage["GPU"] == {"total": 0.0, "used": 0.0}
    assert usage["disk"] == {"total": 1.0, "used": 1.0}   # not available: all of it in use


class FakeComm:
    def __init__(self) -> None:
        self.sent: queue.Queue = queue.Queue()

    def send(self, data: dict) -> None:
        self.sent.put(data)


def test_publisher_sends_changes_only_and_everything_on_refresh():
    snapshots = iter([{"n": 1}, {"n": 1}, {"n": 2}] + [{"n": 2}] * 1000)
    comm = FakeComm()
    publisher = lab.StatusPublisher(comm.send, lambda: next(snapshots), interval=0.01,
                                    last={"n": 1}).start()
    try:
        assert comm.sent.get(timeout=5) == {"type": "status", "status": {"n": 2}}
        with pytest.raises(queue.Empty):   # {"n": 2} again and again: nothing more
            comm.sent.get(timeout=0.2)
        publisher.refresh()
        assert comm.sent.get(timeout=5) == {"type": "status", "status": {"n": 2}}
    finally:
        publisher.stop()
        publisher.join(5)
    assert not publisher.running


def test_publisher_stops_when_the_comm_breaks():
    calls = []

    def broken_send(data: dict) -> None:
        calls.append(data)
        raise RuntimeError("the kernel is shutting down")

    publisher = lab.StatusPublisher(broken_send, lambda: {"n": len(calls)}, interval=0.01)
    publisher.start().join(5)
    assert not publisher.running and len(calls) == 1


@pytest.fixture
def kernel():
    """A real ipykernel, spoken to through jupyter_client; stopped with what it started."""
    from jupyter_client.manager import start_new_kernel
    manager, client = start_new_kernel(kernel_name="python3")
    try:
        yield client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=False)
        wait_until(lambda: not child_processes(), timeout=20,
                   message=f"left after the kernel stopped: {child_processes()}")


def user_expression(client, expression: str) -> dict:
    msg_id = client.execute("", silent=True, store_history=False,
                            user_expressions={"x": expression})
    while True:   # skip the replies to cells executed before
        reply = client.get_shell_msg(timeout=30)
        if reply["parent_header"]["msg_id"] == msg_id:
            return reply["content"]["user_expressions"]["x"]


def iopub_until(client, predicate, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = client.get_iopub_msg(timeout=0.2)
        except queue.Empty:
            continue
        if predicate(msg):
            return msg
    raise AssertionError(f"no matching iopub message within {timeout} s")


OPEN = "__import__('rayipy.jupyter.lab', fromlist=['_']).open_status_channel({!r}, {})"
COUNT = "__import__('rayipy.jupyter.lab', fromlist=['_']).open_channel_count()"


def test_channel_through_a_real_kernel_pushes_changes_and_stops_on_close(kernel):
    reply = user_expression(kernel, OPEN.format("sidebar-1", 0.2))
    assert reply["status"] == "ok", reply
    first = reply["data"]["application/json"]
    assert first["version"] == lab.STATUS_VERSION and first["status"]["connected"] is False

    opened = iopub_until(kernel, lambda m: m["msg_type"] == "comm_open")
    assert opened["content"]["target_name"] == lab.COMM_TARGET
    assert opened["content"]["data"]["client"] == "sidebar-1"
    comm_id = opened["content"]["comm_id"]

    # The cluster starts in a cell; the comm says so without being asked.
    kernel.execute("import rayipy; rayipy.init(num_cpus=1)")
    pushed = iopub_until(kernel, lambda m: m["msg_type"] == "comm_msg"
                         and m["content"]["comm_id"] == comm_id
                         and m["content"]["data"]["status"]["connected"]
                         and m["content"]["data"]["status"]["resources"]["CPU"]["total"] == 1.0)
    assert [n["resources"]["CPU"] for n in pushed["content"]["data"]["status"]["nodes"]] == [1.0]

    # Pushes arrive while a cell is still running (a request would wait behind it).
    cell = kernel.execute("import time\nr = rayipy.remote(lambda: 1).remote()\ntime.sleep(1.5)")
    seen = []
    iopub_until(kernel, lambda m: seen.append(m) or (
        m["msg_type"] == "status" and m["content"]["execution_state"] == "idle"
        and m["parent_header"].get("msg_id") == cell))
    assert any(m["msg_type"] == "comm_msg" and m["content"]["data"]["status"]["tasks"]["done"] == 1
               for m in seen), "no push while the cell ran"

    assert user_expression(kernel, COUNT)["data"]["text/plain"] == "1"
    close = kernel.session.msg("comm_close", {"comm_id": comm_id, "data": {}})
    kernel.shell_channel.send(close)
    wait_until(lambda: user_expression(kernel, COUNT)["data"]["text/plain"] == "0",
               message="the kernel's status thread outlived its comm")


def test_channel_refuses_bad_arguments_with_the_reason(kernel):
    reply = user_expression(kernel, OPEN.format("sidebar-1", 0))
    assert reply["status"] == "error" and reply["ename"] == "ValueError"
    assert "between" in reply["evalue"]
    reply = user_expression(kernel, OPEN.format("", 2.0))
    assert reply["status"] == "error" and reply["ename"] == "TypeError"


def test_channels_are_capped_so_closed_browser_tabs_cannot_pile_up(kernel):
    for i in range(lab.MAX_CHANNELS + 2):
        assert user_expression(kernel, OPEN.format(f"tab-{i}", 60))["status"] == "ok"
    assert user_expression(kernel, COUNT)["data"]["text/plain"] == str(lab.MAX_CHANNELS)
    threads = user_expression(
        kernel, "sum(t.name == 'rayipy-lab-status' for t in __import__('threading').enumerate())")
    wait_until(lambda: user_expression(
        kernel, "sum(t.name == 'rayipy-lab-status' for t in __import__('threading').enumerate())"
    )["data"]["text/plain"] == str(lab.MAX_CHANNELS), message=f"threads: {threads}")

