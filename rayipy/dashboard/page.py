"""The dashboard page: HTML rendered from a snapshot, plus its small script and style.

One renderer, on the server: ``render_page`` gives the whole page and ``render_body`` the
part the script swaps in every second (fetched from ``fragment``). Every value that comes
from the cluster (task, function and actor names, addresses, errors) goes through ``esc``;
the script never builds HTML from data itself, and the server also forbids inline
scripts (Content-Security-Policy), so a task named ``<script>...`` shows as text.

No build step and nothing from the network: the machine may be offline. URLs are
relative, so the page also works behind a path prefix (a Jupyter server proxy).
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any, Iterable

from rayipy.dashboard.snapshot import Snapshot, tasks_view
from rayipy.units import format_bytes

RECENT_SHOWN = 30      # recent tasks on the page (the API gives up to the buffer's size)
STALE_SECONDS = 3.0    # older data is flagged: the head's loop did not answer in time


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.1f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    return f"{hours // 24} d {hours % 24} h"


def fmt_amount(resource: str, amount: float) -> str:
    if resource == "memory" or resource.endswith("_memory"):
        return f"{amount / 2**30:.1f} GiB"
    return f"{amount:g}"


def fmt_clock(epoch: float | None) -> str:
    return "?" if epoch is None else time.strftime("%H:%M:%S", time.localtime(epoch))


def short(hex_id: str) -> str:
    return hex_id[:8]


def ident(hex_id: str) -> str:
    """A task or actor id: its owner's 8 bytes then a sequence number, so the tail is what
    tells two apart on the page; the whole id is in the tooltip."""
    return f'<span class="id" title="{esc(hex_id)}">&hellip;{esc(hex_id[-8:])}</span>'


def _table(headers: Iterable[str], rows: list[str], empty: str) -> str:
    if not rows:
        return f'<p class="empty">{esc(empty)}</p>'
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _row(*cells: str) -> str:
    """Cells are HTML already (escaped by the caller)."""
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _bar(used: float, total: float) -> str:
    # A <meter>, not a styled span: the page's Content-Security-Policy forbids inline styles.
    share = 0.0 if total <= 0 else min(1.0, max(0.0, used / total))
    return f'<meter min="0" max="1" value="{share:.3f}" title="{share:.0%}"></meter>'


def _resources(resources: dict) -> str:
    parts = []
    for name in sorted(resources["total"], key=lambda n: (n != "CPU", n != "GPU", n)):
        total = resources["total"][name]
        if total <= 0:
            continue
        used = total - max(0.0, resources["available"].get(name, 0.0))
        # The memory resource is what tasks reserved (memory=...), not what they use.
        label = "memory reserved" if name == "memory" else name
        parts.append(f'<div class="res">{esc(label)} {_bar(used, total)} '
                     f'{esc(fmt_amount(name, used))} / {esc(fmt_amount(name, total))}</div>')
    return "".join(parts) or '<span class="empty">none</span>'


def _memory_use(memory: dict[str, Any]) -> str:
    """A node's real memory use (its agent's figures), beside the reservation."""
    if not memory.get("total"):
        return ""
    return (f'<div class="res">memory in use {_bar(memory["used"], memory["total"])} '
            f'{esc(format_bytes(memory["used"]))} / {esc(format_bytes(memory["total"]))}</div>')


def _object_store(store: dict[str, Any]) -> str:
    """A node's object store: used (the arena handed out) / capacity, and what is spilled."""
    if "capacity" not in store:
        return ""
    if "used" not in store:
        return (f'<div class="res">object store {esc(format_bytes(store["capacity"]))} '
                f'<span class="muted">(no figures yet)</span></div>')
    spilled = store.get("spilled_objects", 0)
    extra = (f', {spilled:,} spilled ({esc(format_bytes(store.get("spilled_bytes", 0)))})'
             if spilled else "")
    return (f'<div class="res">object store {_bar(store["used"], store["capacity"])} '
            f'{esc(format_bytes(store["used"]))} / {esc(format_bytes(store["capacity"]))}{extra}</div>')


def _state(state: str) -> str:
    return f'<span class="state s-{esc(state.lower())}">{esc(state)}</span>'


def _summary(status: dict) -> str:
    tasks = status["tasks"]
    workers = sum(len(n["workers"]) for n in status["nodes"])
    live_actors = status["actors"]["total"] - status["actors"]["counts"].get("DEAD", 0)
    tiles = [("queued", tasks["queued"]), ("running", tasks["running"]),
             ("finished", tasks["finished"]), ("failed", tasks["failed"]),
             ("cancelled", tasks.get("cancelled", 0)),
             ("nodes", len(status["nodes"])), ("workers", workers), ("actors", live_actors)]
    cells = "".join(f'<div class="tile t-{esc(name)}"><b>{value:,}</b><span>{esc(name)}</span></div>'
                    for name, value in tiles)
    return f'<section class="tiles">{cells}</section>'


def _nodes(status: dict) -> str:
    blocks = []
    for node in status["nodes"]:
        rows = []
        for worker in node["workers"]:
            task, actor = worker["task"], worker["actor"]
            parts = []
            if actor is not None:
                named = f' "{esc(actor["name"])}"' if actor["name"] else ""
                parts.append(f'actor {esc(actor["class_name"])}{named}')
            elif worker["leased_to"]:
                parts.append(f'lent to driver <span class="id">{esc(short(worker["leased_to"]))}</span>')
            if task is not None:
                parts.append(f'{esc(task["name"])} {ident(task["task_id"])}')
            if worker["calls_in_flight"]:
                parts.append(f'{worker["calls_in_flight"]} calls running')
            what = " &middot; ".join(parts)
            since = esc(fmt_duration(task["running_s"])) if task is not None else ""
            queued = str(worker["queued"]) if worker["queued"] else ""
            rss = worker.get("rss_bytes")
            rows.append(_row(esc(worker["pid"]), _state(worker["state"]), what, since, queued,
                             esc(format_bytes(rss)) if rss is not None else ""))
        starting = (f' <span class="muted">({node["workers_starting"]} starting)</span>'
                    if node["workers_starting"] else "")
        title = (f'{esc(node["address"] or "?")} <span class="muted">{esc(node["hostname"])}</span> '
                 f'<span class="id">{esc(short(node["node_id"]))}</span> {_state(node["state"])}')
        blocks.append(
            f'<div class="node"><h3>{title}</h3>'
            f'<div class="resources">{_resources(node["resources"])}'
            f'{_memory_use(node.get("memory") or {})}'
            f'{_object_store(node.get("object_store") or {})}</div>'
            f'<p class="muted">{len(node["workers"])} workers{starting}, '
            f'{node["tasks_done"]:,} tasks done here</p>'
            + _table(["worker pid", "state", "task", "running for", "queued behind", "RSS"], rows,
                     "no workers yet") + "</div>")
    return "<section><h2>Nodes</h2>" + ("".join(blocks) or '<p class="empty">no nodes yet</p>') + "</section>"


_DIRECT = (' <span class="muted" title="sent straight to its worker (an actor call or a task on '
           'a lease): known from the worker\'s heartbeat, up to a second late">(direct)</span>')


def _running(status: dict) -> str:
    rows = [_row(esc(t["name"]) + (_DIRECT if t["via"] == "direct" else ""), ident(t["task_id"]),
                 esc(t["address"] or short(t["node_id"])), esc(t["worker_pid"]),
                 esc(fmt_clock(t["started_at"])), esc(fmt_duration(t["running_s"]))
                 + (' <span class="muted">(waiting in get)</span>' if t["blocked"] else ""))
            for t in status["running"]]
    return ("<section><h2>Running tasks</h2>"
            + _table(["task", "id", "node", "worker pid", "started", "running for"], rows,
                     "nothing running") + "</section>")


def _recent(snapshot: Snapshot) -> str:
    rows = []
    for t in tasks_view(snapshot, RECENT_SHOWN)["recent"]:
        state = _state(t["state"]) + (f' <span class="muted">{esc(t["failure"])}</span>'
                                      if t["failure"] else "")
        node = t["address"] or (short(t["node_id"]) if t["node_id"] else "head")
        rows.append(_row(esc(t["name"]), state, esc(node), esc(t["worker_pid"] or ""),
                         esc(fmt_duration(t["duration_s"])), esc(fmt_clock(t["ended_at"]))))
    return ("<section><h2>Recent tasks</h2>"
            '<p class="muted">Tasks that passed through the head; actor calls and tasks run '
            'one at a time on a leased worker are counted under Functions.</p>'
            + _table(["task", "state", "node", "worker pid", "ran for", "ended"], rows,
                     "no task has ended yet") + "</section>")


def _functions(status: dict) -> str:
    rows = [_row(esc(f["name"]), f'{f["finished"]:,}', f'{f["failed"]:,}',
                 f'{f["cancelled"]:,}', esc(fmt_duration(f["mean_s"])))
            for f in status["functions"]]
    return ("<section><h2>Functions</h2>"
            + _table(["function", "finished", "failed", "cancelled", "mean time"], rows,
                     "no task has ended yet")
            + "</section>")


def _actors(status: dict) -> str:
    actors = status["actors"]
    rows = [_row(esc(a["class_name"]), esc(a["name"]), _state(a["state"]),
                 esc(a["address"] or short(a["node_id"])), esc(a["pid"] or ""),
                 ident(a["actor_id"]), esc(a["death_cause"]))
            for a in actors["list"]]
    counts = ", ".join(f"{n:,} {esc(s.lower())}" for s, n in sorted(actors["counts"].items()))
    more = actors["total"] - len(actors["list"])
    note = f'<p class="muted">{counts}{f" ({more:,} not listed)" if more > 0 else ""}</p>' if counts else ""
    return ("<section><h2>Actors</h2>" + note
            + _table(["class", "name", "state", "node", "pid", "id", "death cause"], rows, "no actors")
            + "</section>")


def render_body(snapshot: Snapshot, now: float | None = None) -> str:
    """The part of the page the script refreshes."""
    status = snapshot.status
    cluster = status["cluster"]
    age = (time.time() if now is None else now) - snapshot.taken_at
    stale = (f'<p class="stale">The head has not answered for {esc(fmt_duration(age))}: it may be '
             f'busy or stopped. This is its last state.</p>' if age > STALE_SECONDS else "")
    header = (f'<p class="cluster">cluster <span class="id">{esc(cluster["cluster_id"])}</span> at '
              f'<code>{esc(cluster["address"])}</code> &middot; up {esc(fmt_duration(cluster["uptime_s"]))}'
              f' &middot; {cluster["drivers"]} driver{"" if cluster["drivers"] == 1 else "s"} '
              f'&middot; rayipy {esc(cluster["version"])} &middot; {esc(fmt_clock(snapshot.taken_at))}</p>')
    resources = (f'<section><h2>Resources</h2><div class="resources">'
                 f'{_resources(status["resources"])}</div></section>')
    return (stale + header + _summary(status) + resources + _running(status) + _nodes(status)
            + _functions(status) + _actors(status) + _recent(snapshot))


# The parts the script draws from the event stream (no data in them: it comes as events).
LIVE = """<section class="live-section" id="stream-section"><h2>Task stream</h2>
<p class="muted">One lane per worker, one bar per task, coloured by function; failures in
red, marked above. The last 5 minutes; tasks that never ran are in the <code>head</code> lane.</p>
<div class="plot"><canvas id="stream" width="600" height="40"></canvas></div>
<div class="tip" id="tip"></div><div class="legend" id="legend"></div>
<p class="muted" id="stream-note"></p></section>
<section class="live-section" id="workers-section"><h2>Workers</h2>
<p class="key"><span class="cpu">CPU (share of a core)</span> and <span class="rss">resident
memory</span> over the last 5 minutes, and what each runs now.</p>
<div class="cards" id="workers"></div>
<h2>Nodes</h2><p class="key"><span class="cpu">cores busy</span> and <span class="store">object
store in use</span> over the last 5 minutes.</p><div class="cards" id="nodes-live"></div></section>
<section class="live-section"><h2>Failed tasks</h2>
<div class="filters"><label>function <select id="failures-function"></select></label>
<label>how <select id="failures-state"></select></label><span class="muted" id="failures-note"></span></div>
<table id="failures"><thead><tr><th>task</th><th>how</th><th>error</th><th>message</th>
<th>worker</th><th>ended</th></tr></thead><tbody></tbody></table></section>
<section class="live-section"><h2>Logs</h2>
<div class="filters"><label>worker <select id="logs-worker"></select></label>
<label>search <input id="logs-search" type="search" placeholder="text or task name"></label>
<span class="muted" id="logs-note"></span></div><pre id="logs">no output yet</pre></section>"""


def render_page(snapshot: Snapshot | None) -> str:
    body = (render_body(snapshot) if snapshot is not None
            else '<p class="stale">Waiting for the head\'s first report...</p>')
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>rayipy dashboard</title>
<link rel="stylesheet" href="dashboard.css">
<script src="dashboard.js" defer></script>
</head>
<body>
<header><h1>rayipy dashboard</h1><span id="conn" class="conn">connecting...</span></header>
{LIVE}
<main id="content">{body}</main>
<footer>JSON: <a href="api/status">api/status</a> &middot; <a href="api/tasks">api/tasks</a>
&middot; <a href="api/stream">api/stream</a> &middot; <a href="api/failures">api/failures</a>
&middot; <a href="api/logs">api/logs</a> &middot; <a href="api/series">api/series</a>
&middot; <a href="api/health">api/health</a> &middot; live: <code>api/events</code></footer>
</body>
</html>
"""


# The script and its style are files beside this module (no build step), read once.
STATIC = Path(__file__).with_name("static")
SCRIPT = (STATIC / "dashboard.js").read_text(encoding="utf-8")
STYLE = (STATIC / "dashboard.css").read_text(encoding="utf-8")
