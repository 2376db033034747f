"""The ``rayipy`` command.

Today: ``rayipy --version`` and ``rayipy info`` (what this machine would offer a local
cluster, for bug reports). ``rayipy start|stop|status`` for clusters across machines
come with the cluster work; until then this command says so instead of failing obscurely.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

import rayipy

CLUSTER_COMMANDS = ("start", "stop", "status")


def info() -> str:
    import cloudpickle
    import zmq
    lines = [
        f"rayipy {rayipy.__version__}",
        f"python {platform.python_version()} ({sys.executable})",
        f"pyzmq {zmq.__version__}, libzmq {zmq.zmq_version()}, cloudpickle {cloudpickle.__version__}",
        f"CPUs for a local cluster: {os.cpu_count()}",
        f"platform: {platform.platform()}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rayipy", description="Ray-style distributed computing, "
                                     "Jupyter-first. In Python: rayipy.init() starts a local cluster.")
    parser.add_argument("--version", action="version", version=f"rayipy {rayipy.__version__}")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("info", help="versions and what a local cluster would use here")
    for name in CLUSTER_COMMANDS:
        commands.add_parser(name, help="clusters across machines (not in this version)")
    args = parser.parse_args(argv)
    if args.command == "info":
        print(info())
        return 0
    if args.command in CLUSTER_COMMANDS:
        print(f"rayipy {args.command}: clusters across machines are not in rayipy "
              f"{rayipy.__version__} yet. For a cluster on this machine, call rayipy.init() "
              f"in your program.", file=sys.stderr)
        return 2
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
