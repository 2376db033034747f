"""The head's journal on disk (the records and their meaning: ``core/head_journal.py``).

One directory, private to the user (``$RAYIPY_HOME/HOSTNAME/head_state`` for ``rayipy
start --head``): ``journal`` (the records) and ``functions/`` (each function's bytes in a
file named by its id, written once). Only the head's thread uses it.

Writes: ``append`` queues a record; ``flush`` writes the queue with one ``write`` (the
head calls it at the end of each turn of its loop that changed something, so a SIGKILL
loses at most what the turn was doing), and ``sync`` (once a second) fsyncs, so a power
cut loses at most a second. A function's file is written (temporary name, fsync,
rename) before its record, so a record never names a file that is not there.

At start, ``load`` replays the journal, then rewrites it compacted (without dead actors
or records superseded), through a temporary file and a rename.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from rayipy.core import head_journal
from rayipy.core.head_journal import DurableState, Record

log = logging.getLogger("rayipy.head")

JOURNAL_NAME = "journal"
FUNCTIONS_DIR = "functions"


class HeadStore:
    """The journal file of one head, and its functions' files."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        (self.directory / FUNCTIONS_DIR).mkdir(mode=0o700, exist_ok=True)
        self.path = self.directory / JOURNAL_NAME
        self._queue: list[bytes] = []
        self._fd: int | None = None
        self._unsynced = False

    def load(self) -> DurableState:
        """Replay the journal (an empty state if there is none), then rewrite it
        compacted; records appended from now on follow. A journal of another version
        is refused (``JournalError``): its head must be run by its own rayipy."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        state = DurableState()
        if data:
            state, end = head_journal.replay(data)
            if end < len(data):
                log.warning("the head's journal %s ends in %d damaged bytes (a write cut "
                            "short); they are dropped", self.path, len(data) - end)
        # Functions whose file is missing (removed by hand) cannot be served: forgotten.
        state.functions = {f for f in state.functions if self.function_path(f).exists()}
        self._rewrite(state.records())
        return state

    def start_new(self, records: list[Record]) -> None:
        """Replace the journal with one holding only ``records`` (a new cluster)."""
        for path in (self.directory / FUNCTIONS_DIR).iterdir():
            path.unlink()
        self._close_fd()
        self._rewrite(records)

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._queue.clear()

    def _rewrite(self, records: list[Record]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".journal-")   # mode 0600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(head_journal.HEADER)
                for record in records:
                    f.write(head_journal.encode(record))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        self._fsync_directory()
        self._close_fd()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)

    def append(self, record: Record) -> None:
        """Queue a record; ``flush`` writes it."""
        self._queue.append(head_journal.encode(record))

    def function_path(self, function_id: bytes) -> Path:
        return self.directory / FUNCTIONS_DIR / function_id.hex()

    def save_function(self, function_id: bytes, data: bytes) -> None:
        """Keep a function's bytes (once: its id is its content's hash) and record it."""
        path = self.function_path(function_id)
        if not path.exists():
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".fn-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
        self.append(("function", function_id))

    def function_bytes(self, function_id: bytes) -> bytes | None:
        """A kept function's bytes, or None."""
        try:
            return self.function_path(function_id).read_bytes()
        except FileNotFoundError:
            return None

    def flush(self) -> None:
        """Write what is queued (one write); cheap when nothing is."""
        if not self._queue or self._fd is None:
            return
        data = b"".join(self._queue)
        self._queue.clear()
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._unsynced = True

    def sync(self) -> None:
        """Flush, then make what was written survive a power cut (fsync)."""
        self.flush()
        if self._unsynced and self._fd is not None:
            os.fsync(self._fd)
            self._unsynced = False

    def _fsync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Sync and close the journal."""
        if self._fd is not None:
            try:
                self.sync()
            finally:
                os.close(self._fd)
                self._fd = None
