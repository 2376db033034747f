"""Every ```python block in docs/*.md is a complete program: run each one and require exit 0.

A block whose first line is ``# not run`` is skipped. Each block runs as ``python -c`` in a
session of its own, so the whole process group (the driver and any cluster it started) is
killed at the end, whether the block passed, failed or timed out.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
TIMEOUT = 120


def doc_blocks() -> list:
    params = []
    for path in sorted(DOCS.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        for match in BLOCK.finditer(text):
            source = match.group(1)
            line = text.count("\n", 0, match.start()) + 1
            marks = ()
            if source.split("\n", 1)[0].strip() == "# not run":
                marks = (pytest.mark.skip(reason="marked '# not run'"),)
            params.append(pytest.param(source, id=f"{path.name}:{line}", marks=marks))
    return params


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def test_docs_have_examples():
    assert doc_blocks(), f"no ```python blocks found in {DOCS}/*.md"


@pytest.mark.timeout(TIMEOUT + 60)
@pytest.mark.parametrize("source", doc_blocks())
def test_doc_example_runs(source, tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", source], cwd=tmp_path, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    timed_out = False
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        timed_out = True
        kill_group(proc.pid)
        stdout, stderr = proc.communicate()
    finally:
        kill_group(proc.pid)  # whatever the driver left behind in its session
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = f"\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
    assert not timed_out, f"example did not finish within {TIMEOUT} s{output}"
    assert proc.returncode == 0, f"exit code {proc.returncode}{output}"
