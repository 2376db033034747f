// The rayipy dashboard's script: one Server-Sent Events stream (api/events) feeds the
// task stream, the worker charts, the failures and the logs; the server-rendered tables
// (tiles, nodes, functions, actors, recent tasks) come in the same events as HTML the
// server escaped. Everything else this script shows is set with textContent or drawn on
// a canvas: it never builds HTML from the cluster's data. No library, nothing fetched
// from the network: the page works offline and under a strict Content-Security-Policy.
(function () {
  "use strict";
  var WINDOW = 300;              // seconds of task stream shown (the server keeps 10 min)
  var MAX_BARS = 60000;          // bars kept by the page
  var MAX_LOG_LINES = 5000;
  var LANE_H = 16, AXIS_H = 18, LABEL_W = 150;

  var $ = function (id) { return document.getElementById(id); };
  // ?view=stream or ?view=workers shows that section alone (JupyterLab's rayipy panes
  // embed the page so); the style sheet hides the rest.
  var view = new URLSearchParams(location.search).get("view");
  if (view === "stream" || view === "workers") { document.body.setAttribute("data-view", view); }
  var content = $("content"), conn = $("conn");
  var state = null;

  function reset() {
    state = {now: Date.now() / 1000, lanes: {}, bars: [], colours: {}, workers: {},
             nodes: {}, series: {workers: {}, nodes: {}}, failures: [], logs: [],
             notShown: 0, hover: null};
  }
  reset();

  function show(text, cls) { conn.textContent = text; conn.className = "conn " + cls; }

  // -- colours: one per function, stable across reloads (a hash of its name) --------------
  function colour(name) {
    var c = state.colours[name];
    if (c) { return c; }
    var h = 0;
    for (var i = 0; i < name.length; i++) { h = (h * 31 + name.charCodeAt(i)) | 0; }
    // Hues away from red, which marks failures.
    c = "hsl(" + (30 + Math.abs(h) % 300) + ", 62%, " + (42 + Math.abs(h >> 8) % 16) + "%)";
    state.colours[name] = c;
    return c;
  }

  // -- the event stream --------------------------------------------------------------------
  function connect() {
    var source = new EventSource("api/events?window=" + WINDOW);
    source.addEventListener("update", function (message) {
      var event = JSON.parse(message.data);
      if (event.first) { reset(); }
      apply(event);
      show(event.fresh ? "live" : "the head is slow to answer", event.fresh ? "live" : "down");
    });
    source.onerror = function () { show("cluster unreachable: it may have stopped", "down"); };
  }

  function apply(event) {
    state.now = event.now;
    var s = event.stream;
    s.lanes.forEach(function (lane) { state.lanes[lane] = true; });
    for (var i = 0; i < s.bars.length; i++) {
      var b = s.bars[i];
      state.bars.push({lane: s.lanes[b[0]], name: s.names[b[1]], start: b[2], dur: b[3],
                       outcome: s.outcomes[b[4]], failed: b[4] !== 0});
    }
    state.notShown += s.not_shown;
    var horizon = state.now - 600;
    if (state.bars.length > MAX_BARS || (state.bars.length && state.bars[0].start < horizon)) {
      state.bars = state.bars.filter(function (b) { return b.start + b.dur >= horizon; })
                             .slice(-MAX_BARS);
    }
    mergeSeries(event.series);
    if (event.workers) { state.workers = event.workers; }
    if (event.nodes) { state.nodes = event.nodes; }
    if (event.body !== undefined) { content.innerHTML = event.body; }   // escaped by the server
    if (event.failures.failures.length) {
      state.failures = event.failures.failures.concat(state.failures).slice(0, 1000);
    }
    state.failureFunctions = event.failures.functions;
    state.failureCounts = event.failures.counts;
    if (event.logs.lines.length) {
      state.logs = state.logs.concat(event.logs.lines).slice(-MAX_LOG_LINES);
    }
    drawStream();
    drawWorkers();
    showFailures();
    showLogs();
  }

  function mergeSeries(series) {
    ["workers", "nodes"].forEach(function (kind) {
      var mine = state.series[kind];
      Object.keys(series[kind]).forEach(function (key) {
        mine[key] = (mine[key] || []).concat(series[kind][key]).slice(-600);
      });
    });
  }

  // -- the task stream: a lane per worker, a bar per task --------------------------------
  function lanes() {
    var all = {};
    Object.keys(state.workers).forEach(function (k) { all[k] = true; });
    Object.keys(state.lanes).forEach(function (k) { all[k] = true; });
    return Object.keys(all).sort();
  }

  function sizeCanvas(canvas, height) {
    var ratio = window.devicePixelRatio || 1;
    var width = canvas.parentNode.clientWidth;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    canvas.style.width = width + "px";
    canvas.style.height = height + "px";
    var ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    return {ctx: ctx, width: width, height: height};
  }

  // The time shown: back to the oldest bar kept (at least 10 s, at most WINDOW), so a
  // short run fills the width instead of a sliver at its right end, as Dask's does.
  function span() {
    var oldest = state.now;
    for (var i = 0; i < state.bars.length; i++) { oldest = Math.min(oldest, state.bars[i].start); }
    return Math.min(WINDOW, Math.max(10, (state.now - oldest) * 1.05));
  }

  function drawStream() {
    var canvas = $("stream"), names = lanes(), shown = span();
    var c = sizeCanvas(canvas, Math.max(1, names.length) * LANE_H + AXIS_H);
    var ctx = c.ctx, plotW = c.width - LABEL_W, t0 = state.now - shown;
    var row = {};
    ctx.font = "11px ui-monospace, monospace";
    ctx.textBaseline = "middle";
    names.forEach(function (name, i) {
      row[name] = i;
      ctx.fillStyle = i % 2 ? "#f4f6f9" : "#ffffff";
      ctx.fillRect(LABEL_W, i * LANE_H, plotW, LANE_H);
      ctx.fillStyle = "#4a5263";
      ctx.fillText(name, 4, i * LANE_H + LANE_H / 2, LABEL_W - 8);
    });
    var x = function (t) { return LABEL_W + (t - t0) / shown * plotW; };
    var failed = [];
    state.placed = [];
    for (var i = 0; i < state.bars.length; i++) {
      var b = state.bars[i];
      if (b.start + b.dur < t0) { continue; }
      var r = row[b.lane];
      if (r === undefined) { continue; }
      var left = Math.max(LABEL_W, x(b.start)), w = Math.max(1, x(b.start + b.dur) - left);
      if (b.failed) { failed.push([left, r, w, b]); continue; }
      ctx.fillStyle = colour(b.name);
      ctx.fillRect(left, r * LANE_H + 2, w, LANE_H - 4);
      state.placed.push([left, r, w, b]);
    }
    // Failures on top, red, with a mark above so one among thousands is seen.
    failed.forEach(function (f) {
      ctx.fillStyle = "#d62728";
      ctx.fillRect(f[0], f[1] * LANE_H + 2, Math.max(2, f[2]), LANE_H - 4);
      ctx.beginPath();
      ctx.moveTo(f[0] - 3, f[1] * LANE_H); ctx.lineTo(f[0] + 3, f[1] * LANE_H);
      ctx.lineTo(f[0], f[1] * LANE_H + 5); ctx.fill();
      state.placed.push(f);
    });
    // The time axis: seconds before now.
    var y = names.length * LANE_H;
    ctx.fillStyle = "#6a7385";
    ctx.textBaseline = "top";
    for (var k = 0; k <= 5; k++) {
      var ago = shown * (5 - k) / 5;
      ctx.fillRect(x(state.now - ago), y, 1, 4);
      ctx.fillText(k === 5 ? "now" : "-" + (ago < 10 ? ago.toFixed(1) : Math.round(ago)) + " s",
                   Math.min(x(state.now - ago) - 12, c.width - 24), y + 5);
    }
    legend();
    $("stream-note").textContent = state.notShown
      ? state.notShown.toLocaleString() + " tasks ended too fast to be drawn one by one" : "";
  }

  function legend() {
    var box = $("legend"), seen = {};
    state.bars.forEach(function (b) { seen[b.name] = true; });
    var names = Object.keys(seen).sort().slice(0, 40);
    if (box.dataset.names === names.join("\n")) { return; }
    box.dataset.names = names.join("\n");
    box.textContent = "";
    names.concat(["failed"]).forEach(function (name) {
      var item = document.createElement("span"), swatch = document.createElement("canvas");
      swatch.width = swatch.height = 10;
      var ctx = swatch.getContext("2d");
      ctx.fillStyle = name === "failed" ? "#d62728" : colour(name);
      ctx.fillRect(0, 0, 10, 10);
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(" " + name));
      box.appendChild(item);
    });
  }

  function hover(e) {
    var rect = $("stream").getBoundingClientRect(), px = e.clientX - rect.left;
    var r = Math.floor((e.clientY - rect.top) / LANE_H), hit = null;
    (state.placed || []).forEach(function (p) {
      if (p[1] === r && px >= p[0] - 1 && px <= p[0] + p[2] + 1) { hit = p[3]; }
    });
    $("tip").textContent = hit ? hit.name + " on " + hit.lane + ": " + hit.outcome + ", ran " +
      fmt(hit.dur) + ", ended " + new Date((hit.start + hit.dur) * 1000).toLocaleTimeString() : "";
  }

  function fmt(s) {
    if (s < 1e-3) { return Math.round(s * 1e6) + " µs"; }
    if (s < 1) { return (s * 1e3).toFixed(1) + " ms"; }
    return s.toFixed(1) + " s";
  }

  function bytes(n) {
    if (n === null || n === undefined) { return "?"; }
    var units = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return n.toFixed(i ? 1 : 0) + " " + units[i];
  }

  // -- per worker: CPU and RSS over time, the current task; per node: memory, store ------
  function card(box, key, title) {
    var el = box.querySelector("[data-key='" + CSS.escape(key) + "']");
    if (!el) {
      el = document.createElement("div");
      el.className = "card";
      el.dataset.key = key;
      var h = document.createElement("h3"), p = document.createElement("p");
      var plot = document.createElement("div"), chart = document.createElement("canvas");
      plot.className = "plot";
      plot.appendChild(chart);
      h.textContent = title;
      el.appendChild(h); el.appendChild(p); el.appendChild(plot);
      box.appendChild(el);
    }
    el.dataset.seen = "1";
    return el;
  }

  function sweep(box) {
    Array.prototype.forEach.call(box.querySelectorAll(".card"), function (el) {
      if (!el.dataset.seen) { el.remove(); } else { delete el.dataset.seen; }
    });
  }

  // Two lines on one small chart: `first` against its own maximum, `second` likewise.
  function spark(canvas, points, first, second, colours) {
    var oldest = points.length ? points[0][0] : state.now;
    var shown = Math.min(WINDOW, Math.max(10, state.now - oldest));
    var c = sizeCanvas(canvas, 46), ctx = c.ctx, t0 = state.now - shown;
    ctx.fillStyle = "#f4f6f9"; ctx.fillRect(0, 0, c.width, c.height);
    [first, second].forEach(function (pick, k) {
      var max = 0;
      points.forEach(function (p) { var v = pick(p); if (v !== null && v > max) { max = v; } });
      if (k === 0) { max = Math.max(max, 1); }      // CPU: at least one core of scale
      if (!max) { return; }
      ctx.strokeStyle = colours[k]; ctx.lineWidth = 1.5; ctx.beginPath();
      var started = false;
      points.forEach(function (p) {
        var v = pick(p);
        if (v === null || p[0] < t0) { return; }
        var px = (p[0] - t0) / shown * c.width, py = c.height - 3 - v / max * (c.height - 6);
        if (started) { ctx.lineTo(px, py); } else { ctx.moveTo(px, py); started = true; }
      });
      ctx.stroke();
    });
  }

  function drawWorkers() {
    var box = $("workers");
    Object.keys(state.workers).sort().forEach(function (key) {
      var w = state.workers[key], points = state.series.workers[key] || [];
      var el = card(box, key, key), last = points[points.length - 1];
      var doing = w.task ? "running " + w.task + (w.task_started_at
        ? " for " + fmt(Math.max(0, state.now - w.task_started_at)) : "")
        : (w.actor ? "actor " + w.actor : w.state.toLowerCase());
      el.querySelector("p").textContent = doing + " · CPU " +
        (last && last[1] !== null ? Math.round(last[1] * 100) + "%" : "?") + " · RSS " +
        bytes(last ? last[2] : null);
      spark(el.querySelector("canvas"), points, function (p) { return p[1]; },
            function (p) { return p[2]; }, ["#1f6fd1", "#8e44ad"]);
    });
    sweep(box);
    var nodes = $("nodes-live");
    Object.keys(state.nodes).sort().forEach(function (address) {
      var n = state.nodes[address], points = state.series.nodes[address] || [];
      var el = card(nodes, address, "node " + address + (n.hostname ? " (" + n.hostname + ")" : ""));
      var store = n.object_store || {}, mem = n.memory || {};
      var last = points[points.length - 1];
      el.querySelector("p").textContent = "memory in use " + bytes(mem.used) + " / " +
        bytes(mem.total) + " · object store " + bytes(store.used) + " / " + bytes(store.capacity) +
        (last && last[5] !== null ? " · CPU " + last[5].toFixed(1) + " cores busy" : "");
      spark(el.querySelector("canvas"), points, function (p) { return p[5]; },
            function (p) { return p[3]; }, ["#1f6fd1", "#2e7d4f"]);
    });
    sweep(nodes);
  }

  // -- failures, filterable by function and by how they failed ---------------------------
  function options(select, values) {
    var want = [""].concat(values), have = Array.prototype.map.call(select.options, function (o) { return o.value; });
    if (want.join("\n") === have.join("\n")) { return; }
    var chosen = select.value;
    select.textContent = "";
    want.forEach(function (v) {
      var o = document.createElement("option");
      o.value = v; o.textContent = v || "all";
      select.appendChild(o);
    });
    select.value = want.indexOf(chosen) >= 0 ? chosen : "";
  }

  function showFailures() {
    var fn = $("failures-function"), st = $("failures-state");
    options(fn, Object.keys(state.failureFunctions || {}).sort());
    options(st, Object.keys(state.failureCounts || {}).sort());
    var rows = state.failures.filter(function (f) {
      return (!fn.value || f.name === fn.value) && (!st.value || f.failure === st.value);
    });
    var body = $("failures").querySelector("tbody");
    body.textContent = "";
    rows.slice(0, 200).forEach(function (f) {
      var tr = document.createElement("tr");
      [f.name, f.failure, f.error_type, f.message, f.address + (f.worker_pid ? ":" + f.worker_pid : ""),
       new Date(f.ended_at * 1000).toLocaleTimeString()].forEach(function (text, i) {
        var td = document.createElement("td");
        td.textContent = text;
        if (i === 3) { td.className = "message"; }
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    var total = state.failures.length;
    $("failures-note").textContent = total
      ? rows.length + " of " + total + " failed tasks kept" + (rows.length > 200 ? " (first 200 shown)" : "")
      : "no task has failed";
  }

  // -- logs: each worker's recent output, searchable -------------------------------------
  function showLogs() {
    var who = $("logs-worker"), needle = $("logs-search").value.toLowerCase();
    var workers = {};
    state.logs.forEach(function (l) { workers[l.worker] = true; });
    options(who, Object.keys(workers).sort());
    var shown = state.logs.filter(function (l) {
      return (!who.value || l.worker === who.value) && (!needle ||
        l.text.toLowerCase().indexOf(needle) >= 0 || l.task.toLowerCase().indexOf(needle) >= 0);
    }).slice(-500);
    var text = shown.map(function (l) {
      var line = l.text.replace(/\n$/, "");
      return "(" + l.task + " " + l.worker + ") " + line;
    }).join("\n");
    var pre = $("logs");
    var atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.textContent = text || (state.logs.length ? "no line matches" : "no output yet");
    if (atEnd) { pre.scrollTop = pre.scrollHeight; }
    $("logs-note").textContent = shown.length + " of " + state.logs.length + " lines";
  }

  $("failures-function").addEventListener("change", showFailures);
  $("failures-state").addEventListener("change", showFailures);
  $("logs-worker").addEventListener("change", showLogs);
  $("logs-search").addEventListener("input", showLogs);
  $("stream").addEventListener("mousemove", hover);
  window.addEventListener("resize", function () { drawStream(); drawWorkers(); });
  connect();
})();
