"""The launchers' command lines and parsers (rayipy/cluster/commands.py, spec.py): no
processes, no machines."""

from __future__ import annotations

import json
import shlex
import subprocess

import pytest

from rayipy.cluster import commands, spec
from rayipy.cluster.commands import SlurmRequest, SSHSettings, StartOptions


def test_start_commands_never_carry_the_password():
    options = StartOptions(num_cpus=2, port=0, extra=("--object-store-memory", "2000000"))
    head = commands.start_head_argv("/py", options, node_ip="10.0.0.1")
    assert head == ["/py", "-m", "rayipy", "start", "--head", "--node-ip-address", "10.0.0.1",
                    "--port", "0", "--num-cpus", "2", "--object-store-memory", "2000000"]
    agent = commands.start_agent_argv("/py", "10.0.0.1:6379", options, block=True,
                                      password_file="/d/password")
    assert agent == ["/py", "-m", "rayipy", "start", "--address=10.0.0.1:6379", "--num-cpus", "2",
                     "--password-file", "/d/password", "--block", "--object-store-memory", "2000000"]
    assert not any("--password" == w or w.startswith("--password=") for w in head + agent)


@pytest.mark.parametrize("extra", [("--password", "x"), ("--password=x",), ("--head",),
                                   ("--num-cpus", "3"), ("--block",)])
def test_options_the_launcher_sets_cannot_be_given_again(extra):
    with pytest.raises(ValueError, match="set by the launcher"):
        StartOptions(extra=extra).check()


@pytest.mark.parametrize("options, message", [(StartOptions(num_cpus=-1), "num_cpus"),
                                              (StartOptions(port=70000), "port"),
                                              (StartOptions(extra=(3,)), "strings")])
def test_bad_start_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        options.check()


def test_the_remote_shell_reads_the_password_from_stdin_and_runs_the_command(tmp_path):
    """The remote command, run by a real sh as sshd would: the password arrives in the
    environment from stdin, and is nowhere in the command."""
    argv = commands.with_env(["sh", "-c", 'printf "%s|%s" "$RAYIPY_PASSWORD" "$RAYIPY_HOME"'],
                             {"RAYIPY_HOME": "/h"})
    remote = commands.remote_command(argv, with_password=True)
    assert "s3cret" not in remote
    result = subprocess.run(["sh", "-c", remote], input="s3cret\n", capture_output=True,
                            text=True, timeout=10)
    assert result.stdout == "s3cret|/h"
    no_line = subprocess.run(["sh", "-c", remote], input="", capture_output=True, text=True,
                             timeout=10)
    assert no_line.returncode == commands.PASSWORD_NOT_READ


def test_env_refuses_the_password_and_bad_names():
    with pytest.raises(ValueError, match="command line"):
        commands.with_env(["x"], {"RAYIPY_PASSWORD": "p"})
    with pytest.raises(ValueError, match="not an environment"):
        commands.with_env(["x"], {"A B": "p"})
    assert commands.with_env(["x"], {}) == ["x"]


def test_ssh_command_line():
    settings = SSHSettings(options=("-F", "cfg"), connect_timeout=5)
    argv = settings.argv("user@alpha", "echo hi")
    assert argv == ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-F", "cfg", "-T",
                    "--", "user@alpha", "echo hi"]
    assert settings.config_argv("alpha") == ["ssh", "-F", "cfg", "-G", "--", "alpha"]
    for bad in ("-oProxyCommand=x", "", "a b"):
        with pytest.raises(ValueError, match="not a host"):
            settings.argv(bad, "true")


def test_hosts_parsing():
    assert commands.parse_hosts(" a, b ,c,") == ["a", "b", "c"]
    with pytest.raises(ValueError, match="at least one host"):
        commands.parse_hosts(" , ")
    with pytest.raises(ValueError, match="listed twice"):
        commands.check_distinct(["a", "b", "a"])


def test_ssh_config_hostname_and_head_address():
    assert commands.ssh_config_hostname("user root\nhostname 10.0.0.7\nport 22\n") == "10.0.0.7"
    assert commands.ssh_config_hostname("user root\n") is None
    out = "rayipy head started at 10.0.0.1:6379, with this machine as a node (2 CPU).\n\n..."
    assert commands.head_address(out) == "10.0.0.1:6379"
    with pytest.raises(ValueError):
        commands.head_address("something else")


def test_sbatch_and_srun_lines():
    request = SlurmRequest(nodes=3, cpus_per_node=4, partition="cpu", time="1:00:00",
                           account="lab", job_name="ry", extra=("--qos=low",))
    request.check()
    assert commands.sbatch_argv(request, "/d/job.sh", "/d/job.out") == [
        "sbatch", "--parsable", "--job-name=ry", "--nodes=3", "--ntasks-per-node=1",
        "--output=/d/job.out", "--cpus-per-task=4", "--partition=cpu", "--time=1:00:00",
        "--account=lab", "--qos=low", "/d/job.sh"]
    srun = commands.srun_argv(request, ["/py", "-m", "rayipy.cluster.slurm_task", "/d"])
    assert srun[:5] == ["srun", "--nodes=3", "--ntasks=3", "--ntasks-per-node=1",
                        "--kill-on-bad-exit=1"]
    script = commands.batch_script(srun)
    assert script.startswith("#!/bin/sh\n") and "exec srun" in script
    assert shlex.split(script.splitlines()[-1])[1:] == srun


@pytest.mark.parametrize("request_, message", [
    (SlurmRequest(nodes=0), "nodes"), (SlurmRequest(cpus_per_node=0), "cpus_per_node"),
    (SlurmRequest(time="two hours"), "time"), (SlurmRequest(job_name="a b"), "job_name")])
def test_bad_slurm_requests_are_refused(request_, message):
    with pytest.raises(ValueError, match=message):
        request_.check()


def test_slurm_answers():
    assert commands.parse_job_id("1234\n") == "1234"
    assert commands.parse_job_id("77;cluster2") == "77"
    with pytest.raises(ValueError, match="job id"):
        commands.parse_job_id("sbatch: error: nope")
    assert commands.job_state("JobId=3 JobName=ry\n   JobState=RUNNING Reason=None") == "RUNNING"
    assert commands.job_state("") is None


# -- cluster files -------------------------------------------------------------------------

def test_cluster_files_in_json_and_yaml(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"provider": "ssh", "hosts": ["a", "b"],
                                                 "num_cpus": 2}))
    loaded = spec.load(tmp_path / "c.json")
    assert (loaded.name, loaded.provider, loaded.settings) == ("c", "ssh",
                                                               {"hosts": ["a", "b"], "num_cpus": 2})
    pytest.importorskip("yaml")
    (tmp_path / "lab.yaml").write_text("cluster_name: big\nprovider: slurm\nnodes: 4\ntime: 60\n")
    loaded = spec.load(tmp_path / "lab.yaml")
    assert (loaded.name, loaded.settings) == ("big", {"nodes": 4, "time": "60"})


def test_yaml_without_pyyaml_says_what_to_do(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_yaml(name, *args, **kwargs):
        if name == "yaml":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_yaml)
    with pytest.raises(ValueError, match="PyYAML.*JSON"):
        spec.parse("provider: ssh\n", "c.yaml")
    assert spec.parse('{"provider": "ssh"}', "c.yaml") == {"provider": "ssh"}


@pytest.mark.parametrize("data, message", [
    ({"provider": "k8s"}, "provider must be one of"),
    ({"provider": "ssh"}, "needs 'hosts'"),
    ({"provider": "ssh", "hosts": ["a"], "nodes": 2}, "unknown setting 'nodes'.*known"),
    ({"provider": "slurm", "nodes": "4"}, "nodes must be of type int"),
    ({"provider": "slurm", "nodes": True}, "nodes must be"),
    ({"provider": "slurm", "cluster_name": "a/b"}, "cluster_name")])
def test_bad_cluster_files(data, message):
    with pytest.raises(ValueError, match=message):
        spec.check(data, "x")
