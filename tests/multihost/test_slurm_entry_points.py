"""The two front ends of ``SlurmCluster`` against a real Slurm (``slurm_daemons.py``:
slurmctld on hostA, a slurmd of 1 CPU on each of three netns hosts, munged):

- ``%cluster start --slurm --nodes 2`` in a real IPython kernel (nbclient), run on
  hostA as a login node would run it: a task runs on both nodes of the job, and
  ``%cluster stop`` cancels the job (``squeue``, asked from a later cell of the same
  kernel, no longer lists it);
- ``rayipy up cluster.yaml`` / ``rayipy down cluster.yaml`` with ``provider: slurm``:
  ``up`` leaves the job running and prints the address and password, a program
  connects and runs tasks, ``down`` (another process) cancels the job.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pytest

from helpers import wait_until
from test_slurm_launcher import REPO, job_state, slurm  # noqa: F401 (a fixture)
from test_ssh_launcher import rayipy_processes

pytestmark = pytest.mark.timeout(300)


def squeue(daemons, host) -> list[str]:
    out = daemons.run(host, "squeue", "--noheader", "--format=%i")
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


# Run on hostA: executes the notebook in a kernel started there (so the kernel is in
# hostA's namespace and sees SLURM_CONF), and writes the executed notebook out.
NOTEBOOK_RUNNER = """
import sys
import nbformat
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

cells = {cells!r}
nb = new_notebook(cells=[new_code_cell(source) for source in cells])
nb.metadata["kernelspec"] = {{"name": "python3", "display_name": "Python 3", "language": "python"}}
try:
    NotebookClient(nb, timeout=240, kernel_name="python3").execute()
finally:
    nbformat.write(nb, {out!r})
"""

CELLS = [
    "%load_ext rayipy",
    "%cluster start --slurm --nodes 2 --cpus-per-node 1 --time 10:00",
    textwrap.dedent("""\
        import json, rayipy
        from rayipy.jupyter import cluster as _c
        job_id = _c._launcher.job_id

        @rayipy.remote(num_cpus=1)
        def where(i):
            import socket, time
            time.sleep(0.5)
            return socket.gethostname()

        ran_on = sorted(set(rayipy.get([where.remote(i) for i in range(8)])))
        print("RAN", json.dumps({"job": job_id, "state": _c._launcher.state(), "hosts": ran_on}))
        """),
    "%cluster stop",
    textwrap.dedent("""\
        import subprocess
        def _ask(*argv):
            return subprocess.run(list(argv), capture_output=True, text=True, timeout=30).stdout
        print("AFTER", json.dumps({"launcher": _c._launcher is None,
                                   "squeue": _ask("squeue", "--noheader", "--format=%i").split(),
                                   "state": _ask("scontrol", "show", "job", job_id)}))
        """),
]


def printed(nb, prefix: str) -> dict:
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            for line in output.get("text", "").splitlines():
                if line.startswith(prefix + " "):
                    return json.loads(line[len(prefix) + 1:])
    raise AssertionError(f"no {prefix} line in the notebook's outputs: "
                         f"{[c.get('outputs') for c in nb.cells]}")


def test_cluster_start_slurm_in_a_kernel_runs_tasks_and_cluster_stop_cancels_the_job(slurm,
                                                                                     tmp_path):
    import nbformat
    hosts, daemons = slurm
    hostA = hosts[0]
    out = tmp_path / "executed.ipynb"
    env = dict(hostA.env, PYTHONPATH=str(REPO), **daemons.env)
    run = subprocess.run(hostA.argv(sys.executable, "-c",
                                    NOTEBOOK_RUNNER.format(cells=CELLS, out=str(out))),
                         env=env, capture_output=True, text=True, timeout=280,
                         stdin=subprocess.DEVNULL)
    try:
        assert run.returncode == 0, f"{run.stdout}\n{run.stderr[-4000:]}\n{daemons.logs()}"
        nb = nbformat.read(out, as_version=4)
        ran = printed(nb, "RAN")
        assert ran["state"] == "RUNNING", ran
        assert len(ran["hosts"]) == 2 and set(ran["hosts"]) <= {h.name for h in hosts}, ran
        after = printed(nb, "AFTER")
        assert after["launcher"], after                         # %cluster stop let it go
        assert ran["job"] not in after["squeue"], after         # and Slurm ended the job
        assert "JobState=CANCELLED" in after["state"], after
        wait_until(lambda: not rayipy_processes(hosts), timeout=30,
                   message=f"rayipy processes left after %cluster stop: {rayipy_processes(hosts)}")
    finally:
        daemons.run(hostA, "scancel", "--name=rayipy")


def test_rayipy_up_and_down_with_a_slurm_cluster_file(slurm, tmp_path):
    hosts, daemons = slurm
    hostA = hosts[0]
    spec = tmp_path / "lab.yaml"
    spec.write_text(textwrap.dedent(f"""\
        provider: slurm
        nodes: 2
        cpus_per_node: 1
        time: "10:00"
        shared_dir: {tmp_path / 'shared'}
        """))
    env = dict(hostA.env, PYTHONPATH=str(REPO), **daemons.env)

    def rayipy_cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(hostA.argv(sys.executable, "-m", "rayipy", *args), env=env,
                              capture_output=True, text=True, timeout=200,
                              stdin=subprocess.DEVNULL)
    try:
        up = rayipy_cli("up", str(spec))
        assert up.returncode == 0, f"{up.stdout}\n{up.stderr}\n{daemons.logs()}"
        address = re.search(r"head at (\S+?)\.\n", up.stdout).group(1)
        password = re.search(r"The cluster's password: (\S+)", up.stdout).group(1)
        jobs = squeue(daemons, hostA)
        assert len(jobs) == 1, jobs           # up returned, the job runs on
        job = jobs[0]
        assert job_state(daemons, hostA, job) == "RUNNING"
        program = textwrap.dedent(f"""\
            import rayipy
            rayipy.init(address={address!r})

            @rayipy.remote(num_cpus=1)
            def where(i):
                import socket, time
                time.sleep(0.5)
                return socket.gethostname()

            print("HOSTS", sorted(set(rayipy.get([where.remote(i) for i in range(8)]))))
            print("NODES", sum(1 for n in rayipy.nodes() if n["Alive"]))
            rayipy.shutdown()
            """)
        used = subprocess.run(hostA.argv(sys.executable, "-c", program), capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL,
                              env=dict(env, RAYIPY_PASSWORD=password))
        assert used.returncode == 0, used.stdout + used.stderr
        assert "NODES 2" in used.stdout, used.stdout
        ran_on = re.search(r"HOSTS \[(.*)\]", used.stdout).group(1)
        assert ran_on.count("host") == 2, used.stdout
        down = rayipy_cli("down", str(spec))
        assert down.returncode == 0, down.stdout + down.stderr
        assert "is down" in down.stdout, down.stdout
        assert job not in squeue(daemons, hostA)
        assert job_state(daemons, hostA, job) == "CANCELLED"
        wait_until(lambda: not rayipy_processes(hosts), timeout=30,
                   message=f"rayipy processes left after rayipy down: {rayipy_processes(hosts)}")
        again = rayipy_cli("down", str(spec))
        assert again.returncode != 0 and "no cluster 'lab' is up" in again.stdout + again.stderr
    finally:
        daemons.run(hostA, "scancel", "--name=rayipy")
