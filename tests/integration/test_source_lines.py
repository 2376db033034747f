"""Only a remote function's own source lines leave the driver (issue 13, point 2).

A function defined in a file that workers cannot import travels by value, with the
source lines its remote tracebacks show. A secret on another line of that file must
not travel: not in the bytes sent (which the head keeps in its function table and
forwards), and not anywhere in the memory of the cluster's processes.
"""

from __future__ import annotations

import re
import secrets
import sys

import psutil
import pytest

import rayipy
from rayipy import session

from helpers import child_processes


def memory_holds(pid: int, needle: bytes) -> bool:
    """Whether ``needle`` is anywhere in the process's private writable memory (Linux
    /proc): its heap, where what it received lives; not the shared object store."""
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            match = re.match(r"([0-9a-f]+)-([0-9a-f]+) (\S+)", line)
            if match is None or match.group(3) != "rw-p":
                continue
            start, end = int(match.group(1), 16), int(match.group(2), 16)
            tail = b""
            for offset in range(start, end, 1 << 22):
                try:
                    mem.seek(offset)
                    chunk = mem.read(min(1 << 22, end - offset))
                except OSError:
                    break
                if needle in tail + chunk:
                    return True
                tail = chunk[-len(needle):]
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/mem")
def test_a_secret_outside_the_function_stays_on_the_driver(cluster, tmp_path):
    marker = f"pw-{secrets.token_hex(12)}"
    source = tmp_path / "secret_settings.py"
    source.write_text(f'DATABASE_PASSWORD = "{marker}"\n'
                      "\n"
                      "def fails(x):\n"
                      "    y = x + 1\n"
                      "    raise ValueError(f'failing line {y}')\n")
    # Not importable by the workers: it travels by value, with its source lines.
    namespace = {"__name__": "secret_settings_not_importable"}
    exec(compile(source.read_text(), str(source), "exec"), namespace)
    fails = rayipy.remote(namespace["fails"])

    with pytest.raises(ValueError) as info:
        rayipy.get(fails.remote(1), timeout=30)
    shown = str(info.value)
    assert f'File "{source}", line 5, in fails' in shown
    assert "raise ValueError(f'failing line {y}')" in shown and "failing line 2" in shown

    sent = session.require_runtime()._function_bytes.values()
    assert sent and not any(marker.encode() in data for data in sent)
    processes = child_processes()
    assert any("rayipy.node.head" in " ".join(p.cmdline()) for p in processes)
    for process in processes:   # the head (its function table), the agent, the workers
        try:
            assert not memory_holds(process.pid, marker.encode()), process.cmdline()
        except (psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):
            pass
