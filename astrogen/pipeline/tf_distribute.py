"""Data-parallel training with ``tf.distribute``: one model replica per device, same loss.

A small, tested building block for the training commands to scale to several GPUs (or CPU
devices) unchanged. The FlowVAE trainer (:mod:`astrogen.training.flowvae_trainer`) uses
:func:`make_strategy` and :func:`logical_cpu_devices` through its ``training.strategy``,
``training.devices`` and ``training.logical_cpu_devices`` options, with its own replicated
steps (:func:`astrogen.models.flowvae.train_vae_step`, ``strategy=``) that follow the rule
below; :func:`train` is the generic loop for small models.

The rule that makes a distributed step equal to a single-device step is the loss scaling:
each replica computes the per-example losses of its share of the global batch and divides
their sum by the **global** batch size (:func:`tf.nn.compute_average_loss`); the gradients
of the replicas are then summed by the all-reduce, which gives the gradient of the mean loss
over the global batch. With ``MirroredStrategy`` the variables stay identical on every
replica; only the order of floating-point additions changes, so losses agree with the
default strategy to rounding (tested: ``tests/pipeline/test_tf_distribute.py``, and
for the FlowVAE trainer ``tests/training/test_flowvae_distributed.py``).

Keras 3 clips gradients (``clipnorm``, ``global_clipnorm``) per replica, *before* summing
them; :func:`train` uses no clipping, the FlowVAE steps all-reduce first and then clip.
Create one strategy per device set and process: two ``MirroredStrategy`` objects over the
same devices can give colliding collective operations.

Example (2 logical CPU devices; on a machine with GPUs, ``make_strategy("mirrored")``
mirrors over all of them)::

    from astrogen.pipeline.tf_distribute import logical_cpu_devices, make_strategy, train
    devices = logical_cpu_devices(2)       # before TensorFlow runs anything
    strategy = make_strategy("mirrored", devices)
    losses, model = train(strategy, build_model, per_example_loss, dataset, steps=100)
"""
from __future__ import annotations

from typing import Callable

__all__ = ["STRATEGIES", "logical_cpu_devices", "make_strategy", "train"]

#: accepted strategy names
STRATEGIES = ("default", "mirrored")


def logical_cpu_devices(n: int) -> list[str]:
    """Split the physical CPU into ``n`` logical devices and return their names.

    Must run before TensorFlow initialises its runtime (before any op or variable); used
    to test and debug multi-replica training on a machine without GPUs.

    Raises
    ------
    RuntimeError
        TensorFlow is already initialised with another device configuration.
    """
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(int(n))])
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def make_strategy(kind: str = "default", devices: list[str] | None = None):
    """A ``tf.distribute`` strategy.

    Parameters
    ----------
    kind : {"default", "mirrored"}
        ``default``: one device, no replication (``tf.distribute.get_strategy()``);
        ``mirrored``: synchronous data parallelism over ``devices`` on one machine.
    devices : list of str, optional
        Devices of the mirrored strategy (default: every GPU, else the CPU).

    Raises
    ------
    ConfigError
        ``kind`` is not one of :data:`STRATEGIES`.
    """
    from astrogen.stages.base import check_choice

    check_choice("strategy", kind, STRATEGIES)
    import tensorflow as tf

    if kind == "default":
        return tf.distribute.get_strategy()
    return tf.distribute.MirroredStrategy(devices=devices)


def train(strategy, build_model: Callable, per_example_loss: Callable, dataset, steps: int,
          learning_rate: float = 1e-2, global_batch_size: int | None = None):
    """Train ``build_model()`` with Adam for ``steps`` steps under ``strategy``.

    Parameters
    ----------
    strategy : tf.distribute.Strategy
        From :func:`make_strategy`.
    build_model : callable
        ``() -> keras.Model``, called inside ``strategy.scope()`` so the variables are
        mirrored.
    per_example_loss : callable
        ``(model, batch) -> tensor of shape (batch,)``: the loss of each example.
    dataset : tf.data.Dataset
        Yields global batches (split between the replicas by the strategy); must not be
        shuffled differently between runs for results to be comparable.
    steps : int
        Optimisation steps.
    learning_rate : float
        Adam learning rate.
    global_batch_size : int, optional
        Divisor of the summed per-example losses (default: the first batch's size).

    Returns
    -------
    losses : list of float
        Mean loss over the global batch at each step (before the update).
    model : keras.Model
        The trained model.
    """
    import keras
    import tensorflow as tf

    with strategy.scope():
        model = build_model()
        optimizer = keras.optimizers.Adam(learning_rate)
        # Keras 3 creates the optimizer's slots lazily; under MirroredStrategy they must
        # exist (mirrored) before the first replicated step
        optimizer.build(model.trainable_variables)
    data = iter(strategy.experimental_distribute_dataset(dataset))
    if global_batch_size is None:
        first = next(iter(dataset))
        global_batch_size = int(tf.nest.flatten(first)[0].shape[0])

    def replica_step(batch):
        with tf.GradientTape() as tape:
            loss = tf.nn.compute_average_loss(per_example_loss(model, batch),
                                              global_batch_size=global_batch_size)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    @tf.function
    def step(batch):
        per_replica = strategy.run(replica_step, args=(batch,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    losses = [float(step(next(data))) for _ in range(int(steps))]
    return losses, model
