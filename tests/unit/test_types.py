"""The type check: mypy, with the project's configuration ([tool.mypy] in pyproject.toml),
over the modules listed in ``CHECKED``; and the check that the real process runtime
(``rayipy.node.client.Runtime``) is what ObjectRef expects (``object_ref.Runtime``).

mypy runs as ``python -m mypy`` from the repository root, as a developer would run it,
with its cache in ``.mypy_cache`` there, so that a second run takes a second or two.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rayipy.core import object_ref
from rayipy.node import client

# What mypy checks, relative to the repository root. The target is all of "rayipy/core"
# and "rayipy/protocol" (issue 11); until then, the modules that pass. This file is
# always checked as well: it holds the Runtime conformance check below.
CHECKED = [
    "rayipy/core",
    "rayipy/protocol",
    "rayipy/transport",
    "rayipy/exceptions.py",
]

ROOT = Path(__file__).resolve().parents[2]
THIS_FILE = Path(__file__).resolve().relative_to(ROOT).as_posix()
MYPY_TIMEOUT_SECONDS = 100    # about 5 s without a cache here, under 1 s with it

needs_mypy = pytest.mark.skipif(
    importlib.util.find_spec("mypy") is None,
    reason="mypy is not installed (it is in the 'test' extra: pip install -e '.[test]')")


def _client_runtime_is_an_object_ref_runtime(runtime: client.Runtime) -> object_ref.Runtime:
    """Never called: mypy fails here if the real Runtime lacks a member that ObjectRef
    uses, or has one of another type."""
    return runtime


def run_mypy(*paths: str) -> subprocess.CompletedProcess[str]:
    # MYPYPATH: ``rayipy`` is this checkout, even for a file outside it, and never the
    # copy that an installed (or editable) rayipy would be found at.
    env = {**os.environ, "MYPYPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", "pyproject.toml", *paths],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=MYPY_TIMEOUT_SECONDS)


@needs_mypy
def test_mypy_finds_no_errors() -> None:
    result = run_mypy(*CHECKED, THIS_FILE)
    assert result.returncode == 0, f"mypy found errors:\n{result.stdout}{result.stderr}"


@needs_mypy
def test_mypy_reports_a_runtime_that_does_not_fit(tmp_path: Path) -> None:
    """The check above can fail: a runtime without ``on_ref_rebuilt`` is refused, and
    so is a wrong type, under the same configuration."""
    source = tmp_path / "partial_runtime.py"
    source.write_text(
        "from typing import Any\n"
        "from rayipy.core import object_ref\n"
        "from rayipy.core.objects import ObjectTable\n"
        "class Partial:\n"
        "    objects = ObjectTable(b'x' * 8)\n"
        "    def get_values(self, refs: list[object_ref.ObjectRef], timeout: float | None"
        ") -> list[Any]: return []\n"
        "    def value_or_error(self, object_id: bytes) -> tuple[bool, Any]: return True, 1\n"
        "    def request_values(self, object_ids: list[bytes]) -> None: pass\n"
        "    def wait_refs(self, refs: list[object_ref.ObjectRef], num_returns: int,\n"
        "                  timeout: float | None, raise_timeout: bool = False\n"
        "                  ) -> tuple[list[object_ref.ObjectRef], list[object_ref.ObjectRef]]:\n"
        "        return [], []\n"
        "def fits(runtime: Partial) -> object_ref.Runtime:\n"
        "    return runtime\n"
        "count: int = 'one'\n")
    result = run_mypy(str(source))
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'partial_runtime.py:14: error: Incompatible return value type (got "Partial", ' \
           'expected "Runtime")' in result.stdout, result.stdout
    assert 'missing following "Runtime" protocol member:' in result.stdout, result.stdout
    assert "on_ref_rebuilt" in result.stdout, result.stdout
    assert "partial_runtime.py:15: error: Incompatible types in assignment" in result.stdout, \
        result.stdout


def test_client_runtime_has_every_method_object_ref_uses() -> None:
    """Without mypy too: each method of the protocol exists on the real Runtime and
    takes the same parameters (mypy compares their types as well)."""
    for name, member in vars(object_ref.Runtime).items():
        if name.startswith("_"):
            continue
        real = getattr(client.Runtime, name, None)
        if isinstance(member, property):
            continue   # an attribute of the instance (``objects``): mypy checks it
        assert callable(real), f"rayipy.node.client.Runtime has no method {name}()"
        wanted = list(inspect.signature(member).parameters.values())
        have = inspect.signature(real).parameters
        for parameter in wanted:
            assert parameter.name in have, f"Runtime.{name}() takes no {parameter.name!r}"
            if parameter.default is not inspect.Parameter.empty:
                assert have[parameter.name].default is not inspect.Parameter.empty, \
                    f"Runtime.{name}()'s {parameter.name!r} needs a default"
