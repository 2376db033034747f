"""``JobClient``: submit, watch and stop jobs, as Ray's ``JobSubmissionClient`` does.

    client = JobClient("10.0.0.1:6379")        # the key: connection file or $RAYIPY_PASSWORD
    job_id = client.submit_job(entrypoint="python script.py", runtime_env={"working_dir": "."})
    for text in client.tail_job_logs(job_id):  # also `async for`
        print(text, end="")

The client is a short-lived driver of the cluster (``link.py``); every call is a request
the head answers from its job table (``core/jobs.py``), except logs, which the head has
the job's node agent read (``runner.py``) in pieces of at most ``LOG_CHUNK`` bytes.

The working directory travels as an object, not through the head: ``submit_job`` zips
it (``package.py``) and ``put``s it, so it stays in this process and leaves through its
data port, straight to the job's bootstrap, which ``get``s it; the head only carries its
20-byte id. So ``submit_job`` waits, when it ships a directory, until the job has left
PENDING (the bootstrap has it), and then the job needs the client no more.
"""

from __future__ import annotations

import asyncio
import codecs
import enum
import logging
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Iterator

from rayipy import exceptions
from rayipy.core.job_placement import entrypoint_amounts
from rayipy.core.jobs import TERMINAL
from rayipy.job.link import close_runtime, open_runtime
from rayipy.job.package import zip_directory
from rayipy.node import connection

LOG_CHUNK = 256 * 1024       # bytes per log request
FOLLOW_INTERVAL = 0.25       # seconds between polls of a log that has nothing new
PACKAGE_TIMEOUT = 300.0      # for the job's bootstrap to fetch the working directory
REQUEST_TIMEOUT = 30.0

log = logging.getLogger("rayipy.job")

# Ray's submit_job keywords rayipy does not take, and what to do instead.
UNSUPPORTED_KEYWORDS = {
    "entrypoint_label_selector": "rayipy nodes have no labels: give the node a custom "
    "resource (`rayipy start --resources '{\"name\": 1}'`) and ask for it with "
    "entrypoint_resources={\"name\": 1}",
}


class JobStatus(str, enum.Enum):
    """A job's state (Ray's ``JobStatus``)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    def __str__(self) -> str:
        return self.value

    def is_terminal(self) -> bool:
        """Whether the job has ended (it will not change state again)."""
        return self.value in TERMINAL


@dataclass(frozen=True)
class JobDetails:
    """What the head knows of a job (Ray's ``JobDetails`` fields; times in ms)."""

    submission_id: str
    status: JobStatus
    entrypoint: str
    message: str
    start_time: int
    end_time: int | None
    metadata: dict[str, str] = field(default_factory=dict)
    runtime_env: dict[str, Any] = field(default_factory=dict)
    driver_exit_code: int | None = None
    driver_node_id: str = ""
    driver_info: dict[str, Any] | None = None
    type: str = "SUBMISSION"
    job_id: str | None = None
    entrypoint_num_cpus: float | None = None
    entrypoint_num_gpus: float | None = None
    entrypoint_memory: int | None = None
    entrypoint_resources: dict[str, float] | None = None

    @classmethod
    def from_dict(cls, info: dict[str, Any]) -> JobDetails:
        known = {name: info[name] for name in cls.__dataclass_fields__ if name in info}
        known["status"] = JobStatus(info["status"])
        return cls(**known)


class JobClient:
    """Jobs of the cluster at ``address`` (``"host:port"``, ``"auto"``, or None: the
    same rules as ``rayipy.init``: ``$RAYIPY_ADDRESS``, else this machine's cluster, else
    the local cluster this process started with ``rayipy.init()``). The key comes from
    this machine's connection file for its own cluster, else from ``password`` or
    ``$RAYIPY_PASSWORD``, or, for this process's local cluster, from the session. Close
    it (or use ``with``) when done."""

    def __init__(self, address: str | None = None, password: str | None = None) -> None:
        local = _local_cluster(address) if password is None else None
        if local is not None:
            self._head, self._key = local
        else:
            target = _resolve(address, password)
            self._head = target.head_address
        self.address = self._head.removeprefix("tcp://")
        host, port = connection.parse_address(self.address)
        try:
            connection.check_reachable(host, port)
        except ConnectionError as e:
            raise exceptions.ClusterNotFoundError(
                f"no rayipy head answers at {self.address}: {e}") from None
        if local is None:
            self._key = target.cluster_key()
        self._runtime: Any = None

    # -- connection -------------------------------------------------------------------------
    def _request(self, name: str, *args: Any, timeout: float = REQUEST_TIMEOUT) -> Any:
        if self._runtime is None or self._runtime.stopped:
            if self._runtime is not None:
                self._runtime.close()
            self._runtime = open_runtime(self._head, self._key)
        return self._runtime.request(name, *args, timeout=timeout)

    def close(self) -> None:
        """Leave the cluster (the jobs go on)."""
        if self._runtime is not None:
            close_runtime(self._runtime)
            self._runtime = None

    def __enter__(self) -> JobClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- Ray's JobSubmissionClient ------------------------------------------------------------
    def submit_job(self, *, entrypoint: str, runtime_env: dict[str, Any] | None = None,
                   submission_id: str | None = None, metadata: dict[str, str] | None = None,
                   job_id: str | None = None, entrypoint_num_cpus: float | None = None,
                   entrypoint_num_gpus: float | None = None, entrypoint_memory: int | None = None,
                   entrypoint_resources: dict[str, float] | None = None,
                   **unsupported: Any) -> str:
        """Start ``entrypoint`` (a shell command) on the cluster; its submission id.

        ``runtime_env``: ``working_dir`` (a local directory, shipped and made the job's
        working directory) and ``env_vars``; other keys are an error. ``job_id`` is
        Ray's old name for ``submission_id``.

        ``entrypoint_num_cpus``, ``entrypoint_num_gpus``, ``entrypoint_memory`` (bytes)
        and ``entrypoint_resources`` (custom resources, e.g. ``{"special": 1}``) are for
        the job's own process, apart from its tasks': it runs on a node that has them
        free, which holds them for it until it ends. Until one has, the job is PENDING;
        if no live node could ever hold them, it fails after the cluster's
        ``unschedulable_task_timeout_s`` (60 s by default). Without them the job runs on
        the head's node and holds nothing."""
        _refuse_unsupported(unsupported)
        if job_id is not None:
            if submission_id is not None:
                raise ValueError("give submission_id or job_id (its old name), not both")
            submission_id = job_id
        resources = entrypoint_amounts(entrypoint_num_cpus, entrypoint_num_gpus,
                                       entrypoint_memory, entrypoint_resources)
        runtime_env = dict(runtime_env or {})
        package_ref = None
        working_dir = runtime_env.get("working_dir")
        if working_dir is not None:
            if not isinstance(working_dir, str):
                raise ValueError(f"runtime_env['working_dir'] is a local directory's path, got "
                                 f"{working_dir!r}")
            data = zip_directory(working_dir)
            self._request("wait_nodes")   # connected, so that put has a runtime
            package_ref = self._runtime.put(data)
        args: tuple[Any, ...] = (entrypoint, submission_id, metadata or {}, runtime_env,
                                 package_ref.hex() if package_ref else "")
        # Only when asked for: a head from before entrypoint resources takes five.
        submitted = self._request("job_submit", *args, *((resources,) if resources else ()))
        if package_ref is not None:
            self._wait_past_pending(submitted)
        return str(submitted)

    def _wait_past_pending(self, submission_id: str) -> None:
        """Keep the package (and this process, which serves it) until the job has it.
        While the job waits for a node with its entrypoint resources, this waits too
        (saying so once); the time allowed for the fetch counts from its placement."""
        deadline = None
        said = False
        while True:
            info = self._request("job_info", submission_id)
            if info["status"] != JobStatus.PENDING.value:
                return
            if not info["driver_node_id"]:
                if not said:
                    log.warning("job %s waits for a node: %s submit_job returns once it has "
                                "started (its working directory is served from this process "
                                "until then)", submission_id, info["message"])
                    said = True
                time.sleep(FOLLOW_INTERVAL)
                continue
            if deadline is None:
                deadline = time.monotonic() + PACKAGE_TIMEOUT
            if time.monotonic() > deadline:
                raise exceptions.GetTimeoutError(
                    f"job {submission_id} did not fetch its working directory within "
                    f"{PACKAGE_TIMEOUT:g} s: see `rayipy job logs {submission_id}`")
            time.sleep(0.05)

    def get_job_info(self, job_id: str) -> JobDetails:
        """Everything the head knows of the job."""
        return JobDetails.from_dict(self._request("job_info", job_id))

    def get_job_status(self, job_id: str) -> JobStatus:
        """The job's state now."""
        return JobStatus(self._request("job_info", job_id)["status"])

    def list_jobs(self) -> list[JobDetails]:
        """Every job the head knows, oldest first."""
        return [JobDetails.from_dict(info) for info in self._request("job_list")]

    def stop_job(self, job_id: str) -> bool:
        """Stop the job (SIGTERM to its processes, SIGKILL 3 s later; its drivers' tasks
        are cancelled and their actors stop); False if it had ended already."""
        return bool(self._request("job_stop", job_id))

    def delete_job(self, job_id: str) -> bool:
        """Forget an ended job (an error while it runs)."""
        return bool(self._request("job_delete", job_id))

    def read_log(self, job_id: str, offset: int, limit: int = LOG_CHUNK) -> tuple[bytes, int, bool]:
        """``limit`` bytes of the job's log from ``offset``: (data, next offset, whether
        the job's process has ended)."""
        data, next_offset, ended = self._request("job_logs", job_id, offset, limit)
        return data, next_offset, ended

    def get_job_logs(self, job_id: str) -> str:
        """The job's output (stdout and stderr) so far."""
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        parts: list[str] = []
        offset = 0
        while True:
            data, offset, _ = self.read_log(job_id, offset)
            if not data:
                return "".join(parts) + decoder.decode(b"", final=True)
            parts.append(decoder.decode(data))

    def tail_job_logs(self, job_id: str) -> JobLogTail:
        """The job's output as it comes, until the job ends: ``for text in ...`` or
        ``async for text in ...`` (Ray's is async only)."""
        return JobLogTail(self, job_id)


class JobLogTail:
    """Pieces of a job's log as they are written, ending when the job has ended and
    everything is read. It polls the head every ``FOLLOW_INTERVAL`` while nothing is new."""

    def __init__(self, client: JobClient, job_id: str) -> None:
        self.client = client
        self.job_id = job_id
        self.offset = 0
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.done = False

    def _next_piece(self, sleep: bool = True) -> str | None:
        """The next non-empty text, or None at the end; waits (polling) meanwhile."""
        while not self.done:
            data, self.offset, ended = self.client.read_log(self.job_id, self.offset)
            if data:
                text = self.decoder.decode(data)
                if text:
                    return text
                continue
            if ended:
                self.done = True
                rest = self.decoder.decode(b"", final=True)
                return rest or None
            if not sleep:
                return ""
            time.sleep(FOLLOW_INTERVAL)
        return None

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        piece = self._next_piece()
        if piece is None:
            raise StopIteration
        return piece

    def __aiter__(self) -> AsyncIterator[str]:
        return self

    async def __anext__(self) -> str:
        while True:
            piece = await asyncio.to_thread(self._next_piece, False)
            if piece is None:
                raise StopAsyncIteration
            if piece:
                return piece
            await asyncio.sleep(FOLLOW_INTERVAL)


def _refuse_unsupported(keywords: dict[str, Any]) -> None:
    """Ray's keywords rayipy lacks, and unknown ones: an error that says what to do."""
    for name in keywords:
        if name in UNSUPPORTED_KEYWORDS:
            raise ValueError(f"submit_job({name}=...) is not supported: "
                             f"{UNSUPPORTED_KEYWORDS[name]}")
    if keywords:
        raise TypeError(f"submit_job() got unexpected keyword argument(s) "
                        f"{', '.join(sorted(keywords))}: it takes entrypoint, runtime_env, "
                        f"submission_id, metadata, entrypoint_num_cpus, entrypoint_num_gpus, "
                        f"entrypoint_memory and entrypoint_resources")


def _local_cluster(address: str | None) -> tuple[str, bytes] | None:
    """(head address, key) of the local cluster this process started with
    ``rayipy.init()``, if ``address`` names it: its head's address, its dashboard's URL
    (as Ray users write ``"http://127.0.0.1:8265"``), or None when no other cluster is
    found by ``init``'s rules."""
    from rayipy import session
    cluster = session._cluster
    if cluster is None or not cluster.address:
        return None
    if address is None:
        try:
            if connection.resolve(None, None) is not None:
                return None   # $RAYIPY_ADDRESS or this machine's cluster come first
        except (ValueError, exceptions.ClusterNotFoundError):
            return None
        return cluster.address, cluster.key
    if address in ("auto", "local"):
        return None
    if address.startswith(("http://", "https://")):
        # Ray's habit: JobSubmissionClient("http://127.0.0.1:8265"), the dashboard's URL.
        context = session.context()
        url = address.split("://", 1)[1].rstrip("/")
        if context is not None and context.dashboard_url and url == context.dashboard_url:
            return cluster.address, cluster.key
        return None
    try:
        host, port = connection.parse_address(address)
    except ValueError:
        return None
    if connection.same_address(cluster.address.removeprefix("tcp://"), host, port):
        return cluster.address, cluster.key
    return None


def _resolve(address: str | None, password: str | None) -> connection.Target:
    """``init``'s rules, with errors that say how a job reaches a cluster."""
    if isinstance(address, str) and address.startswith(("http://", "https://")):
        raise ValueError(
            f"JobClient takes the head's address, as rayipy.init() does ('host:port' as "
            f"printed by `rayipy start --head`, 'auto', or None), not a dashboard URL like "
            f"{address!r}: rayipy's jobs go through the head, not HTTP (the dashboard URL "
            f"of this process's own local cluster is understood)")
    try:
        target = connection.resolve(address, password)
    except ValueError as e:
        if "password" not in str(e):
            raise
        raise ValueError(
            f"{e}. If it is a local cluster that rayipy.init() started in another process (a "
            f"notebook), its key is that process's alone: make the JobClient there "
            f"(JobClient() finds it), or start the cluster with `rayipy start --head`, whose "
            f"jobs any machine can submit with the password") from None
    if target is None:
        raise exceptions.ClusterNotFoundError(
            "jobs run on a running cluster: give its address (JobClient('host:port')), "
            "set $RAYIPY_ADDRESS, start one with `rayipy start --head`, or call "
            "rayipy.init() in this process first (a local cluster takes jobs from the "
            "process that started it, while it runs)")
    return target
