"""``%cluster``: start, connect, stop, status, dashboard. Each returns what the cell shows.

Failures the user can fix (a dead address, a wrong password, a second start) come back
as IPython ``UsageError``s: one readable line, no traceback, and the cell counts as
failed (so "run all" stops there).
"""

from __future__ import annotations

import getpass
import json
import os
from html import escape
from typing import Any

from IPython.core.error import StdinNotImplementedError, UsageError

from rayipy import api, exceptions, session
from rayipy.core.object_ref import current_runtime
from rayipy.jupyter import reprs

PASSWORD_ENV = "RAYIPY_PASSWORD"

# The launcher (rayipy.cluster) behind a cluster `%cluster start --ssh/--slurm` started:
# `%cluster stop` closes it after disconnecting, so its machines are freed.
_launcher: Any = None


class Shown:
    """A result with an HTML and a text form (the notebook picks HTML)."""

    def __init__(self, html: str, text: str) -> None:
        self.html = html
        self.text = text

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return self.text


def context() -> session.ClusterContext | None:
    return session.context() if session.is_initialized() else None


RUNTIME_ENV_HELP = ("the session's runtime_env as JSON, e.g. "
                    "'{\"working_dir\": \".\", \"pip\": [\"requests\"]}'")


def parse_runtime_env(text: str | None) -> dict[str, Any] | None:
    """``--runtime-env JSON``: a dict, or a UsageError saying what is wrong."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"--runtime-env must be JSON (a dict, as runtime_env= takes): {e}") \
            from None
    if not isinstance(value, dict):
        raise UsageError(f"--runtime-env must be a JSON object, got {text!r}")
    return value


def start(num_cpus: int | None, num_gpus: int | None,
          runtime_env: dict[str, Any] | None = None) -> session.ClusterContext:
    """A local cluster of ``num_cpus`` workers; if one runs already, say so and show it."""
    running = context()
    if running is not None:
        print(f"A rayipy cluster is already running ({_where(running)}); "
              f"use %cluster stop first to start another.")
        return running
    try:
        return session.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus,
                            runtime_env=runtime_env)
    except (TypeError, ValueError, exceptions.RayipyError) as e:
        raise UsageError(f"could not start a local cluster: {e}") from None


def start_launched(provider: str, settings: dict[str, Any],
                   runtime_env: dict[str, Any] | None = None) -> session.ClusterContext:
    """A cluster started by a launcher (``provider``: "ssh" or "slurm"), connected to."""
    global _launcher
    running = context()
    if running is not None:
        print(f"A rayipy cluster is already running ({_where(running)}); "
              f"use %cluster stop first to start another.")
        return running
    from rayipy.cluster import SlurmCluster, SSHCluster
    launcher_class = {"ssh": SSHCluster, "slurm": SlurmCluster}[provider]
    try:
        launcher = launcher_class(**settings)
    except (TypeError, ValueError, exceptions.RayipyError) as e:
        raise UsageError(f"could not start the {provider} cluster: {e}") from None
    try:
        ctx = session.init(address=launcher.address, password=launcher.password,
                           runtime_env=runtime_env)
    except BaseException as e:
        launcher.close()
        if isinstance(e, (TypeError, ValueError, exceptions.RayipyError)):
            raise UsageError(f"the {provider} cluster started at {launcher.address}, but "
                             f"connecting failed (it was stopped again): {e}") from None
        raise
    _launcher = launcher
    return ctx


def connect(address: str, password: str | None,
            runtime_env: dict[str, Any] | None = None) -> session.ClusterContext:
    running = context()
    if running is not None:
        if not running.started_locally and running.address == address.removeprefix("tcp://"):
            print(f"Already connected to {running.address}.")
            return running
        raise UsageError(f"already attached to a cluster ({_where(running)}): use %cluster stop "
                         f"first, then connect again")
    if password is None:
        password = os.environ.get(PASSWORD_ENV) or _ask_password(address)
    try:
        return session.init(address=address, password=password, runtime_env=runtime_env)
    except (TypeError, ValueError, exceptions.RayipyError) as e:
        raise UsageError(f"could not connect to {address}: {e}") from None


def _ask_password(address: str) -> str:
    try:
        return getpass.getpass(f"password of the rayipy cluster at {address}: ")
    except (StdinNotImplementedError, EOFError, OSError):
        raise UsageError(f"connecting to {address} needs the cluster's password: "
                         f"%cluster connect {address} --password ... (or set {PASSWORD_ENV})"
                         ) from None


def unfinished_tasks(local: bool) -> int:
    """The tasks a stop would end: for a cluster started here, every task it has queued or
    running (whoever submitted it); for one we joined, this notebook's own tasks not
    finished yet (leaving cancels them). 0 when the cluster does not answer."""
    runtime = current_runtime()
    if runtime is None:
        return 0
    own = runtime.task_counts()
    if not local:
        return int(own.get("pending", 0))
    try:
        tasks = runtime.request("status", timeout=5.0).get("tasks", {})
    except exceptions.RayipyError:
        return int(own.get("pending", 0))
    running = int(tasks.get("running", 0))
    queued = int(tasks.get("queued", 0)) + max(0, int(tasks.get("assigned", 0)) - running)
    return running + queued + int(own.get("on_lease", 0))


def stop(force: bool = False) -> str:
    """Stop the cluster started here, or leave the one joined. With tasks still queued or
    running, refuse (a UsageError saying how many) unless ``force``: a notebook has no
    prompt to confirm in, and "run all" must not lose work silently."""
    running = context()
    if running is None:
        session.shutdown()  # a cluster that was lost still has processes to stop
        if _launcher is not None:
            provider = _launcher.provider
            _close_launcher()
            return f"The {provider} cluster was lost; stopped what was left of it."
        return "No rayipy cluster is running."
    where = _where(running)
    local = running.started_locally or _launcher is not None
    unfinished = unfinished_tasks(local)
    tasks = f"{unfinished} task{'' if unfinished == 1 else 's'}"
    if unfinished and not force:
        whose = "" if local else " of this notebook"
        effect = "stopping it ends them" if local else "disconnecting cancels them"
        raise UsageError(f"{tasks}{whose} still queued or running on the {where}; {effect}. "
                         f"Use %cluster stop --force to go ahead.")
    session.shutdown()
    _close_launcher()
    done = f"Stopped the {where}" if local else f"Disconnected from the {where}"
    if unfinished:
        done += f"; {tasks} {'were' if unfinished != 1 else 'was'} still queued or running and " \
                f"{'ended' if local else 'cancelled'}"
    return done + "."


def _close_launcher() -> None:
    global _launcher
    launcher, _launcher = _launcher, None
    if launcher is not None:
        try:
            launcher.close()
        except exceptions.RayipyError as e:
            raise UsageError(f"disconnected, but stopping the {launcher.provider} cluster "
                             f"failed: {e}") from None


def _where(ctx: session.ClusterContext) -> str:
    if _launcher is not None:
        return f"{_launcher.provider} cluster at {ctx.address}"
    return f"local cluster at {ctx.address}" if ctx.started_locally else f"cluster at {ctx.address}"


def _need_cluster() -> Any:
    runtime = current_runtime()
    if runtime is None or not session.is_initialized():
        raise UsageError("no rayipy cluster is running: %cluster start [-n N] starts one, "
                         "%cluster connect ADDRESS --password PW joins one")
    return runtime


def status(local_counts: dict[str, int]) -> Shown:
    runtime = _need_cluster()
    try:
        info = runtime.request("status", timeout=5.0)
        workers = runtime.request("workers", timeout=5.0)
        available = runtime.request("available_resources", timeout=5.0)
    except exceptions.RayipyError as e:
        raise UsageError(f"the cluster did not answer: {e}") from None
    url = dashboard_url()
    html = reprs.status_html(info, workers, available, local_counts, url)
    text = reprs.status_text(info, workers, local_counts)
    adapting = adapt_line(str(info.get("address", "")))
    if adapting:
        html += f"<p>{escape(adapting)}</p>"
        text += f"\n{adapting}"
    return Shown(html, text)


def adapt_line(address: str) -> str:
    """"Adapting: 2 nodes now, target 3 (1 to 3)" when a launcher of this process adapts
    the cluster at ``address`` (``Launcher.adapt``), else ""."""
    from rayipy.cluster.base import adapt_status_for
    figures = adapt_status_for(address)
    if figures is None:
        return ""
    state = "Adapting" if figures["adapting"] else "Adapting stopped"
    line = (f"{state}: {figures['current']} node(s) now, target {figures['target']} "
            f"({figures['minimum']} to {figures['maximum']})")
    return line + (f"; last error: {figures['error']}" if figures["error"] else "")


def dashboard_url() -> str:
    """The dashboard's URL if this cluster serves one, else "".

    The dashboard (its own branch of work) gives "host:port" as Ray does, through
    ``rayipy.get_dashboard_url()`` and the context's ``dashboard_url``; either may be
    missing on a cluster without one.
    """
    ctx = context()
    if ctx is None:
        return ""
    url = getattr(ctx, "dashboard_url", "") or ""
    finder = getattr(api, "get_dashboard_url", None)
    if not url and callable(finder):
        try:
            url = finder() or ""
        except Exception:
            url = ""
    if url and "://" not in url:
        url = f"http://{url}"
    return url


def dashboard() -> Shown:
    _need_cluster()
    url = dashboard_url()
    if not url:
        text = ("No dashboard is running for this cluster, so there is no link to show; "
                "%cluster status shows the nodes and tasks here.")
        return Shown(f"<span>{reprs.escape(text)}</span>", text)
    return Shown(f'rayipy dashboard: <a href="{reprs.escape(url)}" target="_blank">{reprs.escape(url)}</a>',
                 f"rayipy dashboard: {url}")


def context_html(ctx: session.ClusterContext) -> str:
    """The HTML form of what ``rayipy.init`` / ``%cluster start`` return."""
    live = session.context() is ctx and session.is_initialized()
    nodes = resources = None
    if live:
        try:
            nodes = api.nodes()
            resources = api.cluster_resources()
        except Exception:
            pass
    return reprs.context_html(ctx.address, ctx.started_locally, ctx.cluster_id, nodes, resources,
                              dashboard_url() if live else "", live)
