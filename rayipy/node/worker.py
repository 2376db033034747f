"""A worker process: the main thread runs tasks, the runtime's I/O thread talks to the head.

Tasks arrive in batches from the head (it queues a few behind the running one so the
worker never waits for it between short tasks), and calls straight from callers arrive
on the direct inbox (``rayipy.node.direct``). The main thread runs them in order; results
go back through the I/O thread, batched when several finish close together, or on the
caller's connection.

This module is the shell around ``rayipy.core.worker_state.WorkerState``, which decides
what runs next, where each result goes and what a cancel, steal or blocked task does.
Both threads feed it events under ``Worker.lock``, held only around those calls; the
commands it returns are carried out after the lock is let go. Running a task is
``rayipy.node.task_runner``; capturing what tasks print, ``rayipy.node.task_output``.

Started as ``python -m rayipy.node.worker`` (by the node agent).
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from rayipy.core.objects import owner_of
from rayipy.core import task_context
from rayipy.core.task_context import CURRENT_TASK
from rayipy.core.worker_state import (Command, InterruptRunning, KillProcess, ReplyToCaller,
                                      ReportToHead, ReturnToHead, Run, WakeMain, WorkerState,
                                      quick_repeat, repeatable)
from rayipy.dashboard.direct_work import DirectWork
from rayipy.node import lifetime, runtime_env_setup
from rayipy.node.actor_host import make_host
from rayipy.node.client import Runtime
from rayipy.node.data_port import DIRECT_RESULT_BYTES, is_large
from rayipy.node.direct import DirectInbox
from rayipy.node.task_output import OutputBuffer, TaskOutput, encode_bundle, text_fallback
from rayipy.node.task_runner import DIRECT_CALLER, TaskRunner
from rayipy.protocol.kinds import Kind
from rayipy.protocol.messages import Payload, TaskResult, TaskSpec

log = logging.getLogger("rayipy.worker")

RESULT_BATCH_SECONDS = 0.005
LOW_QUEUE = 2
KILL_GRACE_SECONDS = 0.1   # a forced recursive cancel: for its children's cancels to leave


class HeldTasks:
    """``info["held_tasks"]`` in our registration: the ids of the head's tasks we hold
    (running, or queued here), read when the registration is pickled, as it leaves, and
    sent as a plain list. A restarted head gives the copies their owners send again back
    to us, as ours, instead of running them a second time elsewhere
    (``core/head_recovery.py``); so the list must be that moment's: a task named is here
    still, or its result leaves after the registration. (The runtime re-registers from
    its I/O thread, ``Runtime._registration``; this keeps the list's reading here.)"""

    __slots__ = ("worker",)

    def __init__(self, worker: "Worker") -> None:
        self.worker = worker

    def __reduce__(self) -> tuple[Any, tuple[list[bytes]]]:
        worker = self.worker
        with worker.lock:
            held = worker.state.held_from_head()
        return list, (held,)


class Worker:
    """The worker's side of its runtime (``WorkerHooks``), and the main thread's loop."""

    def __init__(self, runtime: Runtime, ip: str) -> None:
        self.runtime = runtime
        self.main_thread_id = threading.get_ident()   # made on the main thread
        # Calls straight from callers (actor calls, leased tasks); also where the main
        # thread waits for work.
        self.inbox = DirectInbox(runtime.signer, ip)
        runtime.info["direct"] = self.inbox.address
        # The head's tasks we hold, named each time we register (to a restarted head).
        runtime.info["held_tasks"] = HeldTasks(self)
        self.where = (f"node {runtime.node_id.hex()[:8]} ({runtime.info.get('ip', '?')}), "
                      f"worker pid {os.getpid()}")
        self.label = f"pid={os.getpid()}, ip={runtime.info.get('ip', '?')}"   # as Ray labels output
        self.state = WorkerState(self.where)
        self.lock = threading.Lock()            # guards self.state, and only it
        self.runner = TaskRunner(runtime, self.where, self.code_done, self.became_actor)
        self.runner.send_item = self.send_item
        self.access = runtime.access            # the node's object store, for releases
        self.output = OutputBuffer()
        self.owner_addresses: dict[bytes, str] = {}   # owner -> its data port (from EXECUTE)
        self.host: Any = None                   # runs a concurrent actor's calls (actor_host)
        self.host_done: collections.deque[TaskResult] = collections.deque()
        self.direct_work = DirectWork()         # calls that bypass the head, for the dashboard
        self.results: list[TaskResult] = []     # for the head, not sent yet (main thread)
        self.batch_started = 0.0
        self.last_run: TaskSpec | None = None   # the last task run here, if repeatable
        self.last_duration = 0.0                # and how long it took (main thread)
        runtime.attach_worker(self)

    # -- hooks of the runtime (WorkerHooks) -------------------------------------------------
    def handlers(self) -> dict:
        return {Kind.EXECUTE: self.on_execute, Kind.CANCEL: self.on_cancel,
                Kind.STEAL: self.on_steal}

    def hand_back_queued(self) -> list[bytes]:
        """Our task blocks in get: give back what waits behind it, so it can run elsewhere.
        Returns the ids of the head's tasks, which the runtime sends with ``BLOCKED``."""
        on_main_thread = threading.current_thread() is threading.main_thread()
        if on_main_thread:
            self.accept_calls(self.inbox.drain())   # the inbox is the main thread's
        with self.lock:
            commands = self.state.blocked()
        returned = self.carry_out_blocked(commands)
        if on_main_thread and self.results:
            # Results of earlier tasks still in the batch: the blocked task may be waiting
            # for one of them.
            self.send_results()
        return returned

    def while_blocked(self) -> None:
        """Main thread, while our task is blocked: hand leased tasks back to their sender."""
        self.accept_calls(self.inbox.drain())
        with self.lock:
            commands = self.state.return_direct()
        self.carry_out_blocked(commands)

    def flush_output(self, final: bool = False) -> None:
        """Send complete lines of task output; with ``final``, partial lines too."""
        for owner, lines in self.output.take(final).items():
            self.runtime.send(Kind.LOG, (owner, lines, self.label))

    def borrow_in_reply(self, object_id: bytes, delta: int, borrower: bytes) -> bool:
        """While running a direct call, borrow registrations travel with its reply."""
        caller = DIRECT_CALLER.get()
        if caller is None:
            return False
        self.inbox.add_borrow(caller, (object_id, delta, borrower))
        return True

    def heartbeat_body(self) -> tuple:
        """I/O thread: what ran here without the head seeing it (for the dashboard)."""
        with self.lock:
            state = self.state
            current, since, in_flight = state.current, state.current_since, len(state.on_host)
        return self.direct_work.heartbeat(current, since, in_flight)

    # -- I/O thread: messages from the head --------------------------------------------------
    def on_execute(self, body: tuple) -> None:
        specs, functions, owner_addresses = body
        self.owner_addresses.update(owner_addresses)
        for function_id, data in functions:
            self.runner.pickled_functions[function_id] = data
        with self.lock:
            # Read under the lock: a task that blocks hands back under it (hand_back_queued).
            commands = self.state.tasks_from_head(specs, self.runtime.blocked)
        self.carry_out_io(commands)

    def on_cancel(self, body: tuple) -> None:
        task_id, force, direct, *rest = body
        recursive = bool(rest[0]) if rest else True
        with self.lock:
            commands = self.state.cancel(task_id, force, direct)
        if any(isinstance(c, (InterruptRunning, KillProcess)) for c in commands):
            # It runs here, so the tasks it submitted are this process's (its runtime
            # owns them): cancel them first with recursive (Ray's default), or leave
            # them running, even those its interrupted get waited on.
            if not recursive:
                self.runtime.keep_children_of = task_id
            elif self.runtime.cancel_children(task_id, force) and force:
                # The cancels must leave before the process dies: sent from this (the
                # I/O) thread now, and given a moment to reach the head's socket.
                self.runtime.head.flush()
                time.sleep(KILL_GRACE_SECONDS)
        self.carry_out_io(commands)

    def on_steal(self, body: tuple) -> None:
        with self.lock:
            commands = self.state.steal(body[0])
        self.carry_out_io(commands)

    def carry_out_io(self, commands: list[Command]) -> None:
        """I/O thread: carry out what an event from the head returned."""
        for command in commands:
            if isinstance(command, WakeMain):
                self.inbox.waker.wake()
            elif isinstance(command, ReportToHead):
                self.direct_work.dropped(command.result.task_id)  # if direct, answered here
                self.runtime.send(Kind.TASK_DONE, ([command.result],))
            elif isinstance(command, ReturnToHead):
                self.runtime.send(Kind.RETURNED, (command.task_ids,))
            elif isinstance(command, InterruptRunning):
                self.runner.cancel_requested = command.task_id
                signal.pthread_kill(self.main_thread_id, signal.SIGINT)
            elif isinstance(command, KillProcess):
                os.kill(os.getpid(), signal.SIGKILL)
            else:
                raise AssertionError(f"{command!r} is not for the I/O thread")

    # -- main thread ------------------------------------------------------------------------
    def run_forever(self) -> None:
        while True:
            try:
                if not self.step():
                    return
            except KeyboardInterrupt:
                # A cancel that arrived just after its task ended: nothing to interrupt.
                self.runner.cancel_requested = None

    def step(self) -> bool:
        """Run the next task or call, if any; False when the worker should exit."""
        inbox, state = self.inbox, self.state
        # The queue read without the lock: a stale answer costs one poll at most (what
        # the I/O thread adds, it also wakes us for).
        if state.queue or self.results or inbox.has_replies() or self.host_done:
            calls = inbox.drain()
        else:
            calls = inbox.wait(1000)
        if self.runtime.stopped:
            return False
        if calls:
            self.accept_calls(calls)
        while self.host_done:
            result = self.host_done.popleft()
            with self.lock:
                answer = state.host_finished(result)
            self.deliver(answer)
        with self.lock:
            command = state.next_task(time.time())
            more_waiting = bool(state.queue)
        if type(command) is Run:
            if not self.results and not inbox.has_replies():
                self.batch_started = time.perf_counter()
            self.run_here(command)
        elif command is not None:
            self.host.submit(command.spec)  # a concurrent actor: its host hands back results
        # Send at once when our queue runs low (latency, and the head refills it on each
        # result); otherwise in batches, which saves a wake-up and a message per task.
        # The last one queued, a quick repeat of the task just run, is waited for: a
        # batch sent before it would get its refill at most that task's time earlier,
        # and split the next batches in two (10k no-op tasks: three times the messages).
        queue = state.queue
        if (self.results or inbox.has_replies()) and (
                not more_waiting or not queue
                or (len(queue) < LOW_QUEUE and not self.last_is_repeated())
                or time.perf_counter() - self.batch_started > RESULT_BATCH_SECONDS):
            self.send_results()
        return True

    def last_is_repeated(self) -> bool:
        """The task queued next repeats the one just run, which was quick (``quick_repeat``)."""
        try:
            spec = self.state.queue[0]
        except IndexError:   # taken meanwhile (a steal, on the I/O thread)
            return False
        return quick_repeat(spec, self.last_run, self.last_duration)

    def run_here(self, command: Run) -> None:
        """Run a task on this (the main) thread; its result to its caller or the head."""
        spec, caller = command
        result = self.runner.run(spec, caller)   # calls code_done when its code returns
        # The task's views of stored arguments are gone now: say so before its result
        # goes, so that when its caller frees them their memory is free at once.
        self.access.flush_store_releases()
        self.last_run = spec if repeatable(spec) else None
        self.last_duration = result.duration
        if caller is None:
            self.results.append(result)
        else:
            self.inbox.add_reply(caller, result)
            self.direct_work.finished(result)
        if spec.method == "__init__":
            with self.lock:
                self.state.constructor_done(concurrent=self.host is not None)

    def accept_calls(self, calls: list[tuple[Any, tuple]]) -> None:
        """Calls that came straight from callers (actor calls, or tasks on a lease): run
        here, answered on the same connection."""
        for caller, (specs, functions) in calls:
            self.runner.pickled_functions.update(functions)
            self.direct_work.accepted(specs)
            with self.lock:
                commands = self.state.calls_from_caller(caller, specs)
            for command in commands:  # calls cancelled before they came
                self.deliver(command)

    def deliver(self, answer: ReplyToCaller | ReportToHead) -> None:
        """Main thread: a result to its caller's connection, or to the next batch for the head."""
        if isinstance(answer, ReportToHead):
            self.results.append(answer.result)
        else:
            self.inbox.add_reply(answer.caller, answer.result)
            self.direct_work.finished(answer.result)

    def carry_out_blocked(self, commands: list[Command]) -> list[bytes]:
        """What a blocked task's hand-back returned: replies go out now; the ids of the
        head's tasks are returned (for ``BLOCKED``)."""
        returned: list[bytes] = []
        for command in commands:
            if isinstance(command, ReturnToHead):
                returned = command.task_ids
            elif isinstance(command, (ReplyToCaller, ReportToHead)):
                self.deliver(command)
            else:
                raise AssertionError(f"{command!r} is not for a blocked task")
        if self.inbox.has_replies():
            self.inbox.flush()
        return returned

    def send_results(self) -> None:
        results, self.results = self.results, []
        if self.output.parts:   # most batches: nothing printed
            self.flush_output(final=True)
        via_head = []
        for result in results:
            # Large values go straight to their owner, not through the head (data_port.py).
            if _surely_small(result):
                via_head.append(result)
                continue
            address = self.owner_addresses.get(owner_of(result.task_id))
            if address and is_large(result):
                self.runtime.send_to(address, Kind.RESULTS, (self.runtime.process_id, [result]))
            else:
                via_head.append(result)
        if via_head:
            self.runtime.send(Kind.TASK_DONE, (via_head,))
        self.inbox.flush()

    # -- called by the runner and the actor's host ---------------------------------------
    def code_done(self, task_id: bytes) -> None:
        """A task's code returned: a cancel from now on finds it neither queued nor running."""
        with self.lock:
            self.state.code_done(task_id)

    def send_item(self, spec: TaskSpec, item: TaskResult, index: int) -> None:
        """A value a generator task yielded: on the path its result will take (its
        caller's connection, or the head), ahead of that result. Any thread that runs
        a task (an actor's threads and event loop too)."""
        caller = DIRECT_CALLER.get()
        if caller is None and spec.actor_id:   # an async actor's call: no context var
            with self.lock:
                caller = self.state.caller_of(spec.task_id)
        if caller is None:
            self.runtime.send(Kind.GENERATOR_ITEM, ([(item, index)], []))
            return
        # Borrows registered while packing it ride with it, as with a call's reply.
        borrows = self.inbox.borrows.pop(caller, [])
        caller.send(Kind.GENERATOR_ITEM, ([(item, index)], borrows), block=True)

    def became_actor(self, spec: TaskSpec, instance: Any) -> None:
        """The constructor returned: calls of a concurrent actor get a host to run on."""
        task_context.set_actor_creation(spec)   # its calls run in the creator's namespace
        # Told to a restarted head when this worker registers again: it gets its actor back.
        self.runtime.info["actor"] = spec.actor_id
        if self.host is None:  # a restart reuses no host: this is a new process
            self.host = make_host(type(instance), dict(spec.options), self.run_on_thread,
                                  self.runner.run_async, self.host_finished, self.refuse_call)

    def refuse_call(self, spec: TaskSpec, error: BaseException) -> None:
        """A concurrent actor's call that cannot run (its host says why): ``error`` is
        its result."""
        self.host_finished(self.runner.error_result(spec, error, time.perf_counter()))

    def run_on_thread(self, spec: TaskSpec) -> TaskResult:
        """A threaded actor's call, on one of its threads."""
        with self.lock:
            caller = self.state.caller_of(spec.task_id)
        return self.runner.run(spec, caller)

    def host_finished(self, result: TaskResult) -> None:
        """From a concurrent actor's threads: the main thread sends it."""
        self.host_done.append(result)
        self.inbox.waker.wake()

    def add_output(self, stream: str, text: str) -> None:
        """Any thread: text a task printed. A thread a task started has no task of its own
        (threads do not inherit context variables): its text is the running task's."""
        spec = CURRENT_TASK.get() or self.state.current
        if spec is None:
            if sys.__stderr__ is not None:
                sys.__stderr__.write(text)
            return
        self.output.add(spec, stream, text)

    def add_display(self, data: dict[str, Any], metadata: dict[str, Any]) -> None:
        """Any thread: a MIME bundle a task displayed (``rayipy.node.task_display``),
        sent to its owner after what the task printed before it."""
        spec = CURRENT_TASK.get() or self.state.current
        fallback = text_fallback(data)
        if spec is None:
            if sys.__stderr__ is not None:
                sys.__stderr__.write(fallback)
            return
        self.output.add_display(spec, encode_bundle(data, metadata), fallback)


def _surely_small(result: TaskResult) -> bool:
    """True for what ``is_large`` would say no to and can be told at a glance: one value of
    in-band bytes only (most results), whose size is its bytes'. Otherwise ask ``is_large``,
    which sums the buffers."""
    values = result.values
    if len(values) != 1:
        return False
    payload = values[0]
    if type(payload) is not Payload:   # Stored: where the value is, a few bytes
        return True
    return not payload.buffers and len(payload.data) <= DIRECT_RESULT_BYTES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rayipy.node.worker")
    parser.add_argument("--head", required=True)
    parser.add_argument("--node-id", required=True)
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--ip", default="127.0.0.1")
    parser.add_argument("--store", default="", help="the node's object store address")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("RAYIPY_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s worker %(levelname)s %(message)s")
    lifetime.die_with_parent()
    lifetime.exit_on_sigterm()
    lifetime.precise_timers()
    key = bytes.fromhex(os.environ.pop("RAYIPY_CLUSTER_KEY"))
    env, env_error = _runtime_env(key)
    info: dict[str, Any] = {"ip": args.ip}
    if env is not None:
        info["runtime_env"] = env["key"]   # the head gives it only tasks of this environment
    runtime = Runtime("worker", args.head, key, node_id=bytes.fromhex(args.node_id),
                      process_id=bytes.fromhex(args.worker_id), info=info,
                      store_address=args.store)
    worker = Worker(runtime, args.ip)
    signal.signal(signal.SIGINT, worker.runner.interrupt)
    sys.stdout = TaskOutput(worker.add_output, "stdout")
    sys.stderr = TaskOutput(worker.add_output, "stderr")
    _capture_displays(worker)
    try:
        runtime.start()
        if env is not None:
            env_error = env_error or _apply_packages(runtime, env)
            if env_error:
                worker.runner.env_error = runtime_env_setup.setup_error(env_error)
        _replay_setup_cells(runtime)
        worker.run_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        runtime.close()
        worker.inbox.close()
    return 0


def _capture_displays(worker: Worker) -> None:
    """Tasks' ``display()`` calls and matplotlib figures go to their owner as MIME
    bundles (the capture lives with the rest of the IPython code, in rayipy.jupyter)."""
    try:
        from rayipy.node.task_display import install
        install(worker.add_display)
    except Exception:   # rich output is a nicety: a worker that cannot capture it still runs
        logging.getLogger("rayipy.worker").warning("task display capture not installed",
                                                   exc_info=True)


def _replay_setup_cells(runtime: Runtime) -> None:
    """Run the live drivers' ``%%remote --all`` cells before the first task (tasks that
    come meanwhile wait in the inbox). A failure is logged here, in the worker's log:
    the driver that recorded the cell is not waiting for it."""
    log = logging.getLogger("rayipy.worker")
    try:
        cells = runtime.request("setup_cells")
    except Exception:
        log.warning("could not ask the head for setup cells", exc_info=True)
        return
    if not cells:
        return
    from rayipy.node.cell_tasks import replay_setup_cells
    for report in replay_setup_cells(cells):
        if report["error"] is not None:
            log.warning("a %%remote --all setup cell failed here:\n%s", report["error"][2])


def _runtime_env(key: bytes) -> tuple[dict[str, Any] | None, str]:
    """This worker's environment (from its agent), in force before it connects: the
    venv's interpreter (this call re-executes the process there) and the variables.
    Returns the environment and why it failed ("" if it did not)."""
    text = os.environ.get(runtime_env_setup.ENV_VARIABLE)
    if not text:
        return None, ""
    env = runtime_env_setup.from_json(text)
    error = runtime_env_setup.reexec_in_venv(env, key) or ""
    runtime_env_setup.apply_env_vars(env)
    return env, error


def _apply_packages(runtime: Runtime, env: dict[str, Any]) -> str:
    """Once connected: fetch and unpack the environment's packages; "" or why not.
    The tasks this worker submits inherit its environment."""
    from rayipy.core.object_ref import _rebuild_ref
    from rayipy.node import runtime_env_pack

    def fetch(object_id: bytes) -> bytes:
        ref = _rebuild_ref(object_id)
        [value] = runtime.get_values([ref], None)
        return value
    try:
        runtime_env_setup.apply_packages(env, fetch)
    except Exception as e:  # noqa: BLE001 -- kept as every task's error
        return f"fetching its packages failed: {type(e).__name__}: {e}"
    runtime_env_pack.inherit(runtime, env)
    return ""


if __name__ == "__main__":
    # `python -m rayipy.node.worker` runs this file as the module `__main__`. Run main()
    # of the module imported under its own name instead, so nothing here exists twice
    # (a second copy is how get_runtime_context() once read an empty task context).
    from rayipy.node import worker as _worker
    sys.exit(_worker.main())
