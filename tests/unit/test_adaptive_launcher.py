"""Unit tests of what the launchers add for ``adapt`` (issue 16, Autoscaling), without a
machine: which nodes an ``SSHCluster`` may retire, its spare hosts, the arguments
``adapt`` refuses, and what ``SlurmCluster`` counts to adapt with one job per node."""

from __future__ import annotations

import pytest

from rayipy.cluster import SlurmCluster, SSHCluster, commands

JOINED = ("This machine joined the rayipy cluster at 10.0.0.1:6379 as node 3fa2b1c0 "
          "(10.0.0.2, 1 CPU).\n`rayipy status` shows the cluster")


def test_the_node_id_rayipy_start_prints_is_read_back():
    assert commands.joined_node(JOINED) == "3fa2b1c0"
    with pytest.raises(ValueError, match="node id"):
        commands.joined_node("something else")


def ssh_cluster(started: list[str], node_ids: dict[str, str]) -> SSHCluster:
    cluster = SSHCluster.from_record(
        {"hosts": ["a", "b", "c"], "started": started, "ssh_command": "ssh", "ssh_options": [],
         "connect_timeout": 10, "remote_python": "python3", "remote_env": {},
         "address": "10.0.0.1:6379", "node_ids": node_ids}, password="pw")
    cluster._closed = True   # nothing to stop at exit: nothing was started
    return cluster


def test_only_nodes_the_launcher_started_are_retirable_and_never_the_heads():
    cluster = ssh_cluster(["a", "b"], {"b": "bbbb0000"})
    assert cluster._retirable({"node_id": "bbbb0000" + "1" * 48})
    assert not cluster._retirable({"node_id": "aaaa0000" + "1" * 48})   # the head's
    assert not cluster._retirable({"node_id": "cccc0000" + "1" * 48})   # joined by hand
    assert cluster._spare() == 1 and cluster._capacity() == 3
    cluster.unusable["c"] = "ssh failed"
    assert cluster._spare() == 0


def test_a_retired_host_is_spare_again_in_the_record():
    cluster = ssh_cluster(["a"], {})
    assert cluster.record()["node_ids"] == {} and cluster._spare() == 2


@pytest.mark.parametrize("initial", [0, 4, 1.5, True])
def test_initial_must_name_how_many_hosts_start(initial):
    with pytest.raises(ValueError, match="initial"):
        SSHCluster(["a", "b", "c"], initial=initial)


def test_adapt_refuses_bad_bounds_before_it_connects():
    cluster = ssh_cluster(["a"], {})
    cluster._closed = False
    try:
        with pytest.raises(ValueError, match="machine"):
            cluster.adapt(minimum=1, maximum=4)
        with pytest.raises(ValueError, match="minimum"):
            cluster.adapt(minimum=3, maximum=2)
        with pytest.raises(ValueError, match="interval"):
            cluster.adapt(minimum=1, maximum=2, interval=0)
        with pytest.raises(ValueError, match="adapt\\(True\\)"):
            cluster.adapt(True)
        with pytest.raises(ValueError, match="no maximum"):
            cluster.adapt(False, 3)
        cluster.adapt(False)                  # nothing adapting: a no-op
        assert cluster.adapt_status() is None
    finally:
        cluster._closed = True


def slurm_cluster(node_jobs: dict[str, str], nodes: int = 1, maximum: int = 4) -> SlurmCluster:
    cluster = SlurmCluster.from_record(
        {"address": "10.0.0.1:6379", "job_id": "100", "job_dir": "/nonexistent/rayipy-x",
         "node_jobs": node_jobs}, password="pw")
    cluster.request = commands.SlurmRequest(nodes=nodes, cpus_per_node=2, partition="cpu",
                                            time="1:00:00", job_name="rayipy")
    cluster._max_nodes = maximum
    cluster._next_squeue = float("inf")   # no squeue here: the jobs are taken as queued
    cluster._closed = True   # nothing to cancel at exit: nothing was submitted
    return cluster


def test_slurm_adapt_needs_a_maximum_and_checks_the_bounds_before_it_connects():
    cluster = slurm_cluster({})
    cluster._closed = False
    try:
        with pytest.raises(ValueError, match="maximum="):
            cluster.adapt(minimum=1)
        with pytest.raises(ValueError, match="minimum"):
            cluster.adapt(minimum=3, maximum=2)
        cluster.adapt(False)                  # nothing adapting: a no-op
        assert cluster.adapt_status() is None
    finally:
        cluster._closed = True


def test_only_nodes_of_jobs_adapt_added_are_retirable_and_never_the_first_jobs():
    cluster = slurm_cluster({"101": "bbbb0000", "102": ""})
    assert cluster._retirable({"node_id": "bbbb0000" + "1" * 48})
    assert cluster._job_of("bbbb0000" + "1" * 48) == "101"
    assert not cluster._retirable({"node_id": "aaaa0000" + "1" * 48})   # the first job's
    assert cluster._capacity() is None
    assert cluster._node_template() == {"CPU": 2.0}


def test_slurm_spare_counts_queued_jobs_towards_maximum():
    # maximum 4: the first job's node, two added jobs (one still queued): one more at most
    assert slurm_cluster({"101": "bbbb0000", "102": ""})._spare() == 1
    assert slurm_cluster({}, nodes=2)._spare() == 2
    assert slurm_cluster({"101": "", "102": "", "103": ""})._spare() == 0


def test_the_record_keeps_the_added_jobs_for_rayipy_down():
    cluster = slurm_cluster({"101": "bbbb0000"})
    record = cluster.record()
    assert record["node_jobs"] == {"101": "bbbb0000"} and record["job_id"] == "100"
    assert SlurmCluster.from_record(record).node_jobs == {"101": "bbbb0000"}


def test_a_node_job_asks_for_one_node_with_the_clusters_settings():
    request = commands.SlurmRequest(nodes=4, cpus_per_node=8, partition="cpu", time="2:00:00",
                                    account="lab", job_name="mine", extra=("--qos=low",))
    argv = commands.sbatch_argv(commands.node_job_request(request), "node.sh", "node-%j.out")
    assert "--nodes=1" in argv and "--cpus-per-task=8" in argv and "--partition=cpu" in argv
    assert "--time=2:00:00" in argv and "--account=lab" in argv and "--job-name=mine" in argv
    assert argv[-2:] == ["--qos=low", "node.sh"]


def test_squeue_answers_are_read_back():
    assert commands.squeue_argv(["1", "2"])[-1] == "--jobs=1,2"
    assert commands.queued_states("101 RUNNING\n102 PENDING\n\n") == {"101": "RUNNING",
                                                                       "102": "PENDING"}


# -- the loop, with a scripted head and launcher ------------------------------------------------
class ScriptedHead:
    """Answers ``demand`` from ``report`` (changed by the fake launcher's actions)."""

    def __init__(self, report: dict) -> None:
        self.report = report

    def request(self, name: str, timeout: float = 0.0) -> dict:
        assert name == "demand"
        return self.report


def head_node(node_id: str, busy: bool = False) -> dict:
    return {"node_id": node_id, "ip": "", "hostname": "", "resources": {"CPU": 1.0},
            "busy": busy, "holds_objects": False}


class FakeLauncher:
    def __init__(self, head: ScriptedHead, fail_grow: bool = False) -> None:
        self.head = head
        self.fail_grow = fail_grow
        self.grown: list[int] = []
        self.retired: list[str] = []
        self.closed_runtime = False

    def _head_runtime(self) -> ScriptedHead:
        return self.head

    def _close_head_runtime(self, runtime: object) -> None:
        self.closed_runtime = True

    def _spare(self) -> int:
        return 2 - len(self.grown) * 2

    def _retirable(self, node: dict) -> bool:
        return node["node_id"] != "head"

    def _grow(self, count: int) -> None:
        if self.fail_grow:
            raise RuntimeError("hostB: ssh could not run it")
        self.grown.append(count)
        self.head.report = {"queued": [], "nodes": [head_node("head"), head_node("b"),
                                                    head_node("c")]}

    def _retire(self, node_id: str) -> None:
        self.retired.append(node_id)
        self.head.report["nodes"] = [n for n in self.head.report["nodes"] if n["node_id"] != node_id]


def test_the_loop_starts_nodes_for_waiting_work_then_retires_them_idle():
    from helpers import wait_until
    from rayipy.cluster.adapt_loop import AdaptLoop
    from rayipy.cluster.adaptive import AdaptivePolicy
    head = ScriptedHead({"queued": [((("CPU", 1.0),), 5)], "nodes": [head_node("head", busy=True)]})
    launcher = FakeLauncher(head)
    loop = AdaptLoop(launcher, AdaptivePolicy(1, 3, wait_s=0.0, idle_s=0.0), interval=0.01)
    loop.start()
    try:
        wait_until(lambda: sorted(launcher.retired) == ["b", "c"], timeout=10)
        assert launcher.grown == [2]
        wait_until(lambda: loop.status().current == 1, timeout=10)
        assert loop.status().target == 1 and loop.status().error == ""
    finally:
        loop.stop(10)
    assert launcher.closed_runtime and not loop.status().adapting


def test_a_failed_start_is_kept_in_the_status_and_the_loop_goes_on():
    from helpers import wait_until
    from rayipy.cluster.adapt_loop import AdaptLoop
    from rayipy.cluster.adaptive import AdaptivePolicy
    head = ScriptedHead({"queued": [((("CPU", 1.0),), 5)], "nodes": [head_node("head", busy=True)]})
    loop = AdaptLoop(FakeLauncher(head, fail_grow=True), AdaptivePolicy(1, 3, wait_s=0.0),
                     interval=0.01)
    loop.start()
    try:
        wait_until(lambda: "ssh could not run it" in loop.status().error, timeout=10)
        assert loop.status().adapting
    finally:
        loop.stop(10)


def test_the_slurm_task_refuses_unknown_arguments_and_a_join_outside_a_job(tmp_path, monkeypatch,
                                                                        capsys):
    import json
    from rayipy.cluster import slurm_task
    assert slurm_task.main([str(tmp_path), "--joins"]) == 2
    (tmp_path / slurm_task.SPEC_FILE).write_text(json.dumps(
        {"python": "python3", "num_cpus": 1, "port": 0, "extra": [], "start_timeout": 1}))
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert slurm_task.main([str(tmp_path), slurm_task.JOIN]) == 2
    assert "SLURM_JOB_ID" in capsys.readouterr().err
