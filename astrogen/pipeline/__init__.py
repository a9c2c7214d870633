"""YAML pipelines: loading with line numbers, validation, stage graph, and the runner.

``Pipeline`` and ``build_pipeline`` are imported on first use (PEP 562), so that
``astrogen.pipeline.config`` (the YAML reader, also used by ``astrogen train``) can be
imported without loading GalSim and every stage.
"""
from astrogen.pipeline.config import load_config

__all__ = ["Pipeline", "build_pipeline", "load_config"]


def __getattr__(name):
    if name in ("Pipeline", "build_pipeline"):
        from astrogen.pipeline import build

        return getattr(build, name)
    raise AttributeError(f"module 'astrogen.pipeline' has no attribute {name!r}")
