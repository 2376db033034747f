"""The head's jobs (``rayipy job``, ``rayipy.job.JobClient``): their requests, where each
runs, the resources it holds, and the events its node's agent reports.

The records are ``core/jobs.py``'s ``JobTable``, the placing and holding
``core/job_placement.py``'s ``JobPlacement`` (both pure); this class carries them out on
the head's behalf: it starts and stops jobs through node agents (``JOB_START``,
``JOB_STOP``, ``JOB_LOGS``), journals every change (``Head.journal_job``), and drops a
stopped job's drivers. It runs on the head's one thread: the head dispatches ``job_*``
requests and the agents' ``JOB_EVENT`` and ``JOB_LOG_DATA`` here, and calls
``tick_jobs`` from its heartbeat.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from rayipy import exceptions
from rayipy.core import job_placement
from rayipy.core.jobs import TERMINAL, JobTable
from rayipy.core.state import Node
from rayipy.protocol.kinds import Kind

# The head (``node/head.py``) holds this object: annotated ``Any`` here, so the two
# modules do not import each other.
Head = Any
Body = tuple[Any, ...]
Frames = Any

log = logging.getLogger("rayipy.head")

#: A request handler's answer: "the reply will be sent later" (the head sends none now).
DEFERRED = object()

JOB_RUNTIME_ENV_KEYS = ("env_vars", "working_dir")


def jobs_env_vars(runtime_env: dict) -> dict[str, str]:
    """A job's ``runtime_env`` checked: only keys jobs handle (``working_dir`` was
    shipped by the client already); its ``env_vars``."""
    if not isinstance(runtime_env, dict):
        raise ValueError(f"runtime_env is a dict, got {runtime_env!r}")
    unknown = sorted(set(runtime_env) - set(JOB_RUNTIME_ENV_KEYS))
    if unknown:
        raise ValueError(f"a job's runtime_env takes {', '.join(JOB_RUNTIME_ENV_KEYS)}, not "
                         f"{', '.join(unknown)}")
    env_vars = runtime_env.get("env_vars") or {}
    if not isinstance(env_vars, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in env_vars.items()):
        raise ValueError(f"runtime_env['env_vars'] maps strings to strings, got {env_vars!r}")
    return dict(env_vars)


class HeadJobs:
    """The jobs of one head (see the module's docstring)."""

    def __init__(self, head: Head) -> None:
        self.head = head
        self.table = JobTable()
        # Jobs wait as long as tasks that no live node could run.
        self.placement = job_placement.JobPlacement(head.scheduler.unschedulable.timeout)

    def request_job_submit(self, sender: bytes, entrypoint: str, submission_id: str | None,
                           metadata: dict, runtime_env: dict, package: str,
                           resources: dict | None = None) -> str:
        """Record a job and have a node's agent start it; its id. ``package``: the hex id
        of the working directory's zip, an object the submitting client owns, or "".
        ``resources`` (Ray's ``entrypoint_*``): held on a node that has them free, else
        the job waits for one (``core/job_placement.py``); without them it runs on the
        head's node (else any live node's) and holds nothing."""
        jobs_env_vars(runtime_env)   # checked now; start_job reads them from the record
        request = job_placement.request_of(resources or {})
        placement = self.placement
        node = job_placement.choose_node(request, self.head.scheduler.nodes, self.head_ip)
        if node is None and not request:
            raise exceptions.RayipySystemError("no node is alive to run the job: start one "
                                               "with `rayipy start`")
        record = self.table.submit(entrypoint, node.node_id if node is not None else b"",
                                  time.time(), submission_id, metadata, runtime_env,
                                  dict(request), package)
        if node is None:
            self.table.waiting_for(record.submission_id,
                                  placement.waiting_message(request, self.head.scheduler.nodes))
        else:
            self.start_job(record.submission_id, node,
                           placement.hold(record.submission_id, node, request) if request
                           else None)
        self.head.journal_job(record.submission_id)
        return record.submission_id

    @property
    def head_ip(self) -> str:
        return self.head.address.removeprefix("tcp://").rsplit(":", 1)[0]

    def start_job(self, submission_id: str, node: Node, held: job_placement.Hold | None) -> None:
        """Tell ``node``'s agent to start the job (its GPU devices in its environment)."""
        record = self.table.get(submission_id)
        env_vars = jobs_env_vars(record.runtime_env)
        if held is not None:
            env_vars.update(job_placement.JobPlacement.env_vars(held))
        self.head.send(node.agent, Kind.JOB_START, (submission_id, record.entrypoint, env_vars,
                                               record.package,
                                               self.head.address.removeprefix("tcp://")))

    def tick_jobs(self) -> None:
        """Once a second: jobs waiting for resources get them where they are free now;
        those no live node could ever hold fail after the timeout; holds follow their
        jobs (dropped once a job ended or lost its node, taken again for a job that runs
        on a node that registered again with a restarted head)."""
        try:
            self._tick_jobs()
        except Exception:   # the heartbeat runs this: a bug here must not stop the head
            log.exception("placing jobs failed")

    def _tick_jobs(self) -> None:
        placement = self.placement
        waiting = self.table.waiting()
        if not waiting and not placement.held and not any(
                r.resources and r.status not in TERMINAL for r in self.table.jobs.values()):
            return
        nodes = self.head.scheduler.nodes
        released = False
        for submission_id in list(placement.held):
            record = self.table.jobs.get(submission_id)
            if record is None or record.status in TERMINAL:
                released |= placement.release(submission_id, nodes)
        for record in self.table.jobs.values():
            node = nodes.get(record.node_id)
            if (record.resources and record.status not in TERMINAL and node is not None
                    and not node.leaving and record.submission_id not in placement.held):
                placement.hold(record.submission_id, node, job_placement.request_of(record.resources))
        requests = [(r.submission_id, job_placement.request_of(r.resources)) for r in waiting]
        for submission_id, held in placement.place_waiting(requests, nodes, self.head_ip):
            self.table.placed(submission_id, held.node_id)
            self.head.journal_job(submission_id)
            self.start_job(submission_id, nodes[held.node_id], held)
        requests = [(r.submission_id, job_placement.request_of(r.resources))
                    for r in self.table.waiting()]
        for submission_id, reason in placement.check(time.monotonic(), requests, nodes).items():
            self.table.unschedulable(submission_id, reason, time.time())
            self.head.journal_job(submission_id)
        for submission_id, request in requests:
            if self.table.waiting_for(submission_id, placement.waiting_message(request, nodes)):
                self.head.journal_job(submission_id)
        if released:
            self.head.carry_out(self.head.scheduler.dispatch())

    def job_ended(self, submission_id: str) -> None:
        """The job's process is gone: its resources go back, to a waiting job first, then
        to tasks."""
        if self.placement.release(submission_id, self.head.scheduler.nodes):
            self.tick_jobs()
            self.head.carry_out(self.head.scheduler.dispatch())

    def request_job_running(self, sender: bytes, submission_id: str) -> bool:
        """The job's bootstrap hands over to its entrypoint."""
        self.table.running(submission_id)
        self.head.journal_job(submission_id)
        return True

    def request_job_info(self, sender: bytes, submission_id: str) -> dict[str, Any]:
        return self.table.get(submission_id).info()

    def request_job_list(self, sender: bytes) -> list[dict[str, Any]]:
        return self.table.listing()

    def request_job_stop(self, sender: bytes, submission_id: str) -> bool:
        """Ray's ``stop_job``: False when the job had ended already."""
        record = self.table.get(submission_id)
        if record.status in TERMINAL:
            return False
        tell_agent = self.table.stop(submission_id, time.time())
        self.head.journal_job(submission_id)
        if not tell_agent:   # it was waiting for a node: STOPPED now
            return True
        node = self.head.scheduler.nodes.get(self.table.get(submission_id).node_id)
        if node is not None:
            self.head.send(node.agent, Kind.JOB_STOP, (submission_id,))
        return True

    def request_job_delete(self, sender: bytes, submission_id: str) -> bool:
        self.table.delete(submission_id)
        self.head.journal_job(submission_id)
        return True

    def request_job_logs(self, sender: bytes, submission_id: str, offset: int, limit: int) -> Any:
        """A piece of the job's log, read by its node's agent: answered when it comes
        (``on_job_log_data``)."""
        record = self.table.get(submission_id)
        node = self.head.scheduler.nodes.get(record.node_id)
        if node is None:
            raise exceptions.RayipySystemError(
                f"job {submission_id!r} ran on node {record.node_id.hex()[:8]}, which has left "
                f"the cluster: its log is on that machine, in jobs/{submission_id}/driver.log "
                f"of its rayipy directory")
        self.head.send(node.agent, Kind.JOB_LOGS, (submission_id, offset, limit, sender,
                                              self.head.request_id))
        return DEFERRED

    def on_job_log_data(self, sender: bytes, body: Body, frames: Frames) -> None:
        requester, request_id, ok, answer = body
        if requester in self.head.peers:
            self.head.send(requester, Kind.REPLY, (request_id, ok, answer if ok else
                                              exceptions.RayipySystemError(answer)))

    def on_job_event(self, sender: bytes, body: Body, frames: Frames) -> None:
        submission_id, event, value = body
        if event == "started":
            self.table.started(submission_id, value)
            self.head.journal_job(submission_id)
        elif event == "exited":
            self.table.exited(submission_id, value[0], time.time(), value[1])
            self.head.journal_job(submission_id)
            self.job_ended(submission_id)
        elif event == "stopping":
            self.drop_job_drivers(self.head.peers[sender].node_id, set(value))

    def drop_job_drivers(self, node_id: bytes, pids: set[int]) -> None:
        """A stopped job's drivers (its processes that connected): their running tasks
        are cancelled, then they are dropped as if they had left (their queued tasks
        and non-detached actors go with them)."""
        for process_id, peer in list(self.head.peers.items()):
            if peer.role == "driver" and peer.pid in pids and peer.node_id in (node_id, b""):
                for task_id in self.head.scheduler.running_tasks(process_id):
                    self.head.carry_out(self.head.scheduler.cancel_requested(task_id, True, b"", b""))
                self.head.forget(process_id)
