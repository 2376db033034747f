"""Runtime environments, the pure part: what a ``runtime_env`` may say, its identity, and
which files a shipped directory leaves out.

A user's ``runtime_env`` (a dict, as in Ray) is checked here (``check``), merged with the
job's (``merge``), and, once its directories are packed and uploaded by the driver
(``rayipy/node/runtime_env_pack.py``), becomes a *resolved* environment: plain data that
travels in each task spec's options (``("runtime_env", resolved)``)::

    {"key": "3f2a...",                       # env_key(): what a worker *is*
     "env_vars": {"A": "1"},
     "working_dir": {"digest": "...", "object_id": b"...", "size": 123} or None,
     "py_modules": [{"digest":..., "object_id":..., "size":..., "name": "pkg"}],
     "pip": ["tinypkg==1.0", "--no-index"]}

The key is a hash of everything but the object ids (the same content uploaded twice is
the same environment). The scheduler sees an environment only as a marker item in the
task's resource request (``with_env``/``env_of``): a request of amount 0, named
``runtime_env:<key>``, so tasks of different environments queue apart and a worker
queues only tasks of its own environment; an idle worker takes a task only if its
``env`` is the request's (``env_of``).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Callable, Iterable

ENV_PREFIX = "runtime_env:"
"""The marker item of a resource request whose tasks need an environment."""

SUPPORTED_KEYS = ("env_vars", "working_dir", "py_modules", "pip", "excludes")

# Keys Ray knows that rayipy refuses, each with what to do instead.
UNSUPPORTED_KEYS: dict[str, str] = {
    "conda": "conda environments are not supported by rayipy: use 'pip' (a list of "
             "requirements; rayipy builds one virtual environment per node and set), or "
             "start the cluster's nodes from the conda environment you want",
    "container": "containers are not supported by rayipy: start the nodes inside the "
                 "container (rayipy start --address ... in the image)",
    "image_uri": "image_uri is not supported by rayipy: start the nodes inside the image",
    "uv": "uv is not supported by rayipy: use 'pip' with the same requirements",
    "java_jars": "rayipy runs Python only: java_jars does not apply",
    "nsight": "nsight profiling is not supported by rayipy: run nsys around the worker's code",
    "mpi": "mpi is not supported by rayipy",
    "config": "runtime_env config (setup_timeout_seconds, eager_install) is not supported by "
              "rayipy: environments are built when a worker first needs them",
    "worker_process_setup_hook": "worker_process_setup_hook is not supported by rayipy: run "
                                 "setup code in the task, or with %%remote --all",
    "py_executable": "py_executable is not supported by rayipy: use 'pip' for a virtual "
                     "environment of the base interpreter",
}

DEFAULT_SIZE_LIMIT = 100 * 2**20
"""The largest working_dir or py_module, zipped, that may be shipped (Ray: 100 MiB)."""

# Left out of every shipped directory, as Ray leaves out .git.
ALWAYS_EXCLUDED = (".git", "__pycache__", "*.pyc", ".ipynb_checkpoints")


class RuntimeEnvError(ValueError):
    """A runtime_env that cannot be used as given (raised on the driver, at once)."""


def check(env: Any) -> dict[str, Any]:
    """A copy of ``env`` with each key's type checked; raises ``RuntimeEnvError`` (a
    ValueError) or TypeError naming what is wrong and what to do instead."""
    if env is None:
        return {}
    if not isinstance(env, dict):
        raise TypeError(f"runtime_env must be a dict, got {type(env).__name__}")
    out: dict[str, Any] = {}
    for name, value in env.items():
        if name in UNSUPPORTED_KEYS:
            raise RuntimeEnvError(f"runtime_env key {name!r}: {UNSUPPORTED_KEYS[name]}")
        if name not in SUPPORTED_KEYS:
            raise RuntimeEnvError(f"unknown runtime_env key {name!r}; rayipy knows "
                                  f"{', '.join(SUPPORTED_KEYS)}")
        if value is None:
            continue
        out[name] = _checked(name, value)
    if "excludes" in out and "working_dir" not in out and "py_modules" not in out:
        raise RuntimeEnvError("runtime_env 'excludes' applies to working_dir and py_modules, "
                              "and neither is given")
    return out


def _checked(name: str, value: Any) -> Any:
    if name == "env_vars":
        if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise TypeError(f"runtime_env['env_vars'] must be a dict of str -> str, got "
                            f"{value!r}")
        return dict(value)
    if name == "working_dir":
        if not isinstance(value, str):
            raise TypeError(f"runtime_env['working_dir'] must be a local directory path (a "
                            f"str), got {type(value).__name__}")
        if "://" in value:
            raise RuntimeEnvError(f"runtime_env['working_dir'] {value!r}: remote URIs are not "
                                  f"supported by rayipy; give a local directory")
        return value
    if name == "py_modules":
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) or (
                hasattr(v, "__file__") and hasattr(v, "__name__")) for v in value):
            raise TypeError("runtime_env['py_modules'] must be a list of local directories "
                            "or imported modules")
        return list(value)
    if name == "pip":
        if isinstance(value, dict):
            unknown = set(value) - {"packages"}
            if unknown:
                raise RuntimeEnvError(f"runtime_env['pip'] keys {sorted(unknown)} are not "
                                      f"supported by rayipy; give 'packages' only")
            value = value.get("packages", [])
        if isinstance(value, str):
            return value     # a requirements file, read by the driver (pack)
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise TypeError("runtime_env['pip'] must be a list of requirements or the path "
                            "of a requirements file")
        return [v.strip() for v in value if v.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise TypeError("runtime_env['excludes'] must be a list of patterns (gitignore style)")
    return list(value)


def merge(job: dict[str, Any], task: dict[str, Any]) -> dict[str, Any]:
    """The task's environment on top of the job's: each key the task gives replaces the
    job's, but env_vars are merged (the task's win), as in Ray."""
    out = {**job, **task}
    if "env_vars" in job and "env_vars" in task:
        out["env_vars"] = {**job["env_vars"], **task["env_vars"]}
    return out


def requirement_lines(text: str) -> list[str]:
    """The lines of a requirements file that mean something (no blanks, no comments)."""
    lines = []
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def pip_key(requirements: Iterable[str]) -> str:
    """The identity of a set of requirements: one virtual environment per key on each
    node. Order-insensitive, since one set installed in any order is the same set."""
    return _digest(sorted(set(requirements)))[:24]


def env_key(resolved: dict[str, Any]) -> str:
    """The identity of a resolved environment (its object ids left out)."""
    def package(p: dict[str, Any] | None) -> Any:
        return None if p is None else [p["digest"], p.get("name", "")]
    return _digest({"env_vars": sorted((resolved.get("env_vars") or {}).items()),
                    "working_dir": package(resolved.get("working_dir")),
                    "py_modules": [package(p) for p in resolved.get("py_modules") or []],
                    "pip": pip_key(resolved["pip"]) if resolved.get("pip") else ""})[:24]


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def is_empty(resolved: dict[str, Any] | None) -> bool:
    """Whether a resolved environment changes nothing (the pool's workers serve it)."""
    return not resolved or not any(resolved.get(k) for k in
                                   ("env_vars", "working_dir", "py_modules", "pip"))


# -- the scheduler's view: a marker in the resource request --------------------------------
def with_env(request: tuple[tuple[str, float], ...], key: str) -> tuple[tuple[str, float], ...]:
    """``request`` for tasks of environment ``key`` ("": no environment, unchanged)."""
    if not key:
        return request
    return tuple(sorted((*request, (ENV_PREFIX + key, 0.0))))


def env_of(request: tuple[tuple[str, float], ...]) -> str:
    """The environment key a request's tasks need ("" for none)."""
    for name, _ in request:
        if name.startswith(ENV_PREFIX):
            return name[len(ENV_PREFIX):]
    return ""


def env_spec_of(options: tuple[Any, ...]) -> dict[str, Any] | None:
    """The resolved environment in a task spec's options (None: none)."""
    for name, value in options:
        if name == "runtime_env":
            return value if isinstance(value, dict) else None
    return None


def is_env_marker(name: str) -> bool:
    """Whether a resource name is an environment marker (never shown as a resource)."""
    return name.startswith(ENV_PREFIX)


# -- which files a shipped directory leaves out -----------------------------------------
def exclude_matcher(patterns: Iterable[str]) -> Callable[[str, bool], bool]:
    """A test ``(relative path with '/', is a directory) -> left out``, from patterns in
    ``.gitignore`` style: ``#`` comments, ``!`` to take a path back, a trailing ``/``
    for directories only, a ``/`` at the start or inside to anchor at the top, ``*``,
    ``?``, ``[...]`` within one name and ``**`` across directories. The last pattern that
    matches decides, as in git."""
    rules: list[tuple[re.Pattern[str], bool, bool]] = []
    for raw in patterns:
        line = raw.rstrip("\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        line = line.strip()
        negate = line.startswith("!")
        if negate:
            line = line[1:]
        dir_only = line.endswith("/")
        line = line.rstrip("/")
        if not line:
            continue
        anchored = "/" in line
        line = line.lstrip("/")
        body = _glob_to_regex(line)
        prefix = "" if anchored else "(?:.*/)?"
        rules.append((re.compile(f"^{prefix}{body}$"), negate, dir_only))

    def excluded(path: str, is_dir: bool) -> bool:
        decision = False
        for regex, negate, dir_only in rules:
            if dir_only and not is_dir:
                continue
            if regex.match(path):
                decision = not negate
        return decision
    return excluded


def _glob_to_regex(glob: str) -> str:
    out = []
    i = 0
    while i < len(glob):
        c = glob[i]
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("/**", i) and i + 3 == len(glob):
            out.append("/.*")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = glob.find("]", i + 1)
            if end < 0:
                out.append(re.escape(c))
                i += 1
            else:
                inner = glob[i + 1:end].replace("\\", "\\\\")
                if inner.startswith("!"):
                    inner = "^" + inner[1:]
                out.append(f"[{inner}]")
                i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)
