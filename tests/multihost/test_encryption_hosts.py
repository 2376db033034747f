"""Nothing a driver sends crosses the wire between hosts in clear (issue 13, point 2).

hostA runs the head and the driver, hostB the only worker node, so every task's
arguments and results, an actor's constructor and call arguments, and large values in
both directions (data ports, object store pulls) cross the veth link. tcpdump records
that link in hostA's namespace; the TCP streams are put back together from the capture
and searched for markers. With the default setting no marker is there; with
``RAYIPY_ENCRYPT=never`` on every process each one is (the test can fail).
"""

from __future__ import annotations

import re
import shutil
import signal
import struct
import subprocess
from pathlib import Path

import pytest

from helpers import wait_until
PASSWORD = "enc-test-password-0001"

#: One marker per path a value takes; the driver builds them from these names.
PATHS = ("task-argument", "task-result", "actor-constructor", "actor-call", "large-argument",
         "large-result", "put-value")


def marker(path: str) -> bytes:
    return f"MARK3R-{path}-9d41".encode()


DRIVER = """
    import numpy as np
    import rayipy
    rayipy.init(address={address!r}, password={password!r})

    def mark(path):                       # the markers are never in a function's code
        return "MARK3R-" + path + "-9d41"

    def big(path):                        # 2-3 MB of the marker, repeated
        return np.frombuffer((mark(path).encode() * 100_000), dtype=np.uint8).copy()

    @rayipy.remote(num_cpus=1)
    def echo(x, answer):
        return (len(x) if not isinstance(x, str) else x, answer)

    @rayipy.remote(num_cpus=1)
    def make_big(path):
        return big(path)

    @rayipy.remote(num_cpus=0)
    class Keeper:
        def __init__(self, secret):
            self.secret = secret
        def check(self, word):
            return word == "x" and self.secret.startswith("MARK3R")

    print(rayipy.get(echo.remote(mark("task-argument"), mark("task-result")))[0][:6])
    keeper = Keeper.remote(mark("actor-constructor"))
    print(rayipy.get(keeper.check.remote("x")), rayipy.get(keeper.check.remote(mark("actor-call"))))
    print(rayipy.get(echo.remote(big("large-argument"), "ok")))
    print(len(rayipy.get(make_big.remote("large-result"))))
    stored = rayipy.put(big("put-value"))
    print(rayipy.get(echo.remote(stored, "ok")))
    nodes = {{n["NodeManagerAddress"] for n in rayipy.nodes() if n["Alive"]}}
    print("nodes", sorted(nodes))
"""


def tcp_streams(pcap: bytes) -> dict[tuple, bytes]:
    """The TCP payloads of an Ethernet pcap file, concatenated per direction of each
    connection in capture order (a veth link neither loses nor reorders)."""
    magic = struct.unpack_from("<I", pcap)[0]
    order = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    linktype = struct.unpack_from(order + "I", pcap, 20)[0]
    assert linktype == 1, f"expected an Ethernet capture, got link type {linktype}"
    streams: dict[tuple, bytearray] = {}
    at = 24
    while at + 16 <= len(pcap):
        _sec, _usec, caplen, _len = struct.unpack_from(order + "IIII", pcap, at)
        packet = pcap[at + 16:at + 16 + caplen]
        at += 16 + caplen
        if len(packet) < 14 + 20 or packet[12:14] != b"\x08\x00":   # IPv4 only here
            continue
        ip = packet[14:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != 6:   # TCP
            continue
        total = struct.unpack_from("!H", ip, 2)[0]
        tcp = ip[ihl:total]
        offset = (tcp[12] >> 4) * 4
        key = (ip[12:16], ip[16:20], tcp[0:2], tcp[2:4])
        streams.setdefault(key, bytearray()).extend(tcp[offset:])
    return {k: bytes(v) for k, v in streams.items()}


class Capture:
    """tcpdump on one host's veth end, writing a pcap file, ready once it listens;
    ``--immediate-mode`` so that every packet is written by the time it stops."""

    def __init__(self, host, path: Path) -> None:
        self.path = path
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, "tcpdump", "-i", f"{host.netns}v", "-p", "-n",
             "-s", "0", "-B", "65536", "--immediate-mode", "-U", "-w", str(path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert self.process.stderr is not None
        line = self.process.stderr.readline()   # "listening on ...", or why not
        assert "listening on" in line, f"tcpdump did not start: {line}"

    def stop(self) -> bytes:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        assert self.process.stderr is not None
        report = self.process.stderr.read()
        # A capture with gaps cannot show that something is absent.
        counts = dict((what, int(n)) for n, what in
                      re.findall(r"(\d+) packets (captured|received by filter|dropped by kernel)",
                                 report))
        assert counts.get("dropped by kernel") == 0, report
        assert counts.get("captured") == counts.get("received by filter"), report
        return self.path.read_bytes()


def run_and_capture(two_hosts, tmp_path, setting: str | None) -> tuple[dict[tuple, bytes], str]:
    if shutil.which("tcpdump") is None:
        pytest.skip("no tcpdump binary (apt-get install tcpdump; .ci/run installs it)")
    a, b = two_hosts
    for host in (a, b):
        if setting is None:
            host.env.pop("RAYIPY_ENCRYPT", None)
        else:
            host.env["RAYIPY_ENCRYPT"] = setting
    capture = Capture(a, tmp_path / "veth.pcap")
    try:
        started = a.rayipy("start", "--head", "--node-ip-address", a.ip, "--num-cpus", "0",
                           f"--password={PASSWORD}")
        assert started.returncode == 0, started.stdout + started.stderr
        address = f"{a.ip}:6379"
        joined = b.rayipy("start", f"--address={address}", f"--password={PASSWORD}",
                          "--num-cpus", "2")
        assert joined.returncode == 0, joined.stdout + joined.stderr
        driven = a.python(DRIVER.format(address=address, password=PASSWORD), timeout=180)
        assert driven.returncode == 0, driven.stdout + driven.stderr
    finally:
        pcap = capture.stop()
    assert a.rayipy("stop").returncode == 0
    wait_until(lambda: not b.pids(), timeout=30, message="hostB's processes outlived the head")
    return tcp_streams(pcap), driven.stdout


def found(streams: dict[tuple, bytes]) -> set[str]:
    return {path for path in PATHS if any(marker(path) in data for data in streams.values())}


def test_nothing_crosses_between_hosts_in_clear_by_default(two_hosts, tmp_path):
    streams, out = run_and_capture(two_hosts, tmp_path, None)
    a, b = two_hosts
    size = {path: len(marker(path)) * 100_000 for path in PATHS}   # big() in DRIVER
    assert out.splitlines() == [
        "MARK3R", "True False", f"({size['large-argument']}, 'ok')", str(size["large-result"]),
        f"({size['put-value']}, 'ok')", f"nodes {sorted([a.ip, b.ip])}"], out
    # The capture saw the traffic: the large values crossed the link, both ways.
    assert sum(map(len, streams.values())) > sum(
        size[path] for path in ("large-argument", "large-result", "put-value"))
    assert found(streams) == set()


def test_never_leaves_everything_in_clear(two_hosts, tmp_path):
    """The control: the same run with encryption turned off everywhere shows every
    marker in the same capture, so the test above can fail."""
    streams, _out = run_and_capture(two_hosts, tmp_path, "never")
    assert found(streams) == set(PATHS)
