"""The scheduler's actor part: placing actors, telling callers where they are, deaths.

An actor gets an idle pool worker of its own; its calls do not pass through here (they
go straight from callers to that worker), so this part only places actors, answers
``LOCATE_ACTOR``, keeps names, restarts actors within ``max_restarts`` and announces
their deaths. It reads the shared records and steps of ``SchedulerState`` and defines
the actor records below; ``Scheduler`` builds on it.
"""

from __future__ import annotations

import collections
from typing import Any

from rayipy.core.instructions import ActorLocation, CancelRunning, Instruction, KillWorker, Spawn
from rayipy.core.runtime_env import env_of
from rayipy.core.scheduler_state import SchedulerState
from rayipy.core.state import TaskRecord, Worker, WorkerStatus
from rayipy.exceptions import ActorDiedError
from rayipy.protocol.messages import CRASHED, TaskSpec


class Actor:
    """An actor's place: its worker once created, and the callers told where it is."""

    def __init__(self, creation: TaskSpec) -> None:
        options = dict(creation.options)
        self.creation = creation
        self.worker: bytes | None = None
        self.dead: str = ""                 # why it died, once it has
        self.subscribers: set[bytes] = {creation.task_id[:8]}   # told where it is
        restarts = options.get("max_restarts", 0)
        self.restarts_left: int = 2**31 if restarts == -1 else restarts
        self.detached = options.get("lifetime") == "detached"
        self.name: str | None = options.get("name")
        self.namespace: str = options.get("namespace", "")   # of its name
        self.kill_reason = ""   # kill(no_restart=False): why its worker is being killed


def actor_died_error(spec: TaskSpec, why: str) -> BaseException:
    """The error a call (or the creation) of a dead actor fails with."""
    what = "creating the actor" if spec.method == "__init__" else f"calling {spec.name!r}"
    return ActorDiedError(f"the actor is dead: {why} (while {what})")


class ActorScheduling(SchedulerState):
    """Actors: creation, placement, location, names, restarts and deaths."""

    def __init__(self) -> None:
        super().__init__()
        self.actors: dict[bytes, Actor] = {}
        self.actor_names: dict[tuple[str, str], bytes] = {}   # (namespace, name) -> actor id
        self.early_locates: dict[bytes, set[bytes]] = {}   # actor id -> callers, before creation
        self.creating: collections.deque[bytes] = collections.deque()   # actor ids to place
        # Changes the head keeps in its journal (``core/head_journal.py`` records); the
        # head takes them after each event.
        self.durable: list[tuple[Any, ...]] = []
        # After a restart: the journal's actors whose worker has not registered again yet.
        self.recovering: set[bytes] = set()

    def _actor_worker_died(self, worker: Worker, error: BaseException) -> list[Instruction]:
        actor = self.actors.get(worker.actor) if worker.actor is not None else None
        if actor is None:
            return []
        why = actor.dead or actor.kill_reason or str(error)
        actor.kill_reason = ""
        queue = [t for t in worker.queue if t in self.tasks]   # only its creation, if any
        if not actor.dead and actor.restarts_left > 0:
            # Restart: rerun the constructor on a new worker. Calls in flight fail at their
            # callers (they may have half-run); later calls wait there for the new address.
            actor.restarts_left -= 1
            actor.worker = None
            self.tasks[actor.creation.task_id] = TaskRecord(actor.creation)
            self.creating.append(actor.creation.actor_id)
            return [ActorLocation(actor.creation.actor_id, tuple(actor.subscribers), "",
                                  why + "; the actor is restarting", True)]
        out: list[Instruction] = []
        if not actor.dead:
            actor.dead = why
            self.durable.append(("actor_dead", actor.creation.actor_id, why))
            self._forget_name(actor)
            out.append(ActorLocation(actor.creation.actor_id, tuple(actor.subscribers), "", why))
        for task_id in queue:
            out.append(self._fail(task_id, CRASHED, actor_died_error(self.tasks[task_id].spec, why)))
        return out

    def _forget_name(self, actor: Actor) -> None:
        if not actor.name:
            return
        key = (actor.namespace, actor.name)
        if self.actor_names.get(key) == actor.creation.actor_id:
            del self.actor_names[key]

    def _live(self, actor_id: bytes | None) -> Actor | None:
        actor = self.actors.get(actor_id) if actor_id is not None else None
        return actor if actor is not None and not actor.dead else None

    def register_actor_name(self, name: str, actor_id: bytes, namespace: str = "") -> bytes | None:
        """Claim ``name`` in ``namespace`` for an actor; returns the id of the live actor
        holding it there, if any."""
        holder = self.actor_names.get((namespace, name))
        if holder is not None and self._live(holder) is not None:
            return holder
        self.actor_names[(namespace, name)] = actor_id
        return None

    def actor_by_name(self, name: str, namespace: str = "") -> tuple[bytes, str, Any, int]:
        """The live actor named ``name`` in ``namespace``: (actor id, class name, methods,
        max_task_retries).

        Raises ValueError naming the name, the namespace, the live actors there, and the
        other namespaces where that name lives, when there is none of that name there.
        """
        actor_id = self.actor_names.get((namespace, name))
        actor = self._live(actor_id)
        if actor_id is None or actor is None:
            live = [(ns, n) for (ns, n), a in self.actor_names.items() if self._live(a)]
            here = sorted(n for ns, n in live if ns == namespace)
            elsewhere = sorted(ns for ns, n in live if n == name)
            hint = (f"; an actor of that name lives in namespace(s) "
                    f"{', '.join(map(repr, elsewhere))}: pass namespace=" if elsewhere else "")
            raise ValueError(f"no live actor is named {name!r} in namespace {namespace!r}; "
                             f"named actors there now: {', '.join(map(repr, here)) or 'none'}"
                             f"{hint}")
        options = dict(actor.creation.options)
        return (actor_id, options["class_name"], options["methods"],
                options.get("max_task_retries", 0))

    def drop_owner_actors(self, owner: bytes) -> list[Instruction]:
        """A driver is gone: its actors go too, unless detached."""
        out: list[Instruction] = []
        for actor_id, actor in list(self.actors.items()):
            if actor_id[:8] == owner and not actor.detached and not actor.dead:
                out.extend(self.kill_actor(actor_id, "the driver that created it exited"))
        for actor_id in [a for a in self.early_locates if a[:8] == owner]:
            out.append(ActorLocation(actor_id, tuple(self.early_locates.pop(actor_id)), "",
                                     "the process that created it has exited"))
        return out

    def _submit_actor_spec(self, spec: TaskSpec) -> list[Instruction]:
        self.tasks[spec.task_id] = TaskRecord(spec)
        if spec.method == "__init__":
            actor = self.actors[spec.actor_id] = Actor(spec)
            actor.subscribers |= self.early_locates.pop(spec.actor_id, set())
            if self._fits_nowhere(spec):
                self.tasks.pop(spec.task_id)
                message = self.impossible_message(spec)
                actor.dead = f"it cannot be created: {message}"
                self.durable.append(("actor_dead", spec.actor_id, actor.dead))
                self._forget_name(actor)
                return [self._fail_new(spec, ValueError(message)),
                        ActorLocation(spec.actor_id, tuple(actor.subscribers), "", actor.dead)]
            self.creating.append(spec.actor_id)
            self.durable.append(("actor", spec.actor_id, spec))
            return []
        # Calls go straight to the actor's worker; one that comes here is a peer's bug.
        return [self._fail(spec.task_id, CRASHED, actor_died_error(
            spec, "actor calls must be sent to the actor's worker, not the head"))]

    def locate_actor(self, actor_id: bytes, requester: bytes) -> list[Instruction]:
        """A caller asks where an actor is: now if placed, else once it is."""
        actor = self.actors.get(actor_id)
        if actor is None:
            if actor_id[:8] not in self.live_owners:
                return [ActorLocation(actor_id, (requester,), "",
                                      "the process that created it has exited")]
            # Its creation may still be on its way from its creator, on another path.
            self.early_locates.setdefault(actor_id, set()).add(requester)
            return []
        actor.subscribers.add(requester)
        if actor.dead:
            return [ActorLocation(actor_id, (requester,), "", actor.dead)]
        if actor.worker is not None:
            return [ActorLocation(actor_id, (requester,), self.workers[actor.worker].address)]
        return []

    def _place_actors(self) -> list[Instruction]:
        """Give each actor waiting for creation an idle worker, which serves it alone."""
        out: list[Instruction] = []
        while self.creating:
            actor = self.actors.get(self.creating[0])
            if actor is None or actor.dead:
                self.creating.popleft()
                continue
            request = actor.creation.resources
            spread = ("scheduling_strategy", "SPREAD") in actor.creation.options
            fitting = [n for n in self.nodes.values() if n.fits(request) and not n.leaving]
            # SPREAD: the node with the fewest SPREAD placements, even if it must start a
            # worker first; otherwise any idle worker, on the least loaded node.
            node = min(fitting, key=lambda n: (n.spread_count if spread else 0, n.load()),
                       default=None)
            worker: Worker | None
            env = env_of(request)
            if spread:
                worker = next((self.workers[w] for w in node.workers
                               if self.workers[w].state is WorkerStatus.IDLE
                               and self.workers[w].env == env), None) if node else None
            else:
                worker = self._pick_worker(request, 0)
            if worker is None:
                # Start a worker where the actor fits; it gets the actor when it registers.
                if node is not None and env:
                    if not self.env_spawning.get((node.node_id, env)):
                        out.append(self._spawn_for_env(node, 1, actor.creation))
                elif node is not None and node.spawning == 0:
                    node.spawning += 1
                    out.append(Spawn(node.agent, 1))
                break
            self.creating.popleft()
            node = self.nodes[worker.node_id]
            worker.actor = actor.creation.actor_id
            self._allocate(worker, request, WorkerStatus.ACTOR)
            if spread:
                node.spread_count += 1
            actor.worker = worker.worker_id
            if not env:   # the pool lost a worker to the actor: the agent starts another
                node.spawning += 1
                out.append(Spawn(node.agent, 1))
            out.append(self._assign(worker, [actor.creation.task_id]))
            out.append(ActorLocation(actor.creation.actor_id, tuple(actor.subscribers),
                                     worker.address))
        return out

    def kill_actor(self, actor_id: bytes, why: str, no_restart: bool = True,
                   sender: bytes = b"") -> list[Instruction]:
        """Kill an actor (``kill``, ``exit_actor``, or its driver left): callers hear why;
        its worker goes (killed, unless ``sender`` is that worker: it exits by itself).
        ``no_restart=False``: its worker is killed, and the actor restarts as after a
        crash if it has restarts left."""
        actor = self.actors.get(actor_id)
        if actor is None or actor.dead:
            return []
        if not no_restart and actor.restarts_left > 0:
            if actor.worker is None or actor.worker not in self.workers:
                return []   # not placed (or restarting) yet: nothing runs to kill
            worker = self.workers[actor.worker]
            actor.kill_reason = why
            return [KillWorker(self.nodes[worker.node_id].agent, worker.worker_id)]
        actor.dead = why
        self.durable.append(("actor_dead", actor_id, why))
        self.recovering.discard(actor_id)
        self._forget_name(actor)
        out: list[Instruction] = [ActorLocation(actor_id, tuple(actor.subscribers), "", why)]
        if actor.worker is not None and actor.worker == sender:
            pass   # its worker ends itself; its death, reported by its agent, frees it
        elif actor.worker is not None and actor.worker in self.workers:
            worker = self.workers[actor.worker]
            out.append(KillWorker(self.nodes[worker.node_id].agent, worker.worker_id))
        elif actor.creation.task_id in self.tasks:
            out.append(self._fail(actor.creation.task_id, CRASHED,
                                  actor_died_error(actor.creation, why)))
        return out

    # -- after a head restart (the journal: core/head_journal.py) -------------------------
    def recover_actors(self, creations: dict[bytes, TaskSpec]) -> None:
        """The journal's live actors, by creation spec: known (and their names taken)
        again, waiting for their workers to register and say they host them."""
        for actor_id, creation in creations.items():
            actor = self.actors[actor_id] = Actor(creation)
            if actor.name:
                self.actor_names[(actor.namespace, actor.name)] = actor_id
            self.recovering.add(actor_id)

    def adopt_actor(self, worker: Worker, actor_id: bytes) -> list[Instruction]:
        """A worker registered again saying it hosts ``actor_id``: it does again, with the
        actor's resources; callers waiting for its place hear it. A worker hosting an
        actor the journal does not have (or has as dead) is stopped: nothing could reach
        its actor, and it must not take tasks."""
        actor = self.actors.get(actor_id)
        node = self.nodes[worker.node_id]
        if actor is None or actor.dead or actor_id not in self.recovering:
            return [KillWorker(node.agent, worker.worker_id)]
        self.recovering.discard(actor_id)
        worker.actor = actor_id
        self._allocate(worker, actor.creation.resources, WorkerStatus.ACTOR)
        actor.worker = worker.worker_id
        return [ActorLocation(actor_id, tuple(actor.subscribers), worker.address)]

    def recovery_over(self, why: str) -> list[Instruction]:
        """The head's wait for its peers after a restart is over: the journal's actors
        whose worker did not come back are dead, and non-detached actors whose creator
        did not come back go as their creator would have taken them."""
        out: list[Instruction] = []
        for actor_id in sorted(self.recovering):
            out.extend(self.kill_actor(actor_id, why))
        self.recovering.clear()
        for actor_id, actor in list(self.actors.items()):
            if not actor.dead and not actor.detached and actor_id[:8] not in self.live_owners:
                out.extend(self.kill_actor(actor_id, "the process that created it did not "
                                           "come back after the head restarted"))
        return out

    def cancel_actor_call(self, actor_id: bytes, task_id: bytes, force: bool) -> list[Instruction]:
        """Cancel a call sent straight to an actor's worker: tell that worker."""
        actor = self.actors.get(actor_id)
        if actor is None or actor.dead or actor.worker is None:
            return []
        return [CancelRunning(actor.worker, task_id, force, True)]
