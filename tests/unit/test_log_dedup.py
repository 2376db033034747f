"""Task output deduplication (rayipy.core.log_dedup) and its labelling and routing at the
owner (rayipy.node.task_logs), without sockets: lines in, lines shown out."""

from __future__ import annotations

import pytest

from rayipy.core.log_dedup import LogDeduplicator, LogLine, pattern_of
from rayipy.node.task_logs import TaskLogs, dedup_from_environment, local_label


def line(text: str, source: str = "pid=1", stream: str = "stdout") -> LogLine:
    return LogLine(stream, text + "\n", "f", source, b"task")


def texts(lines: list[LogLine]) -> list[str]:
    return [f"{x.source}: {x.text}" for x in lines]


def test_the_first_line_shows_at_once_and_repeats_from_other_workers_once_summed_up():
    d = LogDeduplicator(window=5.0)
    assert texts(d.feed([line("loading model", "pid=1")], now=0.0)) == ["pid=1: loading model\n"]
    held = [line("loading model", f"pid={n}") for n in range(2, 11)]
    assert d.feed(held, now=1.0) == []
    assert d.due(now=4.9) == []                       # its window has not ended
    assert texts(d.due(now=5.0)) == [
        "pid=10: loading model [repeated 9x across cluster]\n"]
    assert d.due(now=60.0) == []                      # shown once


def test_words_with_digits_do_not_make_lines_different():
    assert pattern_of("stdout", "epoch 3 loss 0.25\n") == pattern_of("stdout", "epoch 4 loss 0.5")
    assert pattern_of("stdout", "epoch 3") != pattern_of("stderr", "epoch 3")
    assert pattern_of("stdout", "loading model") != pattern_of("stdout", "loading data")
    d = LogDeduplicator()
    shown = d.feed([line("step 1 of 10", "pid=1"), line("step 7 of 10", "pid=2")], now=0.0)
    assert texts(shown) == ["pid=1: step 1 of 10\n"]
    assert texts(d.due(0.0, everything=True)) == [
        "pid=2: step 7 of 10 [repeated 1x across cluster]\n"]


def test_one_worker_repeating_itself_is_shown_in_full():
    d = LogDeduplicator()
    lines = [line(f"progress {n}%") for n in range(5)]
    assert d.feed(lines, now=0.0) == lines
    assert d.due(0.0, everything=True) == []


def test_after_the_window_the_line_shows_again():
    d = LogDeduplicator(window=5.0)
    d.feed([line("hello", "pid=1")], now=0.0)
    d.feed([line("hello", "pid=2")], now=1.0)
    shown = d.feed([line("hello", "pid=3")], now=6.0)
    # The summary of the window that ended, then the line as a new first instance.
    assert texts(shown) == ["pid=2: hello [repeated 1x across cluster]\n", "pid=3: hello\n"]


def test_blank_lines_and_disabled_dedup_pass_through():
    d = LogDeduplicator()
    blank = [line("", "pid=1"), line("", "pid=2")]
    assert d.feed(blank, now=0.0) == blank
    off = LogDeduplicator(enabled=False)
    same = [line("x", "pid=1"), line("x", "pid=2")]
    assert off.feed(same, now=0.0) == same


def test_what_is_held_stays_bounded():
    d = LogDeduplicator(max_kept=3)
    for n in range(10):
        d.feed([line(f"distinct message {chr(97 + n)}", "pid=1")], now=0.0)
    assert len(d._seen) == 3


def test_a_workers_address_shows_only_when_it_is_on_another_node():
    assert local_label("pid=7, ip=127.0.0.1", "127.0.0.1") == "pid=7"
    assert local_label("pid=7, ip=10.0.0.2", "127.0.0.1") == "pid=7, ip=10.0.0.2"
    assert local_label("pid=7", "") == "pid=7"


def test_the_owner_labels_dedups_and_routes_lines_to_its_printer():
    printed: list = []
    logs = TaskLogs("10.0.0.1", LogDeduplicator(window=5.0))
    logs.printer = lambda lines, label: printed.append((label, lines))
    logs.received([("stdout", "hello\nworld\n", "f", b"t1")], "pid=1, ip=10.0.0.1", now=0.0)
    logs.received([("stdout", "hello\n", "f", b"t2")], "pid=2, ip=10.0.0.2", now=0.1)
    assert printed == [("pid=1", [("stdout", "hello\n", "f", b"t1"), ("stdout", "world\n", "f", b"t1")])]
    logs.tick(now=1.0)
    assert len(printed) == 1
    logs.close()
    assert printed[1] == ("pid=2, ip=10.0.0.2",
                          [("stdout", "hello [repeated 1x across cluster]\n", "f", b"t2")])


def test_the_environment_sets_the_window_or_turns_it_off(monkeypatch):
    monkeypatch.setenv("RAY_DEDUP_LOGS", "0")
    assert not dedup_from_environment().enabled
    monkeypatch.setenv("RAYIPY_DEDUP_LOGS", "1")
    monkeypatch.setenv("RAYIPY_DEDUP_LOGS_AGG_WINDOW_S", "0.5")
    d = dedup_from_environment()
    assert d.enabled and d.window == 0.5
    monkeypatch.setenv("RAYIPY_DEDUP_LOGS_AGG_WINDOW_S", "soon")
    with pytest.raises(ValueError, match="number of seconds"):
        dedup_from_environment()
