"""The dashboard's HTTP server: a thread in the head process that serves snapshots.

    HTTP threads                       SnapshotBox                      head's loop
    GET /api/status  --- get() ---->   wanted = True      --- poll -->  sees `wanted`,
      (waits <= 1 s)                                                   build_snapshot(...)
                     <-- snapshot --   latest, version+1  <-- publish --

The head's loop is single-threaded and owns all cluster state, so HTTP threads never read
it. A request that finds the latest snapshot older than ``MAX_AGE`` raises a flag; the
loop, which checks the flag once per iteration (at least every 250 ms), builds a fresh
snapshot and publishes it. Nothing is built while nobody looks, so the dashboard costs
the head's hot loop one attribute read per iteration. If the loop does not answer within
``WAIT`` (it is stuck, or the cluster is stopping), the request is served from the last
snapshot, flagged as stale, and ``/api/health`` answers 503.

Read-only: GET and HEAD only. Binds to the address it is given (loopback unless the user
names another); when the port is taken it tries the next ones, as Ray does, and ``url``
says where it ended up.

Who may read it (``Access``):

- Bound to loopback, only this machine's users reach it, as with Ray and Jupyter's
  defaults, and no token is asked.
- Bound elsewhere, every request needs the token made when the server starts: in the
  query (``?token=``, the form ``url`` gives, then kept in a cookie for the page's own
  requests), the cookie, or an ``Authorization: Bearer`` header. Without it: 403.
- Either way the ``Host`` header must name the bound address, this machine, localhost,
  or a name listed in ``$RAYIPY_DASHBOARD_HOSTS`` (read by the head): a page on another
  site whose name an attacker points at this address (DNS rebinding) sends its own
  name, and gets 403.

A client that goes away mid-response (a closed tab, a dropped connection) is routine: it
is logged at debug level, never as a traceback in the head's log.
"""

from __future__ import annotations

import errno
import hmac
import ipaddress
import json
import logging
import os
import secrets
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from rayipy.dashboard import DEFAULT_PORT
from rayipy.dashboard.events import MAX_STREAMS, EventCursor, first_event, next_event
from rayipy.dashboard.live import LiveData
from rayipy.dashboard.page import SCRIPT, STYLE, render_body, render_page
from rayipy.dashboard.snapshot import Snapshot, tasks_view
from rayipy.dashboard.stream import failures_view, stream_view

log = logging.getLogger("rayipy.dashboard")

PORT_TRIES = 50          # 8265, 8266, ... as Ray does when the port is taken
MAX_AGE = 0.5            # seconds: an older snapshot is refreshed before it is served
WAIT = 1.0               # seconds an HTTP thread waits for the head's loop to publish
PUSH_INTERVAL = 1.0      # seconds between two events of a page's stream (api/events)
KEEPALIVE = 15.0         # seconds: an event stream with nothing new still sends a comment

WILDCARDS = ("", "0.0.0.0", "::")
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")
TOKEN_COOKIE = "rayipy_dashboard_token"
ALLOWED_HOSTS_VARIABLE = "RAYIPY_DASHBOARD_HOSTS"   # more Host names it answers to

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
       "img-src 'self'; base-uri 'none'; form-action 'none'")


class SnapshotBox:
    """The hand-off between the head's loop (the only writer) and the HTTP threads."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._latest: Snapshot | None = None
        self._published = 0.0        # time.monotonic() of the latest publish
        self._version = 0
        # Set by HTTP threads, read by the head's loop without the lock (a plain bool:
        # the worst a race does is one snapshot too many or a 250 ms later one).
        self.wanted = False
        self._body: tuple[Snapshot | None, str] = (None, "")   # the latest one, rendered
        self.streams = 0             # open event streams (api/events), at most MAX_STREAMS
        self.closed = threading.Event()   # set when the server closes: streams end

    def body(self, snapshot: Snapshot, fresh: bool) -> str:
        """The page's server-rendered part for ``snapshot``, rendered once however many
        pages stream it (a stale one is rendered anew: it says how stale)."""
        if not fresh:
            return render_body(snapshot, time.time())
        with self._cond:
            if self._body[0] is snapshot:
                return self._body[1]
        html = render_body(snapshot, time.time())
        with self._cond:
            self._body = (snapshot, html)
        return html

    def open_stream(self) -> bool:
        """Take one of the ``MAX_STREAMS`` event-stream slots; False when all are taken."""
        with self._cond:
            if self.streams >= MAX_STREAMS:
                return False
            self.streams += 1
            return True

    def close_stream(self) -> None:
        with self._cond:
            self.streams -= 1

    def publish(self, snapshot: Snapshot) -> None:
        """The head's loop: here is the cluster now."""
        with self._cond:
            self._latest = snapshot
            self._published = time.monotonic()
            self._version += 1
            self.wanted = False
            self._cond.notify_all()

    def refresh(self, build: Callable[[], Snapshot]) -> None:
        """The head's loop, when ``wanted``: build and publish; a bug in building must not
        stop the loop, so it is logged and the request served from the last snapshot."""
        try:
            snapshot = build()
        except Exception:
            self.wanted = False
            log.exception("building the dashboard's snapshot failed")
            return
        self.publish(snapshot)

    def get(self, max_age: float = MAX_AGE, wait: float = WAIT) -> tuple[Snapshot | None, bool]:
        """(snapshot, fresh): a snapshot at most ``max_age`` old, waiting up to ``wait``
        for the head's loop; else the last one (or None) with fresh=False."""
        with self._cond:
            if self._latest is not None and time.monotonic() - self._published <= max_age:
                return self._latest, True
            version = self._version
            self.wanted = True
            fresh = self._cond.wait_for(lambda: self._version != version, timeout=wait)
            return self._latest, fresh


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or name) is this machine's loopback only."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Access:
    """Who may read the dashboard: the ``Host`` names it answers to, and the token every
    request must carry ("" on loopback: none). Pure: no sockets, unit-tested."""

    allowed_hosts: frozenset[str]
    token: str = ""

    @classmethod
    def for_bind(cls, host: str, public_host: str, token: str | None = None) -> "Access":
        """The rules for a server bound to ``host`` and announced as ``public_host``; a
        token is made unless bound to loopback (``token`` given: that one)."""
        names = {host, public_host, *LOOPBACK_NAMES, "127.0.0.1", "::1"}
        if not is_loopback(host):
            # Bound beyond loopback, it is reached by this machine's names too.
            names |= {socket.gethostname(), socket.getfqdn()}
        if host in WILDCARDS:
            names |= set(_local_addresses())
        # Names a proxy in front of it forwards (a Jupyter server proxy passes the
        # browser's Host on), comma-separated.
        names |= {n.strip() for n in os.environ.get(ALLOWED_HOSTS_VARIABLE, "").split(",")}
        if token is None:
            token = "" if is_loopback(host) else secrets.token_urlsafe(24)
        return cls(frozenset(n.lower() for n in names if n and n not in WILDCARDS), token)

    def host_allowed(self, header: str | None) -> bool:
        """Whether a request's ``Host`` header (``name[:port]``) names this server."""
        if not header:
            return False   # HTTP/1.1 requires it; browsers always send it
        name = header.strip().lower()
        if name.startswith("["):          # [::1]:8265
            name = name[1:name.find("]")] if "]" in name else name
        elif name.count(":") == 1:
            name = name.split(":", 1)[0]
        return name.rstrip(".") in self.allowed_hosts

    def token_given(self, query: dict, cookie_header: str | None, authorization: str | None,
                    cookie_name: str = TOKEN_COOKIE) -> str:
        """The token a request carries (query, then cookie, then bearer header), or ""."""
        found = query.get("token", [""])[-1]
        if not found and cookie_header:
            for part in cookie_header.split(";"):
                name, _, value = part.strip().partition("=")
                if name == cookie_name:
                    found = value
        if not found and authorization and authorization.lower().startswith("bearer "):
            found = authorization[7:].strip()
        return found

    def token_ok(self, given: str) -> bool:
        if not self.token:
            return True
        return hmac.compare_digest(given.encode(), self.token.encode())


def _local_addresses() -> list[str]:
    try:
        return [info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)]
    except OSError:
        return []


class DashboardServer:
    """The HTTP server and its thread; ``url`` is "host:port" (Ray's form, no scheme).

    ``host`` is where it listens; when that is a wildcard ("0.0.0.0"), the URL names
    ``public_host`` (the head's own address, if it has one) or this machine's address.
    Bound beyond loopback, it requires a token (see the module's docstring); ``url`` then
    carries it (``host:port/?token=...``), so ``f"http://{url}"`` still opens the page."""

    def __init__(self, host: str, port: int = DEFAULT_PORT, public_host: str | None = None,
                 tries: int = PORT_TRIES, token: str | None = None,
                 live: LiveData | None = None) -> None:
        self.box = SnapshotBox()
        self.live = live if live is not None else LiveData()   # the head feeds it
        self.httpd = _bind(host, port, tries)
        self.httpd.box = self.box                      # type: ignore[attr-defined]
        self.httpd.live = self.live                    # type: ignore[attr-defined]
        bound_port = self.httpd.server_address[1]
        shown_host = _public_host(host, public_host)
        self.access = Access.for_bind(host, shown_host, token)
        self.httpd.access = self.access                # type: ignore[attr-defined]
        address = f"[{shown_host}]" if ":" in shown_host else shown_host
        self.url = f"{address}:{bound_port}"
        if self.access.token:
            self.url += f"/?token={self.access.token}"
        self.port = bound_port
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="rayipy-dashboard", daemon=True)

    def start(self) -> "DashboardServer":
        self._thread.start()
        return self

    def close(self) -> None:
        self.box.closed.set()
        if self._thread.is_alive():
            self.httpd.shutdown()
        self.httpd.server_close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # A port another process listens on must count as taken (SO_REUSEADDR lets a
    # listener bind over TIME_WAIT leftovers, never over a live listener on Linux).
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver's default prints a traceback to stderr (the head's log) for
        # every client that hangs up mid-response: routine, so a debug line only.
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            log.debug("dashboard client %s went away: %s", client_address, error)
            return
        log.error("dashboard request from %s failed", client_address, exc_info=True)


def _public_host(host: str, hint: str | None) -> str:
    """Where others reach a server bound to ``host``."""
    for candidate in (host, hint):
        if candidate and candidate not in WILDCARDS:
            return candidate
    try:   # the address of the interface that routes outwards; no packet is sent
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))
            return probe.getsockname()[0]
    except OSError:
        return "127.0.0.1"


def _bind(host: str, port: int, tries: int) -> ThreadingHTTPServer:
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ValueError(f"dashboard port must be an int from 0 to 65535 (0: any free port), "
                         f"got {port!r}")
    last: OSError | None = None
    candidates = [0] if port == 0 else range(port, min(65536, port + max(1, tries)))
    for candidate in candidates:
        try:
            return _Server((host, candidate), _Handler)
        except OSError as e:
            if e.errno not in (errno.EADDRINUSE, errno.EACCES):
                raise
            last = e
    raise OSError(errno.EADDRINUSE, f"no free port for the dashboard on {host} from {port} "
                  f"to {candidates[-1]} ({last}); pass another dashboard port")


class _Handler(BaseHTTPRequestHandler):
    server_version = "rayipy-dashboard"
    sys_version = ""
    protocol_version = "HTTP/1.1"       # keep-alive: the page polls every second
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # -- routing ------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._respond(head_only=False)

    def do_HEAD(self) -> None:
        self._respond(head_only=True)

    def _refuse(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, "application/json",
                   _json({"error": "the dashboard is read-only: only GET and HEAD"}),
                   extra={"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

    def _respond(self, head_only: bool) -> None:
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        query = parse_qs(parts.query)
        access: Access = self.server.access   # type: ignore[attr-defined]
        if not access.host_allowed(self.headers.get("Host")):
            self._send(HTTPStatus.FORBIDDEN, "application/json", _json({
                "error": "this dashboard answers only to its own address or localhost "
                         "(Host header refused)"}), head_only=head_only)
            return
        # Cookies ignore ports: one name per port, so two dashboards on a host coexist.
        cookie = f"{TOKEN_COOKIE}_{self.server.server_address[1]}"
        given = access.token_given(query, self.headers.get("Cookie"),
                                   self.headers.get("Authorization"), cookie)
        if not access.token_ok(given):
            self._send(HTTPStatus.FORBIDDEN, "application/json", _json({
                "error": "this dashboard needs its token: open the URL with ?token=... that "
                         "`rayipy start --head`, `rayipy status` or rayipy.get_dashboard_url() "
                         "gives"}), head_only=head_only)
            return
        extra = {}
        if access.token and query.get("token"):
            # Kept for the page's own requests (its script, its style, each refresh).
            extra["Set-Cookie"] = f"{cookie}={access.token}; Path=/; HttpOnly; SameSite=Strict"
        if path == "/api/events" and not head_only:
            self._events(query, extra)
            return
        try:
            status, content_type, body = self._route(path, query)
        except Exception as e:   # a bug here must not kill the thread silently
            log.exception("dashboard error on %s", self.path)
            status, content_type, body = (HTTPStatus.INTERNAL_SERVER_ERROR, "application/json",
                                          _json({"error": f"{type(e).__name__}: {e}"}))
        self._send(status, content_type, body, head_only=head_only, extra=extra)

    def _route(self, path: str, query: dict) -> tuple[int, str, bytes]:
        box: SnapshotBox = self.server.box   # type: ignore[attr-defined]
        if path in ("/dashboard.js", "/dashboard.css"):
            kind = "text/javascript" if path.endswith(".js") else "text/css"
            return HTTPStatus.OK, kind, (SCRIPT if path.endswith(".js") else STYLE).encode()
        if path == "/favicon.ico":
            return HTTPStatus.NO_CONTENT, "image/x-icon", b""
        if path not in PAGES:
            return HTTPStatus.NOT_FOUND, "application/json", _json({
                "error": f"no such page: {path}", "pages": [p for p in PAGES if p != "/index.html"]})
        live: LiveData = self.server.live   # type: ignore[attr-defined]
        try:
            limit = _number(query, "limit", int, None)
            after = _number(query, "after", int, 0)
            since = _number(query, "since", float, 0.0)
        except ValueError as e:
            return HTTPStatus.BAD_REQUEST, "application/json", _json({"error": str(e)})
        if path == "/api/logs":     # the head's rings, not its snapshot
            return HTTPStatus.OK, "application/json", _json(live.logs_view(
                after, _text(query, "search"), _text(query, "worker"),
                **({} if limit is None else {"limit": limit})))
        if path == "/api/series":
            return HTTPStatus.OK, "application/json", _json(live.series_view(since))
        if path == "/api/events":   # HEAD only (GET streams: ``_events``)
            return HTTPStatus.OK, "text/event-stream", b""
        snapshot, fresh = box.get()
        now = time.time()
        if path == "/api/health":
            age = None if snapshot is None else round(now - snapshot.taken_at, 3)
            ok = snapshot is not None and fresh
            return (HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE), "application/json", _json({
                "status": "ok" if ok else "the head's loop did not answer in time",
                "snapshot_age_s": age})
        if path in ("/", "/index.html"):
            return HTTPStatus.OK, "text/html", render_page(snapshot).encode()
        if snapshot is None:
            return HTTPStatus.SERVICE_UNAVAILABLE, "application/json", _json(
                {"error": "the head has not published its state yet; retry in a moment"})
        if path == "/fragment":
            return HTTPStatus.OK, "text/html", self.server.box.body(  # type: ignore[attr-defined]
                snapshot, fresh).encode()
        if path == "/api/status":
            return HTTPStatus.OK, "application/json", _json(
                dict(snapshot.status, snapshot_age_s=round(now - snapshot.taken_at, 3)))
        if path == "/api/stream":
            return HTTPStatus.OK, "application/json", _json(stream_view(
                snapshot, after, since, **({} if limit is None else {"limit": limit})))
        if path == "/api/failures":
            try:
                return HTTPStatus.OK, "application/json", _json(failures_view(
                    snapshot, _text(query, "function"), _text(query, "state"), after,
                    **({} if limit is None else {"limit": limit})))
            except ValueError as e:
                return HTTPStatus.BAD_REQUEST, "application/json", _json({"error": str(e)})
        return HTTPStatus.OK, "application/json", _json(tasks_view(snapshot, limit))

    def _events(self, query: dict, extra: dict) -> None:
        """``api/events``: Server-Sent Events, one ``update`` a second while the page is
        open (see ``events.py``). Holds this HTTP thread until the page goes away."""
        box: SnapshotBox = self.server.box   # type: ignore[attr-defined]
        live: LiveData = self.server.live    # type: ignore[attr-defined]
        try:
            window = _number(query, "window", float, None)
        except ValueError as e:
            self._send(HTTPStatus.BAD_REQUEST, "application/json", _json({"error": str(e)}))
            return
        if not box.open_stream():
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, "application/json", _json({
                "error": f"{MAX_STREAMS} dashboard pages are open already: close one"}),
                extra={"Retry-After": "5"})
            return
        try:
            self.close_connection = True       # the stream ends when the page goes away
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Accel-Buffering", "no")    # proxies: do not hold events back
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Content-Security-Policy", CSP)
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            cursor = EventCursor()
            self.wfile.write(b"retry: 2000\n\n")
            quiet_since = time.monotonic()
            first = True
            while not box.closed.is_set():
                snapshot, fresh = box.get()
                if snapshot is not None:
                    body = box.body(snapshot, fresh)
                    if first:
                        event = first_event(snapshot, fresh, body, live, cursor, window)
                        first = False
                    else:
                        event = next_event(snapshot, fresh, body, live, cursor)
                    if event is not None:
                        self.wfile.write(b"event: update\ndata: " + _json(event) + b"\n\n")
                        self.wfile.flush()
                        quiet_since = time.monotonic()
                if time.monotonic() - quiet_since >= KEEPALIVE:
                    self.wfile.write(b": keep-alive\n\n")
                    self.wfile.flush()
                    quiet_since = time.monotonic()
                box.closed.wait(PUSH_INTERVAL)
        except (ConnectionError, TimeoutError, OSError) as e:
            log.debug("dashboard event stream closed: %s", e)
        finally:
            box.close_stream()

    def _send(self, status: int, content_type: str, body: bytes, head_only: bool = False,
              extra: dict | None = None) -> None:
        self.send_response(status)
        charset = "" if content_type.startswith("image/") else "; charset=utf-8"
        self.send_header("Content-Type", content_type + charset)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", CSP)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not head_only:
            self.wfile.write(body)


PAGES = ("/", "/index.html", "/fragment", "/api/status", "/api/tasks", "/api/health",
         "/api/stream", "/api/failures", "/api/logs", "/api/series", "/api/events")


def _number(query: dict, name: str, kind: type, default: Any) -> Any:
    """A query parameter that must be a number >= 0 (``kind`` int or float), or ``default``."""
    values = query.get(name)
    if not values:
        return default
    text = values[-1]
    try:
        value = kind(text)
    except ValueError:
        value = -1
    if value < 0 or value != value:       # negative, or NaN
        what = "a whole number" if kind is int else "a number"
        raise ValueError(f"{name} must be {what} >= 0, got {text!r}")
    return value


def _text(query: dict, name: str) -> str:
    values = query.get(name)
    return values[-1] if values else ""


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
