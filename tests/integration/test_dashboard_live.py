"""The dashboard's live endpoints on a real local cluster: the task stream, failures,
logs, CPU/RSS series (JSON), and the Server-Sent Events stream a page reads."""

from __future__ import annotations

import http.client
import json
import time

import rayipy
from helpers import wait_until
from test_dashboard import fetch


@rayipy.remote
def chatty(i):
    print(f"chatty says {i}")
    return i


@rayipy.remote
def broken(i):
    raise LookupError(f"nothing at {i}")


def api(path: str) -> dict:
    code, _, body = fetch(path)
    assert code == 200, body
    return json.loads(body)


class EventReader:
    """An open api/events stream, read event by event."""

    def __init__(self, url: str) -> None:
        host, port = url.rsplit(":", 1)
        self.connection = http.client.HTTPConnection(host, int(port), timeout=10)
        self.connection.request("GET", "/api/events")
        self.response = self.connection.getresponse()
        self.buffer = b""

    def next(self) -> dict:
        while b"\n\n" not in self.buffer or not self.buffer.split(b"\n\n", 1)[0].startswith(b"event:"):
            if b"\n\n" in self.buffer:        # a comment or the retry line: skip it
                self.buffer = self.buffer.split(b"\n\n", 1)[1]
                continue
            self.buffer += self.response.read1(65536)
        block, self.buffer = self.buffer.split(b"\n\n", 1)
        return json.loads(block.split(b"data: ", 1)[1])

    def close(self) -> None:
        self.connection.close()


def test_stream_failures_logs_and_series_as_json(fresh_cluster):
    fresh_cluster(num_cpus=2)
    refs = [chatty.remote(i) for i in range(30)] + [broken.remote(i) for i in range(3)]
    rayipy.wait(refs, num_returns=len(refs), timeout=60)
    stream = wait_until(lambda: (s := api("/api/stream")) and len(s["bars"]) == 33 and s, timeout=10)
    assert set(stream["names"]) == {"chatty", "broken"} and len(stream["lanes"]) <= 2
    assert sorted(b[4] for b in stream["bars"]).count(1) == 3          # three raised
    assert api(f"/api/stream?after={stream['next']}")["bars"] == []
    failures = api("/api/failures?function=broken")
    assert len(failures["failures"]) == 3
    assert {f["error_type"] for f in failures["failures"]} == {"LookupError"}
    assert api("/api/failures?function=chatty")["failures"] == []
    code, _, body = fetch("/api/failures?state=exploded")
    assert code == 400 and b"state must be one of" in body
    code, _, body = fetch("/api/stream?after=-1")
    assert code == 400 and b"after must be" in body
    logs = wait_until(lambda: (l := api("/api/logs?search=says%2017")) and l["lines"] and l, timeout=10)
    assert [line["text"] for line in logs["lines"]] == ["chatty says 17\n"]
    assert logs["lines"][0]["task"] == "chatty"
    # CPU and RSS per worker, from the agents' heartbeats (one a second).
    series = wait_until(lambda: (s := api("/api/series")) and any(
        len(points) >= 2 for points in s["workers"].values()) and s, timeout=10)
    worker, points = next((k, p) for k, p in series["workers"].items() if len(p) >= 2)
    assert points[-1][1] is not None and points[-1][1] >= 0 and points[-1][2] > 1_000_000
    assert any(node[-1][2] > 0 for node in series["nodes"].values())   # memory total


def test_events_push_what_is_new_and_are_bounded(fresh_cluster):
    fresh_cluster(num_cpus=2)
    rayipy.get([chatty.remote(i) for i in range(5)])
    reader = EventReader(rayipy.get_dashboard_url())
    try:
        assert reader.response.getheader("Content-Type").startswith("text/event-stream")
        first = reader.next()
        assert first["first"] and "body" in first and "workers" in first
        seen = len(first["stream"]["bars"])
        sent = time.monotonic()
        refs = [broken.remote(i) for i in range(2)]
        rayipy.wait(refs, num_returns=2, timeout=30)
        bars = []
        while len(bars) < 2:
            event = reader.next()
            assert not event["first"]
            bars += event["stream"]["bars"]
        latency = time.monotonic() - sent
        assert [b[4] for b in bars] == [1, 1] and seen == 5      # only the new ones, raised
        assert latency < 5, latency
        # Bounded: at most 8 pages stream at once; the ninth is told so.
        others = [EventReader(rayipy.get_dashboard_url()) for _ in range(7)]
        try:
            extra = EventReader(rayipy.get_dashboard_url())
            assert extra.response.status == 503
            extra.close()
        finally:
            for other in others:
                other.close()
    finally:
        reader.close()
