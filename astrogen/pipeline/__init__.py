"""YAML pipelines: loading with line numbers, validation, stage graph, and the runner."""
from astrogen.pipeline.build import Pipeline, build_pipeline
from astrogen.pipeline.config import load_config

__all__ = ["Pipeline", "build_pipeline", "load_config"]
