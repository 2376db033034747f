"""Task output at the driver: labelled as Ray labels it, and a line printed by many workers
shown once with its count (rayipy.node.task_logs, rayipy.core.log_dedup)."""

from __future__ import annotations

import pytest

import rayipy
from rayipy.core.object_ref import current_runtime

from helpers import wait_until


@rayipy.remote
class Speaker:
    def say(self, words: str) -> None:
        for _ in range(3):
            print(words)


@pytest.fixture
def printed(cluster, capsys):
    """Everything the driver printed so far (task output comes on the I/O thread)."""
    seen: list[str] = []

    def read() -> str:
        seen.append(capsys.readouterr().out)
        return "".join(seen)
    return read


@pytest.fixture
def short_window(cluster):
    dedup = current_runtime().task_logs.dedup
    window, enabled = dedup.window, dedup.enabled
    dedup.window, dedup.enabled = 0.5, True
    yield
    dedup.window, dedup.enabled = window, enabled


def lines_with(text: str, words: str) -> list[str]:
    return [x for x in text.splitlines() if words in x]


def test_a_line_printed_by_many_workers_is_shown_once_with_its_count(printed, short_window):
    words = "the same words from every worker"
    a, b = Speaker.remote(), Speaker.remote()
    rayipy.get(a.say.remote(words), timeout=60)
    wait_until(lambda: len(lines_with(printed(), words)) == 3, timeout=30,
               message="the first worker's output never came")
    rayipy.get(b.say.remote(words), timeout=60)
    wait_until(lambda: "repeated" in printed(), timeout=30, message="no summary came")
    lines = lines_with(printed(), words)
    # The first worker's own repeats are its output; the second's are summed up in one line.
    assert len(lines) == 4, lines
    assert all(x.startswith("(Speaker.say pid=") for x in lines)
    assert ", ip=" not in "".join(lines)             # a worker on the driver's own node
    assert lines[3].endswith(f"{words} [repeated 3x across cluster]")
    assert lines[3].split(")")[0] != lines[0].split(")")[0]   # the second worker's label


def test_deduplication_off_shows_every_line(printed, short_window):
    current_runtime().task_logs.dedup.enabled = False
    words = "every line of every worker"
    a, b = Speaker.remote(), Speaker.remote()
    rayipy.get([a.say.remote(words), b.say.remote(words)], timeout=60)
    wait_until(lambda: len(lines_with(printed(), words)) == 6, timeout=30,
               message="not every line came")
