"""Task output on the worker's side (OutputBuffer) and the owner's (TaskLogs): displays
(MIME bundles) travel as lines of their own, in the order the task wrote."""

from __future__ import annotations

import io
import json
import sys

from rayipy.core.log_dedup import LogDeduplicator
from rayipy.node.task_logs import TaskLogPrinter, TaskLogs
from rayipy.node.task_output import (DISPLAY_STREAM, OutputBuffer, decode_bundle,
                                     encode_bundle, text_fallback)
from rayipy.protocol.messages import Payload, TaskSpec

OWNER = b"O" * 8


def spec(n: int, name: str = "plot") -> TaskSpec:
    return TaskSpec(OWNER + n.to_bytes(8, "big"), b"f", name, Payload(b""), (), 1, (), 0)


def test_a_bundle_round_trips_with_bytes_as_base64():
    text = encode_bundle({"image/png": b"\x89PNG", "text/plain": "<Figure>"}, {"x": 1})
    data, metadata = decode_bundle(text)
    assert data == {"image/png": "iVBORw==", "text/plain": "<Figure>"} and metadata == {"x": 1}
    assert json.loads(text)["data"]["image/png"] == "iVBORw=="


def test_the_text_fallback_is_text_plain_or_names_the_kinds():
    assert text_fallback({"text/plain": "<HTML object>", "text/html": "<b>"}) == "<HTML object>\n"
    assert text_fallback({"image/png": "..."}) == "<display: image/png>\n"


def test_a_display_comes_after_the_text_printed_before_it_and_before_the_text_after():
    buffer = OutputBuffer()
    a, b = spec(1), spec(2, "other")
    buffer.add(a, "stdout", "before\npartial ")
    buffer.add(b, "stdout", "other task, open ")
    buffer.add_display(a, encode_bundle({"text/html": "<b>x</b>"}), "<HTML>\n")
    buffer.add(a, "stdout", "after\n")
    lines = buffer.take(final=False)[OWNER]
    assert [(line[0], line[1]) for line in lines] == [
        ("stdout", "before\npartial "),          # sealed by the display: partial line too
        (DISPLAY_STREAM, "<HTML>\n"),
        ("stdout", "after\n")]
    assert decode_bundle(lines[1][4])[0] == {"text/html": "<b>x</b>"}
    assert lines[1][3] == a.task_id
    # Another task's partial line is not sealed by a's display: it waits for its newline.
    assert buffer.take(final=True)[OWNER] == [("stdout", "other task, open ", "other", b.task_id)]


def test_the_owner_never_dedups_a_display_and_keeps_the_order():
    shown: list = []
    logs = TaskLogs("127.0.0.1", LogDeduplicator(5.0, True))
    logs.printer = lambda lines, label: shown.extend(lines)
    bundle = encode_bundle({"text/html": "<b>x</b>", "text/plain": "x"})
    task = b"t" * 16
    for pid in (1, 2):   # the same display from two workers: both shown, whole
        logs.received([("stdout", "hello\n", "f", task),
                       (DISPLAY_STREAM, "x\n", "f", task, bundle)], f"pid={pid}", 0.0)
    displays = [line for line in shown if line[0] == DISPLAY_STREAM]
    assert len(displays) == 2 and all(line[4] == bundle for line in displays)
    assert shown[0][:2] == ("stdout", "hello\n") and shown[1][0] == DISPLAY_STREAM


def test_a_script_prints_the_text_fallback(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    TaskLogPrinter()([(DISPLAY_STREAM, "<Figure size 640x480>\n", "plot", b"t" * 16, "{}")], "pid=7")
    assert out.getvalue() == "(plot pid=7) <Figure size 640x480>\n"
