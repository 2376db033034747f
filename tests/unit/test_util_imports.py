"""rayipy and rayipy.util import without joblib: the backend's import stays lazy."""

from __future__ import annotations

import subprocess
import sys


def test_rayipy_util_does_not_import_joblib():
    code = ("import sys, rayipy, rayipy.util, rayipy.util.queue, rayipy.util.multiprocessing, "
            "rayipy.util.joblib; print('joblib' in sys.modules, 'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]
