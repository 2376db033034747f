"""Pure: the head's durable state, as an append-only journal of records.

When the head dies, its workers, agents and drivers live on; what would be lost is what
only the head knew. A restarted head replays its journal (``node/head_store.py`` keeps
the file) and gets back:

- its identity: the cluster id and the KDF salt (so the key its peers hold still works);
- the function table's ids (the bytes are kept beside the journal, one file each,
  content-addressed: a function is written once however often it is used);
- every actor's creation spec, its name and whether it has died (``DurableActor``): a
  worker that re-registers saying it hosts an actor gets it back, and names resolve;
- every placement group's creation (bundles, strategy, name, creator, detached), the
  nodes its bundles were last placed on, and its removal (``DurableGroup``): it is
  placed again on those nodes once they are back (``core/placement_scheduling.py``);
- the job records (``core/jobs.py``), as their fields.

Not in the journal, because their holders still have them and give them back: the
tasks the head held (their owners send those with retries left again,
``OwnerState.head_restarted``; duplicates: ``core/head_recovery.py``) and the leases
(their holders name them when they register again, ``LeaseScheduling.leases_declared``).
Lost: the dashboard's task history and the cluster's counts (see ``docs/cluster.md``,
"If the head dies").

The file is a header (``MAGIC``, then the version as 4 bytes little-endian) and records,
each ``length (4 bytes) | crc32 (4 bytes) | pickle of a tuple``. A record cut short by a
crash mid-write, or one whose checksum fails, ends the replay there (what came before
stands). The head writes only its own plain records (tuples of bytes, str, numbers,
dicts and ``TaskSpec``s it received), and reads back only its own file (0600, in its
private directory). Version 2 added the placement group records; a version 1 journal
is read as it is (it has none), and rewritten as version 2.

Records (the first field names the kind)::

    ("cluster", cluster_id: str, salt: bytes)
    ("function", function_id: bytes)
    ("actor", actor_id: bytes, creation: TaskSpec)
    ("actor_name", actor_id: bytes, namespace: str, name: str)
    ("actor_dead", actor_id: bytes, why: str)
    ("group", group_id: bytes, bundles: list[dict], strategy: str, name: str,
     owner: bytes, detached: bool)
    ("group_placed", group_id: bytes, nodes: list[bytes])   # bundle i on nodes[i]
    ("group_removed", group_id: bytes)
    ("job", submission_id: str, fields: dict)      # JobRecord's fields, all of them
    ("job_deleted", submission_id: str)

Tested without files in tests/unit/test_head_journal.py.
"""

from __future__ import annotations

import dataclasses
import pickle
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

from rayipy.core.jobs import JobRecord, JobTable

MAGIC = b"RAYIPYHJ"
JOURNAL_VERSION = 2
READABLE_VERSIONS = (1, 2)          # what ``decode`` reads; ``encode`` writes the last
HEADER = MAGIC + struct.pack("<I", JOURNAL_VERSION)
_PREFIX = struct.Struct("<II")      # length, crc32 of the pickle
MAX_RECORD_BYTES = 1 << 30          # a longer length is damage, not a record

Record = tuple[Any, ...]
KINDS = frozenset({"cluster", "function", "actor", "actor_name", "actor_dead", "group",
                   "group_placed", "group_removed", "job", "job_deleted"})


class JournalError(ValueError):
    """The journal cannot be read at all (not ours, or another version)."""


def encode(record: Record) -> bytes:
    """One record's bytes, to append to the journal."""
    if not isinstance(record, tuple) or not record or record[0] not in KINDS:
        raise ValueError(f"not a journal record: {record!r:.200}")
    data = pickle.dumps(record, protocol=5)
    return _PREFIX.pack(len(data), zlib.crc32(data)) + data


def decode(data: bytes) -> tuple[list[Record], int]:
    """The records of a whole journal file, and how many of its bytes they fill: a
    torn or damaged tail stops the reading there (the caller may cut the file back).

    Raises ``JournalError`` when the header is not a journal of this version."""
    if not data.startswith(MAGIC):
        raise JournalError("not a rayipy head journal (bad magic)")
    if len(data) < len(HEADER):
        raise JournalError("a rayipy head journal cut off in its header")
    (version,) = struct.unpack_from("<I", data, len(MAGIC))
    if version not in READABLE_VERSIONS:
        raise JournalError(f"a rayipy head journal of version {version}; this rayipy reads "
                           f"versions {', '.join(map(str, READABLE_VERSIONS))}")
    records: list[Record] = []
    at = len(HEADER)
    while at + _PREFIX.size <= len(data):
        length, crc = _PREFIX.unpack_from(data, at)
        start = at + _PREFIX.size
        if length > MAX_RECORD_BYTES or start + length > len(data):
            break
        body = data[start:start + length]
        if zlib.crc32(body) != crc:
            break
        try:
            record = pickle.loads(body)
        except Exception:
            break
        if not isinstance(record, tuple) or not record or record[0] not in KINDS:
            break
        records.append(record)
        at = start + length
    return records, at


@dataclass
class DurableActor:
    """An actor as the journal keeps it."""

    creation: Any                 # its creation TaskSpec
    name: str = ""
    namespace: str = ""
    dead: str = ""                # why it died ("" while alive)


@dataclass
class DurableGroup:
    """A placement group as the journal keeps it."""

    bundles: list[dict[str, float]]
    strategy: str
    name: str
    owner: bytes                   # the process that created it
    detached: bool
    nodes: list[bytes] | None = None   # where its bundles were last placed

    def recovered(self, group_id: bytes) -> tuple[Any, ...]:
        """As ``PlacementScheduling.recover_groups`` takes it."""
        return (group_id, self.bundles, self.strategy, self.name, self.owner, self.detached,
                self.nodes)


@dataclass
class DurableState:
    """What the journal says; ``apply`` one record at a time."""

    cluster_id: str = ""
    salt: bytes = b""
    functions: set[bytes] = field(default_factory=set)
    actors: dict[bytes, DurableActor] = field(default_factory=dict)
    groups: dict[bytes, DurableGroup] = field(default_factory=dict)   # live ones
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def apply(self, record: Record) -> None:
        """Take one record into the state (a record about an unknown actor is ignored)."""
        kind = record[0]
        if kind == "cluster":
            self.cluster_id, self.salt = record[1], record[2]
        elif kind == "function":
            self.functions.add(record[1])
        elif kind == "actor":
            self.actors[record[1]] = DurableActor(record[2])
        elif kind == "actor_name":
            actor = self.actors.get(record[1])
            if actor is not None:
                actor.namespace, actor.name = record[2], record[3]
        elif kind == "actor_dead":
            actor = self.actors.get(record[1])
            if actor is not None:
                actor.dead = record[2] or "it died"
        elif kind == "group":
            self.groups[record[1]] = DurableGroup(list(record[2]), record[3], record[4],
                                                  record[5], record[6])
        elif kind == "group_placed":
            group = self.groups.get(record[1])
            if group is not None and len(record[2]) == len(group.bundles):
                group.nodes = list(record[2])
        elif kind == "group_removed":
            self.groups.pop(record[1], None)
        elif kind == "job":
            self.jobs[record[1]] = dict(record[2])
        elif kind == "job_deleted":
            self.jobs.pop(record[1], None)

    def records(self) -> list[Record]:
        """The fewest records that rebuild this state without its dead actors and
        removed groups: what a compacted journal holds."""
        out: list[Record] = []
        if self.cluster_id:
            out.append(("cluster", self.cluster_id, self.salt))
        out.extend(("function", f) for f in sorted(self.functions))
        for actor_id, actor in self.actors.items():
            if actor.dead:
                continue
            out.append(("actor", actor_id, actor.creation))
            if actor.name:
                out.append(("actor_name", actor_id, actor.namespace, actor.name))
        for group_id, group in self.groups.items():
            out.append(("group", group_id, group.bundles, group.strategy, group.name,
                        group.owner, group.detached))
            if group.nodes is not None:
                out.append(("group_placed", group_id, group.nodes))
        out.extend(("job", job_id, fields) for job_id, fields in self.jobs.items())
        return out

    def live_actors(self) -> dict[bytes, DurableActor]:
        """The actors not known to have died."""
        return {a: actor for a, actor in self.actors.items() if not actor.dead}


def replay(data: bytes) -> tuple[DurableState, int]:
    """The state a journal's bytes describe, and the length of its sound part."""
    records, end = decode(data)
    state = DurableState()
    for record in records:
        state.apply(record)
    return state, end


def job_record(record: JobRecord) -> Record:
    """The journal record of a job's current state."""
    return ("job", record.submission_id, dataclasses.asdict(record))


def restore_jobs(table: JobTable, jobs: dict[str, dict[str, Any]]) -> None:
    """Put the journal's job records back into ``table`` (fields a newer head added and
    this one does not know are dropped)."""
    names = {f.name for f in dataclasses.fields(JobRecord)}
    for job_id, fields in jobs.items():
        table.jobs[job_id] = JobRecord(**{k: v for k, v in fields.items() if k in names})


def jobs_after_restart(table: JobTable, live_nodes: set[bytes], why: str, now: float) -> list[str]:
    """Jobs the journal says were running on nodes that did not come back: they failed
    (their processes went with their node). Returns their ids."""
    lost: list[str] = []
    for node_id in {r.node_id for r in table.jobs.values()} - live_nodes:
        lost.extend(table.node_lost(node_id, why, now))
    return lost


@dataclass(frozen=True)
class Recovery:
    """The recovery merge's answer: which journal actors got their worker back."""

    bound: dict[bytes, bytes]         # actor id -> the worker that reported it
    unknown: dict[bytes, bytes]       # worker id -> an actor id the journal does not have
    missing: list[bytes]              # live journal actors no worker reported


def merge(actors: dict[bytes, DurableActor], reports: dict[bytes, bytes]) -> Recovery:
    """Match the workers' reports (worker id -> the actor it hosts) with the journal's
    live actors. An actor reported by two workers (cannot happen: an actor has one
    worker; a restart kills the old one first) keeps the first report."""
    bound: dict[bytes, bytes] = {}
    unknown: dict[bytes, bytes] = {}
    for worker_id, actor_id in reports.items():
        actor = actors.get(actor_id)
        if actor is None or actor.dead or actor_id in bound:
            unknown[worker_id] = actor_id
        else:
            bound[actor_id] = worker_id
    missing = [a for a, actor in actors.items() if not actor.dead and a not in bound]
    return Recovery(bound, unknown, missing)
