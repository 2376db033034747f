#!/usr/bin/env python3
"""jupyter.py -- the Jupyter layer's speed goals, measured in a real kernel.

Goals (issue 5): `%cluster start -n 2` returns in <= 1 s; the progress widget sends at
most ~10 updates a second however many refs finish, and adds < 5% to the time of 10,000
tiny tasks.

Everything runs in one ipykernel started through jupyter_client (as JupyterLab would),
with `%load_ext rayipy`; the script reads the kernel's iopub channel itself, so it sees
every widget message a frontend would.

  a. `%cluster start -n 2`: wall time of the magic inside the kernel (then `%cluster
     stop`), --reps times; median and max.
  b. 10,000 no-op tasks, `rayipy.get` of the list, timed from the first submit to the
     get's return: without a bar (auto progress off) and with `rayipy.progress(refs)`
     shown before the get; runs alternate (bar, no bar, ...) on one cluster, --reps
     pairs; medians and their ratio. The same for 10,000 x time.sleep(0.001) (the seed).
  c. widget updates: for every bar of b, the comm messages of its HBox (one per redraw)
     and of all three of its widgets, divided by the bar's lifetime: redraws a second.

Run with the project's venv (it has ipykernel and jupyter_client):

    .venv/bin/python benchmarks/jupyter.py              # --reps 5
    .venv/bin/python benchmarks/jupyter.py --quick      # smoke run
    .venv/bin/python benchmarks/jupyter.py --tasks 20000 --reps 7

It prints a markdown table and writes jupyter-results.json to --out-dir (default
/tmp/rayipy-jupyter-<UTC date>). Do not run two benchmarks at once on 2 cores.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import queue
import statistics
import sys
import time
from pathlib import Path

from jupyter_client.manager import start_new_kernel


class Kernel:
    def __init__(self) -> None:
        self.km, self.kc = start_new_kernel(kernel_name="python3")
        self.messages: list[dict] = []

    def run(self, code: str, timeout: float = 600.0) -> list[dict]:
        msg_id = self.kc.execute(code)
        deadline = time.monotonic() + timeout
        mine = []
        while True:
            msg = self.kc.get_iopub_msg(timeout=max(0.01, deadline - time.monotonic()))
            msg["received"] = time.monotonic()
            self.messages.append(msg)
            if msg["parent_header"].get("msg_id") == msg_id:
                mine.append(msg)
                if msg["msg_type"] == "error":
                    raise RuntimeError(f"cell failed: {code!r}: {msg['content']['evalue']}")
                if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    return mine

    def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = self.kc.get_iopub_msg(timeout=left)
            except queue.Empty:
                return
            msg["received"] = time.monotonic()
            self.messages.append(msg)

    def value(self, code: str) -> object:
        """Run ``code``, whose last line prints one JSON value; return it."""
        out = "".join(m["content"]["text"] for m in self.run(code)
                      if m["msg_type"] == "stream" and m["content"]["name"] == "stdout")
        return json.loads(out.strip().splitlines()[-1])

    def close(self) -> None:
        try:
            self.run("import rayipy; rayipy.shutdown()", timeout=30)
        except Exception:
            pass
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


SETUP = """
import json, time
import rayipy

@rayipy.remote
def noop():
    return None

@rayipy.remote
def tiny_sleep():
    time.sleep(0.001)
    return None

def timed_get(fn, n, bar):
    start = time.perf_counter()
    refs = [fn.remote() for _ in range(n)]
    shown = rayipy.progress(refs) if bar else None
    rayipy.get(refs)
    elapsed = time.perf_counter() - start
    model = shown.widget.model_id if shown else None
    if shown:
        shown.wait(30)
    return {"seconds": elapsed, "model": model,
            "children": [c.model_id for c in shown.widget.children] if shown else [],
            "redraws": shown.redraws if shown else 0,
            "redraws_per_s": shown.redraws_per_second() if shown else 0.0}
"""


def start_times(kernel: Kernel, reps: int) -> list[float]:
    times = []
    for _ in range(reps):
        times.append(kernel.value("t = time.perf_counter()\n"
                                  "_ = get_ipython().run_line_magic('cluster', 'start -n 2')\n"
                                  "print(json.dumps(time.perf_counter() - t))"))
        kernel.run("%cluster stop")
    return times


def widget_rates(kernel: Kernel, run: dict) -> dict:
    """Redraws as the kernel counted them (after the first, per second of the bar's life),
    and the comm messages the frontend received for the bar's three widgets."""
    ids = {run["model"], *run["children"]}
    msgs = [m for m in kernel.messages if m["msg_type"] == "comm_msg" and m["content"]["comm_id"] in ids]
    received = [m["received"] for m in msgs]
    span = max(received) - min(received) if len(received) > 1 else 0.0
    return {"redraws": run["redraws"], "redraws_per_s": run["redraws_per_s"], "messages": len(msgs),
            "messages_per_s": (len(msgs) - 1) / span if span else 0.0}


def overhead(kernel: Kernel, fn: str, tasks: int, reps: int) -> dict:
    kernel.value(f"print(json.dumps(timed_get({fn}, {min(tasks, 2000)}, False)['seconds']))")  # warm up
    with_bar, without, rates = [], [], []
    for _ in range(reps):
        run = kernel.value(f"print(json.dumps(timed_get({fn}, {tasks}, True)))")
        kernel.drain(0.3)
        with_bar.append(run["seconds"])
        rates.append(widget_rates(kernel, run))
        without.append(kernel.value(f"print(json.dumps(timed_get({fn}, {tasks}, False)['seconds']))"))
    med_with, med_without = statistics.median(with_bar), statistics.median(without)
    return {"with_bar": with_bar, "without": without, "median_with": med_with,
            "median_without": med_without, "overhead": med_with / med_without - 1, "widget": rates}


def report(results: dict) -> str:
    start = results["start"]
    lines = ["| figure | value | goal |", "|---|---|---|",
             f"| `%cluster start -n 2` (median / max of {len(start)}) | "
             f"{statistics.median(start):.3f} s / {max(start):.3f} s | <= 1 s |"]
    for label, key in (("10,000 no-op tasks", "noop"), ("10,000 x sleep(1 ms)", "sleep")):
        r = results[key]
        rates = [w["redraws_per_s"] for w in r["widget"]]
        msgs = [w["messages_per_s"] for w in r["widget"]]
        lines.append(f"| {label}: get without bar / with bar (medians) | {r['median_without']:.3f} s / "
                     f"{r['median_with']:.3f} s: {r['overhead'] * 100:+.1f}% | < 5% |")
        lines.append(f"| {label}: widget redraws a second (max over runs) | {max(rates):.1f} "
                     f"({max(msgs):.1f} comm messages/s over its 3 widgets) | <= ~10 |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="2 reps of 2,000 tasks")
    parser.add_argument("--out-dir", default=None)
    args = parser.parse_args()
    reps, tasks = (2, 2000) if args.quick else (args.reps, args.tasks)
    out_dir = Path(args.out_dir or f"/tmp/rayipy-jupyter-{datetime.datetime.utcnow():%Y%m%d-%H%M%S}")
    out_dir.mkdir(parents=True, exist_ok=True)
    kernel = Kernel()
    try:
        kernel.run("%load_ext rayipy")
        kernel.run(SETUP)
        results: dict = {"tasks": tasks, "reps": reps, "python": sys.version.split()[0],
                         "cpus": os.cpu_count()}
        results["start"] = start_times(kernel, reps)
        kernel.run("%cluster start -n 2\n%config RayipyMagics.auto_progress = False")
        results["noop"] = overhead(kernel, "noop", tasks, reps)
        results["sleep"] = overhead(kernel, "tiny_sleep", tasks, reps)
    finally:
        kernel.close()
    (out_dir / "jupyter-results.json").write_text(json.dumps(results, indent=1))
    text = report(results)
    (out_dir / "jupyter-results.md").write_text(text + "\n")
    print(text)
    print(f"\n(raw samples in {out_dir / 'jupyter-results.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
