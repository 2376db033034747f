"""A job's working directory as one zip archive: made by the client, unpacked on the node.

The client zips ``--working-dir`` in memory (``zip_directory``), leaving out what is
never code (``__pycache__``, ``.git``, and the other names in ``SKIPPED``), and refuses
more than ``MAX_PACKAGE_BYTES`` with a message that names the largest files. The node
unpacks it into the job's directory (``unpack``), refusing members that would land
outside it (absolute paths, ``..``). How the bytes travel is the client's and the
bootstrap's business (``client.py``, ``bootstrap.py``), not this module's.
"""

from __future__ import annotations

import io
import os
import stat
import zipfile
from pathlib import Path

MAX_PACKAGE_BYTES = 100 * 2**20   # compressed; Ray's limit is 100 MiB for a working_dir too
SKIPPED = frozenset({"__pycache__", ".git", ".hg", ".svn", ".ipynb_checkpoints", ".venv",
                     ".mypy_cache", ".pytest_cache"})


class PackageError(ValueError):
    """A working directory that cannot be shipped (missing, too large, or unsafe)."""


def zip_directory(directory: str | os.PathLike[str], limit: int = MAX_PACKAGE_BYTES) -> bytes:
    """The files under ``directory`` as zip bytes (paths relative to it, modes kept)."""
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise PackageError(f"working_dir {str(directory)!r} is not a directory")
    buffer = io.BytesIO()
    sizes: list[tuple[int, str]] = []
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for current, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d not in SKIPPED)
            for name in sorted(files):
                path = Path(current) / name
                if not path.is_file():   # sockets, broken links: nothing to ship
                    continue
                relative = path.relative_to(root).as_posix()
                archive.write(path, relative)
                sizes.append((path.stat().st_size, relative))
                if buffer.tell() > limit:
                    break
            if buffer.tell() > limit:
                break
    if buffer.tell() > limit:
        largest = ", ".join(f"{name} ({size / 2**20:.1f} MiB)"
                            for size, name in sorted(sizes, reverse=True)[:3])
        raise PackageError(f"working_dir {str(directory)!r} is over {limit / 2**20:g} MiB "
                           f"zipped (largest files: {largest}): ship data another way (a "
                           f"shared file system, or rayipy.put) and keep code in working_dir")
    return buffer.getvalue()


def unpack(data: bytes, destination: str | os.PathLike[str]) -> Path:
    """Unpack ``zip_directory``'s bytes into ``destination`` (made if need be)."""
    target = Path(destination).resolve()
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for member in archive.infolist():
            path = (target / member.filename).resolve()
            if path != target and target not in path.parents:
                raise PackageError(f"the package holds {member.filename!r}, outside its directory")
            archive.extract(member, target)
            mode = (member.external_attr >> 16) & 0o777
            if mode and not member.is_dir():
                os.chmod(path, mode | stat.S_IRUSR)
    return target
