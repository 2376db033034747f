"""The first program of a job's process: fetch the working directory, then become the job.

A node agent starts ``python -m rayipy.job.bootstrap ENTRYPOINT`` in the job's directory
(``runner.py``), with the cluster key in ``RAYIPY_CLUSTER_KEY`` and the job's id and
package in ``RAYIPY_JOB_ID`` and ``RAYIPY_JOB_PACKAGE``. It connects to the head as a
driver, gets the package (an object the submitting client put: it comes from the
client's node store or data port, never through the head), unpacks it into
``working_dir/``, tells the head the job runs (PENDING -> RUNNING), leaves, and replaces
itself with ``/bin/sh -c ENTRYPOINT`` (``exec``: same pid, same process group, so the
agent's stop reaches it). The key is removed from the environment first: the entrypoint
finds the cluster as any program on this machine does (``$RAYIPY_ADDRESS`` and the
connection file). A cluster with no connection file here (a local cluster that
``rayipy.init()`` started in a notebook) gives the entrypoint its key in
``$RAYIPY_JOB_CLUSTER_KEY`` instead, which ``init`` takes with ``$RAYIPY_ADDRESS``
(``connection.resolve``). A failure here ends the job FAILED before it ran, the reason
in its log.
"""

from __future__ import annotations

import os
import signal
import sys

from rayipy.core.object_ref import _rebuild_ref
from rayipy.job.link import close_runtime, open_runtime
from rayipy.job.package import unpack
from rayipy.node import connection, lifetime

KEY_ENV = "RAYIPY_CLUSTER_KEY"
JOB_ID_ENV = "RAYIPY_JOB_ID"
PACKAGE_ENV = "RAYIPY_JOB_PACKAGE"
FETCH_TIMEOUT = 300.0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m rayipy.job.bootstrap ENTRYPOINT", file=sys.stderr)
        return 2
    entrypoint = args[0]
    # The agent stops jobs when it stops; this covers an agent that was killed. The
    # signal survives exec (it is cleared only for set-uid programs).
    lifetime.die_with_parent(signal.SIGTERM)
    key = bytes.fromhex(os.environ.pop(KEY_ENV))
    job_id = os.environ[JOB_ID_ENV]
    package = os.environ.pop(PACKAGE_ENV, "")
    runtime = open_runtime("tcp://" + os.environ["RAYIPY_ADDRESS"], key, keep_current=False)
    try:
        if package:
            ref = _rebuild_ref(bytes.fromhex(package))
            (data,) = runtime.get_values([ref], timeout=FETCH_TIMEOUT)
            del ref
            os.chdir(unpack(data, "working_dir"))
        runtime.request("job_running", job_id, timeout=10.0)
    finally:
        close_runtime(runtime)
    if not _connection_file_knows(os.environ[connection.ADDRESS_ENV]):
        os.environ[connection.JOB_KEY_ENV] = key.hex()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv("/bin/sh", ["/bin/sh", "-c", entrypoint])
    return 127   # not reached


def _connection_file_knows(address: str) -> bool:
    """Whether this machine's connection file gives ``init`` the key for ``address``."""
    try:
        info = connection.read_cluster_file()
        host, port = connection.parse_address(address)
        return info is not None and connection.same_address(info.address, host, port)
    except Exception:   # an unreadable file: the entrypoint gets the key from us
        return False


if __name__ == "__main__":
    sys.exit(main())
