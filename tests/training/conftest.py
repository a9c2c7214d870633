import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "configs" / "flowvae_tiny.yaml"


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """The dataset of configs/flowvae_tiny.yaml, built once per session."""
    from astrogen.training.config import load_training_config
    from astrogen.datasets import build_stamp_dataset

    path = tmp_path_factory.mktemp("tiny") / "stamps"
    cfg = load_training_config(str(TINY_CONFIG))
    block = {k: v for k, v in cfg["dataset"].items() if k != "path"}
    build_stamp_dataset(path, block)
    return path


@pytest.fixture
def tiny_overrides(tiny_dataset, tmp_path):
    """Overrides sending the tiny run's dataset, output and run folder to temp folders."""
    def make(name="run", *extra):
        return [f"dataset.path={tiny_dataset}", f"output={tmp_path / name / 'model.keras'}",
                f"run_dir={tmp_path / name / 'run'}", *extra]
    return make
