"""Launchers: start a rayipy cluster where the machines are, through the tools that
manage them, and stop everything they started.

- ``SSHCluster(hosts)``: the system's ``ssh`` (``ssh.py``);
- ``SlurmCluster(nodes=...)``: one Slurm batch job (``slurm.py``, ``slurm_task.py``).

Both have ``.address`` and ``.password`` for ``rayipy.init``, ``.close()`` and the
context-manager protocol (``base.py``). ``rayipy up``/``down`` (``rayipy/cli_up.py``,
with ``spec.py``) and ``%cluster start --ssh/--slurm`` are built on them.
"""

from rayipy.cluster.base import Launcher
from rayipy.cluster.slurm import SlurmCluster
from rayipy.cluster.ssh import SSHCluster

__all__ = ["Launcher", "SSHCluster", "SlurmCluster"]
