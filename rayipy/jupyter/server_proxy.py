"""A Jupyter server extension that serves a local rayipy dashboard under Jupyter's own URL.

    browser --- https://hub.example.org/user/ann/rayipy-dashboard/8265/api/events --->
        Jupyter server (this handler: Jupyter's login and token apply)
            --- http://127.0.0.1:8265/api/events ---> the head's dashboard

On a remote JupyterHub only Jupyter's port is reachable; the dashboard of a cluster that
a notebook started listens on that machine's loopback. This handler forwards GET and
HEAD requests under ``<base_url>rayipy-dashboard/<port>/`` to ``127.0.0.1:<port>``, as
jupyter-server-proxy and dask-labextension do, streaming the answer as it comes, so the
page's Server-Sent Events reach the browser live.

What it keeps and what it drops:

- Only loopback ports are forwarded: the handler is no open proxy into the network
  around the Jupyter server, and it needs Jupyter's login like every other page.
- The upstream request is made afresh: ``Host`` names 127.0.0.1 (so the dashboard's
  DNS-rebinding rule holds without ``RAYIPY_DASHBOARD_HOSTS``), and the browser's
  cookies and ``Authorization`` header, which carry Jupyter's token, are not passed on.
  Jupyter's ``token`` query parameter is dropped likewise. A dashboard bound beyond
  loopback asks for its own token, which this proxy does not hold: open that one
  directly.
- The page's links are relative, so it works under the prefix unchanged.

Enabled by ``jupyter-config/jupyter_server_config.d/rayipy.json`` (installed with the
package) or ``--ServerApp.jpserver_extensions='{"rayipy.jupyter.server_proxy": True}'``.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl, urlencode

from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import httpclient, httputil, web

log = logging.getLogger("rayipy.jupyter.server_proxy")

PREFIX = "rayipy-dashboard"
# Answer headers passed back to the browser (the rest are the hop's own or Jupyter's).
PASSED_BACK = ("Content-Type", "Cache-Control", "Content-Security-Policy",
               "X-Content-Type-Options", "Referrer-Policy", "Retry-After", "Allow",
               "X-Accel-Buffering")
# Request headers passed on.
PASSED_ON = ("Accept", "Last-Event-ID")
CONNECT_TIMEOUT = 5.0
REQUEST_TIMEOUT = 24 * 3600.0     # an event stream lasts as long as the page is open


class StreamClosed(Exception):
    """The browser went away: raised in the streaming callback to end the upstream fetch."""


def upstream_url(port: str, path: str, query: str) -> str:
    """The dashboard's URL for a proxied request; raises ValueError for a bad port."""
    number = int(port) if port.isdigit() else -1
    if not 1 <= number <= 65535:
        raise ValueError(f"the dashboard's port must be a number from 1 to 65535, got {port!r}")
    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "token"]
    return f"http://127.0.0.1:{number}{path or '/'}" + (f"?{urlencode(kept)}" if kept else "")


class DashboardProxyHandler(JupyterHandler):
    """GET/HEAD ``<base_url>rayipy-dashboard/<port>/<path>`` -> ``127.0.0.1:<port>/<path>``."""

    _closed = False
    _started = False

    def on_connection_close(self) -> None:
        self._closed = True

    @web.authenticated
    async def get(self, port: str, path: str | None) -> None:
        await self._proxy(port, path, "GET")

    @web.authenticated
    async def head(self, port: str, path: str | None) -> None:
        await self._proxy(port, path, "HEAD")

    async def _proxy(self, port: str, path: str | None, method: str) -> None:
        if path is None:    # the page's relative links need the trailing slash
            query = f"?{self.request.query}" if self.request.query else ""
            self.redirect(url_path_join(self.base_url, PREFIX, port) + "/" + query)
            return
        try:
            url = upstream_url(port, path, self.request.query)
        except ValueError as e:
            raise web.HTTPError(400, str(e)) from None
        headers = {name: self.request.headers[name] for name in PASSED_ON
                   if name in self.request.headers}
        request = httpclient.HTTPRequest(
            url, method=method, headers=headers, follow_redirects=False,
            connect_timeout=CONNECT_TIMEOUT, request_timeout=REQUEST_TIMEOUT,
            header_callback=self._header_line, streaming_callback=self._chunk)
        try:
            await httpclient.AsyncHTTPClient().fetch(request, raise_error=False)
        except StreamClosed:
            return
        except (OSError, httpclient.HTTPError) as e:
            if not self._started:
                raise web.HTTPError(502, f"no rayipy dashboard answers on 127.0.0.1:{port} "
                                         f"({e}); is the cluster running?") from None
            return
        if not self._started:
            raise web.HTTPError(502, f"no rayipy dashboard answers on 127.0.0.1:{port}")
        if not self._closed:
            self.finish()

    def _header_line(self, line: str) -> None:
        if line.startswith("HTTP/"):
            self._upstream_headers = httputil.HTTPHeaders()
            self._upstream_status = httputil.parse_response_start_line(line.strip()).code
        elif line.strip():
            self._upstream_headers.parse_line(line)
        else:   # the end of the headers
            self._started = True
            self.set_status(self._upstream_status)
            self.clear_header("Content-Type")
            for name in PASSED_BACK:
                value = self._upstream_headers.get(name)
                if value is not None:
                    self.set_header(name, value)

    def _chunk(self, data: bytes) -> None:
        if self._closed:
            raise StreamClosed()
        self.write(data)
        self.flush()     # Server-Sent Events must not wait in a buffer

    def check_xsrf_cookie(self) -> None:
        """GET and HEAD only: nothing to protect from cross-site forms."""


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    return [{"module": "rayipy.jupyter.server_proxy"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Add the proxy's route to a running Jupyter server."""
    web_app = serverapp.web_app
    pattern = url_path_join(web_app.settings["base_url"], PREFIX, r"(\d+)(/.*)?")
    web_app.add_handlers(".*$", [(pattern, DashboardProxyHandler)])
    serverapp.log.info("rayipy: dashboards proxied under %s", url_path_join(
        web_app.settings["base_url"], PREFIX, "<port>/"))


# The names Jupyter Server looked up before 2.0.
load_jupyter_server_extension = _load_jupyter_server_extension
