"""The magics, and the notebook defaults users set with ``%config`` or a config file.

``RayipyMagics`` is a traitlets Configurable (IPython's ``Magics`` is one)::

    %config RayipyMagics.progress_threshold = 0.5    # seconds before a get shows a bar
    %config RayipyMagics.auto_progress = False       # never show one by itself

or ``c.RayipyMagics.num_cpus = 8`` in ``ipython_config.py``. Changes apply at once.
"""

from __future__ import annotations

import shlex
from typing import Any, Callable

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import (MagicArgumentParser, argument, magic_arguments,
                                          parse_argstring)
from traitlets import Bool, Float, Int, observe

from rayipy.cluster import commands as launch_commands
from rayipy.jupyter import cluster, remote


_START = MagicArgumentParser(
    prog="%cluster start", usage="%cluster start [-n N] [--num-gpus G] "
    "[--ssh HOST1,HOST2 [--ssh-config FILE] | --slurm [--nodes N] [--cpus-per-node C] "
    "[--partition P] [--time T]]")
_START.add_argument("-n", "--num-cpus", type=int, default=None, help="number of CPUs (workers)")
_START.add_argument("--num-gpus", type=int, default=None, help="number of GPUs")
_START.add_argument("--runtime-env", default=None, help=cluster.RUNTIME_ENV_HELP)
_START.add_argument("--ssh", default=None, metavar="HOSTS", help="launch on these hosts over "
                    "ssh (comma-separated; the head on the first); -n: CPUs per host")
_START.add_argument("--ssh-config", default=None, metavar="FILE", help="with --ssh: ssh's "
                    "configuration file (ssh -F)")
_START.add_argument("--slurm", action="store_true", help="launch as a Slurm batch job")
_START.add_argument("--nodes", type=int, default=None, help="with --slurm: nodes (default 1)")
_START.add_argument("--cpus-per-node", type=int, default=None, help="with --slurm")
_START.add_argument("--partition", default=None, help="with --slurm")
_START.add_argument("--time", default=None, help="with --slurm: the job's time limit")
_STOP = MagicArgumentParser(prog="%cluster stop", usage="%cluster stop [--force]")
_STOP.add_argument("--force", action="store_true",
                   help="stop even though tasks are still queued or running (they are lost)")
_CONNECT = MagicArgumentParser(prog="%cluster connect",
                               usage="%cluster connect HOST:PORT [--password PW]")
_CONNECT.add_argument("address", help="host:port of the cluster's head")
_CONNECT.add_argument("--password", default=None, help="the cluster's password")
_CONNECT.add_argument("--runtime-env", default=None, help=cluster.RUNTIME_ENV_HELP)


@magics_class
class RayipyMagics(Magics):
    """``%cluster``, ``%%remote`` and ``%remote``."""

    num_cpus = Int(None, allow_none=True, help="CPUs (workers) of a cluster started by "
                   "%cluster start without -n; None: every CPU of this machine").tag(config=True)
    num_gpus = Int(None, allow_none=True, help="GPUs of a cluster started by %cluster start "
                   "without --num-gpus").tag(config=True)
    auto_progress = Bool(True, help="a blocking get of many refs shows a progress bar after "
                         "progress_threshold seconds").tag(config=True)
    progress_threshold = Float(1.0, min=0.0, help="seconds a get waits before its progress "
                               "bar appears").tag(config=True)
    auto_progress_min_refs = Int(2, min=1, help="a get of fewer refs never shows a bar "
                                 "by itself").tag(config=True)
    route_output = Bool(True, help="task output goes to the cell that submitted the task (else "
                        "to the cell running when it arrives)").tag(config=True)
    output_widget = Bool(True, help="in a kernel with ipywidgets, a cell's task output goes "
                         "into an output widget the cell shows: it survives a page reload "
                         "while the kernel lives (else it is sent as the cell's own "
                         "output, which a reload drops)").tag(config=True)
    interrupt_grace = Float(3.0, min=0.0, help="after an interrupt cancels the tasks a cell waits "
                            "on, kill those still running after this many seconds").tag(config=True)

    def __init__(self, shell: Any, on_change: Callable[[], None] | None = None, **kwargs: Any) -> None:
        self._on_change = None      # config from the shell is applied during __init__
        super().__init__(shell=shell, **kwargs)
        self._on_change = on_change
        self.local_counts: Callable[[], dict] = dict

    @observe("auto_progress", "progress_threshold", "auto_progress_min_refs", "route_output",
             "interrupt_grace", "output_widget")
    def _settings_changed(self, change: Any) -> None:
        if self._on_change is not None:
            self._on_change()

    # -- %cluster ---------------------------------------------------------------------------
    @line_magic
    def cluster(self, line: str) -> Any:
        """Start, join, inspect or stop the rayipy cluster of this notebook.

        %cluster start [-n N] [--num-gpus G]   a local cluster with N workers (CPUs)
        %cluster start --ssh HOST1,HOST2 [-n N] [--ssh-config FILE]
                                               a cluster on these hosts, over ssh
        %cluster start --slurm [--nodes N] [--cpus-per-node C] [--partition P] [--time T]
                                               a cluster as a Slurm batch job
        %cluster connect ADDRESS [--password PW]   join a running cluster (host:port)
        %cluster status                        nodes, resources and task counts
        %cluster stop [--force]                stop the local cluster, or disconnect;
                                               refused while tasks run, unless --force
        %cluster dashboard                     the link to the cluster's dashboard
        """
        __tracebackhide__ = True
        words = shlex.split(line)
        if not words:
            return cluster.status(self.local_counts()) if cluster.context() else self._usage()
        command, rest = words[0], words[1:]
        handler = {"start": self._start, "connect": self._connect, "status": self._status,
                   "stop": self._stop, "dashboard": self._dashboard}.get(command)
        if handler is None:
            raise UsageError(f"unknown %cluster command {command!r}; use one of: start, connect, "
                             f"status, stop, dashboard")
        return handler(rest)

    def _usage(self) -> None:
        print(self.cluster.__doc__)

    @staticmethod
    def _parse(parser: MagicArgumentParser, words: list[str]) -> Any:
        try:
            return parser.parse_args(words)
        except UsageError as e:
            raise UsageError(f"{e}; usage: {parser.usage}") from None

    def _start(self, words: list[str]) -> Any:
        args = self._parse(_START, words)
        num_cpus = args.num_cpus if args.num_cpus is not None else self.num_cpus
        num_gpus = args.num_gpus if args.num_gpus is not None else self.num_gpus
        for name, value in (("-n", num_cpus), ("--num-gpus", num_gpus)):
            if value is not None and value < 0:
                raise UsageError(f"{name} must be 0 or more, got {value}")
        runtime_env = cluster.parse_runtime_env(args.runtime_env)
        if args.ssh is not None or args.slurm:
            return self._start_launched(args, runtime_env)
        return cluster.start(num_cpus, num_gpus, runtime_env)

    @staticmethod
    def _start_launched(args: Any, runtime_env: dict[str, Any] | None = None) -> Any:
        """--ssh or --slurm: the options of the one given, none of the other's."""
        slurm_only = {"--nodes": args.nodes, "--cpus-per-node": args.cpus_per_node,
                      "--partition": args.partition, "--time": args.time}
        if args.ssh is not None and args.slurm:
            raise UsageError("give --ssh HOSTS or --slurm, not both")
        if args.ssh is not None:
            given = [name for name, value in slurm_only.items() if value is not None]
            if given:
                raise UsageError(f"{', '.join(given)} go with --slurm, not --ssh")
            try:
                hosts = launch_commands.parse_hosts(args.ssh)
            except ValueError as e:
                raise UsageError(str(e)) from None
            settings: dict[str, Any] = {"hosts": hosts, "num_cpus": args.num_cpus}
            if args.num_gpus is not None:
                settings["start_options"] = ["--num-gpus", str(args.num_gpus)]
            if args.ssh_config is not None:
                settings["ssh_options"] = ["-F", args.ssh_config]
            return cluster.start_launched("ssh", settings, runtime_env)
        if args.ssh_config is not None:
            raise UsageError("--ssh-config goes with --ssh")
        if args.num_cpus is not None or args.num_gpus is not None:
            raise UsageError("with --slurm, give --cpus-per-node (GPUs: not yet)")
        settings = {k: v for k, v in (("nodes", args.nodes), ("cpus_per_node", args.cpus_per_node),
                                      ("partition", args.partition), ("time", args.time))
                    if v is not None}
        return cluster.start_launched("slurm", settings, runtime_env)

    def _connect(self, words: list[str]) -> Any:
        args = self._parse(_CONNECT, words)
        return cluster.connect(args.address, args.password,
                               cluster.parse_runtime_env(args.runtime_env))

    def _no_args(self, command: str, words: list[str]) -> None:
        if words:
            raise UsageError(f"%cluster {command} takes no arguments, got {' '.join(words)!r}")

    def _status(self, words: list[str]) -> Any:
        self._no_args("status", words)
        return cluster.status(self.local_counts())

    def _stop(self, words: list[str]) -> None:
        args = self._parse(_STOP, words)
        print(cluster.stop(force=args.force))

    def _dashboard(self, words: list[str]) -> Any:
        self._no_args("dashboard", words)
        return cluster.dashboard()

    # -- %%remote / %remote ------------------------------------------------------------------
    @magic_arguments()
    @argument("--num-cpus", type=float, default=None, help="CPUs each task (or actor) needs")
    @argument("--num-gpus", type=float, default=None, help="GPUs each task (or actor) needs")
    @argument("--max-retries", type=int, default=None,
              help="retries of a task whose worker died (functions and --run)")
    @argument("--run", action="store_true", help="run the cell itself as one task on a worker")
    @argument("-o", "--output", default=None, metavar="NAME",
              help="with --run: store the value (or, with --no-block, the ref) in NAME")
    @argument("--no-block", action="store_true", help="with --run: return at once, with the ref")
    @argument("--all", action="store_true", help="run the cell on every worker (imports, setup)")
    @cell_magic
    def remote(self, line: str, cell: str) -> Any:
        """Run a cell's code on the cluster.

        %%remote [--num-cpus N] [--num-gpus N] [--max-retries N]
            Run the cell here; every function and class it defines at top level becomes a
            remote function / actor class under the same name (names starting with _ stay
            plain), sent to the cluster at once. Call them with f.remote(...).
        %%remote --run [-o NAME] [--no-block]
            Run the cell as one task on a worker, with the notebook variables it reads;
            its output streams here and its last expression's value is shown (or stored
            in NAME; with --no-block, NAME gets the ObjectRef at once).
        %%remote --all
            Run the cell on every worker (imports, setup); output grouped per worker.
        """
        __tracebackhide__ = True
        args = parse_argstring(self.remote, line)
        options = {k: v for k, v in (("num_cpus", args.num_cpus), ("num_gpus", args.num_gpus),
                                     ("max_retries", args.max_retries)) if v is not None}
        if args.all:
            if args.run or args.output or args.no_block or options:
                raise UsageError("%%remote --all takes no other option: the cell runs once on "
                                 "every worker, taking no CPU of its own")
            remote.run_everywhere(self.shell, cell)
            return None
        if (args.output or args.no_block) and not args.run:
            raise UsageError("-o and --no-block go with --run: %%remote --run -o NAME")
        if args.output is not None and not args.output.isidentifier():
            raise UsageError(f"-o needs a variable name, got {args.output!r}")
        if args.run:
            value = remote.run(self.shell, cell, options, block=not args.no_block)
            if args.output is not None:
                self.shell.user_ns[args.output] = value
                return None
            return value
        remote.define(self.shell, cell, options)
        return None

    @line_magic("remote")
    def remote_line(self, line: str) -> Any:
        """%remote EXPR: evaluate one expression on a worker and show its value."""
        __tracebackhide__ = True
        if not line.strip():
            raise UsageError("%remote needs an expression, e.g. %remote socket.gethostname()")
        return remote.run(self.shell, line.strip(), {})
