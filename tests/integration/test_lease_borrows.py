"""A leased worker that dies leaves no borrow count behind at its lease holder.

While a worker runs a task on a lease (a direct call), a borrow it registers for a large
argument travels in that call's reply; its release goes through the head. A worker that
dies before replying sends the release only: unless its lease holder forgets the dead
worker's counts, the argument stays held for ever.
"""

from __future__ import annotations

import gc

import numpy as np

import rayipy
from rayipy.core.object_ref import current_runtime

from helpers import wait_until


@rayipy.remote
def total(array):
    return float(array.sum())


@rayipy.remote
def sum_but_die_first(array, marker):
    import os
    if not os.path.exists(marker):   # the first attempt dies once it has its argument
        open(marker, "w").close()
        os._exit(3)
    return float(array.sum())


def table_size() -> int:
    runtime = current_runtime()
    runtime.waker.wake()  # have the I/O thread process releases now
    return len(runtime.objects)


def settle() -> None:
    gc.collect()
    wait_until(lambda: table_size() == 0, timeout=10,
               message=f"objects still held: {current_runtime().objects.stats()}")


def test_a_leased_worker_dying_after_fetching_an_argument_leaves_nothing_held(cluster, tmp_path):
    settle()
    for _ in range(5):   # sequential calls: the driver holds a lease on a worker
        assert rayipy.get(total.remote(np.ones(4))) == 4.0
    result = sum_but_die_first.remote(np.ones(2**20), str(tmp_path / "died"))
    assert rayipy.get(result, timeout=60) == 2**20
    del result
    settle()
