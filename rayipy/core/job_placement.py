"""Where a job's driver runs, and the resources it holds there (Ray's ``entrypoint_*``).

Ray's ``submit_job(entrypoint_num_cpus=, entrypoint_num_gpus=, entrypoint_memory=,
entrypoint_resources=)`` asks for resources for the job's own process (its driver), apart
from what its tasks and actors ask for. Without them a job runs on the head's node and
holds nothing, as before. With them:

- the job goes to a live node whose free resources cover the request (the head's node
  first if it fits, else the least loaded), and the request is taken out of that node's
  pool, the very ``Node.available`` the scheduler places tasks from (``Node.take``; GPU
  devices with ``Node.assign_gpus``). So tasks and actors cannot take it while the job
  runs, and get it back when the job's process ends (``release``; the head then runs
  ``Scheduler.dispatch``);
- a job that no node can take now waits, PENDING, and is placed by the head's
  once-a-second turn (``place_waiting``), oldest first, once a node has the resources;
- a job that no *live* node could ever hold (its totals are too small) follows the rule
  tasks follow (``core/unschedulable.py``): a message at once on the job, and after
  ``unschedulable_task_timeout_s`` (60 s by default) it fails, naming what is missing.
  Ray would wait for ever, for its autoscaler; a node with the resources that joins in
  time (``rayipy start --address ... --resources``, ``adapt``) still takes it.

Pure: the head passes the scheduler's ``nodes`` and the time in. One head thread.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable, Mapping, NamedTuple

from rayipy.core.state import Node, Request
from rayipy.core.unschedulable import (DEFAULT_TIMEOUT_S, UnschedulableWatch, failure_text,
                                       missing_resources)

# Ray's submit_job keywords for the driver's resources, and the scheduler's names for them.
ENTRYPOINT_KEYWORDS = {"entrypoint_num_cpus": "CPU", "entrypoint_num_gpus": "GPU",
                       "entrypoint_memory": "memory"}
STANDARD = frozenset(ENTRYPOINT_KEYWORDS.values())


class Hold(NamedTuple):
    """What a placed job holds: on which node, how much, which GPU devices."""
    node_id: bytes
    request: Request
    gpu_ids: tuple[str, ...]


def _amount(value: Any) -> bool:
    """A finite number >= 0, not a bool."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return False
    amount = float(value)
    return math.isfinite(amount) and amount >= 0


def entrypoint_amounts(num_cpus: Any = None, num_gpus: Any = None, memory: Any = None,
                       resources: Any = None) -> dict[str, float]:
    """Ray's four ``entrypoint_*`` arguments checked, as one dict of resource name ->
    amount (zero amounts left out); a clear error for bad ones."""
    amounts: dict[str, float] = {}
    for keyword, value in (("entrypoint_num_cpus", num_cpus), ("entrypoint_num_gpus", num_gpus),
                           ("entrypoint_memory", memory)):
        if value is None:
            continue
        if not _amount(value):
            unit = "a number of bytes" if keyword == "entrypoint_memory" else "a number"
            raise ValueError(f"{keyword} must be {unit} >= 0, got {value!r}")
        if value:
            amounts[ENTRYPOINT_KEYWORDS[keyword]] = float(value)
    if resources is not None:
        if not isinstance(resources, dict):
            raise ValueError(f"entrypoint_resources must be a dict of resource name -> amount, "
                             f"e.g. {{'special': 1}}, got {resources!r}")
        for name, value in resources.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"entrypoint_resources names are strings, got {name!r}")
            if name in STANDARD:
                keyword = next(k for k, v in ENTRYPOINT_KEYWORDS.items() if v == name)
                raise ValueError(f"entrypoint_resources cannot name {name!r}: use {keyword}=")
            if not _amount(value):
                raise ValueError(f"entrypoint_resources[{name!r}] must be a number >= 0, got "
                                 f"{value!r}")
            if value:
                amounts[name] = float(value)
    return amounts


def request_of(amounts: Mapping[str, Any]) -> Request:
    """The scheduler's form of a job's amounts (sorted, zeros left out), checked again:
    the head gets them from the network."""
    if not isinstance(amounts, Mapping):
        raise ValueError(f"a job's resources are a dict of name -> amount, got {amounts!r}")
    custom = {k: v for k, v in amounts.items() if k not in STANDARD}
    checked = entrypoint_amounts(amounts.get("CPU"), amounts.get("GPU"), amounts.get("memory"),
                                 custom)
    return tuple(sorted(checked.items()))


def describe(request: Request) -> str:
    """"CPU=1, special=1", for messages."""
    return ", ".join(f"{name}={amount:g}" for name, amount in request) or "nothing"


def default_node(nodes: Mapping[bytes, Node], head_ip: str) -> Node | None:
    """Where a job that asks for nothing runs: the head's node, else any live node."""
    live = [n for n in nodes.values() if not n.leaving]
    return next((n for n in live if n.info.get("ip") == head_ip), live[0] if live else None)


def choose_node(request: Request, nodes: Mapping[bytes, Node], head_ip: str) -> Node | None:
    """A live node whose free resources cover ``request``: the head's node if it does (as
    a job without a request runs there), else the least loaded; None if none does now."""
    if not request:
        return default_node(nodes, head_ip)
    fitting = [n for n in nodes.values() if not n.leaving and n.fits(request)]
    if not fitting:
        return None
    return min(fitting, key=lambda n: (n.info.get("ip") != head_ip, n.load()))


class JobPlacement:
    """The jobs' holds on nodes, and the clock of the jobs no live node could ever run."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.held: dict[str, Hold] = {}
        self.watch = UnschedulableWatch(timeout)

    def hold(self, submission_id: str, node: Node, request: Request) -> Hold:
        """Take ``request`` from ``node`` for the job (GPUs by device, as tasks do)."""
        node.take(request)
        gpus = dict(request).get("GPU", 0.0)
        gpu_ids = node.assign_gpus(gpus) if gpus and node.gpu_free else ()
        held = self.held[submission_id] = Hold(node.node_id, request, gpu_ids)
        return held

    def release(self, submission_id: str, nodes: Mapping[bytes, Node]) -> bool:
        """The job's process ended: give its resources back to its node (if still there);
        whether something went back (the caller then dispatches waiting work)."""
        held = self.held.pop(submission_id, None)
        if held is None:
            return False
        node = nodes.get(held.node_id)
        if node is None or node.leaving:
            return False   # a lost node's resources are gone with it
        node.take(held.request, -1)
        if held.gpu_ids:
            node.release_gpus(held.gpu_ids, dict(held.request).get("GPU", 0.0))
        return True

    def place_waiting(self, waiting: Iterable[tuple[str, Request]], nodes: Mapping[bytes, Node],
                      head_ip: str) -> list[tuple[str, Hold]]:
        """Hold resources for the waiting jobs that fit somewhere now, in the order given
        (oldest first); the ones placed, with their holds."""
        placed = []
        for submission_id, request in waiting:
            node = choose_node(request, nodes, head_ip)
            if node is not None:
                placed.append((submission_id, self.hold(submission_id, node, request)))
        return placed

    def check(self, now: float, waiting: Iterable[tuple[str, Request]],
              nodes: Mapping[bytes, Node]) -> dict[str, str]:
        """The waiting jobs that no live node could ever hold and that have waited the
        timeout: job -> why it fails now."""
        waiting = list(waiting)
        live = [n for n in nodes.values() if not n.leaving]
        verdict = self.watch.check(now, (r for _, r in waiting),
                                   lambda r: any(n.could_ever_fit(r) for n in live))
        failing = set(verdict.fail)
        return {submission_id: failure_text(f"job {submission_id!r}", request,
                                            missing_resources(request, nodes),
                                            now - verdict.waited[request])
                for submission_id, request in waiting if request in failing}

    def waiting_message(self, request: Request, nodes: Mapping[bytes, Node]) -> str:
        """What a waiting job's status message says (the same while nothing changes, so
        the record is not rewritten every turn)."""
        if any(n.could_ever_fit(request) for n in nodes.values() if not n.leaving):
            return (f"Job is waiting for a node with {describe(request)} free (its entrypoint "
                    f"resources, held while it runs).")
        timeout = self.watch.timeout
        then = (f"it fails after {timeout:g} s (unschedulable_task_timeout_s) unless one joins"
                if math.isfinite(timeout) else "it waits until one joins")
        return (f"Job is waiting for a node with {describe(request)}, but no live node has "
                f"{missing_resources(request, nodes)}: {then}. Add a node that has them "
                f"(`rayipy start --address ... --resources`), or lower the request.")

    @staticmethod
    def env_vars(held: Hold) -> dict[str, str]:
        """What the job's process is told of its holding: the GPU devices it may use."""
        return {"CUDA_VISIBLE_DEVICES": ",".join(held.gpu_ids)} if held.gpu_ids else {}
