"""Shared fixtures: a local cluster that always stops, and checks that nothing leaks."""

from __future__ import annotations

import pytest

import rayipy
from helpers import stop_cluster


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
