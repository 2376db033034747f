"""The head's job records (core/jobs.py), the working-dir package, and the job CLI's
parsing: pure parts, no cluster."""

from __future__ import annotations

import io
import os
import zipfile

import pytest

from rayipy.cli import build_parser
from rayipy.core.jobs import (FAILED, PENDING, RUNNING, STOPPED, SUCCEEDED, JobNotFoundError,
                              JobStateError, JobTable)
from rayipy.job.client import JobDetails, JobStatus
from rayipy.job.package import PackageError, unpack, zip_directory
from rayipy.node.head_jobs import jobs_env_vars

NODE = b"n" * 8


def running_job(table: JobTable, job_id: str = "j1") -> str:
    table.submit("python x.py", NODE, 100.0, job_id)
    table.started(job_id, 4242)
    table.running(job_id)
    return job_id


def test_a_job_goes_pending_running_succeeded():
    table = JobTable()
    record = table.submit("python x.py", NODE, 100.0, metadata={"owner": "me"})
    assert record.submission_id.startswith("raysubmit_") and record.status == PENDING
    table.started(record.submission_id, 4242)
    assert record.status == PENDING and record.driver_pid == 4242   # fetching its package
    table.running(record.submission_id)
    assert record.status == RUNNING
    table.exited(record.submission_id, 0, 105.0)
    assert (record.status, record.exit_code, record.end_time) == (SUCCEEDED, 0, 105.0)
    info = table.get(record.submission_id).info()
    assert info["status"] == SUCCEEDED and info["start_time"] == 100_000
    assert info["end_time"] == 105_000 and info["metadata"] == {"owner": "me"}
    assert info["driver_exit_code"] == 0 and info["driver_node_id"] == NODE.hex()


def test_a_failing_entrypoint_is_failed_with_its_exit_code():
    table = JobTable()
    job = running_job(table)
    table.exited(job, 3, 101.0)
    record = table.get(job)
    assert record.status == FAILED and record.exit_code == 3
    assert "exit code 3" in record.message


def test_a_job_that_ends_before_running_failed_to_start():
    table = JobTable()
    table.submit("python x.py", NODE, 100.0, "j")
    table.started("j", 1)
    table.exited("j", 0, 101.0)   # even exit code 0: the entrypoint never ran
    assert table.get("j").status == FAILED
    assert "before its entrypoint started" in table.get("j").message
    table.submit("python x.py", NODE, 100.0, "k")
    table.exited("k", -1, 101.0, "Job could not start on this node: disk full")
    assert table.get("k").message == "Job could not start on this node: disk full"


def test_a_stopped_job_is_stopped_whatever_its_exit_code():
    table = JobTable()
    job = running_job(table)
    assert table.stop(job, 105.0) is True
    assert table.get(job).status == RUNNING     # until its process has gone
    table.exited(job, -15, 102.0)
    assert table.get(job).status == STOPPED and table.get(job).exit_code == -15
    assert table.stop(job, 106.0) is False            # ended already: nothing to tell the agent
    table.exited(job, 0, 103.0)                 # a late report changes nothing
    assert table.get(job).status == STOPPED


def test_jobs_of_a_lost_node_fail_and_others_do_not():
    table = JobTable()
    job = running_job(table)
    table.submit("python y.py", b"other-nd", 100.0, "elsewhere")
    assert table.node_lost(NODE, "its agent stopped answering", 110.0) == [job]
    assert table.get(job).status == FAILED and "its agent stopped" in table.get(job).message
    assert table.get("elsewhere").status == PENDING


def test_submission_ids_entrypoints_and_metadata_are_checked():
    table = JobTable()
    table.submit("true", NODE, 1.0, "same")
    with pytest.raises(ValueError, match="exists already"):
        table.submit("true", NODE, 1.0, "same")
    for bad in ("../up", "a/b", "", "x" * 200):
        with pytest.raises(ValueError, match="submission id"):
            table.submit("true", NODE, 1.0, bad)
    with pytest.raises(ValueError, match="entrypoint"):
        table.submit("  ", NODE, 1.0)
    with pytest.raises(ValueError, match="metadata"):
        table.submit("true", NODE, 1.0, metadata={"n": 1})


def test_unknown_ids_and_deleting_a_running_job_are_errors():
    table = JobTable()
    with pytest.raises(JobNotFoundError, match="nope"):
        table.get("nope")
    with pytest.raises(JobNotFoundError):
        table.stop("nope", 1.0)
    job = running_job(table)
    with pytest.raises(JobStateError, match="stop it first"):
        table.delete(job)
    table.exited(job, 0, 2.0)
    table.delete(job)
    assert table.listing() == []


def test_listing_is_oldest_first():
    table = JobTable()
    table.submit("b", NODE, 2.0, "second")
    table.submit("a", NODE, 1.0, "first")
    assert [j["submission_id"] for j in table.listing()] == ["first", "second"]


def test_job_details_read_the_heads_answer():
    table = JobTable()
    job = running_job(table)
    details = JobDetails.from_dict(table.get(job).info())
    assert details.status is JobStatus.RUNNING and not details.status.is_terminal()
    assert details.driver_info == {"pid": 4242} and details.entrypoint == "python x.py"
    assert JobStatus("STOPPED").is_terminal() and str(JobStatus.FAILED) == "FAILED"


def test_runtime_env_of_a_job_takes_env_vars_and_working_dir_only():
    assert jobs_env_vars({"env_vars": {"A": "1"}, "working_dir": "."}) == {"A": "1"}
    assert jobs_env_vars({}) == {}
    with pytest.raises(ValueError, match="not pip"):
        jobs_env_vars({"pip": ["numpy"]})
    with pytest.raises(ValueError, match="strings to strings"):
        jobs_env_vars({"env_vars": {"A": 1}})


def test_package_round_trip_skips_caches_and_keeps_modes(tmp_path):
    source = tmp_path / "src"
    (source / "pkg" / "__pycache__").mkdir(parents=True)
    (source / "pkg" / "mod.py").write_text("X = 1\n")
    (source / "pkg" / "__pycache__" / "mod.pyc").write_bytes(b"junk")
    (source / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (source / "run.sh").chmod(0o755)
    data = zip_directory(source)
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert sorted(names) == ["pkg/mod.py", "run.sh"]
    target = unpack(data, tmp_path / "out")
    assert (target / "pkg" / "mod.py").read_text() == "X = 1\n"
    assert (target / "run.sh").stat().st_mode & 0o111


def test_package_too_large_or_missing_is_a_clear_error(tmp_path):
    (tmp_path / "random.bin").write_bytes(os.urandom(300_000))   # does not compress
    with pytest.raises(PackageError, match=r"over .* MiB zipped .*random\.bin"):
        zip_directory(tmp_path, limit=100_000)
    with pytest.raises(PackageError, match="not a directory"):
        zip_directory(tmp_path / "missing")


def test_unpack_refuses_members_outside_its_directory(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../escape.txt", "no")
    with pytest.raises(PackageError, match="outside"):
        unpack(buffer.getvalue(), tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


def test_job_command_line_parses_the_entrypoint_after_dashes():
    args = build_parser().parse_args(["job", "submit", "--working-dir", ".", "--no-wait", "--",
                                      "python", "script.py", "--flag"])
    assert args.job_command == "submit" and args.working_dir == "." and args.no_wait
    assert args.entrypoint == ["--", "python", "script.py", "--flag"]
    args = build_parser().parse_args(["job", "logs", "raysubmit_x", "--follow"])
    assert args.follow and args.job_id == "raysubmit_x"
