"""The dashboard on a real local cluster: what it shows while tasks run, where it listens.

Tasks here wait for a file to appear instead of sleeping, so the test decides when they
end and checks the dashboard in between.
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request

import psutil
import pytest

import rayipy
from helpers import child_processes, wait_until
from rayipy.dashboard.page import esc

NASTY = "<script>alert('x')</script><img src=x onerror=alert(1)>"


def fetch(path: str, method: str = "GET", url: str | None = None) -> tuple[int, dict, bytes]:
    url = url or rayipy.get_dashboard_url()
    request = urllib.request.Request(f"http://{url}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def status() -> dict:
    code, _, body = fetch("/api/status")
    assert code == 200, body
    return json.loads(body)


def wait_for_file(path: str) -> int:
    while not os.path.exists(path):
        time.sleep(0.01)
    return os.getpid()


def head_process() -> psutil.Process:
    [head] = [p for p in child_processes() if "rayipy.node.head" in " ".join(p.cmdline())]
    return head


def listening_ports(proc: psutil.Process) -> set[tuple[str, int]]:
    return {(c.laddr.ip, c.laddr.port) for c in proc.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN}


def test_tasks_show_as_running_then_finished(fresh_cluster, tmp_path):
    ctx = rayipy.init(num_cpus=2)
    host, port = ctx.dashboard_url.rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) >= 8265      # 8265, or the next free port
    assert rayipy.get_dashboard_url() == ctx.dashboard_url == ctx.address_info["webui_url"]
    assert f"http://{ctx.dashboard_url}" in repr(ctx)

    gate = str(tmp_path / "go")
    waiter = rayipy.remote(wait_for_file)
    refs = [waiter.remote(gate) for _ in range(3)]
    now = wait_until(lambda: (s := status())["tasks"]["running"] == 2 and s, timeout=20,
                     message="two tasks never showed as running")
    assert now["tasks"]["queued"] == 1 and now["tasks"]["finished"] == 0
    assert [t["name"] for t in now["running"]] == ["wait_for_file"] * 2
    assert all(t["started_at"] <= time.time() and t["running_s"] >= 0 for t in now["running"])
    [node] = now["nodes"]
    assert node["address"] == "127.0.0.1" and node["alive"]
    assert node["resources"]["total"]["CPU"] == 2 and node["resources"]["available"]["CPU"] == 0
    running_pids = {t["worker_pid"] for t in now["running"]}
    assert running_pids == {w["pid"] for w in node["workers"] if w["state"] == "RUNNING"}
    assert now["cluster"]["uptime_s"] > 0 and now["cluster"]["drivers"] == 1

    code, headers, page = fetch("/")
    assert code == 200 and headers["Content-Type"].startswith("text/html")
    assert b"wait_for_file" in page and b"Running tasks" in page
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    code, headers, script = fetch("/dashboard.js")
    assert code == 200 and b"EventSource(\"api/events" in script    # pushed, not polled

    open(gate, "w").close()
    pids = rayipy.get(refs)
    done = wait_until(lambda: (s := status())["tasks"]["finished"] == 3 and s, timeout=20)
    assert done["tasks"]["running"] == 0 and done["tasks"]["queued"] == 0
    assert done["nodes"][0]["tasks_done"] == 3
    code, _, body = fetch("/api/tasks")
    recent = json.loads(body)["recent"]
    assert [(t["name"], t["state"]) for t in recent] == [("wait_for_file", "FINISHED")] * 3
    assert {t["worker_pid"] for t in recent} == set(pids)
    assert json.loads(fetch("/api/health")[2])["status"] == "ok"
    in_a_task = rayipy.get(rayipy.remote(rayipy.get_dashboard_url).remote())
    assert in_a_task == ctx.dashboard_url                 # a task asks the head


def test_failed_tasks_and_actors_are_listed(fresh_cluster):
    fresh_cluster(num_cpus=2)

    @rayipy.remote
    def boom():
        raise ValueError("no")

    @rayipy.remote
    class Counter:
        def read(self):
            return 0

    counter = Counter.options(name="counter-1").remote()
    assert rayipy.get(counter.read.remote()) == 0
    with pytest.raises(ValueError):
        rayipy.get(boom.remote())
    now = wait_until(lambda: (s := status())["tasks"]["failed"] == 1 and s, timeout=20)
    [actor] = now["actors"]["list"]
    assert actor["class_name"].endswith(".Counter")   # the qualname: <locals> of this test
    assert (actor["name"], actor["state"]) == ("counter-1", "ALIVE")
    assert actor["pid"] in {w["pid"] for w in now["nodes"][0]["workers"] if w["state"] == "ACTOR"}
    recent = json.loads(fetch("/api/tasks?limit=5")[2])["recent"]
    assert ("FAILED", "raised") in [(t["state"], t["failure"]) for t in recent
                                    if t["name"].endswith(".boom")]
    rayipy.kill(counter)
    wait_until(lambda: status()["actors"]["counts"] == {"DEAD": 1}, timeout=20)


class Gate:
    """An actor whose call waits for a file: it runs on the actor's worker, which the
    head only hears about through heartbeats."""

    def wait(self, path):
        return wait_for_file(path)


def test_actor_calls_and_leased_tasks_show_from_heartbeats(fresh_cluster, tmp_path):
    fresh_cluster(num_cpus=2)
    gate = str(tmp_path / "go")
    actor = rayipy.remote(Gate).remote()
    call = actor.wait.remote(gate)
    running = wait_until(lambda: [t for t in status()["running"] if t["name"] == "Gate.wait"],
                         timeout=20, message="the actor call never showed as running")
    assert [t["via"] for t in running] == ["direct"]
    [worker] = [w for n in status()["nodes"] for w in n["workers"] if w["state"] == "ACTOR"]
    assert worker["task"]["name"] == "Gate.wait" and worker["pid"] == running[0]["worker_pid"]
    open(gate, "w").close()
    rayipy.get(call)
    wait_until(lambda: {"name": "Gate.wait", "finished": 1, "failed": 0} in [
        {k: f[k] for k in ("name", "finished", "failed")} for f in status()["functions"]],
        timeout=20, message="the finished actor call was never counted")

    # One task at a time goes to a worker leased to this driver, straight from it.
    os.remove(gate)
    waiter = rayipy.remote(wait_for_file)
    pid = rayipy.remote(os.getpid)
    for _ in range(3):   # one at a time: the first asks the head for a lease, the next use it
        assert rayipy.get(pid.remote()) > 0
    ref = waiter.remote(gate)
    now = wait_until(lambda: (s := status())["running"] and s, timeout=20,
                     message="the leased task never showed as running")
    assert [(t["name"], t["via"]) for t in now["running"]] == [("wait_for_file", "direct")]
    assert [w["state"] for n in now["nodes"] for w in n["workers"]
            if w["pid"] == now["running"][0]["worker_pid"]] == ["LEASED"]
    open(gate, "w").close()
    rayipy.get(ref)
    wait_until(lambda: status()["tasks"]["running"] == 0, timeout=20)


def test_page_escapes_a_nasty_task_name(fresh_cluster, tmp_path):
    fresh_cluster(num_cpus=1)
    gate = str(tmp_path / "go")

    def nasty(path):
        return wait_for_file(path)

    nasty.__qualname__ = NASTY
    ref = rayipy.remote(nasty).remote(gate)
    wait_until(lambda: [t["name"] for t in status()["running"]] == [NASTY], timeout=20)
    for path in ("/", "/fragment"):
        code, _, body = fetch(path)
        page = body.decode()
        assert code == 200 and esc(NASTY) in page
        assert "<img" not in page and "<script>alert" not in page
    open(gate, "w").close()
    rayipy.get(ref)


def test_a_taken_port_moves_the_dashboard_to_the_next_one(fresh_cluster):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        fresh_cluster(num_cpus=1, dashboard_port=port)
        host, actual = rayipy.get_dashboard_url().rsplit(":", 1)
        assert host == "127.0.0.1" and port < int(actual) <= port + 50
        assert fetch("/api/health")[0] == 200
        assert ("127.0.0.1", int(actual)) in listening_ports(head_process())


def test_without_the_dashboard_nothing_else_listens(fresh_cluster):
    fresh_cluster(num_cpus=1, include_dashboard=False)
    assert rayipy.get_dashboard_url() == ""
    head_port = int(rayipy.session._context.address.rsplit(":", 1)[1])
    assert listening_ports(head_process()) == {("127.0.0.1", head_port)}


def test_read_only_and_clear_errors(fresh_cluster):
    fresh_cluster(num_cpus=1, dashboard_port=0)
    url = rayipy.get_dashboard_url()
    for method in ("POST", "PUT", "DELETE"):
        code, headers, body = fetch("/api/status", method)
        assert code == 405 and headers["Allow"] == "GET, HEAD" and b"read-only" in body
    code, _, body = fetch("/nope")
    assert code == 404 and b"/api/status" in body
    code, _, body = fetch("/api/tasks?limit=lots")
    assert code == 400 and b"limit" in body
    rayipy.shutdown()
    with pytest.raises(urllib.error.URLError):
        fetch("/api/health", url=url)


def test_bad_dashboard_options_say_what_is_wrong():
    with pytest.raises(TypeError, match="dashboard_port"):
        rayipy.init(dashboard_port=70000)
    with pytest.raises(TypeError, match="include_dashboard"):
        rayipy.init(include_dashboard="yes")
    with pytest.raises(TypeError, match="dashboard_host"):
        rayipy.init(dashboard_host=8265)
    assert not rayipy.is_initialized()


# -- who may read it (issue 13, point 5) ---------------------------------------------------
@pytest.fixture
def lone_head(tmp_path):
    """Start a head of our own (no agent), its stderr into ``head.log`` as `rayipy start`
    does; returns (dashboard url as the head prints it, the log's path)."""
    import subprocess
    import sys
    from rayipy.transport.endpoint import free_tcp_port

    procs = []

    def start(*dashboard_args: str, host: str = "127.0.0.1") -> tuple[str, str]:
        log_path = tmp_path / "head.log"
        env = dict(os.environ, RAYIPY_CLUSTER_KEY=os.urandom(32).hex())
        with open(log_path, "ab") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "rayipy.node.head", "--host", host, "--port",
                 str(free_tcp_port(host)), "--dashboard-port", "0", *dashboard_args],
                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log_file)
        procs.append(proc)
        assert proc.stdout is not None
        for line in proc.stdout:
            text = line.decode()
            if text.startswith("rayipy dashboard at http://"):
                return text.split("http://", 1)[1].strip(), str(log_path)
        raise AssertionError(f"the head printed no dashboard: {open(log_path).read()}")

    try:
        yield start
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(10)
            except Exception:
                proc.kill()
                proc.wait()
            proc.stdout.close()


def raw_get(host_port: str, path: str, headers: dict[str, str]) -> tuple[int, dict, bytes]:
    """A GET with exactly these headers (urllib would set Host itself)."""
    import http.client
    host, port = host_port.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_the_dashboard_listens_on_loopback_unless_asked(lone_head):
    # A head on every interface (as `rayipy start --head` on a LAN address): its
    # dashboard still listens on loopback only, and asks no token there.
    url, _ = lone_head(host="0.0.0.0")
    host, port = url.rsplit(":", 1)
    assert host == "127.0.0.1" and "token" not in url
    [head] = [p for p in psutil.Process().children() if "rayipy.node.head" in " ".join(p.cmdline())]
    assert ("127.0.0.1", int(port)) in listening_ports(head)
    assert ("0.0.0.0", int(port)) not in listening_ports(head)
    assert raw_get(url, "/api/health", {"Host": f"localhost:{port}"})[0] == 200


def test_a_rebound_host_name_is_refused(lone_head):
    url, _ = lone_head()
    port = url.rsplit(":", 1)[1]
    # A page on evil.example, its name pointed at 127.0.0.1 (DNS rebinding), sends its name.
    for path in ("/", "/api/status", "/api/tasks", "/dashboard.js"):
        code, _, body = raw_get(url, path, {"Host": f"evil.example:{port}"})
        assert code == 403 and b"Host" in body, path
    assert raw_get(url, "/api/status", {})[0] == 403      # no Host at all
    assert raw_get(url, "/api/status", {"Host": url})[0] == 200


def test_beyond_loopback_every_request_needs_the_token(lone_head):
    url, _ = lone_head("--dashboard-host", "0.0.0.0")
    address, _, query = url.partition("/?token=")
    token = query
    assert len(token) >= 32, url
    port = address.rsplit(":", 1)[1]
    local = f"127.0.0.1:{port}"
    host = {"Host": address}
    for path in ("/", "/api/status", "/api/tasks", "/api/health", "/fragment", "/dashboard.js"):
        code, _, body = raw_get(local, path, host)
        assert code == 403 and b"token" in body, path
        assert raw_get(local, path + "?token=wrong", host)[0] == 403
    code, headers, _ = raw_get(local, f"/?token={token}", host)
    assert code == 200
    cookie = headers["Set-Cookie"].split(";", 1)[0]
    assert "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]
    # The page's own requests carry the cookie; programs may send a bearer header.
    assert raw_get(local, "/api/status", {**host, "Cookie": cookie})[0] == 200
    assert raw_get(local, "/api/status", {**host, "Authorization": f"Bearer {token}"})[0] == 200
    assert raw_get(local, f"/api/status?token={token}", {"Host": "evil.example"})[0] == 403


def test_clients_that_hang_up_leave_no_tracebacks_in_the_log(lone_head):
    import struct
    url, log_path = lone_head()
    host, port = url.rsplit(":", 1)
    request = f"GET / HTTP/1.1\r\nHost: {url}\r\n\r\n".encode()
    for _ in range(200):
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            conn.sendall(request)
            conn.recv(1)        # the response has begun
            # Close with a reset (linger 0): the server's next write fails at once.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    assert raw_get(url, "/api/health", {"Host": url})[0] == 200   # it serves on
    log = open(log_path).read()
    for noise in ("Traceback", "Exception occurred", "BrokenPipe", "ConnectionReset"):
        assert noise not in log, log[:2000]
