"""The closed set of message kinds, one spelling each.

Bodies are plain Python data (tuples, bytes, str, numbers, and the NamedTuples of
``rayipy.protocol.messages``); the field list of each kind is written beside it.
``->`` names the usual direction.
"""

from enum import IntEnum


class Kind(IntEnum):
    # registration (the only kinds answered even when the signature fails: with AUTH_FAILED)
    REGISTER = 1          # any -> head: Registration
    WELCOME = 2           # head -> any: Welcome
    REFUSED = 3           # head -> any: (reason: str,)  e.g. protocol version mismatch
    AUTH_FAILED = 4       # head -> any, unsigned, empty body: the signature did not check

    HEARTBEAT = 5         # any <-> head: (); a worker's, for the dashboard: (running direct
                          #   call (task_id, name, since) | None, in_flight, {name: (done, failed, s)});
                          #   an agent's: (store summary, memory use {used, total, workers: {pid: rss}})
    SHUTDOWN = 6          # head -> agent/worker, driver -> head: (reason: str,); head -> a
                          # driver it dropped: (reason, what it lost: str)
    CHUNK = 7             # any -> any: a piece of a large message (protocol/bulk.py)
    HELLO = 8             # connecting side -> head, unsigned: its 32-byte nonce + its
                          #   encryption wish (1 byte), raw bytes
    CHALLENGE = 9         # head -> that side, unsigned: the head's nonce + the KDF salt +
                          #   its encryption wish (raw)

    # functions and tasks
    FUNCTION = 10         # owner -> head -> worker: (function_id, pickled function bytes)
    SUBMIT = 11           # owner -> head: (list[TaskSpec],)
    EXECUTE = 12          # head -> worker: (list[TaskSpec], list[(function_id, bytes)],
                          #   {owner id: owner's data address})
    TASK_DONE = 13        # worker -> head -> owner: (list[TaskResult],)
    CANCEL = 14           # owner -> head: (task_id, force, actor_id or None, leased worker or
                          #   None, recursive); head -> worker: (task_id, force, direct: sent
                          #   straight to the worker by its caller, recursive: cancel the
                          #   tasks it submitted too)
    BLOCKED = 15          # worker -> head: (returned: list[task_id],)   its task waits in get
    UNBLOCKED = 16        # worker -> head: ()
    STEAL = 17            # head -> worker: (count,)  give back up to count queued tasks
    RETURNED = 18         # worker -> head: (list[task_id],)  tasks given back, not started
    KILL_ACTOR = 19       # any -> head: (actor_id, why[, no_restart=True])

    # objects
    GET_OBJECT = 20       # borrower -> head: (object_id, requester); head -> owner: (object_id,
                          #   requester, requester's data address)
    OBJECT_VALUE = 21     # owner -> borrower's data port (or via the head when its address is
                          #   unknown): (object_id, ObjectValue, requester)
    BORROW = 22           # any -> head -> owner: (list[(object_id, delta)], borrower)

    # node agent
    SPAWN_WORKER = 30     # head -> agent: (count,)
    WORKER_DIED = 31      # agent -> head: (worker_id, exit code or -signal, reason)
    RETIRE_WORKER = 32    # head -> agent: (worker_id, kill: bool)
    NODE_LEAVING = 33     # agent -> head: (reason,)  this node stops: remove it now

    # driver requests answered by the head
    REQUEST = 40          # driver -> head: (request_id, name, args)
    REPLY = 41            # head -> driver: (request_id, ok, value)

    # output of tasks
    LOG = 50              # worker -> head -> owner: (owner, list[(stream, text, task name,
                          #   task id)], worker label); stream "warning": the head's own
                          #   word about one of the owner's tasks (it cannot be scheduled)

    # actor calls, straight from caller to the actor's worker (no head in between)
    LOCATE_ACTOR = 60     # caller -> head: (actor_id,)   answered by ACTOR_LOCATION
    ACTOR_LOCATION = 61   # head -> caller: (actor_id, address, why, restarting)
                          #   address "" and why set: the actor's worker is gone
    CALL = 62             # caller -> actor or leased worker: (list[TaskSpec], [(fid, bytes)])
    CALL_DONE = 63        # that worker -> caller: (list[TaskResult], borrows)
                          #   borrows: [(object_id, delta, borrower)] registered first

    # worker leases: a driver's tasks, one at a time, straight to a worker of its own
    LEASE_REQUEST = 64    # driver -> head: (resource request,)
    LEASE = 65            # head -> driver: (resource request, worker_id or b"", address)
    LEASE_RETURN = 66     # driver -> head: (worker_id,)
    LEASE_ENDED = 67      # head -> driver: (worker_id, why)  why "": give it back; else it died

    # large results, straight from the worker to the owner's data port
    RESULTS = 68          # worker -> owner: (worker_id, list[TaskResult])
    RESULTS_RECEIVED = 69 # owner -> head: (worker_id, [(task_id, duration, status)])  owner has
                          #   them: the head counts them finished only now, so a worker that
                          #   dies before they arrive has its tasks retried

    # the node's object store (rayipy/node/store_server.py), on its stream connections
    STORE_OPEN = 70       # client -> store: (request_id, process_id)  reply: (arena path,
                          #   arena size, node_id)
    STORE_CREATE = 71     # client -> store: (request_id, object_id, size, site)  reply:
                          #   (offset, size); offset None: it is there already
    STORE_SEAL = 72       # client -> store: (object_id,)  written: readers may map it
    STORE_ABORT = 73      # client -> store: (object_id,)  the writer gave up
    STORE_GET = 74        # client -> store: (request_id, object_id, source store address or
                          #   "", size)  reply: (offset, size), pinned for the client
    STORE_RELEASE = 75    # client -> store: (list[object_id],)  one view each is gone
    STORE_REPLY = 76      # store -> client: (request_id, ok, value, lost)
    STORE_READ = 77       # reader -> another node's store: (request_id, object_id)  answered
                          #   by STORE_DATA pieces, then STORE_REPLY (ok, size)
    STORE_DATA = 78       # store -> reader: (request_id, offset, bytes)
    STORE_LIST = 79       # any -> store: (request_id,)  reply: (summary, listing)
    FREE_OBJECTS = 80     # owner -> head -> every agent: (list[object_id],)  freed by their owner
    OWNER_GONE = 81       # head -> every agent: (process_id,)  its objects are unreachable
    OBJECT_COPY = 82      # reader -> head -> owner: (object_id, store address)  that store
                          #   pulled a copy: later readers may pull from it
    STORE_FREE = 83       # owner -> its node's store: (list[object_id],)  freed (the same as
                          #   FREE_OBJECTS, sooner: its memory serves the owner's next put)

    # generator tasks (rayipy/node/streams.py): values as the task yields them
    GENERATOR_ITEM = 90   # worker -> head -> owner, or on a direct call's connection:
                          #   (list[(TaskResult of one value, index from 1)], borrows
                          #   [(object_id, delta, borrower)] registered first); the value
                          #   is the object task id + 4-byte index; the task's own result
                          #   (its return object) is then the count of items it sent

    # runtime environments (rayipy/core/runtime_env.py)
    SPAWN_ENV_WORKER = 115  # head -> agent: (count, resolved runtime_env dict)  workers that
                            #   serve only tasks of that environment

    # jobs (`rayipy job`, rayipy/job/): a driver run by a node agent, outliving its client
    JOB_START = 120       # head -> agent: (submission_id, entrypoint, env_vars {str: str},
                          #   package object id hex or "", head address host:port)
    JOB_STOP = 121        # head -> agent: (submission_id,)  SIGTERM its process group, then
                          #   SIGKILL after the grace period
    JOB_EVENT = 122       # agent -> head: (submission_id, event, value): "started" pid,
                          #   "exited" (exit code or -signal, reason), "stopping" [pids]
    JOB_LOGS = 123        # head -> agent: (submission_id, offset, limit, requester, request_id)
    JOB_LOG_DATA = 124    # agent -> head: (requester, request_id, ok, (bytes, next offset,
                          #   ended) or error text); the head answers the request with it
