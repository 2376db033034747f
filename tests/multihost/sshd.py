"""A real OpenSSH server on each netns host, with keys made here, for the SSH launcher.

Each host runs ``/usr/sbin/sshd -D`` in its namespace (under its host name), with a
config in the test's temporary directory: its own host key, the test's client key as
the only authorized key, and ``SetEnv`` giving sessions the host's rayipy directory and
this checkout on ``PYTHONPATH`` (what an installed rayipy is on a real machine). The
client side is one ``ssh_config`` (``ssh -F``) with the key and a ``known_hosts`` that
lists every host's key, checked strictly. ``stop()`` ends every sshd it started.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from helpers import wait_until

SSHD = "/usr/sbin/sshd"
REPO = Path(__file__).resolve().parents[2]


def sshd_unavailable() -> str | None:
    """Why the sshd tests cannot run here, or None."""
    if not Path(SSHD).exists():
        return f"no {SSHD} (apt-get install openssh-server)"
    for tool in ("ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"no `{tool}` command (openssh-client)"
    return None


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
                   check=True, capture_output=True, timeout=30)
    return path.with_suffix(".pub").read_text().strip()


class SSHServers:
    """sshd on each of ``hosts`` (the multihost ``Host`` objects)."""

    def __init__(self, hosts: list, directory: Path) -> None:
        self.hosts = hosts
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        self.client_key = directory / "id_ed25519"
        authorized = _keygen(self.client_key)
        (directory / "authorized_keys").write_text(authorized + "\n")
        known = []
        for host in hosts:
            public = _keygen(directory / f"{host.name}_host_key")
            known.append(f"{host.name},{host.ip} {' '.join(public.split()[:2])}")
        self.known_hosts = directory / "known_hosts"
        self.known_hosts.write_text("\n".join(known) + "\n")
        self.config = directory / "ssh_config"
        self.config.write_text(
            "Host *\n"
            "    User root\n"
            f"    IdentityFile {self.client_key}\n"
            "    IdentitiesOnly yes\n"
            f"    UserKnownHostsFile {self.known_hosts}\n"
            "    GlobalKnownHostsFile /dev/null\n"
            "    StrictHostKeyChecking yes\n"
            "    LogLevel ERROR\n")
        self.processes: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    def ssh_options(self) -> list[str]:
        """What ``SSHCluster(ssh_options=...)`` needs to use these keys."""
        return ["-F", str(self.config)]

    def start(self) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)   # sshd's privilege separation dir
        for host in self.hosts:
            config = self.dir / f"{host.name}_sshd_config"
            config.write_text(
                f"ListenAddress {host.ip}\n"
                "Port 22\n"
                f"HostKey {self.dir / (host.name + '_host_key')}\n"
                f"PidFile {self.dir / (host.name + '_sshd.pid')}\n"
                f"AuthorizedKeysFile {self.dir / 'authorized_keys'}\n"
                "PubkeyAuthentication yes\n"
                "PasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\n"
                "PermitRootLogin prohibit-password\n"
                "StrictModes no\n"          # the keys live under /tmp (world-writable)
                "UsePAM no\n"
                f"SetEnv RAYIPY_HOME={host.home} PYTHONPATH={REPO}\n")
            log = self.dir / f"{host.name}_sshd.log"
            self.logs.append(log)
            with open(log, "wb") as out:
                self.processes.append(subprocess.Popen(
                    host.argv(SSHD, "-D", "-e", "-f", str(config)), stdin=subprocess.DEVNULL,
                    stdout=out, stderr=subprocess.STDOUT))
        for host, process in zip(self.hosts, self.processes):
            def answers(host=host, process=process) -> bool:
                assert process.poll() is None, f"sshd on {host.name} exited: {self.log_text()}"
                return self.ssh(self.hosts[0], host.name, "true").returncode == 0
            wait_until(answers, timeout=20, interval=0.1,
                       message=f"sshd on {host.name} did not answer: {self.log_text()}")

    def ssh(self, from_host, to: str, command: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """``ssh to command`` run on ``from_host``."""
        return from_host.run("ssh", "-F", str(self.config), "-o", "BatchMode=yes", to, command,
                             timeout=timeout)

    def log_text(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}"
                         for log in self.logs if log.exists())

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
