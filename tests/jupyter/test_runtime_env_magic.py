"""%cluster start --runtime-env JSON, through a real InteractiveShell; and a local module
edited between two calls (the %autoreload habit) reaching the workers."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

import rayipy


def test_cluster_start_takes_a_runtime_env_as_json(shell):
    with pytest.raises(UsageError, match="--runtime-env must be JSON"):
        shell.run_line_magic("cluster", "start -n 1 --runtime-env {nope")
    with pytest.raises(UsageError, match="conda environments are not supported"):
        shell.run_line_magic("cluster", """start -n 1 --runtime-env '{"conda": "x.yml"}'""")
    assert not rayipy.is_initialized()
    shell.run_line_magic("cluster", """start -n 1 --runtime-env '{"env_vars": {"MAGIC_ENV": "on"}}'""")
    try:
        shell.run_cell("import os, rayipy\n"
                       "@rayipy.remote\n"
                       "def magic_env():\n"
                       "    return os.environ.get('MAGIC_ENV')\n"
                       "magic_value = rayipy.get(magic_env.remote())\n")
        assert shell.user_ns["magic_value"] == "on"
    finally:
        shell.run_line_magic("cluster", "stop --force")
