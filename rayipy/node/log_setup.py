"""Where a head's or node agent's log goes: stderr, or a file that rotates.

A process that ``rayipy start`` leaves running writes to ``$RAYIPY_HOME/HOSTNAME/logs``
(``daemon.py``). Its log records, its own ``print`` lines and anything written to its
stderr (a crash's traceback; the workers an agent starts inherit its stderr) all go to
one file, ``head.log`` or ``agent.log``, which ``logging.handlers.RotatingFileHandler``
rotates at ``MAX_LOG_BYTES`` into ``.1`` ... ``.BACKUP_COUNT``: a flood of bad messages
once grew ``head.log`` by 243 MiB. The handler's file descriptor is copied onto 1 and 2
at each rotation, so what bypasses ``logging`` lands in the current file too; the file
is opened for appending, so writers through either descriptor never overwrite each other.

The lines themselves are rate-limited where a peer could cause one per message
(``transport/throttle.py``, ``core/message_faults.py``); rotation bounds the rest.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys

MAX_LOG_BYTES = 16 * 2**20
BACKUP_COUNT = 3


class _RotatingOutput(logging.handlers.RotatingFileHandler):
    """A rotating log file that is also this process's stdout and stderr."""

    def __init__(self, path: str, max_bytes: int, backup_count: int) -> None:
        super().__init__(path, mode="a", maxBytes=max_bytes, backupCount=backup_count,
                         encoding="utf-8")
        self._adopt_output()

    def doRollover(self) -> None:
        super().doRollover()
        self._adopt_output()

    def _adopt_output(self) -> None:
        if self.stream is None:
            self.stream = self._open()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        fd = self.stream.fileno()
        os.dup2(fd, 1)
        os.dup2(fd, 2)


def configure(role: str, log_file: str | None, level: str | None = None,
              max_bytes: int = MAX_LOG_BYTES, backup_count: int = BACKUP_COUNT) -> None:
    """Set up the root logger for the ``role`` process (``"head"``, ``"agent"``): to
    ``log_file``, rotated, with stdout and stderr following it; to stderr when None.
    ``level`` defaults to ``$RAYIPY_LOG_LEVEL`` or WARNING."""
    if max_bytes < 1 or backup_count < 1:
        raise ValueError("max_bytes and backup_count must be positive")
    level = level or os.environ.get("RAYIPY_LOG_LEVEL", "WARNING")
    handler: logging.Handler
    if log_file is None:
        handler = logging.StreamHandler()
    else:
        handler = _RotatingOutput(log_file, max_bytes, backup_count)
    handler.setFormatter(logging.Formatter(f"%(asctime)s {role} %(levelname)s %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
