"""Ray's actor concurrency groups on a real cluster: each group runs on its own threads
(or event loop), so a busy group does not hold up another, and a group of size N runs at
most N calls at once. Calls block on files the test creates, never on sleeps."""

from __future__ import annotations

import asyncio
import pathlib
import threading
import time

import pytest

import rayipy

from helpers import wait_until

WAIT_SECONDS = 30.0


def wait_for_file(path: str) -> None:
    """In the actor: block this thread until ``path`` exists (a deadline, not a sleep)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not pathlib.Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.005)


async def await_file(path: str) -> None:
    """In an async actor: wait for ``path`` without blocking the event loop."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not pathlib.Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        await asyncio.sleep(0.005)


def not_ready(ref) -> bool:
    ready, _ = rayipy.wait([ref], timeout=0)
    return not ready


@rayipy.remote(concurrency_groups={"io": 1, "compute": 2})
class Threaded:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = {"io": 0, "compute": 0, "default": 0}
        self.most = dict(self.running)
        self.started = 0

    def _enter(self, group: str) -> None:
        with self.lock:
            self.started += 1
            self.running[group] += 1
            self.most[group] = max(self.most[group], self.running[group])

    def _leave(self, group: str) -> None:
        with self.lock:
            self.running[group] -= 1

    @rayipy.method(concurrency_group="io")
    def read(self, gate: str) -> str:
        self._enter("io")
        try:
            wait_for_file(gate)
        finally:
            self._leave("io")
        return "read"

    @rayipy.method(concurrency_group="compute")
    def work(self, gate: str) -> str:
        self._enter("compute")
        try:
            wait_for_file(gate)
        finally:
            self._leave("compute")
        return "worked"

    def ping(self) -> str:
        return "pong"

    def wait_here(self, gate: str) -> str:
        """In the default group unless the call says another."""
        wait_for_file(gate)
        return "waited"

    def stats(self) -> tuple[dict, dict, int]:
        with self.lock:
            return dict(self.running), dict(self.most), self.started


def test_a_blocked_group_does_not_block_the_default_group(cluster, tmp_path):
    actor = Threaded.remote()
    gate = str(tmp_path / "gate")
    reading = actor.read.remote(gate)
    wait_until(lambda: rayipy.get(actor.stats.remote())[0]["io"] == 1)
    # The default group (one thread: max_concurrency=1) still answers.
    assert rayipy.get(actor.ping.remote(), timeout=WAIT_SECONDS) == "pong"
    assert not_ready(reading)
    pathlib.Path(gate).touch()
    assert rayipy.get(reading, timeout=WAIT_SECONDS) == "read"


def test_a_group_of_size_two_runs_at_most_two_calls_at_once(cluster, tmp_path):
    actor = Threaded.remote()
    gate = str(tmp_path / "gate")
    refs = [actor.work.remote(gate) for _ in range(5)]
    wait_until(lambda: rayipy.get(actor.stats.remote())[0]["compute"] == 2)
    # Calls reach the actor in order: once this returns, all five were handed to the group.
    running, most, started = rayipy.get(actor.stats.remote())
    assert (running["compute"], most["compute"], started) == (2, 2, 2)
    pathlib.Path(gate).touch()
    assert rayipy.get(refs, timeout=WAIT_SECONDS) == ["worked"] * 5
    running, most, started = rayipy.get(actor.stats.remote())
    assert (running["compute"], most["compute"], started) == (0, 2, 5)


def test_a_call_can_choose_its_group_with_options(cluster, tmp_path):
    actor = Threaded.remote()
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    # Its own group "io" (size 1) is busy; the default group runs wait_here, which then
    # waits too: a default-group call now has no thread, an "io" one neither.
    reading = actor.read.remote(first)
    waiting = actor.wait_here.remote(second)
    wait_until(lambda: rayipy.get(actor.stats.options(concurrency_group="compute")
                                  .remote())[0]["io"] == 1)
    # In "compute" (free), a default-group method runs although the default group is busy.
    assert rayipy.get(actor.ping.options(concurrency_group="compute").remote(),
                      timeout=WAIT_SECONDS) == "pong"
    queued_in_io = actor.ping.options(concurrency_group="io").remote()
    assert rayipy.get(actor.ping.options(concurrency_group="compute").remote()) == "pong"
    assert not_ready(queued_in_io) and not_ready(waiting)
    pathlib.Path(first).touch()
    assert rayipy.get([reading, queued_in_io], timeout=WAIT_SECONDS) == ["read", "pong"]
    pathlib.Path(second).touch()
    assert rayipy.get(waiting, timeout=WAIT_SECONDS) == "waited"


@rayipy.remote(concurrency_groups={"io": 2, "blocking": 1})
class Async:
    def __init__(self) -> None:
        self.running = 0
        self.most = 0

    @rayipy.method(concurrency_group="io")
    async def fetch(self, gate: str) -> str:
        self.running += 1   # one event loop per group: no lock needed within "io"
        self.most = max(self.most, self.running)
        try:
            await await_file(gate)
        finally:
            self.running -= 1
        return "fetched"

    @rayipy.method(concurrency_group="blocking")
    async def hog(self, gate: str) -> str:
        wait_for_file(gate)   # blocks its whole event loop
        return "hogged"

    async def ping(self) -> str:
        return "pong"

    async def stats(self) -> tuple[int, int]:
        return self.running, self.most


def test_async_groups_have_their_own_event_loops_and_limits(cluster, tmp_path):
    actor = Async.remote()
    hog_gate, io_gate = str(tmp_path / "hog"), str(tmp_path / "io")
    hogging = actor.hog.remote(hog_gate)
    fetches = [actor.fetch.remote(io_gate) for _ in range(4)]
    # The "blocking" loop is stuck in a sync wait; the default loop still answers, and
    # "io" lets exactly two of its four calls in.
    wait_until(lambda: rayipy.get(actor.stats.remote(), timeout=WAIT_SECONDS)[0] == 2)
    assert rayipy.get(actor.ping.remote(), timeout=WAIT_SECONDS) == "pong"
    assert rayipy.get(actor.stats.remote()) == (2, 2)
    assert not_ready(hogging)
    pathlib.Path(io_gate).touch()
    assert rayipy.get(fetches, timeout=WAIT_SECONDS) == ["fetched"] * 4
    assert rayipy.get(actor.stats.remote()) == (0, 2)
    pathlib.Path(hog_gate).touch()
    assert rayipy.get(hogging, timeout=WAIT_SECONDS) == "hogged"


def test_groups_given_in_class_options_and_a_bad_group_name(cluster, tmp_path):
    @rayipy.remote
    class Plain:
        def wait_here(self, gate: str) -> str:
            wait_for_file(gate)
            return "waited"

        def ping(self) -> str:
            return "pong"

    actor = Plain.options(concurrency_groups={"side": 1}).remote()
    gate = str(tmp_path / "gate")
    waiting = actor.wait_here.remote(gate)
    assert rayipy.get(actor.ping.options(concurrency_group="side").remote(),
                      timeout=WAIT_SECONDS) == "pong"
    assert not_ready(waiting)
    with pytest.raises(ValueError, match="'side'"):
        actor.ping.options(concurrency_group="sid")
    # Handles found by name know the groups too.
    named = Plain.options(concurrency_groups={"side": 1}, name="grouped").remote()
    found = rayipy.get_actor("grouped")
    with pytest.raises(ValueError, match="its groups are 'side'"):
        found.ping.options(concurrency_group="other")
    assert rayipy.get(found.ping.options(concurrency_group="side").remote()) == "pong"
    rayipy.kill(named)
    pathlib.Path(gate).touch()
    assert rayipy.get(waiting, timeout=WAIT_SECONDS) == "waited"


def test_a_call_in_a_group_the_worker_lacks_fails_and_the_actor_lives_on(cluster):
    actor = Threaded.remote()
    # Handles refuse such a name (tests/unit/test_concurrency_group_choice.py); one that
    # got through anyway (an old handle, a hand-made call) is answered with an error.
    sneaky = actor.ping
    sneaky._group = "gone"
    with pytest.raises(ValueError, match=r"'gone', which this actor does not have; its "
                                         r"groups: 'compute', 'io'"):
        rayipy.get(sneaky.remote(), timeout=WAIT_SECONDS)
    assert rayipy.get(actor.ping.remote(), timeout=WAIT_SECONDS) == "pong"
