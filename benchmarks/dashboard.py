#!/usr/bin/env python3
"""dashboard.py -- what an open dashboard costs, and how live it is, while 10,000 tasks run.

On one local cluster (``init(num_cpus=2)``), --reps times each, alternating:

  idle   10,000 tiny tasks (``time.sleep(0.0005)``), nobody looking at the dashboard;
  page   the same with the dashboard open in headless Chromium (the real page: its event
         stream, canvas and tables) and one more event-stream reader in this script.

Figures:

  head CPU   CPU seconds the head process spent during the run (psutil), idle vs page:
             the difference is what serving the page costs the head (snapshots, JSON,
             the HTTP threads share its GIL).
  wall       seconds from the first submit to the last result.
  load       seconds from ``page.goto`` to the first event drawn (failures table and
             worker cards present), mid-run.
  latency    for every task bar the reader received: arrival time minus the task's end
             time as the head recorded it; median and 95th percentile (the push
             interval is 1 s, so ~0.5 s is expected).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/dashboard.py            # --reps 3
    PYTHONPATH=$PWD .venv/bin/python benchmarks/dashboard.py --reps 1 --tasks 2000
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import threading
import time

import psutil

import rayipy

CHROMIUM = "/usr/bin/chromium"


@rayipy.remote
def tiny(i):
    time.sleep(0.0005)
    return i


def head_process() -> psutil.Process:
    for process in psutil.Process().children(recursive=True):
        if "rayipy.node.head" in " ".join(process.cmdline()):
            return process
    raise RuntimeError("no head process among this script's children")


def cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


class Reader(threading.Thread):
    """Reads api/events; records (arrival - task end) for every bar."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        host, port = url.rsplit(":", 1)
        self.connection = http.client.HTTPConnection(host, int(port), timeout=30)
        self.delays: list[float] = []
        self.stop = False

    def run(self) -> None:
        self.connection.request("GET", "/api/events")
        response = self.connection.getresponse()
        buffer = b""
        first = True
        while not self.stop:
            try:
                chunk = response.read1(65536)
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            while b"\n\n" in buffer:
                block, buffer = buffer.split(b"\n\n", 1)
                if not block.startswith(b"event:"):
                    continue
                arrived = time.time()
                event = json.loads(block.split(b"data: ", 1)[1])
                if not first:      # the first event is history, not news
                    self.delays += [arrived - (b[2] + b[3]) for b in event["stream"]["bars"]]
                first = False


def run(n: int, with_page: bool, browser) -> dict:
    head = head_process()
    url = rayipy.get_dashboard_url()
    reader = page = None
    result: dict = {"mode": "page" if with_page else "idle"}
    if with_page:
        reader = Reader(url)
        reader.start()
        page = browser.new_page()
        page.set_default_timeout(60_000)
    before = cpu(head)
    started = time.monotonic()
    refs = [tiny.remote(i) for i in range(n)]
    if page is not None:
        loading = time.monotonic()
        page.goto(f"http://{url}/")
        page.wait_for_function("() => document.querySelectorAll('#workers .card').length >= 1"
                               " && document.getElementById('conn').textContent === 'live'")
        result["load_s"] = time.monotonic() - loading
    rayipy.get(refs)
    result["wall_s"] = time.monotonic() - started
    result["head_cpu_s"] = cpu(head) - before
    if reader is not None:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:   # the last push comes within a second
            time.sleep(0.1)
        reader.stop = True
        reader.connection.close()
        delays = sorted(reader.delays)
        if delays:
            result["latency_median_s"] = statistics.median(delays)
            result["latency_p95_s"] = delays[int(0.95 * (len(delays) - 1))]
            result["bars_received"] = len(delays)
    if page is not None:
        page.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright
    rayipy.init(num_cpus=2)
    results = []
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=["--disable-gpu", "--disable-quic"])
        try:
            run(1000, False, browser)          # warm-up: workers up, function cached
            for _ in range(args.reps):
                for with_page in (False, True):
                    results.append(run(args.tasks, with_page, browser))
                    print(json.dumps(results[-1]), flush=True)
        finally:
            browser.close()
            rayipy.shutdown()
    print(f"\n| {args.tasks:,} tasks | head CPU s (median) | wall s | load s | latency median / p95 s |")
    print("|---|---|---|---|---|")
    for mode in ("idle", "page"):
        rows = [r for r in results if r["mode"] == mode]
        med = lambda key: statistics.median(r[key] for r in rows) if all(key in r for r in rows) else None
        fmt = lambda v: "-" if v is None else f"{v:.2f}"
        latency = ("-" if med("latency_median_s") is None
                   else f"{med('latency_median_s'):.2f} / {med('latency_p95_s'):.2f}")
        print(f"| {mode} | {fmt(med('head_cpu_s'))} | {fmt(med('wall_s'))} | {fmt(med('load_s'))} "
              f"| {latency} |")


if __name__ == "__main__":
    main()
