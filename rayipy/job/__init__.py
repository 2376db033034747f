"""Jobs: a driver program run on the cluster by a node agent, outliving the client that
submitted it (Ray Jobs). ``JobClient`` is the Python side; ``rayipy job`` the command.

Modules: ``client`` (``JobClient``, ``JobStatus``, ``JobDetails``), ``package`` (the
working directory as a zip), ``link`` (the client's short-lived driver connection),
``runner`` (a node agent's job processes), ``bootstrap`` (the first program of a job's
process). The head's job records are pure, in ``rayipy.core.jobs``.
"""

from rayipy.job.client import JobClient, JobDetails, JobLogTail, JobStatus
from rayipy.job.package import PackageError

JobSubmissionClient = JobClient   # Ray's name

__all__ = ["JobClient", "JobDetails", "JobLogTail", "JobStatus", "JobSubmissionClient",
           "PackageError"]
