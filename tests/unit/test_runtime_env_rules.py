"""Pure parts of runtime environments: checking, identity, excludes, packing."""

from __future__ import annotations

import hashlib

import pytest

from rayipy.core import runtime_env as renv
from rayipy.node import runtime_env_pack as pack


def resolved(**changes) -> dict:
    base = {"env_vars": {"A": "1"}, "working_dir": {"digest": "d1", "object_id": b"x" * 20,
                                                     "size": 3},
            "py_modules": [], "pip": ["b==1", "a==2"]}
    return {**base, **changes}


def test_unknown_and_unsupported_keys_are_refused_with_the_alternative():
    with pytest.raises(ValueError, match="conda environments are not supported.*'pip'"):
        renv.check({"conda": {"dependencies": []}})
    with pytest.raises(ValueError, match="container.*start the nodes inside"):
        renv.check({"container": {"image": "x"}})
    with pytest.raises(ValueError, match="unknown runtime_env key 'workdir'"):
        renv.check({"workdir": "."})
    with pytest.raises(TypeError, match="env_vars.*str -> str"):
        renv.check({"env_vars": {"A": 1}})
    with pytest.raises(ValueError, match="remote URIs"):
        renv.check({"working_dir": "s3://bucket/x.zip"})
    with pytest.raises(ValueError, match="excludes.*neither"):
        renv.check({"excludes": ["*.log"]})
    assert renv.check({"pip": {"packages": [" a ", ""]}}) == {"pip": ["a"]}
    assert renv.check(None) == {}


def test_merge_lets_the_task_win_and_merges_env_vars():
    job = {"env_vars": {"A": "job", "B": "job"}, "pip": ["x"]}
    task = {"env_vars": {"B": "task"}, "pip": ["y"]}
    assert renv.merge(job, task) == {"env_vars": {"A": "job", "B": "task"}, "pip": ["y"]}


def test_env_key_ignores_object_ids_and_requirement_order_but_not_content():
    key = renv.env_key(resolved())
    other_upload = resolved(working_dir={"digest": "d1", "object_id": b"y" * 20, "size": 3})
    assert renv.env_key(other_upload) == key
    assert renv.env_key(resolved(pip=["a==2", "b==1"])) == key
    assert renv.env_key(resolved(pip=["a==3", "b==1"])) != key
    assert renv.env_key(resolved(env_vars={"A": "2"})) != key
    assert renv.env_key(resolved(working_dir={"digest": "d2", "object_id": b"", "size": 3})) != key
    assert renv.pip_key(["b", "a", "a"]) == renv.pip_key(["a", "b"])


def test_the_request_marker_round_trips_and_is_never_shown():
    from rayipy.core.state import shown_resources
    request = (("CPU", 1.0),)
    marked = renv.with_env(request, "abc")
    assert marked == (("CPU", 1.0), ("runtime_env:abc", 0.0))
    assert renv.env_of(marked) == "abc" and renv.env_of(request) == ""
    assert renv.with_env(request, "") == request
    assert shown_resources({"CPU": 1.0, "runtime_env:abc": 0.0}) == {"CPU": 1.0}
    assert renv.env_spec_of((("max_calls", 1), ("runtime_env", {"key": "k"}))) == {"key": "k"}
    assert renv.env_spec_of((("max_calls", 1),)) is None


@pytest.mark.parametrize("pattern, path, is_dir, out", [
    ("*.log", "a.log", False, True),
    ("*.log", "deep/er/a.log", False, True),
    ("*.log", "a.log.txt", False, False),
    ("build/", "build", True, True),
    ("build/", "build", False, False),        # a file named build stays
    ("/top.txt", "top.txt", False, True),
    ("/top.txt", "sub/top.txt", False, False),  # anchored at the top
    ("docs/*.md", "docs/a.md", False, True),
    ("docs/*.md", "docs/x/a.md", False, False),
    ("**/cache", "a/b/cache", True, True),
    ("logs/**", "logs/x/y.txt", False, True),
    ("a/**/z", "a/b/c/z", False, True),
    ("data?.csv", "data1.csv", False, True),
    ("data[0-2].csv", "data3.csv", False, False),
])
def test_exclude_patterns_match_as_gitignore_does(pattern, path, is_dir, out):
    assert renv.exclude_matcher([pattern])(path, is_dir) is out


def test_the_last_matching_pattern_wins_and_negation_takes_a_path_back():
    excluded = renv.exclude_matcher(["# comment", "", "*.txt", "!keep.txt"])
    assert excluded("drop.txt", False) and not excluded("keep.txt", False)


def test_requirement_files_lose_comments_and_blank_lines():
    text = "# pinned\nnumpy==1.0  # why\n\n--no-index\n"
    assert renv.requirement_lines(text) == ["numpy==1.0", "--no-index"]


def test_packing_is_deterministic_respects_excludes_gitignore_and_the_limit(tmp_path):
    (tmp_path / "a.py").write_text("A = 1\n")
    (tmp_path / "b.log").write_text("log\n")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".gitignore").write_text("secret*\n")
    (tmp_path / "sub" / "secret.key").write_text("k\n")
    (tmp_path / "sub" / "ok.py").write_text("\n")
    excludes = list(renv.ALWAYS_EXCLUDED) + ["*.log"]
    files = [rel for rel, _ in pack.collect_files(str(tmp_path), excludes)]
    assert files == ["a.py", "sub/.gitignore", "sub/ok.py"]
    first = pack.pack_directory(str(tmp_path), excludes, "working_dir")
    second = pack.pack_directory(str(tmp_path), excludes, "working_dir")
    assert hashlib.sha256(first).digest() == hashlib.sha256(second).digest()
    (tmp_path / "a.py").write_text("A = 2\n")
    assert pack.pack_directory(str(tmp_path), excludes, "working_dir") != first
    with pytest.raises(ValueError, match=r"over the limit of 10 B.*a\.py"):
        pack.pack_directory(str(tmp_path), excludes, "working_dir", limit=10)
