"""``rayipy.util.multiprocessing``: the stdlib's ``multiprocessing.Pool`` over the cluster.

    from rayipy.util.multiprocessing import Pool
    with Pool() as pool:
        print(pool.map(abs, range(-5, 5)))
"""

from rayipy.util.multiprocessing.pool import AsyncResult, IMapIterator, Pool, TimeoutError

__all__ = ["AsyncResult", "IMapIterator", "Pool", "TimeoutError"]
