"""The dashboard page in Chromium: task stream, worker charts, failures, logs, live updates,
directly and through a Jupyter server's proxy. Screenshots go to test-artifacts/
(git-ignored): dashboard-*.png.

The cluster runs in this test's process (``cluster``); the page is opened on its
dashboard URL, and on ``/rayipy-dashboard/<port>/`` of a Jupyter server started with
the rayipy server extension.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

import psutil

import rayipy
from helpers import wait_until

from . import labkit

pytestmark = pytest.mark.timeout(240)

JS_STATE = "() => document.getElementById('conn').textContent"


@rayipy.remote
def crunch(i):
    print(f"crunch line {i}")
    time.sleep(0.02)
    return i


@rayipy.remote
def explode(i):
    print(f"explode line {i}")
    raise KeyError(f"missing key {i}")


@rayipy.remote
def latecomer():
    return 1


def _cluster_processes() -> list[psutil.Process]:
    """This process's children that are rayipy's (the browser's are the fixture's)."""
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            if "rayipy" in " ".join(process.cmdline()):
                found.append(process)
        except psutil.Error:
            continue
    return found


@pytest.fixture
def cluster():
    """A local cluster of two workers; every process of it gone when the test ends."""
    rayipy.init(num_cpus=2)
    try:
        yield
    finally:
        rayipy.shutdown()
        try:
            wait_until(lambda: not _cluster_processes(), timeout=10,
                       message=f"processes left: {_cluster_processes()}")
        finally:
            for process in _cluster_processes():
                process.kill()


def _work():
    refs = [crunch.remote(i) for i in range(30)] + [explode.remote(i) for i in range(3)]
    rayipy.wait(refs, num_returns=len(refs), timeout=60)


def _open(page, url: str) -> float:
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.requests = requests
    started = time.monotonic()
    page.goto(url)
    # Loaded: the first event drew the failures (three) and the worker cards (two).
    page.wait_for_function("() => document.querySelectorAll('#failures tbody tr').length === 3"
                           " && document.querySelectorAll('#workers .card').length === 2")
    return time.monotonic() - started


def _check_page(page) -> None:
    legend = page.locator("#legend")
    assert "crunch" in legend.inner_text() and "explode" in legend.inner_text()
    # The task stream has a lane per worker: its height says how many lanes it drew.
    height = page.evaluate("() => parseFloat(document.getElementById('stream').style.height)")
    assert height >= 2 * 16
    # Failures, with their type and message, filterable.
    rows = page.locator("#failures tbody tr")
    assert "KeyError" in rows.nth(0).inner_text() and "missing key" in rows.nth(0).inner_text()
    # Only functions that failed are offered.
    offered = page.locator("#failures-function option").all_inner_texts()
    assert offered == ["all", "explode"], offered
    page.select_option("#failures-function", "explode")
    assert rows.count() == 3
    page.select_option("#failures-state", "raised")
    assert rows.count() == 3
    # Logs: each worker's output, searchable.
    page.wait_for_function("() => document.getElementById('logs').textContent.includes('explode line 2')")
    page.fill("#logs-search", "crunch line 7")
    logs = page.locator("#logs").inner_text()
    assert "crunch line 7" in logs and "explode" not in logs
    page.fill("#logs-search", "")
    # Per worker: CPU and RSS figures and a chart.
    card = page.locator("#workers .card").nth(0)
    assert "RSS" in card.inner_text() and "MiB" in card.inner_text()
    assert "object store" in page.locator("#nodes-live").inner_text()


def test_the_page_shows_stream_workers_failures_logs_live(cluster, page):
    _work()
    url = f"http://{rayipy.get_dashboard_url()}/"
    load = _open(page, url)
    _check_page(page)
    labkit.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(labkit.ARTIFACTS / "dashboard-page.png"), full_page=True)

    # Live: tasks of a new function appear without a reload, pushed, not polled.
    sent = time.monotonic()
    rayipy.get([latecomer.remote() for _ in range(5)])
    page.wait_for_function("() => document.getElementById('legend').textContent.includes('latecomer')")
    latency = time.monotonic() - sent
    print(f"dashboard load {load:.2f} s, update latency {latency:.2f} s")
    assert latency < 5
    assert not [u for u in page.requests if u.endswith("/fragment")], "the page polled"
    assert sum(1 for u in page.requests if "api/events" in u) == 1, page.requests
    assert page.errors == []
    page.screenshot(path=str(labkit.ARTIFACTS / "dashboard-live.png"))   # the top: stream, workers


@pytest.fixture
def jupyter_server(tmp_path):
    """A Jupyter server (no Lab needed) with rayipy's proxy extension, on loopback."""
    port = labkit.free_port()
    token = "rayipy-proxy-test"
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_PLATFORM_DIRS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", "--no-browser", "--ip=127.0.0.1",
         f"--port={port}", "--allow-root", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={tmp_path}",
         '--ServerApp.jpserver_extensions={"rayipy.jupyter.server_proxy": True}'],
        env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server.log", "w"))
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2):
                return True
        except OSError:
            return process.poll() is not None
    try:
        wait_until(up, timeout=60)
        assert process.poll() is None, (tmp_path / "server.log").read_text()
        yield url, token
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def test_the_page_works_through_the_jupyter_server_proxy(cluster, page, jupyter_server):
    _work()
    url, token = jupyter_server
    port = rayipy.get_dashboard_url().rsplit(":", 1)[1]
    # Without Jupyter's login: sent to Jupyter's login page, never forwarded.
    with urllib.request.urlopen(f"{url}/rayipy-dashboard/{port}/api/status", timeout=10) as answer:
        assert "/login" in answer.url and b'"tasks"' not in answer.read()
    # With it, the JSON API too; a port nobody listens on is a clear 502.
    with urllib.request.urlopen(f"{url}/rayipy-dashboard/{port}/api/status?token={token}",
                                timeout=10) as answer:
        assert b'"tasks"' in answer.read()
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{url}/rayipy-dashboard/{labkit.free_port()}/?token={token}",
                               timeout=10)
    assert missing.value.code == 502
    load = _open(page, f"{url}/rayipy-dashboard/{port}?token={token}")
    assert page.url.startswith(f"{url}/rayipy-dashboard/{port}/")    # the slash added
    _check_page(page)
    print(f"dashboard load through the proxy {load:.2f} s")
    assert page.errors == []
    page.screenshot(path=str(labkit.ARTIFACTS / "dashboard-proxied.png"), full_page=True)
