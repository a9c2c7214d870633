"""Atomic writes: write to a temporary name in the same folder, then rename.

An interrupted run therefore never leaves a truncated file under a final name: either the
previous version (or nothing) is there, or the complete new one.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np

__all__ = ["atomic_path", "write_json", "save_npz", "save_model_atomic"]


@contextlib.contextmanager
def atomic_path(final):
    """Yield a temporary path next to ``final``; rename it onto ``final`` on success.

    On an exception the temporary file is removed and ``final`` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:  # data on disk before the rename makes it visible
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_json(path, obj) -> None:
    """Write ``obj`` as indented JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def save_npz(path, **arrays) -> None:
    """``numpy.savez`` atomically (no pickles), readable by ``numpy.load``.

    The archive is closed even when a write fails (disk full): ``numpy.savez`` leaves its
    zip file open then, and its clean-up at exit printed a ``seek of closed file``
    traceback after the error.
    """
    import zipfile

    from numpy.lib import format as npformat

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh, zipfile.ZipFile(fh, mode="w", allowZip64=True) as z:
            for key, value in arrays.items():
                with z.open(f"{key}.npy", "w", force_zip64=True) as f:
                    npformat.write_array(f, np.asanyarray(value), allow_pickle=False)


def save_model_atomic(model, output) -> None:
    """``model.save`` to a temporary name beside ``output``, then rename the ``.keras`` file
    and, if the model's ``save`` wrote one, its ``.json`` sidecar into place."""
    import os

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.stem}.tmp-{os.getpid()}.keras")
    side = tmp.with_suffix(".json")
    try:
        model.save(tmp)
        os.replace(tmp, output)
        if side.exists():
            os.replace(side, output.with_suffix(".json"))
    finally:
        tmp.unlink(missing_ok=True)
        side.unlink(missing_ok=True)
