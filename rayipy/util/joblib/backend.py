"""The joblib backend: joblib's batches run as calls on a ``rayipy.util.multiprocessing.Pool``.

It is joblib's own multiprocessing backend with rayipy's pool in place of the local
process pool (as Ray's ``ray.util.joblib`` does): joblib's auto-batching groups small
calls, each batch is one ``apply_async`` on a pool actor, and joblib's completion
callback runs on the pool's callback thread.

``n_jobs``: -1 means all of the cluster's CPUs (-2 all but one, and so on, as joblib
counts); a positive ``n_jobs`` larger than the cluster's CPUs is lowered to them, and
joblib reports that figure as the number of workers.
"""

from __future__ import annotations

from typing import Any

from joblib._parallel_backends import AutoBatchingMixin, ParallelBackendBase, PoolManagerMixin


# What joblib's Parallel hands every backend. They steer its memmapping of large arrays
# into a folder that local worker processes share; rayipy's tasks are on other processes
# and hosts, where arrays travel through the object store instead. So only joblib's
# defaults are taken (verbose is Parallel's own printing, context its local start method).
_MEMMAPPING_DEFAULTS = {"max_nbytes": (None, 1024 * 1024), "mmap_mode": (None, "r"),
                        "temp_folder": (None,)}
_PASSED_BY_JOBLIB = {"verbose", "context"}


def _check_memmapping_options(backend_kwargs: dict[str, Any]) -> None:
    for name, value in backend_kwargs.items():
        if name in _PASSED_BY_JOBLIB:
            continue
        if name not in _MEMMAPPING_DEFAULTS:
            raise TypeError(f"the rayipy joblib backend has no option {name!r}")
        if value not in _MEMMAPPING_DEFAULTS[name]:
            raise ValueError(f"{name}={value!r} is not supported by the rayipy joblib backend: "
                             f"it memmaps arrays for local processes only; large arguments "
                             f"reach rayipy's tasks through the object store. Leave {name} out")


class RayipyBackend(PoolManagerMixin, AutoBatchingMixin, ParallelBackendBase):
    """joblib's ``backend="rayipy"``; backend argument: ``ray_remote_args`` (the pool
    actors' options, default ``{"num_cpus": 1}``)."""

    supports_retrieve_callback = True
    supports_return_generator = False
    supports_timeout = True

    def __init__(self, nesting_level: int | None = None, inner_max_num_threads: int | None = None,
                 ray_remote_args: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if inner_max_num_threads is not None:
            raise ValueError("the rayipy joblib backend does not limit threads inside tasks "
                             "(inner_max_num_threads); set OMP_NUM_THREADS in the task instead")
        if kwargs:
            raise TypeError(f"the rayipy joblib backend takes only ray_remote_args, got "
                            f"{', '.join(sorted(kwargs))}")
        super().__init__(nesting_level=nesting_level)
        self._ray_remote_args = ray_remote_args

    def _cluster_cpus(self) -> int:
        import rayipy
        if not rayipy.is_initialized():
            rayipy.init()
        return max(1, int(rayipy.cluster_resources().get("CPU", 1)))

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """How many pool actors: -1 is every CPU of the cluster, never more than it has."""
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        per_actor = (self._ray_remote_args or {}).get("num_cpus", 1)
        cpus = self._cluster_cpus()
        limit = cpus if not per_actor else max(1, int(cpus // per_actor))
        wanted = cpus + 1 + n_jobs if n_jobs < 0 else n_jobs
        return max(1, min(wanted, limit))

    def configure(self, n_jobs: int | None = 1, parallel: Any = None, prefer: str | None = None,
                  require: str | None = None, **backend_kwargs: Any) -> int:
        """Start the pool; returns the number of its actors."""
        from rayipy.util.multiprocessing import Pool
        _check_memmapping_options(backend_kwargs)
        n_jobs = self.effective_n_jobs(n_jobs)
        self._pool = Pool(n_jobs, ray_remote_args=self._ray_remote_args)
        self.parallel = parallel
        return n_jobs

    def terminate(self) -> None:
        """Stop the pool's actors."""
        super().terminate()
        self.reset_batch_stats()
