"""A real Slurm cluster on the netns hosts: munged, slurmctld on the first host, and a
slurmd on each host (Debian's ``slurm-wlm`` and ``munge``), configured in the test's
temporary directory and started as root; ``stop()`` ends every daemon it started.

One munged serves every host (its socket is a file, reachable from every network
namespace); its key is made here. Each node has 1 CPU in ``slurm.conf``, so a job of
three nodes needs all three hosts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from helpers import wait_until

PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scancel", "scontrol", "sinfo")


def slurm_unavailable() -> str | None:
    for program in PROGRAMS:
        if shutil.which(program) is None and not Path(f"/usr/sbin/{program}").exists():
            return f"no `{program}` (apt-get install slurm-wlm munge)"
    return None


class SlurmDaemons:
    """munged + slurmctld (on ``hosts[0]``) + one slurmd per host."""

    def __init__(self, hosts: list, directory: Path) -> None:
        self.hosts = hosts
        self.dir = directory
        self.conf = directory / "slurm.conf"
        self.processes: list[subprocess.Popen] = []
        munge = directory / "munge"
        for sub in ["state", "munge"] + [f"spool/{h.name}" for h in hosts]:
            (directory / sub).mkdir(parents=True, exist_ok=True)
        munge.chmod(0o711)
        self.munge_socket = munge / "munge.sock"
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        head = hosts[0]
        nodes = "".join(f"NodeName={h.name} NodeAddr={h.ip} CPUs=1 State=UNKNOWN\n" for h in hosts)
        d = directory
        self.conf.write_text(
            "ClusterName=rayipytest\n"
            f"SlurmctldHost={head.name}({head.ip})\n"
            "SlurmctldPort=16817\nSlurmdPort=16818\n"
            "SlurmUser=root\nSlurmdUser=root\n"
            "AuthType=auth/munge\nCredType=cred/munge\n"
            f"AuthInfo=socket={self.munge_socket}\n"
            f"StateSaveLocation={d / 'state'}\n"
            f"SlurmdSpoolDir={d / 'spool'}/%n\n"
            f"SlurmctldPidFile={d / 'slurmctld.pid'}\nSlurmdPidFile={d}/slurmd-%n.pid\n"
            f"SlurmctldLogFile={d / 'slurmctld.log'}\nSlurmdLogFile={d}/slurmd-%n.log\n"
            "ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n"
            "SwitchType=switch/none\nMpiDefault=none\n"
            "SelectType=select/cons_tres\nSelectTypeParameters=CR_Core\n"
            "SchedulerType=sched/backfill\nReturnToService=2\n"
            "SlurmdParameters=config_overrides\n"
            "JobAcctGatherType=jobacct_gather/none\nAccountingStorageType=accounting_storage/none\n"
            "KillWait=10\nMinJobAge=300\n"
            + nodes +
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n")

    @property
    def env(self) -> dict[str, str]:
        """What Slurm's commands need in their environment to find this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    @staticmethod
    def on_host(host, argv: list[str]) -> list[str]:
        """``argv`` in ``host``'s network namespace, under its name and with its
        /etc/hosts, but with this machine's /sys: ``ip netns exec`` mounts a fresh sysfs,
        without /sys/fs/cgroup, and slurmd refuses to start without its cgroups."""
        netns = f"/run/netns/{host.netns}"
        hosts = f"/etc/netns/{host.netns}/hosts"
        return ["nsenter", f"--net={netns}", "unshare", "--uts", "--mount", "sh", "-c",
                f'mount --bind {hosts} /etc/hosts && hostname "$0" && exec "$@"', host.name,
                *argv]

    def _start(self, host, argv: list[str], log: str) -> None:
        with open(self.dir / log, "wb") as out:
            command = self.on_host(host, argv) if host is not None else argv
            self.processes.append(subprocess.Popen(
                command, env=dict(os.environ, **self.env), stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT))

    def start(self) -> None:
        m = self.dir / "munge"
        self._start(None, ["munged", "-F", "-f", f"--key-file={m / 'munge.key'}",
                           f"--socket={self.munge_socket}", f"--pid-file={m / 'munged.pid'}",
                           f"--log-file={m / 'munged.log'}", f"--seed-file={m / 'munged.seed'}"],
                    "munged.out")
        wait_until(lambda: self.munge_socket.exists(), timeout=20,
                   message=f"munged did not start: {self.logs()}")
        self._start(self.hosts[0], ["slurmctld", "-D", "-f", str(self.conf)], "slurmctld.out")
        for host in self.hosts:
            self._start(host, ["slurmd", "-D", "-N", host.name, "-f", str(self.conf)],
                        f"slurmd-{host.name}.out")

        def all_idle() -> bool:
            for p in self.processes:
                assert p.poll() is None, f"a Slurm daemon exited: {self.logs()}"
            out = self.run(self.hosts[0], "sinfo", "-h", "-N", "-o", "%N %T").stdout
            states = dict(line.split() for line in out.splitlines() if line.strip())
            return len(states) == len(self.hosts) and all(s == "idle" for s in states.values())
        wait_until(all_idle, timeout=60, interval=0.5,
                   message=f"the Slurm nodes did not become idle: {self.logs()}")

    def run(self, host, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """A Slurm command run on ``host``."""
        return subprocess.run(host.argv(*argv), capture_output=True, text=True, timeout=timeout,
                              env=dict(host.env, **self.env), stdin=subprocess.DEVNULL)

    def logs(self) -> str:
        parts = []
        for log in sorted(self.dir.glob("*.out")) + sorted(self.dir.glob("*.log")):
            parts.append(f"--- {log.name}\n{log.read_text(errors='replace')[-1500:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
