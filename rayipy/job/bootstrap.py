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
connection file). A failure here ends the job FAILED before it ran, the reason in its
log.
"""

from __future__ import annotations

import os
import signal
import sys

from rayipy.core.object_ref import _rebuild_ref
from rayipy.job.link import close_runtime, open_runtime
from rayipy.job.package import unpack
from rayipy.node import lifetime

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
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv("/bin/sh", ["/bin/sh", "-c", entrypoint])
    return 127   # not reached


if __name__ == "__main__":
    sys.exit(main())
