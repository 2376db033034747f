"""The head: one ROUTER socket, one single-threaded loop, the scheduler's state.

Every other process (node agents, workers, drivers) connects a DEALER to the head. The
loop receives everything waiting, hands events to ``core.scheduler.Scheduler``, carries
out the instructions it returns, and forwards messages between processes (results to
their owners, object requests to owners and values back, task output). A result batch
for a single owner is forwarded as the worker's own signed frames, never re-pickled.

The loop decides nothing about tasks, workers or actors: it turns messages into the
scheduler's events and carries out the instructions it returns, through ``carriers``,
a table with one entry per instruction type. What stays here is I/O: the peers table
(who is connected, their addresses), forwarding, heartbeats, requests and the dashboard.

Nothing a peer sends can stop this loop: a message of an unknown kind is counted and
logged (at most once per interval), a handler that raises is counted and logged with its
traceback (``core.message_faults``), and the loop serves on.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import zmq

from rayipy import exceptions
from rayipy.core import head_journal
from rayipy.core.head_recovery import (CLAIM_WAIT_SECONDS, DuplicateWindow, KeptResults,
                                       TaskClaims, waiting_workers)
from rayipy.core.liveness import (DEFAULT_DRIVER_GRACE_S, DEFAULT_HEAD_RESTART_WAIT_S,
                                  GRACE_SETTING, DriverSessions, Lost, check_grace_period)
from rayipy.core.setup_cells import SetupCells
from rayipy.core.instructions import (ActorLocation, CancelRunning, Execute, Fail, ForgetPeer,
                                      Instruction, KillWorker, LeaseAnswer, LeaseEnded, Retire,
                                      Spawn, Steal, Warn)
from rayipy.core.message_faults import MessageFaults
from rayipy.core.objects import OWNER_ID_BYTES, owner_of
from rayipy.core.scheduler import Scheduler
from rayipy.core.state_rows import error_text
from rayipy.core.unschedulable import DEFAULT_TIMEOUT_S, TIMEOUT_ENVIRONMENT, parse_timeout
from rayipy.dashboard.history import TaskHistory
from rayipy.dashboard.live import LiveData, worker_key
from rayipy.dashboard.server import DashboardServer
from rayipy.dashboard.snapshot import HeadFacts, Snapshot, build_snapshot
from rayipy.node import lifetime, log_setup
from rayipy.node.head_jobs import DEFERRED, HeadJobs
from rayipy.node.head_queries import HeadQueries
from rayipy.node.head_store import HeadStore
from rayipy.protocol import errors
from rayipy.protocol.kinds import Kind
from rayipy.protocol.messages import (CANCELLED, CRASHED, ObjectValue, Registration, TaskResult,
                                      TaskSpec, Welcome)
from rayipy.protocol.wire import DEFAULT_SALT, PROTOCOL_VERSION, Signer
from rayipy.transport.endpoint import Endpoint

log = logging.getLogger("rayipy.head")

HEARTBEAT_SECONDS = 1.0
# Drivers are judged by their connection (core/liveness.py): the head's socket pings each
# peer at the ZeroMQ level this often, and closes a connection silent for the grace period.
ZMTP_PING_SECONDS = 1.0
# A node whose agent is silent this long is gone (host down, network cut): its tasks are
# retried elsewhere. Agents beat every second and do nothing else that could stall them.
AGENT_SILENCE_LIMIT = 4.0

Body = tuple[Any, ...]            # a message's fields (protocol/kinds.py lists them per kind)
Frames = list[Any] | None         # its own signed frames, None if it came in pieces
Handler = Callable[[bytes, Any, Frames], None]   # (sender, body, frames)


class Peer:
    """A connected process, as it registered, and when it was last heard from."""

    __slots__ = ("process_id", "role", "node_id", "pid", "info", "last_heard")

    def __init__(self, reg: Registration) -> None:
        self.process_id = reg.process_id
        self.role = reg.role
        self.node_id = reg.node_id
        self.pid = reg.pid
        self.info = reg.info
        self.last_heard = time.monotonic()


class Head:
    """The head process's state and loop (``serve``); one thread owns all of it."""

    def __init__(self, key: bytes, host: str, port: int, watch_parent: int | None = None,
                 dashboard_port: int | None = None, dashboard_host: str | None = None,
                 salt: bytes | None = None,
                 driver_grace: float = DEFAULT_DRIVER_GRACE_S, state_dir: str | None = None,
                 recover: bool = False,
                 restart_wait: float = DEFAULT_HEAD_RESTART_WAIT_S) -> None:
        self.cluster_id = uuid.uuid4().hex[:12]
        self.context = zmq.Context()
        # The salt the key was derived from, when it came from a password: public, sent
        # in every CHALLENGE, so that a peer with the password can derive the key
        # (``connection.key_from_password``).
        salt = salt if salt is not None else DEFAULT_SALT
        # The journal (``state_dir``): what a restarted head gets back. ``recover``: this
        # head is such a restart, and takes the journal's identity and actors; otherwise
        # it starts a new journal.
        self.store: HeadStore | None = None
        self.restart_wait = restart_wait if state_dir else 0.0
        durable = head_journal.DurableState()
        if state_dir:
            self.store = HeadStore(Path(state_dir))
            durable = self.store.load()
            if recover and durable.cluster_id:
                self.cluster_id, salt = durable.cluster_id, durable.salt
            else:
                if recover:
                    log.warning("--recover: no journal in %s; starting a new cluster", state_dir)
                durable = head_journal.DurableState(self.cluster_id, salt)
                self.store.start_new(durable.records())
        # Until then, a restarted head waits for its peers to register again...
        self.recovery_deadline: float | None = None
        # ... and keeps a task that comes twice (sent again by its owner, or its result
        # from a worker that lived on) to one run where it can (core/head_recovery.py).
        self.duplicates: DuplicateWindow | None = None
        # ... and gives a task a worker that lived on still holds back to that worker,
        # when its owner sends it again (core/head_recovery.py).
        self.claims: TaskClaims | None = None
        # ... and keeps results for owners not registered again yet, to give them first.
        self.kept_results: KeptResults | None = None
        self.endpoint = Endpoint(self.context, zmq.ROUTER, Signer(key), count_bytes=True,
                                 salt=salt)
        # libzmq's I/O thread answers these pings without the GIL, so a driver whose
        # Python is busy stays connected; one stopped or asleep for the grace period
        # has its connection closed, and the heartbeat below finds it unreachable.
        self.endpoint.set_heartbeats(ZMTP_PING_SECONDS, driver_grace)
        self.drivers = DriverSessions(driver_grace)
        self.address = self.endpoint.bind(f"tcp://{host}:{port}")
        self.scheduler = Scheduler()
        self.scheduler.unschedulable.timeout = parse_timeout(
            os.environ.get(TIMEOUT_ENVIRONMENT, DEFAULT_TIMEOUT_S))
        self.peers: dict[bytes, Peer] = {}
        self.watch_parent = watch_parent
        self.started = time.time()
        self.running = True
        # The dashboard (None: not wanted, or its port could not be had; the cluster runs on).
        self.dashboard: DashboardServer | None = None
        # Kept always: the state API (rayipy.util.state) reads it with or without a dashboard.
        self.history = TaskHistory()
        # The dashboard's rings over time (CPU, RSS, store use, output lines): bounded, and
        # fed only while a dashboard runs.
        self.live: LiveData | None = None
        self.dashboard_problem = ""
        if dashboard_port is not None:
            try:
                # Loopback unless asked: beyond it, the dashboard requires a token.
                self.live = LiveData()
                self.dashboard = DashboardServer(dashboard_host or "127.0.0.1", dashboard_port,
                                                 host, live=self.live).start()
            except OSError as e:
                self.live = None
                self.dashboard_problem = str(e)
                log.warning("the dashboard did not start: %s", e)
        self.faults = MessageFaults(log, self.endpoint.dropped)
        self.handlers: dict[Kind, Handler] = {
            Kind.REGISTER: self.on_register,
            Kind.HEARTBEAT: self.on_heartbeat,
            Kind.FUNCTION: self.on_function,
            Kind.SUBMIT: self.on_submit,
            Kind.TASK_DONE: self.on_task_done,
            Kind.CANCEL: self.on_cancel,
            Kind.BLOCKED: self.on_blocked,
            Kind.UNBLOCKED: self.on_unblocked,
            Kind.RETURNED: self.on_returned,
            Kind.KILL_ACTOR: self.on_kill_actor,
            Kind.LOCATE_ACTOR: self.on_locate_actor,
            Kind.LEASE_REQUEST: self.on_lease_request,
            Kind.LEASE_RETURN: self.on_lease_return,
            Kind.GET_OBJECT: self.on_get_object,
            Kind.OBJECT_VALUE: self.on_object_value,
            Kind.BORROW: self.on_borrow,
            Kind.WORKER_DIED: self.on_worker_died,
            Kind.NODE_LEAVING: self.on_node_leaving,
            Kind.RESULTS_RECEIVED: self.on_results_received,
            Kind.FREE_OBJECTS: self.on_free_objects,
            Kind.OBJECT_COPY: self.on_object_copy,
            Kind.REQUEST: self.on_request,
            Kind.LOG: self.on_log,
            Kind.GENERATOR_ITEM: self.on_generator_item,
            Kind.SHUTDOWN: self.on_shutdown,
        }
        # Requests are answered here (those that change state), by ``queries`` (questions)
        # and by ``jobs`` (``rayipy job``), each a ``request_NAME`` method.
        self.queries = HeadQueries(self)
        self.jobs = HeadJobs(self)
        self.handlers[Kind.JOB_EVENT] = self.jobs.on_job_event
        self.handlers[Kind.JOB_LOG_DATA] = self.jobs.on_job_log_data
        self.request_owners = (self, self.queries, self.jobs)
        self.setup_cells = SetupCells()   # %%remote --all cells, for workers that start later
        if durable.actors or durable.functions or durable.jobs or durable.groups:
            self.recover(durable)
        # The id of the request being handled: a handler that answers later (a job's
        # log, read by its node's agent) keeps it and returns DEFERRED.
        self.request_id: Any = None
        # One carrier per instruction type (tests check the table is complete).
        self.carriers: dict[type, Callable[[Any], None]] = {
            Execute: self.carry_execute,
            Fail: self.fail_task,
            CancelRunning: self.carry_cancel_running,
            Spawn: self.carry_spawn,
            Steal: self.carry_steal,
            KillWorker: self.carry_kill_worker,
            Retire: self.carry_retire,
            LeaseAnswer: self.carry_lease_answer,
            LeaseEnded: self.carry_lease_ended,
            ActorLocation: self.carry_actor_location,
            ForgetPeer: self.carry_forget_peer,
            Warn: self.carry_warn,
        }

    # -- the journal (core/head_journal.py, node/head_store.py) -------------------------------
    def recover(self, durable: head_journal.DurableState) -> None:
        """A restarted head: the journal's functions, actors (waiting for their workers)
        and jobs, and a deadline for its peers to come back."""
        assert self.store is not None
        for function_id in durable.functions:
            data = self.store.function_bytes(function_id)
            if data is not None:
                self.scheduler.add_function(function_id, data)
        self.scheduler.recover_actors({a: d.creation for a, d in durable.live_actors().items()})
        self.scheduler.recover_groups([g.recovered(group_id)
                                       for group_id, g in durable.groups.items()])
        head_journal.restore_jobs(self.jobs.table, durable.jobs)
        self.recovery_deadline = time.monotonic() + self.restart_wait
        self.duplicates = DuplicateWindow()
        self.claims = TaskClaims(time.monotonic() + min(CLAIM_WAIT_SECONDS, self.restart_wait))
        self.kept_results = KeptResults()
        log.warning("restarted from the journal in %s: %d functions, %d actors, %d placement "
                    "groups, %d jobs; waiting up to %g s for nodes and drivers to register "
                    "again", self.store.directory, len(durable.functions),
                    len(durable.live_actors()), len(durable.groups), len(durable.jobs),
                    self.restart_wait)

    def end_recovery(self) -> None:
        """The peers had their time to come back: what did not is gone."""
        self.recovery_deadline = None
        self.duplicates = None
        self.kept_results = None   # their owners did not come back
        if self.claims is not None:
            held, self.claims = self.claims.over(), None
            self.carry_out(self.scheduler.submit(held))
        why = "its worker did not come back after the head restarted"
        self.carry_out(self.scheduler.recovery_over(why))
        self.carry_out(self.scheduler.lease_claims_over(why))
        self.carry_out(self.scheduler.groups_recovery_over())
        for job_id in head_journal.jobs_after_restart(
                self.jobs.table, set(self.scheduler.nodes), "it did not come back after the head "
                "restarted", time.time()):
            self.journal_job(job_id)

    def place_claimed(self, given: dict[bytes, list[TaskSpec]], rest: list[TaskSpec]) -> None:
        """Copies sent again after a restart: to the workers that hold them (``given``),
        and the others scheduled as any task."""
        for worker_id, specs in given.items():
            self.carry_out(self.scheduler.adopt_tasks(worker_id, specs))
        if rest:
            self.carry_out(self.scheduler.submit(rest))

    def journal(self) -> None:
        """Write what changed in this turn of the loop (cheap when nothing did)."""
        store, scheduler = self.store, self.scheduler
        if store is None:
            scheduler.durable.clear()
            scheduler.group_records.clear()
            return
        for records in (scheduler.durable, scheduler.group_records):
            for record in records:
                store.append(record)
            records.clear()
        store.flush()

    def journal_job(self, submission_id: str) -> None:
        if self.store is not None:
            record = self.jobs.table.jobs.get(submission_id)
            self.store.append(head_journal.job_record(record) if record is not None
                              else ("job_deleted", submission_id))

    # -- loop ------------------------------------------------------------------------------
    def serve(self) -> None:
        socket_ = self.endpoint.socket
        next_beat = time.monotonic() + HEARTBEAT_SECONDS
        try:
            while self.running:
                if socket_.poll(250, zmq.POLLIN):
                    for _ in range(2000):
                        self.receive_one()
                        if not self.running or not socket_.poll(0, zmq.POLLIN):
                            break
                    self.journal()
                now = time.monotonic()
                if now >= next_beat:
                    next_beat = now + HEARTBEAT_SECONDS
                    self.heartbeat(now)
                    if self.recovery_deadline is not None and now >= self.recovery_deadline:
                        self.end_recovery()
                    elif self.claims is not None:
                        self.place_claimed(*self.claims.release(
                            self.scheduler.workers, waiting_workers(self.scheduler.early_workers),
                            now))
                    self.journal()
                    if self.store is not None:
                        self.store.sync()
                if self.dashboard is not None and self.dashboard.box.wanted:
                    self.dashboard.box.refresh(self.dashboard_snapshot)
        finally:
            self.stop_everyone("the head stopped")
            self.close()

    def close(self) -> None:
        """Release the sockets and the dashboard (``serve`` does this when it ends)."""
        if self.store is not None:
            self.journal()
            self.store.close()
        if self.dashboard is not None:
            self.dashboard.close()
        self.endpoint.close()
        self.context.term()

    def receive_one(self) -> None:
        """Receive one message and run its handler; nothing it holds can stop the loop."""
        sender, message, frames = self.endpoint.recv_raw()
        if message is None or sender is None:
            return
        peer = self.peers.get(sender)
        if peer is not None:
            peer.last_heard = now = time.monotonic()
            if peer.role == "driver":
                self.drivers.heard(sender, now)
        elif message.kind is not Kind.REGISTER:
            self.endpoint.dropped["unregistered sender"] += 1
            lost = self.drivers.notice_for(sender, time.monotonic())
            if lost is not None:   # a driver we dropped is back: say what it lost
                self.send(sender, Kind.SHUTDOWN, ("its session ended", lost.describe()))
            return
        handler = self.handlers.get(message.kind)
        if handler is None:
            self.faults.unexpected(message.kind, sender, time.monotonic())
            return
        try:
            handler(sender, message.body, frames)
        except Exception:
            self.faults.handler_failed(message.kind, sender)

    def send(self, to: bytes, kind: Kind, body: Any) -> None:
        self.endpoint.send(kind, body, to)

    def forward(self, to: bytes, kind: Kind, body: Any, frames: Frames) -> None:
        """Pass a message on: its own signed frames, or (if it came in pieces) anew."""
        if frames is None:
            self.send(to, kind, body)
        else:
            self.endpoint.forward(list(frames), to)

    # -- carrying out the scheduler's instructions ---------------------------------------
    def carry_out(self, instructions: list[Instruction]) -> None:
        carriers = self.carriers
        for ins in instructions:
            carriers[type(ins)](ins)

    def carry_execute(self, ins: Execute) -> None:
        self.send(ins.worker, Kind.EXECUTE, (ins.specs, ins.functions,
                                             self.data_addresses(ins.specs)))
        self.history.started(ins.worker, self.scheduler.workers, time.time())

    def carry_cancel_running(self, ins: CancelRunning) -> None:
        self.send(ins.worker, Kind.CANCEL, (ins.task_id, ins.force, ins.direct, ins.recursive))

    def carry_spawn(self, ins: Spawn) -> None:
        if ins.runtime_env is not None:
            self.send(ins.agent, Kind.SPAWN_ENV_WORKER, (ins.number, ins.runtime_env))
        else:
            self.send(ins.agent, Kind.SPAWN_WORKER, (ins.number,))

    def carry_steal(self, ins: Steal) -> None:
        self.send(ins.worker, Kind.STEAL, (ins.number,))

    def carry_kill_worker(self, ins: KillWorker) -> None:
        self.send(ins.agent, Kind.RETIRE_WORKER, (ins.worker, True))

    def carry_retire(self, ins: Retire) -> None:
        self.send(ins.agent, Kind.RETIRE_WORKER, (ins.worker, False))

    def carry_lease_answer(self, ins: LeaseAnswer) -> None:
        self.send(ins.owner, Kind.LEASE, (ins.request, ins.worker, ins.address))

    def carry_lease_ended(self, ins: LeaseEnded) -> None:
        if ins.owner in self.peers:
            self.send(ins.owner, Kind.LEASE_ENDED, (ins.worker, ins.why))

    def carry_actor_location(self, ins: ActorLocation) -> None:
        for caller in ins.to:
            if caller in self.peers:
                self.send(caller, Kind.ACTOR_LOCATION,
                          (ins.actor_id, ins.address, ins.why, ins.restarting))

    def carry_forget_peer(self, ins: ForgetPeer) -> None:
        # Its messages are dropped from now on, and it hears no heartbeat: if it still
        # runs (its node was cut off), it stops on its own.
        self.peers.pop(ins.process_id, None)

    def carry_warn(self, ins: Warn) -> None:
        # As a line of the task's output, so a notebook shows it under the cell that
        # submitted the task; the "warning" stream tells the owner it is ours.
        owner = owner_of(ins.task.task_id)
        if owner in self.peers:
            self.send(owner, Kind.LOG, (owner, [("warning", ins.text, ins.task.name,
                                                 ins.task.task_id)], "rayipy head"))

    def data_addresses(self, specs: list[TaskSpec]) -> dict[bytes, str]:
        """Where the specs' owners take large results straight from the worker (the
        peers' data ports: an address book the head keeps, not a scheduling choice)."""
        out: dict[bytes, str] = {}
        # Each owner once, in the specs' order (a batch mostly has one owner).
        for owner in dict.fromkeys([spec.task_id[:OWNER_ID_BYTES] for spec in specs]):
            peer = self.peers.get(owner)
            if peer is not None and peer.info.get("data"):
                out[owner] = peer.info["data"]
        return out

    def fail_task(self, fail: Fail) -> None:
        payload = errors.capture_system_error(fail.error, fail.task.name)
        if fail.status not in (CANCELLED, CRASHED):
            payload = errors.capture_task_error(fail.error, fail.task.name, "the head")
        result = TaskResult(fail.task.task_id, fail.status, (payload,), 0.0, "", ())
        self.send(owner_of(fail.task.task_id), Kind.TASK_DONE, ([result],))
        task = fail.task
        self.history.failed_at_head(task.task_id, task.name, fail.status, time.time(),
                                    task.actor_id, task.method, error_text((payload,)))

    def heartbeat(self, now: float) -> None:
        """About once a second: the scheduler's tick, silent peers dropped, our beat sent."""
        if self.watch_parent is not None and not lifetime.parent_alive(self.watch_parent):
            log.warning("the process that started this cluster exited; stopping")
            self.running = False
            return
        self.carry_out(self.scheduler.tick(now))
        self.jobs.tick_jobs()
        for pid, peer in list(self.peers.items()):
            silent = now - peer.last_heard
            if peer.role == "driver":
                # Its Python's silence proves nothing; a send that finds no connection does.
                reachable = self.endpoint.send(Kind.HEARTBEAT, (), pid)
                if self.drivers.beat(pid, reachable, now):
                    self.drop_driver(pid, now)
                continue
            if peer.role == "agent" and silent > AGENT_SILENCE_LIMIT:
                log.warning("node agent %s silent for %.0f s: removing its node", pid.hex(), silent)
                self.peers.pop(pid, None)
                self.remove_node(peer.node_id, f"its node stopped answering for {silent:.0f} s")
                continue
            self.send(pid, Kind.HEARTBEAT, ())

    def remove_node(self, node_id: bytes, why: str) -> None:
        """A node is gone: the scheduler removes it and its workers (and forgets them)."""
        for job_id in self.jobs.table.node_lost(node_id, why, time.time()):
            self.journal_job(job_id)
        self.carry_out(self.scheduler.node_lost(node_id, why))

    def remove_worker(self, worker_id: bytes, why: str) -> None:
        """A worker process died: the objects it owned can no longer be named."""
        self.peers.pop(worker_id, None)
        self.tell_stores(Kind.OWNER_GONE, (worker_id,))
        self.carry_out(self.scheduler.worker_died(worker_id, why))

    def drop_driver(self, driver: bytes, now: float) -> None:
        """A driver's connection is gone (it died, or outlived its grace period): drop
        its session, and remember what it lost, to tell it if it comes back."""
        actors, tasks, leases, groups = owner_holdings(self.scheduler, driver)
        lost = Lost(actors, tasks, leases, groups, self.drivers.grace,
                    self.drivers.unreachable_for(driver, now))
        log.warning("driver %s unreachable for %.0f s (dead, or silent beyond its grace period "
                    "of %g s): dropping its session (%d actors, %d tasks, %d leases)",
                    driver.hex(), lost.unreachable, lost.grace, actors, tasks, leases)
        self.drivers.drop(driver, lost)
        self.forget(driver)

    def forget(self, process_id: bytes) -> None:
        """A driver or worker left (or fell silent): drop it, and what the scheduler drops."""
        self.peers.pop(process_id, None)
        self.tell_stores(Kind.OWNER_GONE, (process_id,))
        self.carry_out(self.scheduler.owner_left(process_id))

    def stop_everyone(self, reason: str) -> None:
        """Tell every connected process to stop (the head is stopping)."""
        for pid in list(self.peers):
            self.send(pid, Kind.SHUTDOWN, (reason,))

    # -- handlers -----------------------------------------------------------------------------
    def on_register(self, sender: bytes, reg: Registration, frames: Frames) -> None:
        if reg.protocol_version != PROTOCOL_VERSION:
            self.send(sender, Kind.REFUSED, (
                f"protocol version mismatch: this head speaks {PROTOCOL_VERSION}, the "
                f"{reg.role} speaks {reg.protocol_version}; install the same rayipy version "
                f"on every machine",))
            return
        lost = self.drivers.lost_by(sender) if reg.role == "driver" else None
        if lost is not None:
            # A driver dropped after its grace period, reconnected (its connection came
            # back and it registered again): not a new session, it is told what it lost.
            self.send(sender, Kind.SHUTDOWN, ("its session ended", lost.describe()))
            return
        known = self.peers.get(sender)
        if known is not None and known.role == reg.role:
            # Again after a reconnection to this same head (a network blip): it is known.
            self.send(sender, Kind.WELCOME, self.welcome_body())
            return
        self.peers[sender] = Peer(reg)
        adopted = self.claimed_by(sender, reg)
        if reg.role == "driver":
            self.drivers.joined(sender, time.monotonic())
        if reg.role in ("driver", "worker"):
            self.scheduler.owner_joined(sender, driver=reg.role == "driver")
        if reg.role == "agent":
            self.carry_out(self.scheduler.add_node(reg.node_id, sender, reg.info["resources"], reg.info))
        elif reg.role == "worker":
            self.carry_out(self.scheduler.add_worker(sender, reg.node_id, reg.pid,
                                                     reg.info.get("direct", ""),
                                                     reg.info.get("runtime_env", ""),
                                                     reg.info.get("actor")))
            self.carry_out(self.scheduler.adopt_tasks(sender, adopted))
        self.give_kept_results(sender)
        self.send(sender, Kind.WELCOME, self.welcome_body())
        self.restore_leases(sender, reg)

    def give_kept_results(self, owner: bytes) -> None:
        """After a restart: the results that came for ``owner`` before it registered
        again, given before its welcome, so that it does not send those tasks again."""
        if self.kept_results is None:
            return
        for kind, body, frames in self.kept_results.take(owner):
            self.forward(owner, kind, body, frames)
            task_ids = [r.task_id for r in body[0]]
            if self.duplicates is not None:
                self.duplicates.results(self.scheduler, task_ids, [True] * len(task_ids))
            if self.claims is not None:
                self.claims.finished(task_ids, [True] * len(task_ids))

    def claimed_by(self, sender: bytes, reg: Registration) -> list[TaskSpec]:
        """After a restart: a worker registering again names the head's tasks it holds
        (``held_tasks``); the copies of them here already (held, or queued), to give it.
        Taken before it is attached, so that they are not handed to another worker
        first (``TaskClaims.declared``)."""
        held = reg.info.get("held_tasks") if reg.role == "worker" else None
        if self.claims is None or not held:
            return []
        if not isinstance(held, list) or not all(isinstance(t, bytes) for t in held):
            log.warning("worker %s registered with a malformed held_tasks: ignored", sender.hex())
            return []
        attached = {sender} if reg.node_id in self.scheduler.nodes else set()
        return self.claims.declared(sender, held, self.scheduler, attached)

    def restore_leases(self, sender: bytes, reg: Registration) -> None:
        """After a restart: an owner registering again names the workers it holds on
        lease; a worker registering again may be one of those (``lease_scheduling``)."""
        scheduler = self.scheduler
        if reg.role in ("driver", "worker") and reg.info.get("leases"):
            self.carry_out(scheduler.leases_declared(sender, reg.info["leases"]))
        elif scheduler.lease_claims:
            self.carry_out(scheduler.settle_lease_claims())
        if scheduler.lease_claims and self.recovery_deadline is None:
            # Not a restart we wait for peers after: a worker not here now is not coming.
            self.carry_out(scheduler.lease_claims_over(
                "the restarted head does not know its worker"))

    def welcome_body(self) -> Welcome:
        """``head_started`` tells a peer registering again whether this head restarted;
        ``head_restart_wait_s`` how long to wait for it when it falls silent (0: it keeps
        no journal, it cannot come back)."""
        return Welcome(self.cluster_id, PROTOCOL_VERSION,
                       {"address": self.address, "dashboard_url": self.dashboard_url,
                        "head_started": self.started,
                        "head_restart_wait_s": self.restart_wait})

    def on_heartbeat(self, sender: bytes, body: Any, frames: Frames) -> None:
        if not body:
            return
        peer = self.peers[sender]
        if peer.role == "agent":    # its object store's figures
            node = self.scheduler.nodes.get(peer.node_id)
            if node is not None and isinstance(body[0], dict):
                node.info["store_summary"] = body[0]
            if node is not None and len(body) > 1 and isinstance(body[1], dict):
                node.info["memory_use"] = body[1]    # real use (memory_use.py)
                if self.live is not None:
                    self.live.node_sample(node.info.get("ip", ""), time.time(), body[0], body[1])
        else:   # a worker's direct work: the cluster's counts, the dashboard and state API
            if len(body) > 2 and isinstance(body[2], dict):
                self.scheduler.direct_reported(sender, body[2])
            self.history.direct(sender, self.scheduler.workers, body)

    def on_free_objects(self, sender: bytes, body: Body, frames: Frames) -> None:
        """An owner freed objects stored in the nodes' stores: every store drops its copy."""
        self.tell_stores(Kind.FREE_OBJECTS, body, frames)

    def tell_stores(self, kind: Kind, body: Any, frames: Frames = None) -> None:
        """A message for every node's object store (through its agent)."""
        for node in self.scheduler.nodes.values():
            self.forward(node.agent, kind, body, frames)

    def on_function(self, sender: bytes, body: Body, frames: Frames) -> None:
        function_id, data = body
        if self.store is not None and function_id not in self.scheduler.functions:
            self.store.save_function(function_id, data)
        self.scheduler.add_function(function_id, data)

    def on_submit(self, sender: bytes, body: Body, frames: Frames) -> None:
        specs = body[0]
        if self.duplicates is not None:   # a restart: the same task may come twice
            specs = self.duplicates.fresh(specs, self.scheduler.tasks)
        if self.claims is not None:       # ... and a worker that lived on may hold it
            self.place_claimed(*self.claims.submitted(
                specs, self.scheduler.workers, waiting_workers(self.scheduler.early_workers),
                time.monotonic()))
            return
        self.carry_out(self.scheduler.submit(specs))

    def on_task_done(self, sender: bytes, body: Body, frames: Frames) -> None:
        results = body[0]
        task_ids = [r.task_id for r in results]
        owners = {t[:OWNER_ID_BYTES] for t in task_ids}
        kept = self.kept_results
        if len(owners) == 1:
            owner = owners.pop()
            if kept is not None and owner not in self.peers:   # given when it registers
                kept.keep(owner, Kind.TASK_DONE, body, frames)
            else:
                self.forward(owner, Kind.TASK_DONE, body, frames)
        else:
            for owner in owners:
                part = ([r for r in results if owner_of(r.task_id) == owner],)
                if kept is not None and owner not in self.peers:
                    kept.keep(owner, Kind.TASK_DONE, part, None)
                else:
                    self.send(owner, Kind.TASK_DONE, part)
        history = self.history
        now = time.time()
        # Before the scheduler forgets the tasks' names.
        history.results(self.scheduler.workers.get(sender), results, self.scheduler.tasks, now)
        if self.duplicates is not None:   # a restart: its copy sent again need not run
            delivered = [owner_of(t) in self.peers for t in task_ids]
            self.duplicates.results(self.scheduler, task_ids, delivered)
            if self.claims is not None:
                self.claims.finished(task_ids, delivered)
        self.carry_out(self.scheduler.finished(sender, task_ids, [r.duration for r in results],
                                               [r.status for r in results]))
        history.started(sender, self.scheduler.workers, now)   # its next pipelined task starts now

    def on_results_received(self, sender: bytes, body: Body, frames: Frames) -> None:
        worker_id, done = body
        if self.duplicates is not None:   # its owner has these results: no copy need run
            self.duplicates.results(self.scheduler, [t for t, _, _ in done],
                                    [True] * len(done))
            if self.claims is not None:
                self.claims.finished([t for t, _, _ in done], [True] * len(done))
        now = time.time()
        self.history.results(self.scheduler.workers.get(worker_id),
                             [TaskResult(t, status, (), d, "", ()) for t, d, status in done],
                             self.scheduler.tasks, now)
        self.carry_out(self.scheduler.finished(worker_id, [t for t, _, _ in done],
                                               [d for _, d, _ in done], [s for _, _, s in done]))
        self.history.started(worker_id, self.scheduler.workers, now)

    def on_cancel(self, sender: bytes, body: Body, frames: Frames) -> None:
        task_id, force, actor_id, leased_worker, *rest = body   # recursive: new, last
        recursive = bool(rest[0]) if rest else True
        if self.claims is not None and task_id in self.claims.held:
            # A copy held for the worker that may have it: queued, to be cancelled there.
            self.carry_out(self.scheduler.submit([self.claims.held.pop(task_id)]))
        self.carry_out(self.scheduler.cancel_requested(task_id, force, actor_id, leased_worker,
                                                       recursive))

    def on_blocked(self, sender: bytes, body: Body, frames: Frames) -> None:
        if self.claims is not None:   # given back unrun: a copy sent again must run
            self.claims.returned(body[0])
        self.carry_out(self.scheduler.blocked(sender, body[0]))

    def on_unblocked(self, sender: bytes, body: Body, frames: Frames) -> None:
        self.carry_out(self.scheduler.unblocked(sender))

    def on_returned(self, sender: bytes, body: Body, frames: Frames) -> None:
        if self.claims is not None:
            self.claims.returned(body[0])
        self.carry_out(self.scheduler.returned(sender, body[0]))

    def on_kill_actor(self, sender: bytes, body: Body, frames: Frames) -> None:
        actor_id, why, *rest = body   # no_restart came later: a body without it means True
        self.carry_out(self.scheduler.kill_actor(actor_id, why, bool(rest[0]) if rest else True))

    def on_lease_request(self, sender: bytes, body: Body, frames: Frames) -> None:
        self.carry_out(self.scheduler.lease(sender, body[0]))

    def on_lease_return(self, sender: bytes, body: Body, frames: Frames) -> None:
        self.carry_out(self.scheduler.return_lease(sender, body[0]))

    def on_locate_actor(self, sender: bytes, body: Body, frames: Frames) -> None:
        self.carry_out(self.scheduler.locate_actor(body[0], sender))

    def on_get_object(self, sender: bytes, body: Body, frames: Frames) -> None:
        object_id, requester = body
        owner = owner_of(object_id)
        if owner in self.peers:
            # The owner answers straight to the requester's data port, not through us.
            peer = self.peers.get(requester)
            address = peer.info.get("data", "") if peer is not None else ""
            self.send(owner, Kind.GET_OBJECT, (object_id, requester, address))
            return
        error = exceptions.OwnerDiedError(
            f"ObjectRef({object_id.hex()}) is lost: the process that created it has exited")
        self.send(requester, Kind.OBJECT_VALUE,
                  (object_id, ObjectValue(False, errors.capture_system_error(error)), requester))

    def on_object_value(self, sender: bytes, body: Body, frames: Frames) -> None:
        self.forward(body[2], Kind.OBJECT_VALUE, body, frames)

    def on_borrow(self, sender: bytes, body: Body, frames: Frames) -> None:
        changes, borrower = body
        owners = {owner_of(oid) for oid, _ in changes}
        for owner in owners:
            if owner in self.peers:
                self.send(owner, Kind.BORROW, ([c for c in changes if owner_of(c[0]) == owner], borrower))

    def on_object_copy(self, sender: bytes, body: Body, frames: Frames) -> None:
        """A store pulled a copy of a stored object: its owner names it to later readers."""
        owner = owner_of(body[0])
        if owner in self.peers:
            self.forward(owner, Kind.OBJECT_COPY, body, frames)

    def on_worker_died(self, sender: bytes, body: Body, frames: Frames) -> None:
        worker_id, code, reason = body
        self.remove_worker(worker_id, reason)

    def on_log(self, sender: bytes, body: Body, frames: Frames) -> None:
        if body[0] in self.peers:
            self.forward(body[0], Kind.LOG, body, frames)
        if self.live is not None:   # the dashboard's recent output of each worker
            worker = self.scheduler.workers.get(sender)
            if worker is not None:
                node = self.scheduler.nodes.get(worker.node_id)
                address = node.info.get("ip", "") if node is not None else ""
                self.live.log_lines(worker_key(address, worker.pid), body[1], time.time())

    def on_generator_item(self, sender: bytes, body: Body, frames: Frames) -> None:
        """Values a generator task yielded: to the task's owner, as its result would go."""
        owner = owner_of(body[0][0][0].task_id)
        if owner in self.peers:
            self.forward(owner, Kind.GENERATOR_ITEM, body, frames)

    def on_node_leaving(self, sender: bytes, body: Body, frames: Frames) -> None:
        peer = self.peers.pop(sender)
        self.remove_node(peer.node_id, body[0])

    def on_shutdown(self, sender: bytes, body: Body, frames: Frames) -> None:
        self.running = False

    # -- requests --------------------------------------------------------------------------------
    def on_request(self, sender: bytes, body: Body, frames: Frames) -> None:
        request_id, name, args = body
        handler = None
        for owner in self.request_owners:
            handler = getattr(owner, f"request_{name}", None)
            if handler is not None:
                break
        if handler is None:
            self.send(sender, Kind.REPLY, (request_id, False, ValueError(f"unknown request {name!r}")))
            return
        self.request_id = request_id
        try:
            value = handler(sender, *args)
        except Exception as e:
            self.send(sender, Kind.REPLY, (request_id, False, e))
            return
        if value is not DEFERRED:
            self.send(sender, Kind.REPLY, (request_id, True, value))

    def request_register_actor_name(self, sender: bytes, name: str, actor_id: bytes,
                                    namespace: str = "") -> bytes | None:
        return self.scheduler.register_actor_name(name, actor_id, namespace)

    def request_get_actor(self, sender: bytes, name: str,
                          namespace: str = "") -> tuple[bytes, str, Any, int]:
        return self.scheduler.actor_by_name(name, namespace)

    def request_exit_actor(self, sender: bytes, actor_id: bytes, why: str) -> bool:
        """An actor's worker ends its actor (``exit_actor``): answered once its callers
        have been told; that worker exits by itself."""
        self.carry_out(self.scheduler.kill_actor(actor_id, why, True, sender))
        return True

    # -- placement groups (rayipy.util.placement_group) ------------------------------------
    def request_create_placement_group(self, sender: bytes, group_id: bytes, bundles: list,
                                       strategy: str, name: str, detached: bool) -> None:
        self.carry_out(self.scheduler.create_group(group_id, bundles, strategy, name, sender,
                                                   detached))

    def request_remove_placement_group(self, sender: bytes, group_id: bytes) -> None:
        self.carry_out(self.scheduler.remove_group(group_id))

    def request_disconnect(self, sender: bytes) -> bool:
        """A driver leaves (shutdown): its non-detached actors stop now, not after a timeout."""
        self.drivers.left(sender)
        self.forget(sender)
        return True

    def request_session(self, sender: bytes) -> bool:
        """A driver or worker that was stopped (its clocks jumped) asks whether its
        session still stands: answered, it does (a dropped driver is an unregistered
        sender, told what it lost instead)."""
        return True

    def request_wait_nodes(self, sender: bytes) -> int:
        return len(self.scheduler.nodes)

    @property
    def dashboard_url(self) -> str:
        return self.dashboard.url if self.dashboard is not None else ""

    def dashboard_snapshot(self) -> Snapshot:
        """The dashboard's picture of the cluster: built on this thread, which owns the state."""
        facts = HeadFacts(self.cluster_id, self.address, self.dashboard_url, self.started,
                          rayipy_version(),
                          {role: sum(1 for p in self.peers.values() if p.role == role)
                           for role in ("driver", "worker", "agent")},
                          dict(self.endpoint.dropped))
        return build_snapshot(self.scheduler, self.history, facts, time.time())

    # -- %%remote --all setup cells (core/setup_cells.py), replayed by workers that start --
    def request_setup_cell_add(self, sender: bytes, setup_id: str, blob: bytes) -> int:
        """A driver's ``%%remote --all`` cell (a pickle the head never opens), for workers
        that start later; how many the driver has recorded."""
        peer = self.peers.get(sender)
        if peer is None or peer.role != "driver":
            raise ValueError("only a driver records setup cells")
        return self.setup_cells.add(sender, setup_id, blob)

    def request_setup_cell_drop(self, sender: bytes, setup_id: str) -> bool:
        """Take back a driver's setup cell (it failed on the workers there were)."""
        return self.setup_cells.drop(sender, setup_id)

    def request_setup_cells(self, sender: bytes) -> list[tuple[bytes, str, bytes]]:
        """(driver, setup id, pickle) of every connected driver's setup cells, in order."""
        return self.setup_cells.for_workers(
            pid for pid, peer in self.peers.items() if peer.role == "driver")

    def request_shutdown(self, sender: bytes) -> bool:
        self.running = False
        return True


def owner_holdings(scheduler: Scheduler, owner: bytes) -> tuple[int, int, int, int]:
    """What dropping ``owner`` takes: its live non-detached actors, its tasks the head
    holds (queued or given to a worker; actor calls never pass here), the workers leased
    to it (each runs one of its tasks at most), its non-detached placement groups."""
    actors = sum(1 for actor_id, actor in scheduler.actors.items()
                 if actor_id[:OWNER_ID_BYTES] == owner and not actor.detached and not actor.dead)
    tasks = sum(1 for task_id, record in scheduler.tasks.items()
                if task_id[:OWNER_ID_BYTES] == owner and not record.spec.actor_id)
    leases = sum(1 for worker in scheduler.workers.values() if worker.leased_to == owner)
    groups = sum(1 for group in scheduler.groups.values()
                 if group.owner == owner and not group.detached)
    return actors, tasks, leases, groups


def grace_period(text: str) -> float:
    """``--driver-grace-period``: seconds, checked as ``init``'s setting is."""
    try:
        return check_grace_period(float(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def restart_wait(text: str) -> float:
    """``--head-restart-wait``: seconds, from 0 to a day."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"--head-restart-wait is seconds from 0 to 86400, "
                                         f"got {text!r}")
    return value


def port_number(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"a port is a number from 0 to 65535, got {text!r}")
    return int(text)


def rayipy_version() -> str:
    import rayipy
    return rayipy.__version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rayipy.node.head")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dashboard-port", type=port_number, default=8265,
                        help="first port to try for the dashboard (0: any free port)")
    parser.add_argument("--dashboard-host", default=None,
                        help="address the dashboard binds to (default: 127.0.0.1; elsewhere "
                             "it requires the token its URL carries)")
    parser.add_argument("--no-dashboard", action="store_true", help="serve no dashboard")
    parser.add_argument("--driver-grace-period", type=grace_period,
                        default=os.environ.get("RAYIPY_DRIVER_GRACE_PERIOD_S",
                                               str(DEFAULT_DRIVER_GRACE_S)),
                        help=f"seconds a driver that stopped answering (a stopped or sleeping "
                             f"process) keeps its actors, tasks and objects (default: "
                             f"$RAYIPY_DRIVER_GRACE_PERIOD_S, else {DEFAULT_DRIVER_GRACE_S:g}; "
                             f"init's _system_config key {GRACE_SETTING!r})")
    parser.add_argument("--watch-parent", action="store_true",
                        help="exit when the process that started us exits")
    parser.add_argument("--state-dir", default=None,
                        help="keep the head's journal here, so that a head restarted with "
                             "--recover gets its cluster back (default: no journal)")
    parser.add_argument("--recover", action="store_true",
                        help="a restart: take the cluster id, salt, functions, actors and "
                             "jobs from the journal in --state-dir")
    parser.add_argument("--head-restart-wait", type=restart_wait,
                        default=os.environ.get("RAYIPY_HEAD_RESTART_WAIT_S",
                                               str(DEFAULT_HEAD_RESTART_WAIT_S)),
                        help=f"seconds peers wait for this head to come back after it falls "
                             f"silent, and a restarted head waits for them (default: "
                             f"$RAYIPY_HEAD_RESTART_WAIT_S, else "
                             f"{DEFAULT_HEAD_RESTART_WAIT_S:g}; needs --state-dir)")
    parser.add_argument("--log-file", default=None,
                        help="write the log here, rotated, with stdout and stderr "
                             "(default: stderr)")
    args = parser.parse_args(argv)
    if args.recover and not args.state_dir:
        parser.error("--recover needs --state-dir (where the journal is)")
    log_setup.configure("head", args.log_file)
    key = bytes.fromhex(os.environ.pop("RAYIPY_CLUSTER_KEY"))
    salt_hex = os.environ.pop("RAYIPY_CLUSTER_SALT", "")
    salt = bytes.fromhex(salt_hex) if salt_hex else None
    watch = os.getppid() if args.watch_parent else None
    if args.watch_parent:
        lifetime.die_with_parent()
    lifetime.exit_on_sigterm()
    try:
        head = Head(key, args.host, args.port, watch,
                    None if args.no_dashboard else args.dashboard_port, args.dashboard_host,
                    salt, args.driver_grace_period, args.state_dir, args.recover,
                    args.head_restart_wait)
    except zmq.ZMQError as e:
        print(f"rayipy head: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 3
    print(f"rayipy head listening on {head.address} (host {socket.gethostname()})", flush=True)
    if head.dashboard is not None:
        print(f"rayipy dashboard at http://{head.dashboard_url}", flush=True)
    elif head.dashboard_problem:
        print(f"rayipy dashboard not started: {head.dashboard_problem}", flush=True)
    try:
        head.serve()
    except (KeyboardInterrupt, SystemExit):
        pass
    lifetime.ignore_sigterm()  # cleaned up already: a late SIGTERM must not interrupt exit
    return 0


if __name__ == "__main__":
    sys.exit(main())
