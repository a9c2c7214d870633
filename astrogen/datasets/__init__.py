"""Training and evaluation data sets of the generative models.

* :mod:`astrogen.datasets.galaxy_stamps`: simulated HST/COSMOS-like postage stamps (GalSim
  parametric galaxies from :class:`~astrogen.catalog.cosmos.CosmosSampler`, real HST PSFs,
  COSMOS correlated noise), written as sharded ``.npz`` files, a ``tf.data`` loader that
  streams them, and a loader of the 100 real COSMOS stamps shipped with astrogen (held-out
  realism set).
"""
from astrogen.datasets.galaxy_stamps import (StampDatasetConfig, build_stamp_dataset,
                                             dataset_is_complete, load_real_cosmos,
                                             read_manifest, read_stamps, stamp_dataset)

__all__ = ["StampDatasetConfig", "build_stamp_dataset", "dataset_is_complete",
           "load_real_cosmos", "read_manifest", "read_stamps", "stamp_dataset"]
