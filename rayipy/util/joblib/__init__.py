"""``rayipy.util.joblib``: run joblib's batches as rayipy tasks.

    from rayipy.util.joblib import register_rayipy
    register_rayipy()
    with joblib.parallel_config(backend="rayipy"):
        ...

joblib is imported only by ``register_rayipy``, so rayipy works without it.
"""

from __future__ import annotations


def register_rayipy() -> None:
    """Register the ``"rayipy"`` backend with joblib (ImportError if joblib is missing)."""
    try:
        import joblib
    except ImportError as error:
        raise ImportError("rayipy.util.joblib needs joblib: pip install joblib") from error
    from rayipy.util.joblib.backend import RayipyBackend
    joblib.register_parallel_backend("rayipy", RayipyBackend)


__all__ = ["register_rayipy"]
