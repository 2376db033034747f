"""A driver whose data port the workers cannot reach (behind NAT or a firewall): the large
results and values it waits for still arrive, through the head, not lost
(``DataPort._reroute_unwritten``)."""

from __future__ import annotations

import socket

import numpy as np

import rayipy
from rayipy.node import data_port
from rayipy.transport.stream import StreamListener

MB = 2**20


@rayipy.remote
def make(n_mb):
    return np.full(n_mb * MB // 8, 7.0)


@rayipy.remote
def put_in_a_task(n_mb):
    return [rayipy.put(np.ones(n_mb * MB // 8))]     # the worker owns it, and answers for it


def a_port_nobody_listens_on() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def test_large_results_and_values_go_through_the_head_when_the_driver_cannot_be_reached(
        fresh_cluster, monkeypatch):
    nobody = a_port_nobody_listens_on()

    class Unreachable(StreamListener):
        def __init__(self, ip, signer):
            super().__init__(ip, signer)
            self.address = f"tcp://127.0.0.1:{nobody}"    # what the workers are told

    monkeypatch.setattr(data_port, "StreamListener", Unreachable)
    fresh_cluster()
    values = rayipy.get([make.remote(3) for _ in range(3)], timeout=60)
    assert [float(v.sum()) for v in values] == [7.0 * 3 * MB / 8] * 3
    (held_by_a_worker,) = rayipy.get(put_in_a_task.remote(3), timeout=60)
    assert float(rayipy.get(held_by_a_worker, timeout=60).sum()) == 3 * MB / 8
