"""Splitting work items into chunks and joining chunk results: pure, no cluster.

``multiprocessing.Pool`` (and Ray's Pool after it) sends items to its workers in chunks,
so that 10,000 tiny items cost a handful of messages rather than 10,000. These helpers
are that arithmetic, shared by ``rayipy.util.multiprocessing`` and ``rayipy.util.Executor``.
"""

from __future__ import annotations

import itertools
from typing import Any, Iterable, Iterator


def default_chunksize(num_items: int, num_workers: int) -> int:
    """The stdlib's rule: about four chunks per worker, never less than one item each."""
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    chunksize, extra = divmod(num_items, num_workers * 4)
    if extra:
        chunksize += 1
    return max(chunksize, 1)


def check_chunksize(chunksize: Any) -> int:
    """``chunksize`` as an int >= 1; TypeError/ValueError naming the bad value otherwise."""
    if not isinstance(chunksize, int) or isinstance(chunksize, bool):
        raise TypeError(f"chunksize must be an int >= 1, got {chunksize!r}")
    if chunksize < 1:
        raise ValueError(f"chunksize must be >= 1, got {chunksize}")
    return chunksize


def chunks(items: Iterable[Any], chunksize: int) -> Iterator[list[Any]]:
    """Consecutive lists of ``chunksize`` items (the last may be shorter), read lazily."""
    check_chunksize(chunksize)
    iterator = iter(items)
    while True:
        chunk = list(itertools.islice(iterator, chunksize))
        if not chunk:
            return
        yield chunk


class ItemError:
    """One item's exception inside a chunk's results, so its neighbours' results survive.

    Carries the remote traceback as text: raised on the caller, the exception gets it as
    ``__cause__``, as ``multiprocessing.Pool`` does with its ``RemoteTraceback``.
    """

    __slots__ = ("error", "traceback")

    def __init__(self, error: BaseException, traceback: str) -> None:
        self.error = error
        self.traceback = traceback

    def rebuild(self) -> BaseException:
        """The exception, with the remote traceback attached as its cause."""
        self.error.__cause__ = RemoteTraceback(self.traceback)
        return self.error


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker, shown as its ``__cause__``."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


def run_chunk(func: Any, chunk: list[Any], star: bool) -> list[Any]:
    """Run ``func`` on each item (``func(*item)`` when ``star``); an item that raises
    gives an ItemError in its place. Runs in the worker."""
    import traceback
    results: list[Any] = []
    for item in chunk:
        try:
            results.append(func(*item) if star else func(item))
        except Exception as error:  # the item's failure, not the chunk's
            results.append(ItemError(error, traceback.format_exc()))
    return results


def first_error(results: list[Any]) -> BaseException | None:
    """The first item's exception in a flat result list, rebuilt; None if all succeeded."""
    for result in results:
        if isinstance(result, ItemError):
            return result.rebuild()
    return None
