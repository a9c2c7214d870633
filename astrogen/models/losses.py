"""Losses shared by the segmentation models (TensorFlow): the soft cross-entropy of
per-pixel light fractions, in slot order or minimised over the slot permutations
("permutation-invariant training", Yu et al. 2017, arXiv:1607.00325).

The PSF-convolved Gaussian likelihood of the galaxy generators is in
:mod:`astrogen.models.psf_likelihood`.
"""
from __future__ import annotations

import itertools

import numpy as np

__all__ = ["slot_permutations", "permutation_invariant_ce", "compiled_step"]


def slot_permutations(k: int) -> np.ndarray:
    """Channel index permutations ``(K!, K + 1)`` keeping channel 0 (background) first; the
    first row is the identity."""
    return np.array([(0, *[1 + p for p in perm]) for perm in itertools.permutations(range(k))],
                    dtype=np.int32)


def permutation_invariant_ce(y, logp, perms, weights=None, reduce="mean"):
    """Per-example minimum over slot permutations of the soft cross-entropy (nats).

    Parameters
    ----------
    y : tensor (B, h, w, C)
        Target probabilities (light fractions, channel 0 background).
    logp : tensor (B, h, w, C)
        Log-probabilities of the model.
    perms : sequence of int sequences
        Channel permutations to try (``[identity]``: the slot order of ``y``).
    weights : tensor (B, h, w), optional
        Per-pixel weights.
    reduce : {"mean", "sum"}
        Over pixels.

    Returns
    -------
    (loss (B,), index of the best permutation (B,))
    """
    import tensorflow as tf

    losses = []
    for p in perms:
        yp = tf.gather(y, p, axis=-1)
        ce = -tf.reduce_sum(yp * logp, axis=-1)
        if weights is not None:
            ce = ce * tf.cast(weights, ce.dtype)
        losses.append(tf.reduce_mean(ce, axis=(1, 2)) if reduce == "mean"
                      else tf.reduce_sum(ce, axis=(1, 2)))
    stacked = tf.stack(losses, axis=-1)
    return tf.reduce_min(stacked, axis=-1), tf.argmin(stacked, axis=-1)


def compiled_step(network, optimizer, losses):
    """A compiled ``step(*inputs) -> loss terms``: one ``optimizer`` update of ``network``'s
    trainable variables on ``losses(*inputs)["loss"]`` (``losses`` returns a dict of terms).
    """
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def step(*inputs):
        with tf.GradientTape() as tape:
            out = losses(*inputs)
        grads = tape.gradient(out["loss"], network.trainable_variables)
        optimizer.apply_gradients(zip(grads, network.trainable_variables))
        return out

    return step
