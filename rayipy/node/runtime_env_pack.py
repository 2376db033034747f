"""The driver's side of runtime environments: packing directories, uploading them once,
and turning a user's ``runtime_env`` into the resolved form tasks carry
(``rayipy/core/runtime_env.py`` describes it).

A directory (``working_dir``, or a ``py_modules`` entry) is zipped with its files in
sorted order and fixed timestamps, so the same content always gives the same bytes and
the same digest. Its bytes are ``put`` into the object store once per digest and
runtime: a node's worker fetches them like any object (from the store, never through
the head's socket) and caches them on its node by digest.

A worker's own tasks inherit its environment (``inherit``), as in Ray.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import weakref
import zipfile
from typing import Any

from rayipy.core import runtime_env as renv

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class _Resolver:
    """One runtime's job environment, its uploads by digest, and resolutions made."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.job: dict[str, Any] = {}               # init(runtime_env=), checked
        self.inherited: dict[str, Any] | None = None   # a worker's own environment, resolved
        self.uploads: dict[str, Any] = {}           # digest -> ObjectRef kept alive
        self.resolved: dict[str, dict[str, Any] | None] = {}   # canonical json -> resolved


_resolvers: "weakref.WeakKeyDictionary[Any, _Resolver]" = weakref.WeakKeyDictionary()
_resolvers_lock = threading.Lock()


def _resolver(runtime: Any) -> _Resolver:
    resolver = _resolvers.get(runtime)
    if resolver is None:
        with _resolvers_lock:
            resolver = _resolvers.setdefault(runtime, _Resolver())
    return resolver


def set_job_env(runtime: Any, env: dict[str, Any] | None) -> None:
    """``init(runtime_env=)``: every task and actor of this driver gets it (merged with
    its own), and its directories are packed now, so a bad one fails ``init``."""
    resolver = _resolver(runtime)
    resolver.job = renv.check(env)
    if resolver.job:
        resolve(runtime, None)


def job_env(runtime: Any) -> dict[str, Any]:
    """The driver's ``init(runtime_env=)``, as checked ({} when none)."""
    return dict(_resolver(runtime).job)


def inherit(runtime: Any, resolved: dict[str, Any]) -> None:
    """A worker's environment becomes the default of the tasks it submits."""
    _resolver(runtime).inherited = resolved


def resolve(runtime: Any, task_env: dict[str, Any] | None) -> dict[str, Any] | None:
    """The resolved environment a task submitted now with ``task_env`` carries (None:
    none), packing and uploading what was not uploaded yet."""
    resolver = _resolver(runtime)
    if not task_env and not resolver.job:
        return resolver.inherited
    user = renv.merge(resolver.job, renv.check(task_env))
    canonical = json.dumps(user, sort_keys=True, default=_module_path)
    with resolver.lock:
        if canonical in resolver.resolved:
            return resolver.resolved[canonical]
        resolved = _resolve(runtime, resolver, user)
        resolver.resolved[canonical] = resolved
        return resolved


def _module_path(value: Any) -> str:
    """A module given in py_modules stands for its directory (or file)."""
    return module_source(value)


def module_source(value: Any) -> str:
    """The directory of a package, the file of a module, or the path given."""
    if isinstance(value, str):
        return value
    path = value.__file__
    if os.path.basename(path) == "__init__.py":
        return os.path.dirname(path)
    return path


def _resolve(runtime: Any, resolver: _Resolver, user: dict[str, Any]) -> dict[str, Any] | None:
    excludes = list(renv.ALWAYS_EXCLUDED) + list(user.get("excludes") or [])
    resolved: dict[str, Any] = {"env_vars": dict(user.get("env_vars") or {}),
                                "working_dir": None, "py_modules": [], "pip": []}
    if user.get("working_dir"):
        directory = user["working_dir"]
        if not os.path.isdir(directory):
            raise renv.RuntimeEnvError(f"runtime_env['working_dir'] {directory!r} is not a "
                                       f"directory on this machine")
        data = pack_directory(directory, excludes, "working_dir")
        resolved["working_dir"] = _upload(runtime, resolver, data, "")
    for item in user.get("py_modules") or []:
        path = module_source(item)
        if not os.path.exists(path):
            raise renv.RuntimeEnvError(f"runtime_env['py_modules'] entry {path!r} does not "
                                       f"exist on this machine")
        name = os.path.basename(os.path.normpath(path))
        if os.path.isdir(path):
            data = pack_directory(path, excludes, f"py_modules entry {name!r}", prefix=name)
        else:
            data = pack_files([(name, path)])
        resolved["py_modules"].append(_upload(runtime, resolver, data, name))
    pip = user.get("pip")
    if isinstance(pip, str):
        try:
            with open(pip, encoding="utf-8") as f:
                pip = renv.requirement_lines(f.read())
        except OSError as e:
            raise renv.RuntimeEnvError(f"runtime_env['pip']: cannot read the requirements "
                                       f"file {pip!r}: {e.strerror}") from None
    resolved["pip"] = list(pip or [])
    if renv.is_empty(resolved):
        return None
    resolved["key"] = renv.env_key(resolved)
    return resolved


def _upload(runtime: Any, resolver: _Resolver, data: bytes, name: str) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()[:32]
    ref = resolver.uploads.get(digest)
    if ref is None:
        ref = resolver.uploads[digest] = runtime.put(data)
    package = {"digest": digest, "object_id": ref.id, "size": len(data)}
    if name:
        package["name"] = name
    return package


def collect_files(directory: str, excludes: list[str]) -> list[tuple[str, str]]:
    """(path in the archive, path on disk) of the files of ``directory`` that the
    patterns and the directory's own ``.gitignore`` files leave in, sorted."""
    top_rules = list(excludes)
    files: list[tuple[str, str]] = []
    for root, dirs, names in os.walk(directory):
        rel_root = os.path.relpath(root, directory)
        rel_root = "" if rel_root == "." else rel_root.replace(os.sep, "/")
        gitignore = os.path.join(root, ".gitignore")
        if os.path.isfile(gitignore):
            with open(gitignore, encoding="utf-8", errors="replace") as f:
                for line in f.read().splitlines():
                    if not line.strip() or line.lstrip().startswith("#"):
                        continue
                    negate = line.startswith("!")
                    body = line[1:] if negate else line
                    # A .gitignore applies below its own directory.
                    if rel_root:
                        anchored = "/" in body.rstrip("/")
                        body = f"{rel_root}/{body.lstrip('/')}" if anchored else \
                            f"{rel_root}/**/{body}"
                    top_rules.append(("!" if negate else "") + body)
        matcher = renv.exclude_matcher(top_rules)
        keep = []
        for d in sorted(dirs):
            rel = f"{rel_root}/{d}" if rel_root else d
            if not matcher(rel, True):
                keep.append(d)
        dirs[:] = keep
        for name in sorted(names):
            rel = f"{rel_root}/{name}" if rel_root else name
            if not matcher(rel, False):
                files.append((rel, os.path.join(root, name)))
    return sorted(files)


def pack_directory(directory: str, excludes: list[str], what: str, prefix: str = "",
                   limit: int | None = None) -> bytes:
    """The directory zipped (deterministically), its files under ``prefix``; raises
    ``RuntimeEnvError`` naming the largest files when it is over the size limit."""
    limit = size_limit() if limit is None else limit
    files = collect_files(directory, excludes)
    total = 0
    sizes = []
    for rel, path in files:
        size = os.path.getsize(path)
        total += size
        sizes.append((size, rel))
    if total > limit:
        raise renv.RuntimeEnvError(_too_large(what, directory, total, limit, sizes))
    data = pack_files([(f"{prefix}/{rel}" if prefix else rel, path) for rel, path in files])
    if len(data) > limit:
        raise renv.RuntimeEnvError(_too_large(what, directory, len(data), limit, sizes))
    return data


def _too_large(what: str, directory: str, total: int, limit: int,
               sizes: list[tuple[int, str]]) -> str:
    from rayipy.units import format_bytes
    largest = ", ".join(f"{rel} ({format_bytes(size)})" for size, rel in
                        sorted(sizes, reverse=True)[:3])
    return (f"runtime_env {what} {directory!r} is {format_bytes(total)}, over the limit of "
            f"{format_bytes(limit)}; its largest files: {largest}. Leave files out with "
            f"runtime_env['excludes'] (gitignore patterns) or a .gitignore, or raise the "
            f"limit with $RAYIPY_RUNTIME_ENV_SIZE_LIMIT (bytes)")


def size_limit() -> int:
    """The size limit of one shipped directory ($RAYIPY_RUNTIME_ENV_SIZE_LIMIT)."""
    raw = os.environ.get("RAYIPY_RUNTIME_ENV_SIZE_LIMIT")
    return int(raw) if raw else renv.DEFAULT_SIZE_LIMIT


def pack_files(files: list[tuple[str, str]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for arcname, path in files:
            info = zipfile.ZipInfo(arcname, _ZIP_DATE)
            info.external_attr = (os.stat(path).st_mode & 0o777) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(path, "rb") as f:
                archive.writestr(info, f.read())
    return buffer.getvalue()
