"""Logs that a flood cannot grow without bound: rate-limited lines, rotated files."""

from __future__ import annotations

import collections
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rayipy.core.message_faults import MessageFaults
from rayipy.node import log_setup
from rayipy.protocol.kinds import Kind

ROOT = Path(__file__).resolve().parents[2]


def test_handler_errors_are_logged_once_per_interval_per_kind_with_a_count(caplog):
    counts: collections.Counter[str] = collections.Counter()
    faults = MessageFaults(logging.getLogger("rayipy.test"), counts, quiet_seconds=10.0)
    with caplog.at_level(logging.WARNING, logger="rayipy.test"):
        for now in (0.0, 1.0, 2.0, 9.0):
            try:
                raise ValueError("malformed")
            except ValueError:
                faults.handler_failed(Kind.CANCEL, b"peer", now)
        try:
            raise ValueError("another kind")
        except ValueError:
            faults.handler_failed(Kind.SUBMIT, b"peer", 9.5)
        try:
            raise ValueError("again")
        except ValueError:
            faults.handler_failed(Kind.CANCEL, b"peer", 10.0)
    assert counts["handler error"] == 6
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3       # CANCEL at 0, SUBMIT at 9.5, CANCEL at 10
    assert all(r.exc_info is not None for r in caplog.records)
    assert "CANCEL" in messages[0] and "more" not in messages[0]
    assert "SUBMIT" in messages[1]
    assert "CANCEL" in messages[2] and "3 more" in messages[2]


def test_configure_refuses_nonsense_limits():
    with pytest.raises(ValueError):
        log_setup.configure("head", None, max_bytes=0)


def test_a_log_file_rotates_and_takes_prints_and_stderr_too(tmp_path):
    # In a child: configure() takes over the process's stdout and stderr.
    log = tmp_path / "head.log"
    code = (
        "import logging, sys\n"
        "from rayipy.node import log_setup\n"
        f"log_setup.configure('head', {str(log)!r}, max_bytes=20000, backup_count=2)\n"
        "print('rayipy head listening on tcp://x:1', flush=True)\n"
        "for i in range(2000):\n"
        "    logging.getLogger('rayipy.head').warning('line %d %s', i, 'x' * 80)\n"
        "print('printed after rotating', flush=True)\n"
        "sys.stderr.write('written to stderr\\n'); sys.stderr.flush()\n"
        "import os; os.write(2, b'written to fd 2\\n')\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with open(log, "wb") as out:   # as daemon.spawn starts it
        subprocess.run([sys.executable, "-c", code], env=env, stdout=out,
                       stderr=subprocess.STDOUT, check=True, timeout=60)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["head.log", "head.log.1", "head.log.2"]
    for path in tmp_path.iterdir():
        assert path.stat().st_size <= 20000 + 200
    text = log.read_text()
    assert "line 1999" in text
    assert "printed after rotating" in text
    assert "written to stderr" in text and "written to fd 2" in text
    assert "head WARNING line" in text
