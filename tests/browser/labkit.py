"""What the browser tests need: the tools, the extension build, a JupyterLab server, notebooks.

JupyterLab runs on loopback with every Jupyter directory in a fresh temporary folder, so a
developer's settings, kernels and workspaces neither leak in nor get changed. The browser
is Debian's chromium driven by Python playwright (no browser download).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import psutil
from nbformat.v4 import new_code_cell, new_notebook

ROOT = Path(__file__).resolve().parents[2]
EXTENSION = ROOT / "extension"
BUILT = EXTENSION / "labextension"          # jupyterlab.outputDir in extension/package.json
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path(os.environ.get("RAYIPY_CHROMIUM", "/usr/bin/chromium"))
BIN = Path(sys.executable).parent          # the venv's jlpm, jupyter-builder

# .ci/run sets this: there a missing browser or Node.js is a failure, not a skip.
REQUIRED = os.environ.get("RAYIPY_BROWSER_TESTS") == "required"

CHROMIUM_ARGS = ["--disable-gpu", "--disable-quic", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

# The notebook is open, its kernel connected and idle (needs expose_app_in_browser).
KERNEL_IDLE_JS = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const sc = w && w.sessionContext;
  const k = sc && sc.session && sc.session.kernel;
  return !!(w && w.context && w.context.isReady && sc.isReady && k
            && k.connectionStatus === 'connected' && k.status === 'idle');
}"""


def missing_browser() -> str:
    """Why the browser tests cannot run here, or "" when they can."""
    if not CHROMIUM.exists():
        return (f"no Chromium at {CHROMIUM}: apt-get install chromium fonts-liberation "
                "(.ci/run does)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed: pip install -e '.[test]'"
    return ""


def missing_node() -> str:
    """Why the extension cannot be built here, or "" when it can."""
    if shutil.which("node") is None:
        return "Node.js is not installed, so the JupyterLab extension cannot be built"
    if not (BIN / "jlpm").exists():
        return f"jlpm (from jupyterlab) is not in {BIN}: pip install -e '.[test]'"
    return ""


def _newest(paths: list[Path]) -> float:
    newest = 0.0
    for path in paths:
        if path.is_dir():
            newest = max([newest] + [p.stat().st_mtime for p in path.rglob("*") if p.is_file()])
        elif path.exists():
            newest = max(newest, path.stat().st_mtime)
    return newest


def build_extension(log: Path) -> Path:
    """Build extension/ unless its build is newer than its sources; return the build.

    ``jlpm install`` takes about 45 s with an empty yarn cache, the build about 5 s.
    Under CI=true the install keeps yarn.lock as committed (it fails if it would change).
    """
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    jlpm = str(BIN / "jlpm")
    sources = [EXTENSION / n for n in ("src", "style", "package.json", "tsconfig.json", "yarn.lock")]
    installed = EXTENSION / "node_modules" / ".yarn-state.yml"
    steps = []
    if not installed.exists() or installed.stat().st_mtime < _newest(
            [EXTENSION / "package.json", EXTENSION / "yarn.lock"]):
        steps.append([jlpm, "install"])
    stamp = BUILT / "package.json"
    if steps or not stamp.exists() or stamp.stat().st_mtime < _newest(sources):
        steps.append([jlpm, "build"])
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        for step in steps:
            started = time.monotonic()
            out.write(f"$ {' '.join(step)}\n")
            out.flush()
            result = subprocess.run(step, cwd=EXTENSION, env=env, stdout=out,
                                    stderr=subprocess.STDOUT, timeout=600)
            out.write(f"[{result.returncode} after {time.monotonic() - started:.1f} s]\n")
            if result.returncode != 0:
                raise RuntimeError(f"`{' '.join(step[1:])}` in extension/ failed; see {log}")
            if step[1] == "install":
                installed.touch()   # yarn leaves it alone when nothing changed
    if not stamp.exists():
        raise RuntimeError(f"the build left no {stamp}; see {log}")
    return BUILT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LabServer:
    """JupyterLab on 127.0.0.1 with fresh Jupyter directories under ``home``."""

    def __init__(self, home: Path, notebooks: Path, labextension: Path | None) -> None:
        self.home = home
        self.notebooks = notebooks
        self.token = "rayipy-browser-test"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        dirs = {name: home / name for name in ("config", "data", "runtime", "settings",
                                               "workspaces", "ipython", "path")}
        for path in dirs.values():
            path.mkdir(parents=True, exist_ok=True)
        notification = dirs["settings"] / "@jupyterlab" / "apputils-extension"
        notification.mkdir(parents=True)
        (notification / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
        if labextension is not None:
            # The tree's fresh build comes first, before any copy an install left in the venv.
            (dirs["path"] / "labextensions").mkdir()
            (dirs["path"] / "labextensions" / "rayipy-labextension").symlink_to(labextension)
        self.env = {**os.environ,
                    "JUPYTER_CONFIG_DIR": str(dirs["config"]),
                    "JUPYTER_DATA_DIR": str(dirs["data"]),
                    "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
                    "JUPYTER_PATH": str(dirs["path"]),
                    "JUPYTERLAB_SETTINGS_DIR": str(dirs["settings"]),
                    "JUPYTERLAB_WORKSPACES_DIR": str(dirs["workspaces"]),
                    "IPYTHONDIR": str(dirs["ipython"]),
                    "JUPYTER_PLATFORM_DIRS": "1",
                    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.log_path = home / "lab.log"
        self.proc: subprocess.Popen | None = None
        self._family: list[psutil.Process] = []

    def start(self, timeout: float = 60.0) -> None:
        command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
                   f"--port={self.port}", "--allow-root",
                   f"--IdentityProvider.token={self.token}",
                   f"--ServerApp.root_dir={self.notebooks}",
                   "--LabApp.news_url=None",
                   "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                   "--LabApp.extension_manager=readonly",
                   "--LabApp.expose_app_in_browser=True"]
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(command, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}",
                                            timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not answer within {timeout} s:\n{self.log()}")
            time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""

    def family(self) -> list[psutil.Process]:
        """The server and everything under it now (kernels, their clusters)."""
        if self.proc is None:
            return []
        try:
            server = psutil.Process(self.proc.pid)
            return [server] + server.children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        """Stop the server (it shuts its kernels down), then anything left under it."""
        if self.proc is None:
            return
        family = self.family()
        try:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
            _, alive = psutil.wait_procs(family, timeout=15)
            for proc in alive:
                try:
                    proc.kill()
                except psutil.NoSuchProcess:
                    pass
            psutil.wait_procs(alive, timeout=5)
        finally:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)   # its session, whatever is left
            except (ProcessLookupError, PermissionError):
                pass
            self._log.close()

    def notebook_url(self, name: str) -> str:
        return f"{self.url}/lab/tree/{name}?token={self.token}&reset"

    def stop_kernels(self, timeout: float = 30.0) -> None:
        """Shut down every kernel (and so its cluster) and wait until their processes end."""
        if self.proc is None or self.proc.poll() is not None:
            return
        server = psutil.Process(self.proc.pid)
        before = server.children(recursive=True)
        with urllib.request.urlopen(f"{self.url}/api/kernels?token={self.token}",
                                    timeout=5) as reply:
            kernels = json.loads(reply.read())
        for kernel in kernels:
            request = urllib.request.Request(
                f"{self.url}/api/kernels/{kernel['id']}?token={self.token}", method="DELETE")
            urllib.request.urlopen(request, timeout=timeout).close()
        _, alive = psutil.wait_procs(before, timeout=timeout)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass


def write_notebook(path: Path, cells: list[str]) -> Path:
    nb = new_notebook(cells=[new_code_cell(source) for source in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nbformat.write(nb, path)
    return path
