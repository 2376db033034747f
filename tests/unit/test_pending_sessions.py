"""The head's answers to HELLO (``transport/pending_sessions.py``), pure: a repeated HELLO
is answered only after a wait that doubles, a new nonce makes a new session, and the
identities waiting are bounded."""

from __future__ import annotations

import pytest

from rayipy.transport.pending_sessions import (HELLO_RESEND_SECONDS, HelloAnswer,
                                               PendingSessions)

A, B = b"a" * 8, b"b" * 8
N1, N2 = b"1" * 32, b"2" * 32


def answered(pending: PendingSessions[str], identity: bytes, nonce: bytes, now: float) -> str:
    """Play the endpoint's part: what was sent for this HELLO."""
    answer = pending.on_hello(identity, nonce, now)
    if answer is HelloAnswer.NEW:
        pending.add(identity, f"session@{now}", "1.2.3.4", nonce, b"challenge@%f" % now, now)
    return answer.value


def test_the_first_hello_is_answered_and_its_session_kept():
    pending: PendingSessions[str] = PendingSessions()
    assert answered(pending, A, N1, 0.0) == "new"
    entry = pending.get(A)
    assert entry is not None and entry.session == "session@0.0" and entry.answers == 1
    assert A in pending and len(pending) == 1
    assert pending.take(A) is entry and A not in pending and pending.take(A) is None


def test_a_flood_of_hellos_gets_a_handful_of_answers():
    pending: PendingSessions[str] = PendingSessions(first_wait=0.5, max_wait=60.0)
    answers = [answered(pending, A, N1, i * 0.001) for i in range(100_000)]   # 100 s
    sent = [a for a in answers if a != "ignore"]
    # at 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5, 63.5 s: the waits double up to 60 s
    assert sent == ["new"] + ["again"] * 7
    assert pending.ignored == 100_000 - 8
    entry = pending.get(A)
    assert entry is not None and entry.session == "session@0.0"   # never replaced


def test_a_new_nonce_is_a_new_session_but_waits_its_turn_too():
    pending: PendingSessions[str] = PendingSessions(first_wait=0.5)
    assert answered(pending, A, N1, 0.0) == "new"
    assert answered(pending, A, N2, 0.1) == "ignore"     # too soon: nothing replaced
    assert pending.get(A).session == "session@0.0"        # type: ignore[union-attr]
    assert answered(pending, A, N2, 0.6) == "new"        # a DEALER that reconnected
    entry = pending.get(A)
    assert entry is not None and entry.session == "session@0.6" and entry.answers == 2


def test_a_dealer_resending_its_hello_is_answered_at_its_first_resend():
    """The client's wait is above the head's first wait: a lost first CHALLENGE costs
    one resend interval."""
    pending: PendingSessions[str] = PendingSessions()
    assert answered(pending, A, N1, 0.0) == "new"
    assert answered(pending, A, N1, HELLO_RESEND_SECONDS) == "again"


def test_identities_are_bounded_the_oldest_goes():
    pending: PendingSessions[str] = PendingSessions(limit=3)
    for i in range(5):
        answered(pending, bytes([i]) * 8, N1, float(i))
    assert len(pending) == 3 and bytes([0]) * 8 not in pending and bytes([4]) * 8 in pending
    assert answered(pending, B, N1, 10.0) == "new" and len(pending) == 3


def test_bad_settings_are_refused():
    for kwargs in ({"limit": 0}, {"first_wait": -1.0}, {"first_wait": 2.0, "max_wait": 1.0}):
        with pytest.raises(ValueError):
            PendingSessions(**kwargs)   # type: ignore[arg-type]
