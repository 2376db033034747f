"""The driver's watch on local modules (rayipy/node/runtime_env_modules.py): a reload
is seen on the next call, an edit without one within STAT_INTERVAL_S, and an unchanged
module never moves the generation. No cluster: the watch only reads files."""

from __future__ import annotations

import importlib
import os
import sys

import pytest

from rayipy.node import runtime_env_modules
from rayipy.node.runtime_env_modules import ModuleWatch


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def local_module(tmp_path, monkeypatch):
    path = tmp_path / "watched_local_module.py"
    path.write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    clock = Clock()
    monkeypatch.setattr(runtime_env_modules.time, "monotonic", clock)
    import watched_local_module as module
    try:
        yield module, path, clock
    finally:
        sys.modules.pop("watched_local_module", None)


def edit(path, text: str) -> None:
    before = os.stat(path).st_mtime_ns
    path.write_text(text)
    # Size changes too, so the edit shows even where mtime is coarse.
    assert os.stat(path).st_mtime_ns >= before


def test_an_edit_followed_by_a_reload_is_seen_on_the_very_next_call(local_module):
    module, path, clock = local_module
    watch = ModuleWatch()
    first = watch.generation()
    assert "watched_local_module" in watch.seen
    edit(path, "VALUE = 22\n")
    assert watch.generation() == first       # no reload, interval not over: not looked
    importlib.reload(module)
    assert watch.generation() == first + 1   # same instant: the reload made it look
    assert module.VALUE == 22


def test_an_edit_without_a_reload_is_seen_once_the_interval_passes(local_module):
    module, path, clock = local_module
    watch = ModuleWatch()
    first = watch.generation()
    edit(path, "VALUE = 333\n")
    clock.now += runtime_env_modules.STAT_INTERVAL_S / 2
    assert watch.generation() == first
    clock.now += runtime_env_modules.STAT_INTERVAL_S
    assert watch.generation() == first + 1


def test_a_reload_of_an_unchanged_module_keeps_the_generation(local_module):
    module, path, clock = local_module
    watch = ModuleWatch()
    first = watch.generation()
    importlib.reload(module)
    assert watch.generation() == first
    clock.now += 10
    assert watch.generation() == first


def test_between_looks_no_file_is_opened(local_module, monkeypatch):
    module, path, clock = local_module
    watch = ModuleWatch()
    watch.generation()
    looked = []
    monkeypatch.setattr(runtime_env_modules.os, "stat",
                        lambda p: looked.append(p) or os.stat_result((0,) * 10))
    for _ in range(100):
        watch.generation()
    assert looked == []
