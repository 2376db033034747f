"""The ``rayipy`` command: a cluster across machines, as with ``ray start``.

    rayipy start --head [--node-ip-address IP] [--port 6379]   # head + this machine's node
    rayipy start --address=IP:6379 --password=PW                # join from another machine
    rayipy status                                               # nodes, resources, tasks
    rayipy memory [--stats-only]                                # what fills the object stores
    rayipy list tasks|actors|objects|nodes|workers [--filter K=V]  # the state API's rows
    rayipy summary tasks|actors                                 # counts per name and state
    rayipy timeline [--output FILE]                             # recent tasks, Chrome trace
    rayipy stop                                                 # this machine's processes
    rayipy job submit|status|logs|stop|list|delete              # jobs (cli_job.py)
    rayipy up cluster.yaml / rayipy down cluster.yaml           # SSH or Slurm (cli_up.py)

``start`` leaves its processes running in the background (``daemon.py``) and records them
with the cluster's address and key in the connection file (``connection.py``), which
``stop``, ``status``, ``memory`` and ``rayipy.init(address="auto")`` read. ``rayipy info`` prints
versions, for bug reports.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import rayipy
from rayipy import cli_job, exceptions
from rayipy.cli_status import format_status
from rayipy.node import connection, daemon, shm
from rayipy.node.connection import DEFAULT_PORT, ClusterFile, ProcessRecord
from rayipy.protocol.serialization import PICKLER
from rayipy.protocol.wire import SALT_BYTES

JOIN_TIMEOUT = 30.0     # for a node agent to register with the head
ANSWER_TIMEOUT = 10.0   # for a head to answer a connection


class CommandError(Exception):
    """A failure the command reports as one clear message and a non-zero exit."""


def info() -> str:
    import zmq
    lines = [
        f"rayipy {rayipy.__version__}",
        f"python {platform.python_version()} ({sys.executable})",
        f"pyzmq {zmq.__version__}, libzmq {zmq.zmq_version()}, {PICKLER}",
        f"CPUs for a local cluster: {os.cpu_count()}",
        f"platform: {platform.platform()}",
        f"rayipy directory: {connection.machine_dir()} (${connection.HOME_ENV} to change)",
    ]
    return "\n".join(lines)


# -- arguments ---------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rayipy", description="Ray-style distributed computing, Jupyter-first. In Python, "
        "rayipy.init() starts a local cluster; these commands run a cluster across machines.")
    parser.add_argument("--version", action="version", version=f"rayipy {rayipy.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("info", help="versions and what a local cluster would use here")

    start = commands.add_parser(
        "start", help="start the head (--head) or join a cluster (--address), in the background",
        description="Start rayipy on this machine, in the background: the head of a new cluster "
        "and a node agent (--head), or a node agent that joins a running cluster (--address).")
    role = start.add_mutually_exclusive_group()
    role.add_argument("--head", action="store_true", help="start a new cluster's head here")
    role.add_argument("--address", metavar="HOST:PORT", help="join the cluster whose head is there")
    start.add_argument("--port", type=int, help=f"the head's port (default {DEFAULT_PORT}; 0: any "
                       f"free port)")
    start.add_argument("--node-ip-address", metavar="IP", help="this machine's address as the "
                       "other machines reach it (default: guessed from its routes)")
    start.add_argument("--password", "--redis-password", dest="password", metavar="PW",
                       help="the cluster's password; every user sees it in `ps`: prefer "
                       "--password-file or $RAYIPY_PASSWORD (default: $RAYIPY_PASSWORD; asked for "
                       "when joining from a terminal; generated for a new cluster)")
    start.add_argument("--password-file", metavar="FILE",
                       help="read the cluster's password from the first line of FILE")
    start.add_argument("--num-cpus", type=int, metavar="N", help="CPUs this node offers "
                       "(default: all of this machine's)")
    start.add_argument("--num-gpus", type=int, metavar="N", help="GPUs this node offers")
    start.add_argument("--memory", type=int, metavar="BYTES", help="memory this node offers "
                       "(default: this machine's)")
    start.add_argument("--resources", metavar="JSON", help='custom resources, e.g. \'{"disk": 2}\'')
    start.add_argument("--block", action="store_true", help="stay in the foreground; Ctrl-C "
                       "stops rayipy on this machine")
    start.add_argument("--dashboard-port", type=int, default=8265, help="the first port to try "
                       "for the dashboard (with --head; default 8265; 0: any free port)")
    start.add_argument("--dashboard-host", default=None, help="the address the dashboard listens "
                       "on (with --head; default 127.0.0.1, this machine only; another "
                       "address, or 0.0.0.0 for every interface, requires the token that the "
                       "printed URL carries)")
    start.add_argument("--include-dashboard", type=_boolean, default=True, metavar="BOOL",
                       help="serve the dashboard (with --head; default true)")
    start.add_argument("--object-store-memory", metavar="BYTES", help="bytes of this node's "
                       "shared-memory object store, e.g. 2000000000 (default: 30%% of this "
                       "machine's memory, no more than /dev/shm holds)")
    start.add_argument("--object-spilling-directory", metavar="DIR", help="where this node's "
                       "object store spills objects that do not fit in memory (default: the "
                       "temporary directory)")
    for ignored in ("--temp-dir", "--dashboard-agent-listen-port"):
        start.add_argument(ignored, help=argparse.SUPPRESS)   # Ray's; nothing to set here
    start.add_argument("--disable-usage-stats", action="store_true", help=argparse.SUPPRESS)

    stop = commands.add_parser("stop", help="stop the rayipy processes `rayipy start` started "
                               "on this machine")
    stop.add_argument("--grace-period", type=float, default=10.0, metavar="SECONDS",
                      help="how long to let them stop before killing them (default 10)")
    stop.add_argument("-f", "--force", action="store_true", help="kill them at once (SIGKILL)")

    status = commands.add_parser("status", help="nodes, resources in use, queued and running tasks")
    status.add_argument("--address", metavar="HOST:PORT", help="a head elsewhere (default: the "
                        "cluster this machine runs or joined)")
    status.add_argument("--password", "--redis-password", dest="password", metavar="PW")

    memory = commands.add_parser(
        "memory", help="what holds memory in the nodes' object stores, largest first",
        description="Per node, the object store's use; then each object in it, largest first: "
        "size, in memory or spilled, primary or secondary copy, readers, owner, and where it "
        "was made (the same text as rayipy.memory_summary()).")
    memory.add_argument("--stats-only", action="store_true", help="only the figures of each "
                        "node's store, not its objects")
    memory.add_argument("--address", metavar="HOST:PORT", help="a head elsewhere (default: the "
                        "cluster this machine runs or joined)")
    memory.add_argument("--password", "--redis-password", dest="password", metavar="PW")
    _state_parsers(commands)
    cli_job.add_parser(commands)
    from rayipy import cli_up
    cli_up.add_parsers(commands)
    return parser


def _state_parsers(commands: Any) -> None:
    """``list``, ``summary`` and ``timeline``: Ray's state commands (``cli_state.py``)."""
    from rayipy.cli_state import FORMATS
    from rayipy.core.state_rows import COLUMNS
    listing = commands.add_parser(
        "list", help="tasks, actors, objects, nodes or workers, as rows (Ray's state API)",
        description="Rows with Ray's field names, from the head (objects: from every node's "
        "object store). Tasks: running and queued first, then ended ones newest first; the "
        "head keeps the last 10,000 ended tasks.")
    listing.add_argument("resource", choices=list(COLUMNS))
    listing.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                         help="keep rows whose KEY equals VALUE (KEY!=VALUE: differs); "
                         "repeat for more (all must hold)")
    listing.add_argument("--limit", type=int, default=100, metavar="N",
                         help="at most N rows (default 100)")
    listing.add_argument("--detail", action="store_true", help="every field, not only "
                         "Ray's default columns")
    listing.add_argument("--format", choices=FORMATS, default="table")
    summary = commands.add_parser("summary", help="tasks per name, or actors per class, "
                                  "counted by state")
    summary.add_argument("resource", choices=["tasks", "actors"])
    summary.add_argument("--format", choices=FORMATS, default="table")
    timeline_ = commands.add_parser(
        "timeline", help="the recent tasks as a Chrome trace (chrome://tracing, Perfetto)")
    timeline_.add_argument("--output", metavar="FILE", help="where to write it (default: "
                           "rayipy-timeline-<time>.json in the current directory)")
    for parser in (listing, summary, timeline_):
        parser.add_argument("--address", metavar="HOST:PORT", help="a head elsewhere "
                            "(default: the cluster this machine runs or joined)")
        parser.add_argument("--password", "--redis-password", dest="password", metavar="PW")


def _boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


MIN_OBJECT_STORE_MEMORY = 2**20   # as init() checks it


def object_store_options(args: argparse.Namespace) -> list[str]:
    """The node agent's arguments for --object-store-memory and
    --object-spilling-directory, checked (the directory is made if need be)."""
    options: list[str] = []
    if args.object_store_memory is not None:
        text = args.object_store_memory.strip().replace("_", "")
        if not text.isdigit():
            raise CommandError(f"--object-store-memory is a number of bytes, e.g. 2000000000 "
                               f"for 2 GB, got {args.object_store_memory!r}")
        size = int(text)
        if size < MIN_OBJECT_STORE_MEMORY:
            raise CommandError(f"--object-store-memory must be at least {MIN_OBJECT_STORE_MEMORY} "
                               f"bytes (1 MiB), got {size}")
        options += ["--object-store-memory", str(size)]
    if args.object_spilling_directory is not None:
        if not args.object_spilling_directory.strip():
            raise CommandError("--object-spilling-directory must name a directory")
        directory = os.path.abspath(os.path.expanduser(args.object_spilling_directory))
        try:
            os.makedirs(directory, exist_ok=True)
        except (OSError, ValueError) as e:   # ValueError: a NUL in the name
            raise CommandError(f"--object-spilling-directory {directory!r}: cannot make it: "
                               f"{getattr(e, 'strerror', None) or e}") from None
        if not os.access(directory, os.W_OK | os.X_OK):
            raise CommandError(f"--object-spilling-directory {directory}: not writable by "
                               f"this user")
        options += ["--spill-dir", directory]
    return options


def node_resources(args: argparse.Namespace) -> dict[str, float]:
    """The --num-gpus, --memory and --resources of a start command, checked."""
    resources: dict[str, float] = {}
    if args.resources:
        try:
            parsed = json.loads(args.resources)
        except ValueError as e:
            raise CommandError(f"--resources must be a JSON object like '{{\"disk\": 2}}': {e}") from None
        if not isinstance(parsed, dict) or not all(
                isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
                and v >= 0 for k, v in parsed.items()):
            raise CommandError(f"--resources must map names to amounts >= 0, like "
                               f"'{{\"disk\": 2}}', got {args.resources}")
        for name in ("CPU", "GPU", "memory"):
            if name in parsed:
                raise CommandError(f"--resources: set {name} with --num-{name.lower()}s"
                                   if name != "memory" else "--resources: set memory with --memory")
        resources.update({k: float(v) for k, v in parsed.items()})
    for name, value in (("num-cpus", args.num_cpus), ("num-gpus", args.num_gpus),
                        ("memory", args.memory), ("dashboard-port", args.dashboard_port)):
        if value is not None and value < 0:
            raise CommandError(f"--{name} must be >= 0, got {value}")
    if args.num_gpus:
        resources["GPU"] = float(args.num_gpus)
    if args.memory is not None:
        resources["memory"] = float(args.memory)
    return resources


# -- rayipy start --------------------------------------------------------------------------------

def start(args: argparse.Namespace) -> int:
    if not args.head and not args.address:
        raise CommandError("say what to start: --head (a new cluster, with this machine as its "
                           "head) or --address=HOST:PORT (join a running cluster)")
    if args.address and args.port is not None:
        raise CommandError("--port is the head's port, for --head; to join, give it in "
                           "--address=HOST:PORT")
    resources = node_resources(args)
    store_options = object_store_options(args)
    _read_password(args)
    num_cpus = args.num_cpus if args.num_cpus is not None else (os.cpu_count() or 1)
    home = connection.machine_dir()
    with connection.locked(home):
        running = connection.running_cluster(home)
        if running is not None and args.head and running.head and not any(
                p.alive() for p in running.processes if p.role == "head"):
            # The head died and its agent lives on: restart the head alone, from its
            # journal, on the same address, with the same key.
            _restart_head(args, home, running)
            return 0
        if running is not None:
            what = "the head of" if running.head else "a node of"
            raise CommandError(f"rayipy is already running on this machine ({what} the cluster at "
                               f"{running.address}, pids {', '.join(str(p.pid) for p in running.alive())}); "
                               f"stop it first with `rayipy stop`")
        started: list[tuple[subprocess.Popen, ProcessRecord]] = []
        try:
            if args.head:
                cluster = _start_head(args, home, num_cpus, resources, store_options, started)
            else:
                cluster = _join(args, home, num_cpus, resources, store_options, started)
        except BaseException:
            daemon.stop([record for _, record in started], grace=5.0)
            for popen, _ in started:
                popen.poll()   # collect it: we are its parent
            connection.remove_cluster_file(home)
            raise
    if args.head:
        print(_head_message(cluster, num_cpus, home, args.include_dashboard,
                            bool(args.node_ip_address)))
    else:
        print(f"This machine joined the rayipy cluster at {cluster.address} as node "
              f"{cluster.node_id[:8]} ({cluster.node_ip}, {num_cpus:g} CPU).\n"
              f"`rayipy status` shows the cluster; `rayipy stop` takes this machine out of it.\n"
              f"Logs: {daemon.log_dir(home)}")
    sys.stdout.flush()
    if args.block:
        return _block([popen for popen, _ in started], cluster)
    return 0


def _read_password(args: argparse.Namespace) -> None:
    """The password of ``start``: --password, --password-file, $RAYIPY_PASSWORD, or (to
    join, from a terminal) asked for; the last three keep it out of `ps`."""
    if args.password is not None and args.password_file is not None:
        raise CommandError("give --password or --password-file, not both")
    if args.password_file is not None:
        try:
            args.password = connection.read_password_file(args.password_file)
        except ValueError as e:
            raise CommandError(str(e)) from None
    if args.password is None:
        args.password = os.environ.get(connection.PASSWORD_ENV) or None
    if args.password is None and args.address and sys.stdin.isatty():
        import getpass
        args.password = getpass.getpass(f"password of the rayipy cluster at {args.address}: ") \
            or None


def _start_head(args: argparse.Namespace, home: Path, num_cpus: int, resources: dict,
                store_options: list[str], started: list) -> ClusterFile:
    ip = connection.resolve_host(args.node_ip_address) if args.node_ip_address else \
        connection.default_node_ip()
    port = DEFAULT_PORT if args.port is None else args.port
    try:
        port = connection.check_bindable(ip, port)
    except OSError as e:
        raise CommandError(str(e)) from None
    password = args.password if args.password is not None else connection.new_password()
    if not password:
        raise CommandError("--password must not be empty")
    salt = os.urandom(SALT_BYTES)   # public; peers ask the head for it (connection.key_for)
    key = connection.key_from_password(password, salt)
    logs = daemon.log_dir(home)
    dashboard = (["--no-dashboard"] if not args.include_dashboard else
                 ["--dashboard-port", str(args.dashboard_port)]
                 + (["--dashboard-host", args.dashboard_host] if args.dashboard_host else []))
    head = daemon.spawn("head", ["--host", ip, "--port", str(port), *dashboard,
                                 "--state-dir", str(home / HEAD_STATE_DIR)], key,
                        logs / "head.log", home, salt=salt)
    started.append((head, daemon.record("head", head, logs / "head.log")))
    address = daemon.wait_listening(head, logs / "head.log").removeprefix("tcp://")
    cluster = ClusterFile(address, key.hex(), password, True, ip, os.urandom(8).hex())
    _start_agent(cluster, home, num_cpus, resources, store_options, started)
    if args.include_dashboard:
        cluster.dashboard_url = _query(f"tcp://{address}", key, "dashboard_url")
        connection.write_cluster_file(cluster, home)
    return cluster


HEAD_STATE_DIR = "head_state"   # the head's journal (node/head_store.py), in the rayipy directory


def _restart_head(args: argparse.Namespace, home: Path, cluster: ClusterFile) -> None:
    """Start the head again, where it was, from its journal: its agents, workers and
    drivers register again (they wait ``--head-restart-wait`` seconds for it)."""
    ip, port = connection.parse_address(cluster.address)
    logs = daemon.log_dir(home)
    dashboard = (["--no-dashboard"] if not args.include_dashboard else
                 ["--dashboard-port", str(args.dashboard_port)]
                 + (["--dashboard-host", args.dashboard_host] if args.dashboard_host else []))
    head = daemon.spawn("head", ["--host", ip, "--port", str(port), *dashboard, "--state-dir",
                                 str(home / HEAD_STATE_DIR), "--recover"],
                        cluster.key_bytes(), logs / "head.log", home)
    try:
        daemon.wait_listening(head, logs / "head.log")
    except BaseException:
        daemon.stop([daemon.record("head", head, logs / "head.log")], grace=5.0)
        head.poll()
        raise
    cluster.processes = [p for p in cluster.processes if p.role != "head"] + [
        daemon.record("head", head, logs / "head.log")]
    connection.write_cluster_file(cluster, home)
    print(f"The rayipy head at {cluster.address} was not running: restarted it from its "
          f"journal ({home / HEAD_STATE_DIR}). Its nodes and drivers register again within "
          f"seconds; `rayipy status` shows them.\nLogs: {logs}")
    sys.stdout.flush()


def _join(args: argparse.Namespace, home: Path, num_cpus: int, resources: dict,
          store_options: list[str], started: list) -> ClusterFile:
    try:
        host, port = connection.parse_address(args.address)
    except ValueError as e:
        raise CommandError(str(e)) from None
    if args.password is None:
        raise CommandError(f"joining {args.address} needs the cluster's password: --password=... "
                           f"(printed by `rayipy start --head` on the head machine)")
    try:
        connection.check_reachable(host, port)
        ip = connection.resolve_host(args.node_ip_address) if args.node_ip_address else \
            connection.local_ip_toward(host, port)
        key = connection.key_for(f"tcp://{host}:{port}", args.password)
    except (ConnectionError, OSError) as e:
        raise CommandError(f"cannot join {args.address}: {e}") from None
    # Check the password before starting anything, so that a wrong one fails at once.
    _query(f"tcp://{host}:{port}", key, "wait_nodes")
    cluster = ClusterFile(f"{host}:{port}", key.hex(), args.password, False, ip, os.urandom(8).hex())
    _start_agent(cluster, home, num_cpus, resources, store_options, started)
    return cluster


def _start_agent(cluster: ClusterFile, home: Path, num_cpus: int, resources: dict,
                 store_options: list[str], started: list) -> None:
    """Start this machine's node agent, record it, and wait until the head lists its node."""
    log = daemon.log_dir(home) / "agent.log"
    agent = daemon.spawn("agent", ["--head", f"tcp://{cluster.address}", "--num-cpus", str(num_cpus),
                                   "--resources", json.dumps(resources), "--node-id", cluster.node_id,
                                   "--ip", cluster.node_ip, *store_options],
                         cluster.key_bytes(), log, home)
    started.append((agent, daemon.record("agent", agent, log)))
    cluster.processes = [record for _, record in started]
    connection.write_cluster_file(cluster, home)   # from now on, `rayipy stop` finds them

    def registered(runtime) -> bool:
        if agent.poll() is not None:
            raise CommandError(f"the node agent exited ({daemon.describe_exit(agent.returncode)}):\n"
                               f"{daemon.log_tail(log)}")
        return any(node["NodeID"] == cluster.node_id for node in runtime.request("nodes"))

    _query(f"tcp://{cluster.address}", cluster.key_bytes(), until=registered,
           timeout=JOIN_TIMEOUT, waiting_for=f"the node agent to register (its log: {log})")


def _query(head_address: str, key: bytes, request: str | tuple[str, ...] = "", until=None,
           timeout: float = 0.0, waiting_for: str = "", then=None):
    """Connect to the head as a short-lived driver: the answer to ``request`` (a tuple of
    names: their answers, in a list), or wait until ``until(runtime)`` is true, or what
    ``then(runtime)`` returns."""
    from rayipy.node.client import Runtime
    runtime = Runtime("driver", head_address, key)
    try:
        runtime.start(timeout=ANSWER_TIMEOUT)
    except exceptions.AuthenticationError:
        raise CommandError(f"the head at {head_address.removeprefix('tcp://')} refused the password "
                           f"(wrong password): use the one `rayipy start --head` printed") from None
    except exceptions.RayipyError as e:
        raise CommandError(str(e)) from None
    try:
        if then is not None:
            return then(runtime)
        if until is None:
            if isinstance(request, tuple):
                return [runtime.request(name, timeout=ANSWER_TIMEOUT) for name in request]
            return runtime.request(request, timeout=ANSWER_TIMEOUT)
        deadline = time.monotonic() + timeout
        while not until(runtime):
            if time.monotonic() > deadline:
                raise CommandError(f"gave up after {timeout:g} s waiting for {waiting_for}")
            time.sleep(0.05)
        return None
    finally:
        try:
            runtime.request("disconnect", timeout=2.0)
        except Exception:
            pass
        runtime.close()


def _dashboard_problem(home: Path) -> str:
    for line in (daemon.log_dir(home) / "head.log").read_text(errors="replace").splitlines():
        if line.startswith("rayipy dashboard not started: "):
            return line.split(": ", 1)[1]
    return "see the head's log"


def _dashboard_is_local(url: str) -> bool:
    host = url.split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
    return connection.is_loopback(host)


def loopback_note(ip: str, ip_given: bool) -> str:
    """What to say when the head listens on a loopback address. The fix is an address other
    machines reach this one by; asking for --node-ip-address makes no sense to a user who
    just gave it (with a loopback address)."""
    if ip_given:
        return (f"Note: {ip} is a loopback address, so only this machine can reach the head. "
                f"To let other machines join, start it with --node-ip-address set to an "
                f"address they reach this machine by (not 127.x or localhost).")
    return (f"Note: the head listens on {ip}, so only this machine can reach it; to let other "
            f"machines join, give --node-ip-address with an address they reach this machine by.")


def _head_message(cluster: ClusterFile, num_cpus: int, home: Path, dashboard_wanted: bool,
                  ip_given: bool = False) -> str:
    address, password = cluster.address, cluster.password
    lines = [f"rayipy head started at {address}, with this machine as a node ({num_cpus:g} CPU).",
             "",
             f"The cluster's password: {password}",
             "",
             "To add another machine to this cluster, run on it (it asks for the password; or",
             f"set ${connection.PASSWORD_ENV}, or give --password-file=FILE, a file only you can "
             f"read):",
             "",
             f"    rayipy start --address='{address}'",
             "",
             f"To connect a program to this cluster (with ${connection.PASSWORD_ENV} set):",
             "",
             "    import rayipy",
             f"    rayipy.init(address='{address}')",
             "",
             "  (on this machine, rayipy.init(address='auto') finds it without the password)",
             ""]
    if cluster.dashboard_url:
        lines += [f"Dashboard: http://{cluster.dashboard_url}", ""]
        if _dashboard_is_local(cluster.dashboard_url) and not connection.is_loopback(cluster.node_ip):
            lines += ["  (this machine only: from elsewhere use `ssh -L PORT:127.0.0.1:PORT` to "
                      "this machine, or restart with --dashboard-host=ADDRESS, which requires "
                      "the token the URL then carries)", ""]
    elif dashboard_wanted:
        lines += [f"The dashboard did not start: {_dashboard_problem(home)}", ""]
    if connection.is_loopback(cluster.node_ip):
        lines += [loopback_note(cluster.node_ip, ip_given), ""]
    lines += ["`rayipy status` shows the nodes, resources and tasks; `rayipy stop` stops rayipy on "
              "this machine.",
              f"Logs: {daemon.log_dir(home)}. The connection file {connection.connection_path(home)} "
              f"holds the key: keep it private."]
    return "\n".join(lines)


def _block(processes: list[subprocess.Popen], cluster: ClusterFile) -> int:
    """--block: stay in the foreground until interrupted or until a process exits."""
    print("Running in the foreground (--block): Ctrl-C stops rayipy on this machine.", flush=True)
    stop_requested = []

    def on_signal(signum, frame) -> None:
        stop_requested.append(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    code = 0
    while not stop_requested:
        exited = [p for p in processes if p.poll() is not None]
        if exited:
            roles = {p.pid: r.role for r in cluster.processes for p in processes if p.pid == r.pid}
            print(f"rayipy {roles.get(exited[0].pid, 'process')} exited "
                  f"({daemon.describe_exit(exited[0].returncode)}): stopping rayipy on this machine",
                  file=sys.stderr, flush=True)
            code = 1
            break
        time.sleep(0.2)
    _stop_recorded(grace=10.0, force=False, quiet=True)
    for p in processes:  # we are their parent: collect them
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            pass
    return code


# -- rayipy stop / status ---------------------------------------------------------------------------

def _stop_recorded(grace: float, force: bool, quiet: bool = False) -> int:
    home = connection.machine_dir()
    with connection.locked(home):
        cluster = connection.read_cluster_file(home)
        if cluster is None:
            if not quiet:
                print("No rayipy processes started by `rayipy start` on this machine "
                      f"(no {connection.connection_path(home)}).")
            return 0
        report = daemon.stop(cluster.processes, grace=grace, force=force)
        if report.left:
            print(f"rayipy stop: these processes did not stop: {report.left}", file=sys.stderr)
            return 1
        connection.remove_cluster_file(home)
        # An agent killed (--force, or after the grace period) could not remove its
        # object store's file: remove the files whose owner is gone.
        shm.sweep_stale()
    if not quiet:
        if report.stopped:
            killed = f" ({len(report.killed)} killed after the grace period)" if report.killed and not force else ""
            print(f"Stopped {len(report.stopped)} rayipy process(es) on this machine{killed}.")
        else:
            print("rayipy's processes on this machine had already exited.")
    return 0


def _head_of(args: argparse.Namespace) -> tuple[str, bytes]:
    """The head's ``tcp://`` address and the cluster key for ``status`` and ``memory``:
    --address and --password, or this machine's connection file."""
    if args.password is None:
        args.password = os.environ.get(connection.PASSWORD_ENV) or None
    if args.address:
        try:
            host, port = connection.parse_address(args.address)
        except ValueError as e:
            raise CommandError(str(e)) from None
        if args.password is not None:
            try:
                key = connection.key_for(f"tcp://{host}:{port}", args.password)
            except ConnectionError as e:
                raise CommandError(f"the cluster is not running, or not reachable: {e}") from None
        else:
            found = connection.read_cluster_file()
            if found is None or not connection.same_address(found.address, host, port):
                raise CommandError(f"the {args.command} of {args.address} needs its password: "
                                   f"--password=...")
            key = found.key_bytes()
    else:
        found = connection.read_cluster_file()
        if found is None:
            raise CommandError(f"no rayipy cluster was started on this machine (no "
                               f"{connection.connection_path()}): start one with `rayipy start "
                               f"--head`, or give --address=HOST:PORT --password=PW")
        host, port = connection.parse_address(found.address)
        key = found.key_bytes()
    try:
        connection.check_reachable(host, port)
    except ConnectionError as e:
        raise CommandError(f"the cluster is not running, or not reachable: {e}") from None
    return f"tcp://{host}:{port}", key


def status(args: argparse.Namespace) -> int:
    head_address, key = _head_of(args)
    result, dashboard_url = _query(head_address, key, ("status", "dashboard_url"))
    if "peers" in result and "driver" in result["peers"]:
        result["peers"]["driver"] -= 1   # not counting ourselves
    print(format_status(result, dashboard_url=dashboard_url))
    return 0


def memory(args: argparse.Namespace) -> int:
    from rayipy.core.memory_report import format_memory
    from rayipy.node import memory_listing
    head_address, key = _head_of(args)
    data = _query(head_address, key, then=lambda runtime: memory_listing.collect(
        runtime, own_objects=False))
    print(format_memory(data, stats_only=args.stats_only))
    return 0


def list_state(args: argparse.Namespace) -> int:
    from rayipy.cli_state import format_rows
    from rayipy.core import state_rows
    from rayipy.util.state import object_rows
    kind = args.resource
    try:
        filters = state_rows.check_filters(kind, [state_rows.parse_filter(f) for f in args.filter])
        limit = state_rows.check_limit(args.limit)
    except ValueError as e:
        raise CommandError(str(e)) from None
    head_address, key = _head_of(args)

    def ask(runtime: Any) -> dict:
        if kind == "objects":
            listing = state_rows.select(object_rows(runtime, own_objects=False), filters, limit,
                                        kind, args.detail)
            return {"rows": listing.rows, "total": listing.total}
        wanted = filters
        if kind == "workers":   # not this command's own short-lived connection
            wanted = filters + [("worker_id", "!=", runtime.process_id.hex())]
        return runtime.request("state_list", kind, wanted, limit, args.detail,
                               timeout=ANSWER_TIMEOUT)

    answer = _query(head_address, key, then=ask)
    print(format_rows(answer["rows"], args.format, kind, answer["total"]))
    return 0


def summary_state(args: argparse.Namespace) -> int:
    from rayipy.cli_state import format_summary
    head_address, key = _head_of(args)
    answer = _query(head_address, key, then=lambda runtime: runtime.request(
        "state_summary", args.resource, timeout=ANSWER_TIMEOUT))
    print(format_summary(answer, args.resource, args.format))
    return 0


def timeline(args: argparse.Namespace) -> int:
    head_address, key = _head_of(args)
    events = _query(head_address, key, "timeline")
    path = Path(args.output or time.strftime("rayipy-timeline-%Y-%m-%d_%H-%M-%S.json"))
    try:
        path.write_text(json.dumps(events))
    except OSError as e:
        raise CommandError(f"cannot write {path}: {e}") from None
    tasks = sum(1 for e in events if e.get("ph") == "X")
    print(f"Wrote {tasks} task(s) to {path}: open it in chrome://tracing or "
          f"https://ui.perfetto.dev")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "info":
            print(info())
            return 0
        if args.command == "start":
            return start(args)
        if args.command == "stop":
            return _stop_recorded(args.grace_period, args.force)
        if args.command == "status":
            return status(args)
        if args.command == "memory":
            return memory(args)
        if args.command == "list":
            return list_state(args)
        if args.command == "summary":
            return summary_state(args)
        if args.command == "timeline":
            return timeline(args)
        if args.command == "job":
            return cli_job.run(args)
        if args.command in ("up", "down"):
            from rayipy import cli_up
            try:
                return cli_up.up(args) if args.command == "up" else cli_up.down(args)
            except cli_up.UpError as e:
                raise CommandError(str(e)) from None
    except (CommandError, cli_job.JobCommandError) as e:
        print(f"rayipy {args.command}: {e}", file=sys.stderr)
        return 1
    except exceptions.RayipyError as e:
        print(f"rayipy {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"rayipy {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:   # `rayipy status | head`: the reader left, nothing is wrong
        sys.stdout = None
        return 0
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
