"""The rayipy command."""

from __future__ import annotations

import subprocess
import sys

import rayipy


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rayipy.cli", *args], capture_output=True,
                          text=True, timeout=60)


def test_version_and_info():
    assert run("--version").stdout.strip() == f"rayipy {rayipy.__version__}"
    info = run("info")
    assert info.returncode == 0 and "pyzmq" in info.stdout and "CPUs" in info.stdout


def test_cluster_commands_say_they_are_not_there_yet():
    result = run("status")
    assert result.returncode == 2
    assert "not in rayipy" in result.stderr and "rayipy.init()" in result.stderr
