import pytest

from pipeline_text import small_pipeline


@pytest.fixture
def small_yaml(tmp_path):
    def make(**kw):
        out = kw.pop("output", tmp_path / "out")
        path = tmp_path / "pipe.yaml"
        path.write_text(small_pipeline(out, **kw))
        return path, out
    return make
