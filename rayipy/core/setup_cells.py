"""The ``%%remote --all`` setup cells the head keeps, per driver, for workers that start later.

A setup cell means "every worker, always": the driver runs it on the workers there are
and records it here (the head's ``setup_cell_add`` request); a worker that starts later
(a new pool worker, a replacement, a node that joins) asks for the cells of every live
driver (``setup_cells``) and runs them, in the order they were recorded, before its
first task. A driver's cells go when the driver does. The head keeps the cells as opaque
bytes (a pickle it never opens). Pure: no sockets, no clock.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple

MAX_CELLS_PER_DRIVER = 64
MAX_CELL_BYTES = 16 * 1024 * 1024


class SetupCell(NamedTuple):
    """One recorded cell: its id (the driver's, so a worker runs it once) and its pickle."""
    setup_id: str
    blob: bytes


class SetupCells:
    """Recorded setup cells by driver, in the order each driver recorded them."""

    def __init__(self, max_cells: int = MAX_CELLS_PER_DRIVER,
                 max_bytes: int = MAX_CELL_BYTES) -> None:
        self.max_cells = max_cells
        self.max_bytes = max_bytes
        self.by_driver: dict[bytes, list[SetupCell]] = {}

    def add(self, driver: bytes, setup_id: str, blob: bytes) -> int:
        """Record a cell; how many the driver has now. ValueError for one too big, or
        one too many (a long session's setup belongs in a runtime_env or a module)."""
        if not isinstance(setup_id, str) or not setup_id:
            raise ValueError("a setup cell needs an id (a non-empty string)")
        if not isinstance(blob, bytes):
            raise ValueError("a setup cell is sent as bytes")
        if len(blob) > self.max_bytes:
            raise ValueError(f"this %%remote --all cell and the variables it reads take "
                             f"{len(blob) / 2**20:.1f} MiB, more than the "
                             f"{self.max_bytes / 2**20:.0f} MiB the head keeps for a setup cell: "
                             f"read large data in the cell instead of sending it")
        cells = self.by_driver.setdefault(driver, [])
        if any(cell.setup_id == setup_id for cell in cells):
            return len(cells)   # sent again (a retried request): kept once
        if len(cells) >= self.max_cells:
            raise ValueError(f"this notebook has recorded {len(cells)} %%remote --all cells, "
                             f"the most the head keeps; restart the kernel to start afresh")
        cells.append(SetupCell(setup_id, blob))
        return len(cells)

    def for_workers(self, live_drivers: Iterable[bytes]) -> list[tuple[bytes, str, bytes]]:
        """(driver, setup id, pickle) of every live driver's cells, each driver's in order;
        drivers no longer live are forgotten first."""
        live = set(live_drivers)
        for driver in [d for d in self.by_driver if d not in live]:
            del self.by_driver[driver]
        return [(driver, cell.setup_id, cell.blob)
                for driver, cells in self.by_driver.items() for cell in cells]

    def drop(self, driver: bytes, setup_id: str) -> bool:
        """Take back one cell (it failed where it ran first); whether it was there."""
        cells = self.by_driver.get(driver, [])
        kept = [cell for cell in cells if cell.setup_id != setup_id]
        if len(kept) == len(cells):
            return False
        self.by_driver[driver] = kept
        return True

    def forget(self, driver: bytes) -> None:
        self.by_driver.pop(driver, None)
