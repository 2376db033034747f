"""The processes ``rayipy start`` leaves running on a machine, and ``rayipy stop``.

Unlike the local cluster of ``init()`` (``launch.py``: children that die with their
driver), these outlive the command: each is started in a session of its own (no
controlling terminal, so closing the shell does not hang them up), with no parent-death
signal, its output going to a log file in ``$RAYIPY_HOME/HOSTNAME/logs``, rotated at
16 MiB (``log_setup.py``). The cluster key reaches
them in their environment, never on a command line.

Each is the leader of its own process group, and the workers a node agent starts stay in
the agent's group. ``stop`` uses that: SIGTERM to each recorded process (an agent stops
its workers itself), then, after a grace period, SIGKILL to every rayipy process left in
those groups, so nothing is left behind even when an agent was killed before it could
stop its workers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rayipy import exceptions
from rayipy.node.connection import ProcessRecord, process_start_time
from rayipy.transport import encryption

LISTENING = "rayipy head listening on "


def log_dir(home: Path) -> Path:
    path = home / "logs"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def spawn(module: str, args: list[str], key: bytes, log: Path, cwd: Path,
          salt: bytes | None = None) -> subprocess.Popen:
    """Start ``python -m rayipy.node.MODULE ARGS`` detached, its output in ``log``, which
    the process rotates itself (``--log-file``, ``log_setup.py``): its log lines, prints
    and stderr all go there.

    In ``cwd`` (the rayipy directory), not the caller's: ``-m`` imports from the working
    directory first, and a checkout of rayipy there would replace the installed one.
    """
    encryption.mode()   # a bad RAYIPY_ENCRYPT fails here, not in the detached child
    env = dict(os.environ, RAYIPY_CLUSTER_KEY=key.hex())
    if salt is not None:   # the head's: the salt the key came from (public)
        env["RAYIPY_CLUSTER_SALT"] = salt.hex()
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", f"rayipy.node.{module}", *args,
                                 "--log-file", str(log)], env=env,
                                cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def record(role: str, popen: subprocess.Popen, log: Path) -> ProcessRecord:
    return ProcessRecord(role, popen.pid, process_start_time(popen.pid), str(log))


def log_tail(log: Path | str, lines: int = 15) -> str:
    try:
        text = Path(log).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def wait_listening(head: subprocess.Popen, log: Path, timeout: float = 30.0) -> str:
    """Wait for the head's "listening" line in its log; its address (``tcp://ip:port``)."""
    deadline = time.monotonic() + timeout
    while True:
        for line in Path(log).read_text(errors="replace").splitlines():
            if line.startswith(LISTENING):
                return line[len(LISTENING):].split()[0]
        if head.poll() is not None:
            raise exceptions.RayipySystemError(
                f"the rayipy head exited at start ({describe_exit(head.returncode)}):\n"
                f"{log_tail(log)}")
        if time.monotonic() > deadline:
            raise exceptions.RayipySystemError(
                f"the rayipy head did not start listening within {timeout:g} s; its log "
                f"({log}):\n{log_tail(log)}")
        time.sleep(0.02)


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


# -- stopping ------------------------------------------------------------------------------------

@dataclass
class StopReport:
    stopped: list[int]   # pids that were running and are gone now
    killed: list[int]    # of those, the ones that needed SIGKILL
    left: list[int]      # still there (only if even SIGKILL did not work in time)


def _process_group(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2:].split()
    return None if fields[0] == b"Z" else int(fields[2])


def _is_rayipy_process(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"rayipy.node." in f.read()
    except OSError:
        return False


def group_members(groups: set[int]) -> list[int]:
    """Live rayipy processes in these process groups (Linux; empty elsewhere)."""
    if not groups or not os.path.isdir("/proc"):
        return []
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            pid = int(entry)
            if _process_group(pid) in groups and _is_rayipy_process(pid):
                members.append(pid)
    return members


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop(records: list[ProcessRecord], grace: float = 10.0, force: bool = False) -> StopReport:
    """Stop these processes and every rayipy process in their groups (their workers).

    SIGTERM first (SIGKILL at once with ``force``), SIGKILL to whatever is left after
    ``grace`` seconds. A record whose pid now belongs to another process is left alone.
    """
    leaders = [r.pid for r in records if r.alive()]
    groups = {r.pid for r in records}   # each was started as its group's leader
    seen = set(leaders) | set(group_members(groups))
    for pid in leaders:
        _signal(pid, signal.SIGKILL if force else signal.SIGTERM)
    killed: set[int] = set()
    deadline = time.monotonic() + (0 if force else grace)
    while True:
        # Scan again each time: an agent may have started a worker meanwhile.
        left = [pid for pid in set(leaders) if process_start_time(pid) is not None]
        left += [pid for pid in group_members(groups) if pid not in leaders]
        seen.update(left)
        now = time.monotonic()
        if not left or now >= deadline + 5.0:
            break
        if now >= deadline:
            for pid in left:
                if pid not in killed:
                    killed.add(pid)
                    _signal(pid, signal.SIGKILL)
        time.sleep(0.05)
    return StopReport(sorted(seen - set(left)), sorted(killed - set(left)), sorted(left))
