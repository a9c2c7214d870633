from pathlib import Path

import pytest

from astrogen.pipeline import build_pipeline, load_config
from astrogen.pipeline.config import apply_overrides
from astrogen.pipeline.runner import run_pipeline

PIPELINES = sorted((Path(__file__).resolve().parents[2] / "pipelines").glob("*.yaml"))


@pytest.mark.parametrize("path", PIPELINES, ids=[p.stem for p in PIPELINES])
def test_shipped_pipeline_validates(path, tmp_path):
    cfg = apply_overrides(load_config(path), [f"output={tmp_path / 'out'}"])
    p = build_pipeline(cfg)
    assert p.nodes and p.n_chunks() >= 1
    assert not (tmp_path / "out").exists()


def test_main_job_runs_small(tmp_path):
    """The README's main job, shrunk to 40 galaxies, writes every promised product."""
    path = next(p for p in PIPELINES if p.stem == "parametric_mock")
    cfg = apply_overrides(load_config(path), [f"output={tmp_path / 'out'}",
                                              "stages.catalog.n_objects=40"])
    res = run_pipeline(build_pipeline(cfg), progress=False)
    names = {f.name for f in res.files}
    assert {"stamps_lsst_i.fits", "scene_lsst_i.fits", "truth_catalog.fits",
            "preview_lsst_i.png", "provenance.json"} <= names
