"""``%cluster start --ssh/--slurm``: options that do not go together are refused before
anything starts (the launchers themselves are tested on real sshd and Slurm in
tests/multihost/test_ssh_launcher.py and test_slurm_launcher.py)."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError


@pytest.mark.parametrize("line, message", [
    ("start --ssh a,b --slurm", "not both"),
    ("start --ssh a,b --nodes 2", "--nodes go with --slurm"),
    ("start --ssh ' , '", "at least one host"),
    ("start --ssh a,a", "listed twice"),
    ("start --ssh=-oProxyCommand=x", "not a host"),
    ("start --slurm --ssh-config f", "--ssh-config goes with --ssh"),
    ("start --slurm -n 4", "--cpus-per-node"),
    ("start --slurm --nodes 0", "nodes must be"),
    ("start --slurm --time 'two hours'", "time is Slurm's"),
])
def test_bad_launcher_options_are_refused(shell, line, message):
    with pytest.raises(UsageError, match=message):
        shell.run_line_magic("cluster", line)
