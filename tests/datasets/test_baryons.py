"""The paired dark-matter -> gas data set (astrogen.datasets.baryons): resumable builder through
the pluggable backend, the format, and the committed BaryonForge fixture."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from astrogen.datasets.baryons import (FIELDS, FORMAT, BaryonDatasetConfig, analytic_backend,
                                       build_baryon_dataset, dataset_is_complete,
                                       read_baryon_box, read_manifest)
from astrogen.errors import ConfigError

FIXTURE = Path(__file__).parent / "data" / "baryon_pairs_32"

SMALL = dict(n_boxes=3, n_grid=16, box_size=32.0, n_steps=3, backend="analytic", seed=5)


def test_builder_resumes_to_the_same_boxes(tmp_path):
    """A build stopped after one box and resumed equals an uninterrupted build, box by box;
    a second resume builds nothing."""
    cfg = BaryonDatasetConfig.from_dict(SMALL)
    logs = []
    build_baryon_dataset(tmp_path / "a", cfg, max_boxes=1, log=logs.append)
    assert len(logs) == 1 and not dataset_is_complete(tmp_path / "a")
    build_baryon_dataset(tmp_path / "a", cfg, log=logs.append)
    assert len(logs) == 3 and dataset_is_complete(tmp_path / "a")
    build_baryon_dataset(tmp_path / "a", cfg, log=logs.append)
    assert len(logs) == 3
    build_baryon_dataset(tmp_path / "b", cfg, log=lambda m: None)
    for b in read_manifest(tmp_path / "a")["box_ids"]:
        one, two = read_baryon_box(tmp_path / "a", b), read_baryon_box(tmp_path / "b", b)
        for k in ("dm", *FIELDS, "halo_mass"):
            np.testing.assert_array_equal(one[k], two[k])
    d0, d1 = (read_baryon_box(tmp_path / "a", b)["dm"] for b in (0, 1))
    assert not np.allclose(d0, d1)  # boxes are different draws


def test_builder_refuses_a_folder_of_another_configuration(tmp_path):
    build_baryon_dataset(tmp_path, BaryonDatasetConfig.from_dict({**SMALL, "n_boxes": 1}),
                         log=lambda m: None)
    with pytest.raises(ConfigError, match="another configuration"):
        build_baryon_dataset(tmp_path, BaryonDatasetConfig.from_dict({**SMALL, "seed": 6}),
                             log=lambda m: None)


def test_pluggable_backend_is_called_and_its_fields_stored(tmp_path):
    """Any callable backend(dm, halos, cfg) produces the stored fields (the path external
    hydro converters and the tests use); the analytic one conserves the mean density."""
    calls = []

    def backend(dm, halos, cfg):
        calls.append(len(halos["mass"]))
        return analytic_backend(dm, halos, cfg)

    cfg = BaryonDatasetConfig.from_dict({**SMALL, "n_boxes": 1})
    m = build_baryon_dataset(tmp_path, cfg, backend=backend, log=lambda m: None)
    assert len(calls) == 1 and m["backend"] == "backend" and m["format"] == FORMAT
    box = read_baryon_box(tmp_path, 0)
    assert abs(box["gas"].mean() - box["dm"].mean()) < 1e-4
    assert (box["temperature"] > 0).all() and (box["pressure"] >= 0).all()


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="backend"):
        BaryonDatasetConfig.from_dict({"backend": "hydro"})
    with pytest.raises(ConfigError, match="n_grid"):
        BaryonDatasetConfig.from_dict({"n_grid": 15})


def test_baryonforge_fixture_is_physical():
    """The committed BaryonForge box: baryonification conserves mass (to float32 rounding),
    gas stays below the cosmic share where haloes removed it, the electron pressure equals
    n_e k T to the stated clipping, and the manifest documents units and provenance."""
    m = read_manifest(FIXTURE)
    assert m["backend"] == "baryonforge" and m["format"] == FORMAT
    assert set(m["units"]) >= {"dm", *FIELDS}
    box = read_baryon_box(FIXTURE, 0)
    dm, tot, gas = (box[k].astype(np.float64) for k in ("dm", "total", "gas"))
    assert abs(tot.mean() - dm.mean()) < 1e-5 * dm.mean()
    assert len(box["halo_mass"]) > 10
    # gas never exceeds the baryonified matter times the largest halo gas fraction (<= 1/fb)
    assert (gas <= tot / m["baryon_fraction"] + 1e-4).all()
    assert 0.8 < gas.mean() < 1.05
    # haloes move matter: the baryonified field differs from the dark matter near haloes
    assert np.abs(tot - dm).max() > 0.5
    assert (box["pressure"] >= 0).all() and (box["temperature"] >= 100).all()
    text = (FIXTURE / "PROVENANCE.md").read_text()
    assert "python -m astrogen.datasets.baryons" in text and "BaryonForge 1.0.0" in text
    assert json.loads((FIXTURE / "manifest.json").read_text())["config"]["seed"] == 7
