"""``rayipy job``: submit, watch and stop jobs from the shell (Ray's ``ray job``).

    rayipy job submit [--address A] [--working-dir DIR] [--no-wait]
                      [--entrypoint-num-cpus N] [--entrypoint-num-gpus N]
                      [--entrypoint-memory BYTES] [--entrypoint-resources JSON] -- python script.py
    rayipy job status ID
    rayipy job logs ID [--follow]
    rayipy job stop ID
    rayipy job list
    rayipy job delete ID

Each is ``rayipy.job.JobClient`` (``job/client.py``) with the address and key found by
the rules of ``rayipy.init``: this machine's connection file for its own cluster, else
``--address`` with ``--password-file`` or ``$RAYIPY_PASSWORD`` (never a password on the
command line). Like ``ray job submit``, ``submit`` follows the job's log until it ends
and exits with 0 only if it SUCCEEDED; ``--no-wait`` returns once it is submitted.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from typing import Any


HELP = "run a driver program on the cluster that outlives this command (Ray Jobs)"


class JobCommandError(Exception):
    """A failure ``rayipy job`` reports as one message and exit code 1."""


def add_parser(commands: Any) -> None:
    """The ``job`` subcommand and its own subcommands, under ``rayipy``."""
    job = commands.add_parser("job", help=HELP, description=HELP + ".")
    actions = job.add_subparsers(dest="job_command", metavar="ACTION", required=True)
    submit = actions.add_parser("submit", help="start a job: the command after --",
                                description="Start ENTRYPOINT (a shell command, after --) on "
                                "the cluster, then follow its log until it ends (--no-wait: "
                                "return at once).")
    submit.add_argument("--working-dir", metavar="DIR", help="a local directory to ship; the "
                        "job runs in its copy (at most 100 MiB zipped)")
    submit.add_argument("--runtime-env-json", metavar="JSON", help='e.g. \'{"env_vars": '
                        '{"K": "V"}}\' (working_dir and env_vars)')
    submit.add_argument("--submission-id", "--job-id", dest="submission_id", metavar="ID",
                        help="the job's id (default: generated, raysubmit_...)")
    submit.add_argument("--metadata-json", metavar="JSON", help="strings to keep with the job")
    submit.add_argument("--no-wait", action="store_true", help="do not follow the log")
    held = " for the job's own process, held on its node while it runs (default: none; the "\
        "job then runs on the head's node)"
    submit.add_argument("--entrypoint-num-cpus", type=float, metavar="N", help="CPUs" + held)
    submit.add_argument("--entrypoint-num-gpus", type=float, metavar="N", help="GPUs" + held)
    submit.add_argument("--entrypoint-memory", type=int, metavar="BYTES", help="memory" + held)
    submit.add_argument("--entrypoint-resources", metavar="JSON", help="custom resources, "
                        "e.g. '{\"special\": 1}'," + held)
    submit.add_argument("entrypoint", nargs=argparse.REMAINDER, metavar="-- ENTRYPOINT")
    for name, text in (("status", "the job's state"), ("stop", "stop the job, its tasks and "
                       "its actors"), ("delete", "forget an ended job")):
        action = actions.add_parser(name, help=text)
        action.add_argument("job_id", metavar="ID")
    logs = actions.add_parser("logs", help="the job's output (stdout and stderr)")
    logs.add_argument("job_id", metavar="ID")
    logs.add_argument("-f", "--follow", action="store_true", help="go on until the job ends")
    actions.add_parser("list", help="every job the head knows")
    for action in actions.choices.values():
        action.add_argument("--address", metavar="HOST:PORT", help="the head (default: "
                            "$RAYIPY_ADDRESS, else the cluster this machine runs or joined)")
        action.add_argument("--password-file", metavar="FILE", help="the cluster's password, "
                            "first line of FILE (default: $RAYIPY_PASSWORD, or this machine's "
                            "connection file for its own cluster)")


def run(args: argparse.Namespace) -> int:
    """Carry out ``rayipy job ACTION``; the exit code."""
    from rayipy.job import JobClient
    from rayipy.node import connection
    password = None
    if args.password_file is not None:
        try:
            password = connection.read_password_file(args.password_file)
        except ValueError as e:
            raise JobCommandError(str(e)) from None
    try:
        with JobClient(args.address, password) as client:
            return ACTIONS[args.job_command](client, args)
    except ValueError as e:   # bad input, said by us or by the head (unknown id, ...)
        raise JobCommandError(str(e)) from None


def _json_option(text: str | None, option: str) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except ValueError as e:
        raise JobCommandError(f"{option} is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise JobCommandError(f"{option} must be a JSON object, got {text}")
    return value


def submit(client: Any, args: argparse.Namespace) -> int:
    words = args.entrypoint[1:] if args.entrypoint[:1] == ["--"] else args.entrypoint
    if not words:
        raise JobCommandError("say what to run after --, e.g. rayipy job submit -- python "
                              "script.py")
    # One word is a shell command as typed in quotes; several are quoted back together.
    entrypoint = words[0] if len(words) == 1 else shlex.join(words)
    runtime_env = _json_option(args.runtime_env_json, "--runtime-env-json")
    if args.working_dir is not None:
        runtime_env["working_dir"] = args.working_dir
    metadata = _json_option(args.metadata_json, "--metadata-json")
    resources = (_json_option(args.entrypoint_resources, "--entrypoint-resources")
                 if args.entrypoint_resources is not None else None)
    job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env or None,
                               submission_id=args.submission_id, metadata=metadata or None,
                               entrypoint_num_cpus=args.entrypoint_num_cpus,
                               entrypoint_num_gpus=args.entrypoint_num_gpus,
                               entrypoint_memory=args.entrypoint_memory,
                               entrypoint_resources=resources)
    print(f"Job '{job_id}' submitted successfully", flush=True)
    if args.no_wait:
        print(f"  status: rayipy job status {job_id}\n  logs:   rayipy job logs {job_id} "
              f"--follow\n  stop:   rayipy job stop {job_id}")
        return 0
    print(f"Following the log of job '{job_id}' (Ctrl-C leaves the job running):", flush=True)
    for text in client.tail_job_logs(job_id):
        sys.stdout.write(text)
        sys.stdout.flush()
    info = _wait_ended(client, job_id)
    print(f"Job '{job_id}' {info.status.value.lower()}: {info.message}")
    return 0 if info.status.value == "SUCCEEDED" else 1


def _wait_ended(client: Any, job_id: str, timeout: float = 10.0) -> Any:
    """The job's details once the head has recorded its end (the log ends first)."""
    deadline = time.monotonic() + timeout
    info = client.get_job_info(job_id)
    while not info.status.is_terminal() and time.monotonic() < deadline:
        time.sleep(0.1)
        info = client.get_job_info(job_id)
    return info


def status(client: Any, args: argparse.Namespace) -> int:
    info = client.get_job_info(args.job_id)
    print(f"Status for job '{info.submission_id}': {info.status.value}")
    print(f"Status message: {info.message}")
    if info.driver_exit_code is not None:
        print(f"Exit code: {info.driver_exit_code}")
    return 0


def logs(client: Any, args: argparse.Namespace) -> int:
    if args.follow:
        for text in client.tail_job_logs(args.job_id):
            sys.stdout.write(text)
            sys.stdout.flush()
    else:
        sys.stdout.write(client.get_job_logs(args.job_id))
    return 0


def stop(client: Any, args: argparse.Namespace) -> int:
    if not client.stop_job(args.job_id):
        info = client.get_job_info(args.job_id)
        print(f"Job '{args.job_id}' had already ended ({info.status.value}).")
        return 0
    print(f"Stopping job '{args.job_id}' (SIGTERM, then SIGKILL after 3 s)...", flush=True)
    info = _wait_ended(client, args.job_id)
    print(f"Job '{args.job_id}' is {info.status.value}.")
    return 0 if info.status.is_terminal() else 1


def delete(client: Any, args: argparse.Namespace) -> int:
    client.delete_job(args.job_id)
    print(f"Job '{args.job_id}' deleted.")
    return 0


def list_jobs(client: Any, args: argparse.Namespace) -> int:
    jobs = client.list_jobs()
    if not jobs:
        print("No jobs.")
        return 0
    rows = [("SUBMISSION_ID", "STATUS", "START", "EXIT", "ENTRYPOINT")]
    for job in jobs:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.start_time / 1000))
        code = "" if job.driver_exit_code is None else str(job.driver_exit_code)
        rows.append((job.submission_id, job.status.value, started, code, job.entrypoint))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4])
    return 0


ACTIONS = {"submit": submit, "status": status, "logs": logs, "stop": stop, "delete": delete,
           "list": list_jobs}
