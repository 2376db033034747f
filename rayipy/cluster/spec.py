"""The cluster file of ``rayipy up``/``rayipy down``: which launcher, with which settings.

    # cluster.yaml
    cluster_name: lab            # optional; default: the file's name without extension
    provider: ssh                # or slurm
    hosts: [alpha, beta, gamma]  # ssh: the head on the first
    num_cpus: 8                  # ssh: CPUs each node offers

    provider: slurm
    nodes: 4
    cpus_per_node: 16
    partition: cpu
    time: "2:00:00"

Every other key is a keyword argument of ``SSHCluster`` or ``SlurmCluster`` (their
docstrings say what each means); an unknown key is an error that lists the known ones.
JSON works too; YAML needs PyYAML (rayipy itself does not depend on it; Jupyter's own
packages usually bring it), else the error says to install it or write JSON.
Pure: text in, checked settings out.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_COMMON = {"port": int, "start_options": list}
KEYS: dict[str, dict[str, Any]] = {
    "ssh": {"hosts": list, "num_cpus": int, "ssh_options": list, "ssh_command": str,
            "remote_python": str, "remote_env": dict, "node_ip_address": str,
            "connect_timeout": int, "start_timeout": (int, float), **_COMMON},
    "slurm": {"nodes": int, "cpus_per_node": int, "partition": str, "time": (str, int),
              "account": str, "job_name": str, "sbatch_options": list, "shared_dir": str,
              "python": str, "start_timeout": (int, float), **_COMMON},
}
REQUIRED = {"ssh": ("hosts",), "slurm": ()}


@dataclass(frozen=True)
class ClusterSpec:
    """A checked cluster file: its name, provider, and the launcher's keyword arguments."""

    name: str
    provider: str
    settings: dict[str, Any]


def parse(text: str, file_name: str) -> dict[str, Any]:
    """The file's content as a mapping: JSON for ``.json``, else YAML (JSON is YAML)."""
    if file_name.endswith(".json"):
        try:
            data = json.loads(text)
        except ValueError as e:
            raise ValueError(f"{file_name}: not valid JSON: {e}") from None
    else:
        try:
            import yaml
        except ImportError:
            try:
                data = json.loads(text)
            except ValueError:
                raise ValueError(f"{file_name}: reading YAML needs PyYAML, which is not "
                                 f"installed: `pip install pyyaml`, or write the file as JSON "
                                 f"(cluster.json)") from None
        else:
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as e:
                raise ValueError(f"{file_name}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{file_name}: expected a mapping of settings (provider: ssh, ...)")
    return data


def check(data: dict[str, Any], default_name: str) -> ClusterSpec:
    """The settings checked: a known provider, known keys of the right types."""
    settings = dict(data)
    provider = settings.pop("provider", None)
    if provider not in KEYS:
        raise ValueError(f"provider must be one of {', '.join(sorted(KEYS))}, got {provider!r}")
    name = settings.pop("cluster_name", default_name)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"cluster_name must be letters, digits, '.', '_' or '-', got {name!r}")
    known = KEYS[provider]
    for key, value in settings.items():
        if key not in known:
            raise ValueError(f"unknown setting {key!r} for provider {provider}; known: "
                             f"{', '.join(sorted(known))}")
        wanted = known[key]
        if not isinstance(value, wanted) or isinstance(value, bool):
            names = " or ".join(t.__name__ for t in (wanted if isinstance(wanted, tuple) else (wanted,)))
            raise ValueError(f"{key} must be of type {names}, got {value!r}")
    for key in REQUIRED[provider]:
        if key not in settings:
            raise ValueError(f"provider {provider} needs {key!r}")
    if "time" in settings:
        settings["time"] = str(settings["time"])
    return ClusterSpec(name, provider, settings)


def load(path: str | Path) -> ClusterSpec:
    """Read and check a cluster file; ValueError says what is wrong, naming the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    try:
        return check(parse(text, path.name), path.stem)
    except ValueError as e:
        message = str(e)
        raise ValueError(message if message.startswith(path.name) else f"{path}: {message}") from None
