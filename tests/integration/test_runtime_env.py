"""runtime_env on a real local cluster: env_vars, working_dir, py_modules, pip (a wheel
built here, installed with no network), workers kept apart by environment, failures."""

from __future__ import annotations

import os
import sys

import pytest

import rayipy
from rayipy.exceptions import RuntimeEnvSetupError
from wheel_factory import make_wheel


@pytest.fixture(scope="module")
def env_cluster(tmp_path_factory):
    """A 2-CPU cluster whose nodes cache environments in a directory of this module's."""
    cache = tmp_path_factory.mktemp("renv-cache")
    old = os.environ.get("RAYIPY_RUNTIME_ENV_DIR")
    os.environ["RAYIPY_RUNTIME_ENV_DIR"] = str(cache)
    rayipy.init(num_cpus=2, include_dashboard=False)
    try:
        yield cache
    finally:
        from helpers import stop_cluster
        stop_cluster()
        if old is None:
            os.environ.pop("RAYIPY_RUNTIME_ENV_DIR", None)
        else:
            os.environ["RAYIPY_RUNTIME_ENV_DIR"] = old


@rayipy.remote
def probe(name: str) -> tuple:
    return os.environ.get(name), os.getpid(), os.getcwd()


def test_env_vars_reach_the_task_and_workers_of_other_envs_are_other_processes(env_cluster):
    a_value, a_pid, _ = rayipy.get(probe.options(runtime_env={"env_vars": {"RENV_A": "1"}})
                                   .remote("RENV_A"))
    b_value, b_pid, _ = rayipy.get(probe.options(runtime_env={"env_vars": {"RENV_A": "2"}})
                                   .remote("RENV_A"))
    plain_values = rayipy.get([probe.remote("RENV_A") for _ in range(8)])
    assert (a_value, b_value) == ("1", "2")
    assert a_pid != b_pid
    assert {v for v, _, _ in plain_values} == {None}
    assert not {p for _, p, _ in plain_values} & {a_pid, b_pid}
    # The same environment again: the same worker serves it.
    again = rayipy.get(probe.options(runtime_env={"env_vars": {"RENV_A": "1"}}).remote("RENV_A"))
    assert again[:2] == ("1", a_pid)


def test_an_actor_runs_in_its_environment(env_cluster):
    @rayipy.remote
    class Reader:
        def read(self) -> str | None:
            return os.environ.get("RENV_ACTOR")
    actor = Reader.options(runtime_env={"env_vars": {"RENV_ACTOR": "yes"}}).remote()
    assert rayipy.get(actor.read.remote()) == "yes"


def test_working_dir_is_shipped_with_excludes_and_gitignore(env_cluster, tmp_path):
    (tmp_path / "data.txt").write_text("payload")
    (tmp_path / "skip.log").write_text("x")
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "big.bin").write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".gitignore").write_text("*.tmp\n")
    (tmp_path / "sub" / "a.tmp").write_text("x")
    (tmp_path / "sub" / "keep.txt").write_text("x")

    @rayipy.remote
    def look() -> tuple:
        files = sorted(os.path.relpath(os.path.join(r, f), ".") for r, _, fs in os.walk(".")
                       for f in fs)
        with open("data.txt") as f:
            return f.read(), files
    env = {"working_dir": str(tmp_path), "excludes": ["*.log", "build/"]}
    text, files = rayipy.get(look.options(runtime_env=env).remote())
    assert text == "payload"
    assert files == ["data.txt", "sub/.gitignore", "sub/keep.txt"]


def test_a_working_dir_over_the_limit_is_refused_naming_its_largest_file(env_cluster, tmp_path,
                                                                      monkeypatch):
    (tmp_path / "huge.bin").write_bytes(b"x" * 5000)
    monkeypatch.setenv("RAYIPY_RUNTIME_ENV_SIZE_LIMIT", "1000")
    with pytest.raises(ValueError, match=r"over the limit.*huge\.bin.*excludes"):
        probe.options(runtime_env={"working_dir": str(tmp_path)}).remote("X")
    with pytest.raises(ValueError, match="is not a directory"):
        probe.options(runtime_env={"working_dir": str(tmp_path / "missing")}).remote("X")


def test_py_modules_are_importable(env_cluster, tmp_path):
    package = tmp_path / "renv_helper_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("VALUE = 42\n")

    @rayipy.remote
    def use() -> int:
        import renv_helper_pkg
        return renv_helper_pkg.VALUE
    assert rayipy.get(use.options(runtime_env={"py_modules": [str(package)]}).remote()) == 42


def test_pip_installs_a_local_wheel_once_and_a_bad_requirement_fails_the_task(env_cluster,
                                                                            tmp_path):
    wheels = tmp_path / "wheels"
    make_wheel(str(wheels), "renvtinypkg", "1.0", "def hello():\n    return 'hi from wheel'\n")
    env = {"pip": ["--no-index", f"--find-links {wheels}", "renvtinypkg==1.0"]}

    @rayipy.remote
    def hello() -> tuple:
        import renvtinypkg
        import rayipy as inside   # the base environment stays importable
        return renvtinypkg.hello(), sys.prefix, inside.__name__
    text, prefix, name = rayipy.get(hello.options(runtime_env=env).remote(), timeout=120)
    assert (text, name) == ("hi from wheel", "rayipy")
    assert prefix.startswith(str(env_cluster / "venvs"))
    assert rayipy.get(hello.options(runtime_env=env).remote())[1] == prefix
    assert len(os.listdir(env_cluster / "venvs")) == 2   # the venv and its lock file

    bad = {"pip": ["--no-index", f"--find-links {wheels}", "renv-no-such-package==9"]}
    with pytest.raises(RuntimeEnvSetupError, match=r"(?s)pip install failed.*No matching distribution.*renv-no-such-package"):
        rayipy.get(hello.options(runtime_env=bad).remote(), timeout=120)
    assert rayipy.get(probe.remote("X"))[0] is None   # the cluster goes on


def test_nested_tasks_inherit_the_environment(env_cluster):
    @rayipy.remote
    def outer() -> str | None:
        return rayipy.get(probe.remote("RENV_NESTED"))[0]
    assert rayipy.get(outer.options(runtime_env={"env_vars": {"RENV_NESTED": "in"}}).remote()) == "in"


def test_keys_rayipy_does_not_support_are_refused_naming_the_alternative(env_cluster):
    with pytest.raises(ValueError, match="conda.*use 'pip'"):
        probe.options(runtime_env={"conda": "env.yml"})
    with pytest.raises(ValueError, match="container.*start the nodes inside"):
        probe.options(runtime_env={"container": {"image": "x"}})
