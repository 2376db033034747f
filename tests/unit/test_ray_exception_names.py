"""Every exception class Ray 2.60 has in ``ray.exceptions`` exists in rayipy's, so a
program that names one in an ``except`` clause runs (an ``except`` evaluates its class
only when something is raised: a missing name would crash there, at the worst time).
The list was read from Ray 2.60; the bases that matter for catching are kept."""

from __future__ import annotations

import pytest

from rayipy import exceptions

RAY_260 = ["RayError", "CrossLanguageError", "TaskCancelledError", "RayTaskError",
           "LocalRayletDiedError", "WorkerCrashedError", "RayActorError", "ActorDiedError",
           "ActorUnavailableError", "RaySystemError", "AuthenticationError",
           "ObjectStoreFullError", "OutOfDiskError", "OutOfMemoryError", "NodeDiedError",
           "ObjectLostError", "ObjectFetchTimedOutError", "RpcError",
           "ReferenceCountingAssertionError", "ObjectFreedError", "OwnerDiedError",
           "ObjectReconstructionFailedError", "GetTimeoutError", "AsyncioActorExit",
           "RuntimeEnvSetupError", "TaskPlacementGroupRemoved", "ActorPlacementGroupRemoved",
           "PendingCallsLimitExceeded", "TaskUnschedulableError", "ActorUnschedulableError",
           "ObjectRefStreamEndOfStreamError", "UnserializableException",
           "ActorAlreadyExistsError", "ActorHandleNotFoundError"]


@pytest.mark.parametrize("name", RAY_260)
def test_rays_exception_names_exist(name):
    cls = getattr(exceptions, name)
    assert isinstance(cls, type) and issubclass(cls, BaseException)
    assert issubclass(cls, exceptions.RayError)


@pytest.mark.parametrize("child, parent", [
    ("ActorDiedError", "RayActorError"), ("ActorUnavailableError", "RayActorError"),
    ("OwnerDiedError", "ObjectLostError"), ("ObjectFetchTimedOutError", "ObjectLostError"),
    ("ObjectFreedError", "ObjectLostError"), ("ObjectReconstructionFailedError", "ObjectLostError"),
    ("ActorAlreadyExistsError", "ValueError"), ("GetTimeoutError", "TimeoutError"),
])
def test_rays_hierarchy_is_kept_where_programs_catch_by_base(child, parent):
    base = getattr(exceptions, parent, None) or __builtins__[parent]
    assert issubclass(getattr(exceptions, child), base)
