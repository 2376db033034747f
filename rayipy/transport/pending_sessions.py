"""The head's answers to HELLO: which identities wait for their first signed message,
and when a repeated HELLO is answered again. Pure: the caller passes the time and
makes the sessions.

Every CHALLENGE the head sends toward a peer goes into ZeroMQ's queue for it, and that
queue has no bound (``endpoint.py`` says why: a slow legitimate peer must not block or
lose messages). A stranger that sends HELLO after HELLO and never reads would make the
head queue one CHALLENGE per HELLO, without end. So, per identity (one ZeroMQ
connection; libzmq refuses a second one with the same identity):

- the first HELLO is answered at once, and its session waits here for the peer's first
  signed message;
- a repeated HELLO replaces nothing and is not answered until a wait has passed since
  the last answer, a wait that doubles with each answer (``FIRST_WAIT_SECONDS`` up to
  ``MAX_WAIT_SECONDS``). Then it is answered again: with the same CHALLENGE if the
  HELLO carries the same nonce (the session stays), or with a new session if the nonce
  is new (a DEALER that reconnected);
- at most ``MAX_PENDING_SESSIONS`` identities wait at once; past that the oldest goes.

A legitimate DEALER needs one answer per connection, and resends the same HELLO (same
nonce) every ``HELLO_RESEND_SECONDS`` until one comes (``Endpoint.check_link``), so a
lost HELLO or a head that was away costs it about a second. A peer that never reads
gets seven CHALLENGEs in its first minute, then one per ``MAX_WAIT_SECONDS`` (about
100 bytes a minute), instead of one per HELLO.
"""

from __future__ import annotations

import collections
import enum
from dataclasses import dataclass
from typing import Generic, TypeVar

MAX_PENDING_SESSIONS = 1024   # HELLOs answered whose sender has not signed anything yet
FIRST_WAIT_SECONDS = 0.5      # before a repeated HELLO is answered again; doubles each time
MAX_WAIT_SECONDS = 60.0
#: How long a DEALER waits for the CHALLENGE before it sends its HELLO again: above
#: FIRST_WAIT_SECONDS, so that its first resend is answered.
HELLO_RESEND_SECONDS = 1.0

S = TypeVar("S")   # what the caller keeps per pending identity (its session)


class HelloAnswer(enum.Enum):
    """What to do with a HELLO."""
    NEW = "new"          # make a session for this nonce and send its CHALLENGE
    AGAIN = "again"      # send the CHALLENGE of the pending session again (same nonce)
    IGNORE = "ignore"    # answer nothing: too soon after the last answer


@dataclass
class Pending(Generic[S]):
    """One identity's pending session and how it was answered."""
    session: S
    address: str           # where its HELLO came from (for the failure throttle)
    peer_nonce: bytes      # the nonce of the HELLO it answers
    challenge: bytes       # the CHALLENGE payload sent (sent again as it was)
    answers: int           # CHALLENGEs sent to this identity while it was pending
    answered_at: float


class PendingSessions(Generic[S]):
    """Identities that said HELLO and have not signed a message yet (the ROUTER's thread)."""

    def __init__(self, limit: int = MAX_PENDING_SESSIONS,
                 first_wait: float = FIRST_WAIT_SECONDS,
                 max_wait: float = MAX_WAIT_SECONDS) -> None:
        if limit < 1 or first_wait < 0 or max_wait < first_wait:
            raise ValueError("need limit >= 1 and 0 <= first_wait <= max_wait")
        self.limit = limit
        self.first_wait = first_wait
        self.max_wait = max_wait
        self._entries: collections.OrderedDict[bytes, Pending[S]] = collections.OrderedDict()
        self.ignored = 0      #: repeated HELLOs not answered, ever

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, identity: object) -> bool:
        return identity in self._entries

    def get(self, identity: bytes) -> Pending[S] | None:
        return self._entries.get(identity)

    def wait_after(self, answers: int) -> float:
        """How long after its last answer an identity answered ``answers`` times is
        answered again."""
        if answers < 1:
            return 0.0
        wait: float = self.first_wait * 2.0 ** min(answers - 1, 32)
        return min(wait, self.max_wait)

    def on_hello(self, identity: bytes, peer_nonce: bytes, now: float) -> HelloAnswer:
        """What to do with a HELLO carrying ``peer_nonce`` from ``identity``; AGAIN
        counts as an answer sent (``add`` counts a NEW one)."""
        entry = self._entries.get(identity)
        if entry is None:
            return HelloAnswer.NEW
        if now - entry.answered_at < self.wait_after(entry.answers):
            self.ignored += 1
            return HelloAnswer.IGNORE
        if peer_nonce != entry.peer_nonce:
            return HelloAnswer.NEW
        entry.answers += 1
        entry.answered_at = now
        return HelloAnswer.AGAIN

    def add(self, identity: bytes, session: S, address: str, peer_nonce: bytes,
            challenge: bytes, now: float) -> None:
        """A NEW answer sent: keep its session, in place of the identity's previous one
        (its count of answers carries on), the oldest identity going past the limit."""
        previous = self._entries.pop(identity, None)
        answers = 1 if previous is None else previous.answers + 1
        self._entries[identity] = Pending(session, address, peer_nonce, challenge, answers, now)
        while len(self._entries) > self.limit:
            self._entries.popitem(last=False)

    def take(self, identity: bytes) -> Pending[S] | None:
        """Forget the identity's pending session (its first message checked), and give it."""
        return self._entries.pop(identity, None)
