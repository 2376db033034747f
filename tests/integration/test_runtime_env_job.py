"""init(runtime_env=): the job's environment, and a local module edited between calls
(the %autoreload habit) reaching the workers."""

from __future__ import annotations

import importlib
import os
import sys

import pytest

import rayipy


@rayipy.remote
def read(name: str) -> str | None:
    return os.environ.get(name)


def test_init_runtime_env_applies_to_every_task_and_merges_env_vars(fresh_cluster, tmp_path):
    (tmp_path / "note.txt").write_text("from the job")
    fresh_cluster(num_cpus=2, include_dashboard=False,
                  runtime_env={"env_vars": {"JOB_A": "job", "JOB_B": "job"},
                               "working_dir": str(tmp_path)})

    @rayipy.remote
    def note() -> str:
        with open("note.txt") as f:
            return f.read()
    assert rayipy.get(note.remote()) == "from the job"
    assert rayipy.get(read.remote("JOB_A")) == "job"
    task_env = {"env_vars": {"JOB_B": "task"}}
    assert rayipy.get([read.options(runtime_env=task_env).remote(n) for n in ("JOB_A", "JOB_B")]) \
        == ["job", "task"]


def test_init_with_a_missing_working_dir_fails_and_leaves_nothing_running(fresh_cluster,
                                                                         tmp_path):
    with pytest.raises(ValueError, match="is not a directory"):
        fresh_cluster(num_cpus=1, include_dashboard=False,
                      runtime_env={"working_dir": str(tmp_path / "nope")})
    assert not rayipy.is_initialized()


def test_a_local_module_edited_between_calls_reaches_the_workers(fresh_cluster, tmp_path,
                                                                 monkeypatch):
    module_file = tmp_path / "renv_edited_module.py"
    module_file.write_text("import rayipy\n\n"
                           "def helper():\n    return 'v1'\n\n"
                           "@rayipy.remote\n"
                           "def answer():\n    return helper()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    fresh_cluster(num_cpus=2, include_dashboard=False)
    import renv_edited_module as module
    try:
        # Two calls at once, so both workers import the first version.
        assert rayipy.get([module.answer.remote(), module.answer.remote()]) == ["v1", "v1"]

        @rayipy.remote
        def through_main():          # a __main__-style function that calls the module
            return module.helper()
        assert rayipy.get(through_main.remote()) == "v1"

        module_file.write_text("import rayipy\n\n"
                               "def helper():\n    return 'v2, edited'\n\n"
                               "@rayipy.remote\n"
                               "def answer():\n    return helper()\n")
        importlib.reload(module)     # what %autoreload does before the next cell
        assert rayipy.get([module.answer.remote() for _ in range(4)]) == ["v2, edited"] * 4
        assert rayipy.get([through_main.remote() for _ in range(4)]) == ["v2, edited"] * 4
    finally:
        sys.modules.pop("renv_edited_module", None)
