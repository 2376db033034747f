"""Shared fixtures: a local cluster that always stops, and checks that nothing leaks."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

import rayipy
from helpers import stop_cluster
from rayipy.node import shm

# Tests never see the developer's own cluster (~/.rayipy, $RAYIPY_ADDRESS): init() with no
# address would connect to it, as Ray's does.
os.environ["RAYIPY_HOME"] = tempfile.mkdtemp(prefix="rayipy-test-home-")
os.environ.pop("RAYIPY_ADDRESS", None)
atexit.register(shutil.rmtree, os.environ["RAYIPY_HOME"], True)
# Tests that SIGKILL whole hosts (tests/multihost) kill agents that cannot remove their
# object store's file; a new store sweeps such files, and so does the suite when it ends.
atexit.register(shm.sweep_stale)


@pytest.fixture(scope="module")
def cluster():
    """One local 2-CPU cluster per test module."""
    rayipy.init(num_cpus=2)
    try:
        yield rayipy
    finally:
        stop_cluster()


@pytest.fixture
def fresh_cluster():
    """A cluster of its own, for tests that break things."""
    def start(**kwargs):
        rayipy.init(**{"num_cpus": 2, **kwargs})
        return rayipy
    try:
        yield start
    finally:
        stop_cluster()
