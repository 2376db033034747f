"""The ZeroMQ handshake under strain, over real sockets in this process: a HELLO flood
from a peer that never reads costs the head a bounded amount of memory, and a DEALER
whose HELLO was lost says it again and connects."""

from __future__ import annotations

import os
import time

import psutil
import zmq

from rayipy.protocol.kinds import Kind
from rayipy.protocol.wire import NONCE_BYTES, Signer, encode_unsigned, wish_byte
from rayipy.transport.endpoint import Endpoint
from rayipy.transport.pending_sessions import HELLO_RESEND_SECONDS

KEY = b"k" * 32
FLOOD_HELLOS = 200_000
#: Memory the process may gain while the head takes the flood. Without the bound it
#: queued one CHALLENGE per HELLO toward the peer: 30 MiB for this flood.
GROWTH_LIMIT = 16 * 2**20


def drain(router: Endpoint) -> int:
    """Let the ROUTER handle everything waiting; how many messages it read."""
    count = 0
    while router.socket.poll(0, zmq.POLLIN):
        router.recv_raw()
        count += 1
    return count


def test_a_hello_flood_from_a_peer_that_never_reads_is_bounded():
    context = zmq.Context()
    router = Endpoint(context, zmq.ROUTER, Signer(KEY))
    flooder = context.socket(zmq.DEALER)
    try:
        flooder.setsockopt(zmq.LINGER, 0)
        flooder.setsockopt(zmq.IDENTITY, b"flooder!")
        flooder.setsockopt(zmq.RCVHWM, 1)          # it never reads: keep nothing for it
        flooder.setsockopt(zmq.RCVBUF, 4096)
        flooder.connect(router.bind("tcp://127.0.0.1:0"))
        hellos = [encode_unsigned(Kind.HELLO, os.urandom(NONCE_BYTES) + wish_byte(False))
                  for _ in range(16)]                # some the same, some new nonces
        process = psutil.Process()
        sent = read = 0
        base = 0
        deadline = time.monotonic() + 120
        while read < FLOOD_HELLOS:
            assert time.monotonic() < deadline, f"only {read} HELLOs read"
            while sent < FLOOD_HELLOS and sent - read < 2000:
                try:
                    flooder.send_multipart(hellos[sent % len(hellos)], zmq.NOBLOCK)
                except zmq.Again:
                    break
                sent += 1
            read += drain(router)
            if not base and read >= 2000:            # past the first allocations
                base = process.memory_info().rss
            router.socket.poll(10, zmq.POLLIN)
        growth = process.memory_info().rss - base
        answered = FLOOD_HELLOS - router.dropped["repeated hello"]
        print(f"\n{FLOOD_HELLOS} HELLOs, {answered} answered, RSS +{growth / 2**20:.1f} MiB")
        assert growth < GROWTH_LIMIT, f"the process grew by {growth / 2**20:.1f} MiB"
        assert answered <= 20, answered
        assert len(router._pending) == 1     # one identity: one pending session
    finally:
        flooder.close(0)
        router.close()
        context.term()


def test_a_dealer_whose_hello_was_lost_says_it_again_and_connects():
    context = zmq.Context()
    router = Endpoint(context, zmq.ROUTER, Signer(KEY))
    dealer = Endpoint(context, zmq.DEALER, Signer(KEY))
    try:
        dealer.connect(router.bind("tcp://127.0.0.1:0"))
        dealer.send(Kind.HEARTBEAT, ("held",))        # waits for the CHALLENGE
        assert router.socket.poll(5000, zmq.POLLIN), "no HELLO came"
        router.socket.recv_multipart()   # read and never answered: a head that lost it
        started = time.monotonic()
        got = None
        while got is None:
            assert time.monotonic() - started < 10 * HELLO_RESEND_SECONDS, \
                "the DEALER never said HELLO again"
            dealer.check_link()                       # what its I/O thread does each turn
            if router.socket.poll(20, zmq.POLLIN):
                _sender, message, _frames = router.recv_raw()
                if message is not None:
                    got = message
            if dealer.socket.poll(0, zmq.POLLIN):
                dealer.recv_raw()                     # the CHALLENGE: the held message leaves
        waited = time.monotonic() - started
        assert got.kind is Kind.HEARTBEAT and got.body == ("held",)
        assert dealer.ready and waited < 3 * HELLO_RESEND_SECONDS
        # A late answer to the first HELLO, or one to a resend, changes nothing.
        dealer.send(Kind.HEARTBEAT, ("after",))
        deadline = time.monotonic() + 5
        while True:
            assert router.socket.poll(int((deadline - time.monotonic()) * 1000) + 1, zmq.POLLIN)
            _sender, message, _frames = router.recv_raw()
            if message is not None:
                assert message.body == ("after",)
                break
    finally:
        dealer.close()
        router.close()
        context.term()


def test_a_dealer_waiting_for_its_head_keeps_one_hello_not_one_a_second():
    """While nothing listens, resending would only pile HELLOs up in the DEALER's queue
    (the head would get them all at once): it resends only on a live connection."""
    from rayipy.transport.endpoint import free_tcp_port
    context = zmq.Context()
    address = f"tcp://127.0.0.1:{free_tcp_port()}"
    dealer = Endpoint(context, zmq.DEALER, Signer(KEY))
    router = None
    try:
        dealer.connect(address)
        away_until = time.monotonic() + 2.5 * HELLO_RESEND_SECONDS
        while time.monotonic() < away_until:     # the head is away: the I/O thread turns
            dealer.check_link()
            time.sleep(0.05)                      # (its poll timeout)
        router = Endpoint(context, zmq.ROUTER, Signer(KEY))
        router.bind(address)
        assert router.socket.poll(5000, zmq.POLLIN), "no HELLO came"
        hellos = 0
        while router.socket.poll(300, zmq.POLLIN):   # what was queued comes all at once
            router.socket.recv_multipart()
            hellos += 1
        assert hellos == 1
    finally:
        dealer.close()
        if router is not None:
            router.close()
        context.term()
