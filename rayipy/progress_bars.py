"""``rayipy.progress(refs)``: a live progress bar for a set of ObjectRefs.

In a notebook kernel it is an ipywidgets widget (``rayipy.jupyter.progress``); anywhere
else a terminal bar drawn by tqdm. Either way the call returns at once and the bar keeps
moving while the program (or the kernel, between cells) does other things::

    refs = [f.remote(i) for i in range(1000)]
    bar = rayipy.progress(refs)
    ...
    bar.wait()

How it works: a ``Tracker`` puts a done-callback on every ref (they run on the I/O
thread and only count), and asks the head once a second which of the tasks run now.
One daemon thread (``_Ticker``) redraws every live display, at most ten times a second
each (``rayipy.core.progress.RedrawClock``), and stops when nothing is left to draw.

Which display a bar gets is a registry (``set_bar_factory``): by default the terminal
bar, and no widget. The notebook display lives in ``rayipy.jupyter`` (the only package
that imports IPython or ipywidgets), which registers it when it loads, with its own
choice for "auto" (the widget in a running kernel): this module never looks for IPython.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
import time
from typing import Any, Callable, Iterable, Protocol

from rayipy.core.object_ref import ObjectRef
from rayipy.core.objects import READY
from rayipy.core.progress import (CANCELLED, FAILED, OK, ProgressCounts, ProgressState,
                                  RedrawClock, describe)
from rayipy.protocol.errors import error_class_name

log = logging.getLogger("rayipy.progress")

TICK_SECONDS = 0.1          # redraw at most this often (ten updates a second)
RUNNING_POLL_SECONDS = 1.0  # ask the head which tasks run this often
LEASE_CHECK_LIMIT = 64      # look for tasks on leased workers when this few are pending


class Frontend(Protocol):
    """A progress display: drawn by the progress thread, closed after its final state."""

    def draw(self, counts: ProgressCounts) -> None: ...
    def close(self) -> None: ...


# (total, description) -> a display, made on the thread that calls ``progress``.
BarFactory = Callable[[int, str], Frontend]


class Tracker:
    """Counts a set of refs as they finish; knows which of their tasks still run."""

    def __init__(self, refs: list[ObjectRef], started: float | None = None) -> None:
        self.state = ProgressState(len(refs), time.monotonic() if started is None else started)
        self._pending: set[bytes] = set()
        self._done = threading.Event()
        self._runtime = refs[0]._runtime if refs else None
        # group name -> the tracker of that group's refs (``progress(group_by=...)``)
        self.groups: dict[str, Tracker] = {}
        for ref in refs:
            self._pending.add(ref.id[:16])
        if not refs:
            self._done.set()
        # ref.add_done_callback, in bulk: thousands of refs are registered here while
        # their tasks already run, on the CPUs the cluster needs.
        borrowed = []
        for ref in refs:
            objects = ref._runtime.objects
            if objects.add_callback(ref.id, functools.partial(self._finished, ref)):
                if not objects.owns(ref.id):
                    borrowed.append(ref)
            else:
                self._finished(ref)
        for ref in borrowed:
            ref._runtime.request_values([ref.id])  # ask the owner to send it

    def _finished(self, ref: ObjectRef) -> None:
        """On the I/O thread (or here, when already done): classify, never unpickle."""
        state, payload = ref._runtime.objects.value(ref.id)
        if state == READY:
            outcome = OK
        elif payload is not None and error_class_name(payload) == "TaskCancelledError":
            outcome = CANCELLED
        else:
            outcome = FAILED
        self._pending.discard(ref.id[:16])
        self.state.record(outcome, time.monotonic())
        if self.state.ended is not None:
            self._done.set()

    def counts(self) -> ProgressCounts:
        return self.state.snapshot(time.monotonic())

    def check_cluster(self) -> None:
        """If our cluster went away (shutdown, lost), nothing more will arrive: stop."""
        runtime = self._runtime
        for group in self.groups.values():
            group.check_cluster()
        if not self._done.is_set() and runtime is not None and (
                runtime.stopped):
            self.state.abandon(time.monotonic())
            self._done.set()

    @property
    def complete(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def update_running(self, running_ids: set[bytes]) -> None:
        """``running_ids``: task ids the head says run now; leased tasks run too."""
        for group in self.groups.values():
            group.update_running(running_ids)
        pending = set(self._pending)
        running = len(pending & running_ids)
        runtime = self._runtime
        if runtime is not None and len(pending) <= LEASE_CHECK_LIMIT:
            running += sum(1 for t in pending - running_ids if runtime.on_lease(t))
        self.state.set_running(running)


class Progress:
    """What ``rayipy.progress`` returns: the live counts, ``wait()``, the display."""

    def __init__(self, tracker: Tracker, frontend: Frontend) -> None:
        self._tracker = tracker
        self.frontend = frontend
        self._clock = RedrawClock(TICK_SECONDS)
        self._final_drawn = threading.Event()
        self.created = time.monotonic()

    @property
    def counts(self) -> ProgressCounts:
        return self._tracker.counts()

    @property
    def widget(self) -> Any:
        """The ipywidgets widget in a notebook (the first group's when grouped); None in
        a terminal."""
        return getattr(self.frontend, "widget", None)

    @property
    def group_counts(self) -> dict[str, ProgressCounts]:
        """Each group's counts (``group_by="function"``: by function name); {} when the
        bar is not grouped."""
        return {name: tracker.counts() for name, tracker in self._tracker.groups.items()}

    @property
    def redraws(self) -> int:
        """How many times the display was updated (at most ten a second)."""
        return self._clock.redraws

    def redraws_per_second(self) -> float:
        """Updates a second after the first, from creation to the last redraw so far."""
        last = self._clock.last_drawn
        if last is None or self._clock.redraws < 2 or last <= self.created:
            return 0.0
        return (self._clock.redraws - 1) / (last - self.created)

    def done(self) -> bool:
        return self._tracker.complete

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every ref is finished (True) or ``timeout`` passes (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._tracker.wait(timeout):
            return False
        # ... and until the display shows it, so a caller that waits sees 100%.
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        self._final_drawn.wait(left)
        return True

    def tick(self, now: float) -> bool:
        """Redraw if due; True once the final state is drawn (the ticker drops us)."""
        counts = self._tracker.state.snapshot(now)
        if self._clock.due(now, self._tracker.state.version, counts.complete):
            try:
                self.frontend.draw(counts)
            except Exception:
                log.exception("a progress display failed to draw; it stops updating")
                self._clock.final_drawn = True
            if self._clock.final_drawn:
                self._close_frontend()
                self._final_drawn.set()
        return self._clock.final_drawn

    def _close_frontend(self) -> None:
        try:
            self.frontend.close()
        except Exception:
            log.exception("a progress display failed to close")

    def __repr__(self) -> str:
        return f"<rayipy progress: {describe(self.counts)}>"

    def _ipython_display_(self) -> None:
        show = getattr(self.frontend, "ipython_display", None)
        if show is not None:
            show()
        else:
            print(repr(self))


class TerminalBar:
    """A tqdm bar on stderr; failed, cancelled and running counts in its postfix."""

    def __init__(self, total: int, description: str) -> None:
        from tqdm import tqdm  # a kept library: it draws and measures the rate for us
        self.bar = tqdm(total=total, desc=description or "rayipy", unit="task",
                        file=sys.stderr, dynamic_ncols=True, mininterval=0, leave=True)
        self.shown = 0

    def draw(self, counts: ProgressCounts) -> None:
        postfix = {}
        if counts.failed:
            postfix["failed"] = counts.failed
        if counts.cancelled:
            postfix["cancelled"] = counts.cancelled
        if counts.running and not counts.complete:
            postfix["running"] = counts.running
        self.bar.set_postfix(postfix, refresh=False)
        step = counts.finished - self.shown
        self.shown = counts.finished
        if step:
            self.bar.update(step)  # update() keeps tqdm's own rate and ETA right
        else:
            self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


class GroupedBars:
    """One display per group (each group's own bar, made by the same factory), drawn
    together: the whole set's clock decides when, each bar shows its own group's counts."""

    def __init__(self, groups: dict[str, Tracker], factory: BarFactory, description: str) -> None:
        self.groups = groups
        self.bars = {name: factory(tracker.state.total,
                                   f"{description}: {name}" if description else name)
                     for name, tracker in groups.items()}
        first = next(iter(self.bars.values()), None)
        self.widget = getattr(first, "widget", None)

    def draw(self, counts: ProgressCounts) -> None:
        now = time.monotonic()
        for name, bar in self.bars.items():
            bar.draw(self.groups[name].state.snapshot(now))

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()

    def ipython_display(self) -> None:
        for bar in self.bars.values():
            show = getattr(bar, "ipython_display", None)
            if show is not None:
                show()


GROUPINGS = ("function",)


def function_of(ref: ObjectRef) -> str:
    """The name of the function (or actor method) whose task makes ``ref``, as its owner
    recorded it at submit; "other" for a ref this process does not know the task of."""
    return str(ref._runtime.objects.info(ref.id).get("task") or "other")


class _Ticker:
    """One daemon thread that redraws every live display; it exits when none is left."""

    def __init__(self) -> None:
        self._live: list[tuple[Progress, Tracker]] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._next_poll = 0.0

    def add(self, progress: Progress, tracker: Tracker) -> None:
        with self._lock:
            self._live.append((progress, tracker))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="rayipy-progress",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                live = list(self._live)
                if not live:
                    self._thread = None
                    return
            for _, tracker in live:
                tracker.check_cluster()
            now = time.monotonic()
            if now >= self._next_poll:
                self._next_poll = now + RUNNING_POLL_SECONDS
                self._poll_running([t for _, t in live if not t.complete])
            finished = [(p, t) for p, t in live if p.tick(time.monotonic())]
            if finished:
                with self._lock:
                    for item in finished:
                        self._live.remove(item)
            time.sleep(TICK_SECONDS)

    @staticmethod
    def _poll_running(trackers: list[Tracker]) -> None:
        by_runtime: dict[int, list[Tracker]] = {}
        for tracker in trackers:
            if tracker._runtime is not None and tracker._runtime.role == "driver":
                by_runtime.setdefault(id(tracker._runtime), []).append(tracker)
        for group in by_runtime.values():
            runtime = group[0]._runtime
            try:
                running = set(runtime.request("running_tasks", timeout=1.0))
            except Exception:  # the cluster went away: the refs will fail and finish
                continue
            for tracker in group:
                tracker.update_running(running)


_ticker = _Ticker()


def _as_refs(refs: Any) -> list[ObjectRef]:
    if isinstance(refs, ObjectRef):
        return [refs]
    if isinstance(refs, dict):
        refs = refs.values()
    if not isinstance(refs, Iterable) or isinstance(refs, (str, bytes)):
        raise TypeError(f"progress() expects an ObjectRef or a list of ObjectRefs, got "
                        f"{type(refs).__name__}")
    out = list(refs)
    for i, ref in enumerate(out):
        if not isinstance(ref, ObjectRef):
            raise TypeError(f"progress() expects ObjectRefs, but item {i} is {type(ref).__name__}")
        if ref._runtime is None:
            raise ValueError(f"{ref!r} does not belong to a running cluster (it was unpickled "
                             f"outside one)")
    return list(dict.fromkeys(out))  # a ref given twice is one task


DISPLAYS = ("auto", "widget", "terminal")
_factories: dict[str, BarFactory | None] = {"auto": TerminalBar, "widget": None,
                                            "terminal": TerminalBar}


def set_bar_factory(display: str, factory: BarFactory | None) -> None:
    """What ``progress(display=...)`` draws with, for ``"auto"`` or ``"widget"``.

    A front end registers its displays when it loads: the Jupyter layer gives its widget
    for both, "auto" choosing it only in a running kernel. ``None`` puts the default back
    (the terminal bar for "auto"; no widget).
    """
    if display not in ("auto", "widget"):
        raise ValueError(f'a bar factory is set for "auto" or "widget", got {display!r}')
    if factory is not None and not callable(factory):
        raise TypeError(f"a bar factory is a callable (total, description) -> display, "
                        f"got {factory!r}")
    if factory is None and display == "auto":
        factory = TerminalBar
    _factories[display] = factory


def bar_factory(display: str) -> BarFactory | None:
    """The factory ``progress(display=...)`` uses now (None: no widget was registered)."""
    return _factories[display]


def progress(refs: Any, *, description: str = "", display: str = "auto",
             group_by: str | None = None, _started: float | None = None) -> Progress:
    """Show a live progress bar for ``refs`` and return at once.

    ``display``: "auto" (a widget in a notebook, else a terminal bar), "widget" or
    "terminal" (see ``set_bar_factory``). The bar counts done, failed, cancelled and
    running tasks, with the elapsed time and an estimate of the time left.
    ``group_by="function"``: one bar per function, as Dask's ``progress`` draws them
    (``Progress.group_counts`` has each one's counts; ``counts`` stays the whole set's).
    """
    ref_list = _as_refs(refs)
    if display not in DISPLAYS:
        raise ValueError(f'display must be "auto", "widget" or "terminal", got {display!r}')
    if not isinstance(description, str):
        raise TypeError(f"description must be a str, got {type(description).__name__}")
    if group_by is not None and group_by not in GROUPINGS:
        raise ValueError(f'group_by must be None or "function", got {group_by!r}')
    factory = _factories[display]
    if factory is None:
        raise RuntimeError('display="widget" needs the Jupyter layer\'s widget, and none is '
                           'registered (rayipy.jupyter registers it when it loads)')
    started = time.monotonic() if _started is None else _started
    groups: dict[str, Tracker] = {}
    if group_by == "function":
        by_name: dict[str, list[ObjectRef]] = {}
        for ref in ref_list:
            by_name.setdefault(function_of(ref), []).append(ref)
        # Made before the whole set's tracker, so each ref's done-callbacks count it in
        # its group first: when the whole set is over, so is every group.
        groups = {name: Tracker(group, started) for name, group in by_name.items()}
    tracker = Tracker(ref_list, started)
    tracker.groups = groups
    frontend: Frontend
    if groups:
        frontend = GroupedBars(groups, factory, description)
    else:
        frontend = factory(len(ref_list), description)
    handle = Progress(tracker, frontend)
    handle.tick(time.monotonic())  # draw the first state now, in the caller's cell
    if not handle._clock.final_drawn:
        _ticker.add(handle, tracker)
    return handle
