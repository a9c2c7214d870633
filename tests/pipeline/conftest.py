"""Fixtures of the pipeline tests: small pipelines as YAML files (``small_yaml`` for the runner,
``write_pipeline`` for the executors) and a loopback Dask LocalCluster shared by the session."""
import logging
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # before any worker is spawned: workers inherit sys.path
    sys.path.insert(0, str(HERE))

from pipeline_text import small_pipeline  # noqa: E402


@pytest.fixture(scope="session")
def dask_address():
    """Address of a 2-process LocalCluster on 127.0.0.1 (no dashboard)."""
    from distributed import LocalCluster

    from astrogen.pipeline.executors import LOOPBACK_NO_DASHBOARD

    # This scheduler runs in the test process, unlike a user's: its tear-down messages about
    # a client that left ("Batched Comm Closed") can arrive after an executor restored the
    # levels it found, in the middle of a later test's captured stderr. Keep them quiet.
    quiet = logging.getLogger("distributed")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           host="127.0.0.1", silence_logs=logging.ERROR,
                           **LOOPBACK_NO_DASHBOARD)
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close(timeout=20)
        quiet.setLevel(level)


@pytest.fixture
def write_pipeline(tmp_path):
    """``write_pipeline(name, **kw)`` -> (yaml path, output folder) in ``tmp_path``."""
    from dask_pipeline_text import pipeline_text

    def make(name="pipe", **kw):
        out = kw.pop("output", tmp_path / f"out_{name}")
        path = tmp_path / f"{name}.yaml"
        path.write_text(pipeline_text(out, **kw))
        return path, out
    return make


@pytest.fixture
def small_yaml(tmp_path):
    """``small_yaml(**kw)`` -> (yaml path, output folder) of ``pipeline_text.small_pipeline``."""
    def make(**kw):
        out = kw.pop("output", tmp_path / "out")
        path = tmp_path / "pipe.yaml"
        path.write_text(small_pipeline(out, **kw))
        return path, out
    return make
