"""Tiny wheels made by hand for tests of ``runtime_env['pip']``: no network, no build
tools (a wheel is a zip with a dist-info directory; pip installs it as it is)."""

from __future__ import annotations

import base64
import hashlib
import os
import zipfile


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def make_wheel(directory: str, name: str, version: str, source: str) -> str:
    """Write ``name-version-py3-none-any.whl`` into ``directory``, holding a package
    ``name`` whose ``__init__.py`` is ``source``; returns its path."""
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": source.encode(),
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: rayipy-tests\n"
                              b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [_record_line(path, data) for path, data in files.items()]
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{name}-{version}-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as wheel:
        for arcname, data in files.items():
            wheel.writestr(arcname, data)
    return path
