"""``rayipy up FILE`` and ``rayipy down FILE``: a launcher's cluster from a cluster file.

``up`` reads the file (``rayipy/cluster/spec.py``), starts the cluster with its
launcher, prints the address and password, and leaves it running: the launcher's
``record()`` goes to ``$RAYIPY_HOME/launched/NAME.json`` (0600: it holds the password).
``down`` reads that record back and stops everything ``up`` started (``rayipy stop`` on
each SSH host, ``scancel`` of the Slurm job), then removes the record.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from rayipy import exceptions


class UpError(Exception):
    """A failure ``up``/``down`` reports as one message and exit code 1."""


def add_parsers(commands: Any) -> None:
    up = commands.add_parser(
        "up", help="start a cluster on SSH hosts or as a Slurm job, from a cluster file",
        description="Start the cluster a cluster file describes (provider: ssh or slurm; see "
        "docs/cluster.md) and leave it running; `rayipy down FILE` stops it.")
    up.add_argument("file", help="the cluster file (YAML, or JSON)")
    down = commands.add_parser("down", help="stop what `rayipy up FILE` started")
    down.add_argument("file", help="the cluster file given to `rayipy up`")


def record_path(name: str) -> Path:
    from rayipy.node.connection import rayipy_home
    return rayipy_home() / "launched" / f"{name}.json"


def _spec(path: str):
    from rayipy.cluster import spec
    try:
        return spec.load(path)
    except ValueError as e:
        raise UpError(str(e)) from None


def _launcher_class(provider: str):
    from rayipy.cluster import SlurmCluster, SSHCluster
    return {"ssh": SSHCluster, "slurm": SlurmCluster}[provider]


def up(args: argparse.Namespace) -> int:
    from rayipy.node.connection import make_private_dir
    cluster_spec = _spec(args.file)
    where = record_path(cluster_spec.name)
    if where.exists():
        raise UpError(f"the cluster {cluster_spec.name!r} is already up (recorded in {where}): "
                      f"`rayipy down {args.file}` first")
    launcher_class = _launcher_class(cluster_spec.provider)
    try:
        launcher = launcher_class(**cluster_spec.settings)
    except (TypeError, ValueError) as e:
        raise UpError(f"{args.file}: {e}") from None
    try:
        record = dict(launcher.detach(), password=launcher.password, file=str(Path(args.file).absolute()))
        make_private_dir(where.parent)
        fd = os.open(where, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
    except BaseException:
        launcher.close()
        raise
    print(f"rayipy cluster {cluster_spec.name!r} is up ({cluster_spec.provider}), head at "
          f"{launcher.address}.\n\nThe cluster's password: {launcher.password}\n\n"
          f"To connect a program (with $RAYIPY_PASSWORD set to it):\n\n"
          f"    import rayipy\n    rayipy.init(address='{launcher.address}')\n\n"
          f"`rayipy down {args.file}` stops it. The record {where} holds the password: keep "
          f"it private.")
    return 0


def down(args: argparse.Namespace) -> int:
    cluster_spec = _spec(args.file)
    where = record_path(cluster_spec.name)
    try:
        record = json.loads(where.read_text())
    except FileNotFoundError:
        raise UpError(f"no cluster {cluster_spec.name!r} is up (no {where})") from None
    except (OSError, ValueError) as e:
        raise UpError(f"cannot read {where}: {e}") from None
    launcher = _launcher_class(record["provider"]).from_record(record, record.get("password", ""))
    try:
        launcher.close()
    except exceptions.ClusterLaunchError as e:
        raise UpError(f"stopping {cluster_spec.name!r}: {e}\n(the record {where} is kept; "
                      f"`rayipy down` again retries)") from None
    where.unlink()
    print(f"rayipy cluster {cluster_spec.name!r} is down.")
    return 0
