"""A worker's side of runtime environments: the virtual environment it runs in, the
packages it unpacks, and what it changes in its own process before it takes a task.

A worker for an environment is started by its node agent with the resolved environment
in ``$RAYIPY_RUNTIME_ENV`` (JSON). Before it connects, the worker:

1. with ``pip``: finds or builds the node's virtual environment for that set of
   requirements (``python -m venv --system-site-packages``, then ``pip install``), under
   a file lock so concurrent workers build it once, and re-executes itself with that
   environment's interpreter (the same process: its agent's pidfd stays valid). The
   venv sees the base environment's packages, rayipy's included, through a ``.pth``
   file naming the base's site directories (a venv made from a venv would otherwise
   see only the system's);
2. sets ``env_vars``;

then, once connected, fetches each package (``working_dir``, ``py_modules``) from the
object store, unpacks it into the node's cache by digest (once per node), puts
``py_modules`` on ``sys.path`` and makes ``working_dir`` its working directory (and the
first entry of ``sys.path``, as Ray does).

Whatever fails (an install, a fetch) is kept as ``RuntimeEnvSetupError`` with the
installer's own output; every task sent to the worker then fails with it, and the
worker, like the cluster, goes on.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import site
import subprocess
import sys
import tempfile
import zipfile
from typing import Any, Callable, Iterator

from rayipy.core import runtime_env as renv
from rayipy.exceptions import RuntimeEnvSetupError

ENV_VARIABLE = "RAYIPY_RUNTIME_ENV"        # the resolved environment, JSON (from the agent)
READY_VARIABLE = "RAYIPY_RUNTIME_ENV_PYTHON"   # set once re-executed in the venv
PIP_TIMEOUT_SECONDS = 600
OUTPUT_KEPT = 4000                          # characters of the installer's output in errors


def cache_root() -> str:
    """The node's cache of environments ($RAYIPY_RUNTIME_ENV_DIR, else under the
    temporary directory, one per user)."""
    return os.environ.get("RAYIPY_RUNTIME_ENV_DIR") or os.path.join(
        tempfile.gettempdir(), f"rayipy-{os.getuid()}", "runtime_env")


def to_json(resolved: dict[str, Any]) -> str:
    """The resolved environment as the agent passes it (object ids in hex)."""
    def encode(p: dict[str, Any] | None) -> Any:
        return None if p is None else {**p, "object_id": p["object_id"].hex()}
    return json.dumps({**resolved, "working_dir": encode(resolved.get("working_dir")),
                       "py_modules": [encode(p) for p in resolved.get("py_modules") or []]})


def from_json(text: str) -> dict[str, Any]:
    """The inverse of ``to_json``."""
    env = json.loads(text)

    def decode(p: dict[str, Any] | None) -> Any:
        return None if p is None else {**p, "object_id": bytes.fromhex(p["object_id"])}
    env["working_dir"] = decode(env.get("working_dir"))
    env["py_modules"] = [decode(p) for p in env.get("py_modules") or []]
    return env


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def venv_python(requirements: list[str]) -> str:
    """The interpreter of this node's virtual environment for ``requirements``, built
    first if missing; raises ``RuntimeEnvSetupError`` with pip's output."""
    key = renv.pip_key(requirements)
    home = os.path.join(cache_root(), "venvs", key)
    python = os.path.join(home, "bin", "python")
    done = os.path.join(home, ".rayipy-ready")
    if os.path.exists(done):
        return python
    with _locked(home + ".lock"):
        if os.path.exists(done):
            return python
        shutil.rmtree(home, ignore_errors=True)   # a build that died half-way
        _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", home],
             "python -m venv")
        _inherit_base_packages(home)
        requirements_file = os.path.join(home, "rayipy-requirements.txt")
        with open(requirements_file, "w") as f:
            f.write("\n".join(requirements) + "\n")
        _run([python, "-m", "pip", "install", "--disable-pip-version-check",
              "--no-input", "-r", requirements_file], "pip install")
        with open(done, "w") as f:
            f.write("\n".join(requirements) + "\n")
    return python


def _inherit_base_packages(home: str) -> None:
    """A .pth in the venv naming this interpreter's site directories: the venv sees
    rayipy and the base packages (pip included) even when the base is itself a venv."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    target = os.path.join(home, "lib", version, "site-packages")
    os.makedirs(target, exist_ok=True)
    dirs = [d for d in site.getsitepackages() + [site.getusersitepackages()]
            if os.path.isdir(d)]
    with open(os.path.join(target, "_rayipy_base.pth"), "w") as f:
        f.write("\n".join(dirs) + "\n")


def _run(cmd: list[str], what: str) -> None:
    try:
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=PIP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        raise RuntimeEnvSetupError(f"{what} took more than {PIP_TIMEOUT_SECONDS} s") from None
    if done.returncode != 0:
        output = (done.stderr.strip() or done.stdout.strip())[-OUTPUT_KEPT:]
        raise RuntimeEnvSetupError(f"{what} failed (exit code {done.returncode}):\n{output}")


def reexec_in_venv(env: dict[str, Any], key: bytes) -> str | None:
    """Before connecting: with ``pip``, run this worker in the environment's venv (does
    not return when it re-executes). Returns the error text if the venv failed."""
    if not env.get("pip") or os.environ.get(READY_VARIABLE):
        return None
    try:
        python = venv_python(env["pip"])
    except RuntimeEnvSetupError as e:
        return str(e)
    child_env = dict(os.environ, RAYIPY_CLUSTER_KEY=key.hex(), **{READY_VARIABLE: python})
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(python, [python, "-m", "rayipy.node.worker", *sys.argv[1:]], child_env)
    return None   # not reached


def apply_env_vars(env: dict[str, Any]) -> None:
    """The environment's variables, for this process and what it starts."""
    os.environ.update(env.get("env_vars") or {})


def unpack(package: dict[str, Any], fetch: Callable[[bytes], bytes]) -> str:
    """The directory where ``package`` is unpacked on this node (fetched and unpacked
    once per digest: a finished directory is renamed into place)."""
    target = os.path.join(cache_root(), "packages", package["digest"])
    if os.path.isdir(target):
        return target
    data = fetch(package["object_id"])
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    scratch = tempfile.mkdtemp(dir=parent, prefix=".unpacking-")
    try:
        with zipfile.ZipFile(_bytes_io(data)) as archive:
            for info in archive.infolist():
                archive.extract(info, scratch)
                mode = info.external_attr >> 16
                if mode:
                    os.chmod(os.path.join(scratch, info.filename), mode)
        try:
            os.rename(scratch, target)
        except OSError:       # another worker of the node finished first
            shutil.rmtree(scratch, ignore_errors=True)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return target


def _bytes_io(data: Any) -> Any:
    import io
    return io.BytesIO(bytes(data))


def apply_packages(env: dict[str, Any], fetch: Callable[[bytes], bytes]) -> None:
    """Once connected: py_modules on sys.path, working_dir as the current directory."""
    for package in env.get("py_modules") or []:
        sys.path.insert(0, unpack(package, fetch))
    if env.get("working_dir"):
        directory = unpack(env["working_dir"], fetch)
        os.chdir(directory)
        sys.path.insert(0, directory)


def setup_error(text: str) -> RuntimeEnvSetupError:
    """The error every task of a worker whose environment failed gets."""
    return RuntimeEnvSetupError(f"the runtime_env of this task could not be set up on "
                                f"this node: {text}")
