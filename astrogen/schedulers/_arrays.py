"""Small array helpers shared by the schedulers: numpy / TensorFlow duality and random streams.

TensorFlow is never imported here: a value is treated as a TF tensor only if TensorFlow is
already loaded (by whoever created the tensor) and ``tf.is_tensor`` says so.
"""
from __future__ import annotations

import sys
from numbers import Integral
from typing import Any, Sequence

import numpy as np

from astrogen.errors import ConfigError

__all__ = ["is_tf", "to_numpy", "like", "NoiseSource", "check_seed"]


def is_tf(x: Any) -> bool:
    """True if ``x`` is a TensorFlow tensor or variable (without importing TensorFlow)."""
    tf = sys.modules.get("tensorflow")
    if tf is None or isinstance(x, np.ndarray):
        return False
    try:
        return bool(tf.is_tensor(x)) or isinstance(x, tf.Variable)
    except Exception:  # pragma: no cover - exotic objects
        return False


def to_numpy(x: Any, dtype=np.float64) -> np.ndarray:
    """``x`` (numpy, TF tensor, Keras tensor, list) as a numpy array of ``dtype``."""
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        x = x.numpy()
    return np.asarray(x, dtype=dtype)


def like(out: np.ndarray, ref: Any):
    """Return ``out`` as a TF tensor of ``ref``'s dtype if ``ref`` is one, else unchanged."""
    if is_tf(ref):
        tf = sys.modules["tensorflow"]
        return tf.convert_to_tensor(out, dtype=ref.dtype)
    return out


def check_seed(seed: Any, key: str = "seed") -> Any:
    """Validate a seed: a non-negative int, a 1-D array of them, or a ``np.random.Generator``."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (bool, np.bool_)):
        raise ConfigError("must be a non-negative integer (or one per row).", key=key,
                          received={key: seed})
    if isinstance(seed, Integral):
        if int(seed) < 0:
            raise ConfigError("must be a non-negative integer.", key=key,
                              received={key: seed})
        return int(seed)
    arr = np.asarray(seed)
    if arr.ndim == 1 and arr.size > 0 and arr.dtype.kind in "ui":
        if arr.dtype.kind == "i" and np.any(arr < 0):
            raise ConfigError("per-row seeds must be non-negative.", key=key,
                              received={key: seed})
        return arr.astype(np.uint64)
    raise ConfigError("must be a non-negative integer, a 1-D integer array with one seed per "
                      "row (e.g. astrogen.seeds.row_seeds) or a numpy Generator.", key=key,
                      received={key: seed})


class NoiseSource:
    """Standard-normal draws for a batch, from one seed or from one seed per row.

    With one integer seed, a single ``np.random.Generator(PCG64(seed))`` feeds the whole
    batch. With a 1-D array of per-row seeds (``astrogen.seeds.row_seeds``), row ``b`` gets
    its own generator, so a galaxy's sample does not depend on which batch it was drawn in.
    """

    def __init__(self, seed: Any, batch_size: int | None = None):
        seed = check_seed(seed)
        self.per_row = isinstance(seed, np.ndarray)
        if self.per_row:
            if batch_size is not None and len(seed) != batch_size:
                raise ConfigError("needs one seed per row of the batch.", key="seed",
                                  received={"len(seed)": len(seed), "batch_size": batch_size})
            self._gens = [np.random.Generator(np.random.PCG64(int(s))) for s in seed]
        elif isinstance(seed, np.random.Generator):
            self._gens = [seed]
        else:
            self._gens = [np.random.Generator(np.random.PCG64(seed))]

    def normal(self, shape: Sequence[int]) -> np.ndarray:
        """A float64 array of N(0, 1) variates of ``shape`` (first axis = batch)."""
        shape = tuple(int(s) for s in shape)
        if not self.per_row:
            return self._gens[0].standard_normal(shape)
        if shape[0] != len(self._gens):
            raise ConfigError("needs one seed per row of the batch.", key="seed",
                              received={"len(seed)": len(self._gens), "batch_size": shape[0]})
        return np.stack([g.standard_normal(shape[1:]) for g in self._gens])
