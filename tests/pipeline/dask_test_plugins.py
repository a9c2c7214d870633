"""Test-only plug-in stage (imported through the pipeline's ``modules:`` key).

``dasktest.probe`` passes its catalog chunk through unchanged and, on request, records where
it was set up and called, raises a bad-input error at a given row, or kills the Dask worker
process that runs a given row (once: a marker file remembers that it happened).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from astropy.table import Table

from astrogen.errors import CatalogError
from astrogen.registry import register_stage
from astrogen.stages.base import Stage


def _in_dask_worker() -> bool:
    try:
        from distributed import get_worker

        get_worker()
        return True
    except (ImportError, ValueError):
        return False


def _append(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


@register_stage("dasktest.probe")
class Probe(Stage):
    """Pass-through map stage for tests: logs set-ups and calls, fails or kills on request.

    Parameters
    ----------
    log_dir : str, optional
        Folder where ``setup.txt`` (one pid per set-up) and ``calls.txt`` are appended.
    fail_row : int, optional
        Raise a CatalogError on the chunk holding this row id.
    crash_row : int, optional
        Raise a RuntimeError (a bug, not bad input) on the chunk holding this row id.
    kill_row : int, optional
        ``os._exit`` the Dask worker that runs the chunk holding this row id, if ``marker``
        does not exist yet (it is created first). Never kills outside a Dask worker.
    marker : str, optional
        Marker file of ``kill_row``.
    """

    kind = "map"
    input_types = (Table,)
    output_type = Table

    def __init__(self, log_dir: str | None = None, fail_row: int | None = None,
                 crash_row: int | None = None, kill_row: int | None = None,
                 marker: str | None = None):
        self.log_dir = log_dir
        self.fail_row = fail_row
        self.crash_row = crash_row
        self.kill_row = kill_row
        self.marker = marker

    def setup(self, ctx) -> None:
        super().setup(ctx)
        if self.log_dir:
            _append(Path(self.log_dir) / "setup.txt", f"{os.getpid()}\n")

    def process(self, table: Table) -> Table:
        rows = np.asarray(table["row_id"])
        if self.log_dir:  # every attempt, before failing or killing
            _append(Path(self.log_dir) / "calls.txt", f"{os.getpid()} {int(rows[0])}\n")
        if self.fail_row is not None and self.fail_row in rows:
            raise CatalogError("holds an impossible value.", key="mag",
                               received={"row_id": self.fail_row, "mag": -99.0})
        if self.crash_row is not None and self.crash_row in rows:
            raise RuntimeError(f"probe crashed on row {self.crash_row}")
        if (self.kill_row is not None and self.kill_row in rows and _in_dask_worker()
                and self.marker):
            try:
                fd = os.open(self.marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
                os.close(fd)
                os._exit(1)  # the worker process dies here, mid-run
            except FileExistsError:
                pass
        return table
