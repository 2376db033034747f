"""A wheel of rayipy ships the prebuilt JupyterLab extension where JupyterLab finds it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest

from . import labkit

pytestmark = pytest.mark.timeout(300)

SHARE = "share/jupyter/labextensions/rayipy-labextension"


def test_wheel_ships_the_built_extension_and_jupyterlab_finds_it(labextension, tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels),
                    str(labkit.ROOT)], check=True, timeout=240)
    (wheel,) = wheels.glob("rayipy-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        data = next(n.split(SHARE)[0] for n in names if SHARE in n)
        package = json.loads(archive.read(f"{data}{SHARE}/package.json"))
    assert package["name"] == "rayipy-labextension"
    entry = package["jupyterlab"]["_build"]["load"]        # static/remoteEntry.<hash>.js
    assert f"{data}{SHARE}/{entry}" in names
    assert f"{data}{SHARE}/install.json" in names

    # Laid out as an installer does (<name>.data/data/X goes to <prefix>/X; not pip
    # install --prefix, which would uninstall the rayipy of the running environment),
    # JupyterLab lists it as working.
    prefix = tmp_path / "prefix"
    with zipfile.ZipFile(wheel) as archive:
        for name in names:
            if name.startswith(f"{data}{SHARE}/"):
                target = prefix / name[len(data):]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(name))
    env = {**os.environ, "JUPYTER_PATH": str(prefix / "share" / "jupyter"),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_DATA_DIR": str(tmp_path / "data"), "JUPYTER_PLATFORM_DIRS": "1"}
    listed = subprocess.run([sys.executable, "-m", "jupyterlab.labextensions", "list"], env=env,
                            capture_output=True, text=True, timeout=120)
    lines = [line for line in (listed.stdout + listed.stderr).splitlines()
             if "rayipy-labextension" in line]
    assert lines and "enabled" in lines[0] and "OK" in lines[0], listed.stdout + listed.stderr
    assert str(prefix) in listed.stdout + listed.stderr
