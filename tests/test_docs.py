"""The docs site builds (``make docs``: Sphinx with warnings as errors) and is complete.

One build per session, into a temporary folder (the tutorials run inside it). Checks that
every registered stage type has its generated reference page listing each of its YAML keys,
that every tutorial of ``docs/tutorials/`` ran and its page embeds what it printed and the
PNG figures it wrote, and that the API reference has a page for each public package.
Skipped, with the reason, only when Sphinx is not installed (``pip install -e '.[docs]'``).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TUTORIALS = sorted((DOCS / "tutorials").glob("*.py"))


@pytest.fixture(scope="module")
def html(tmp_path_factory) -> Path:
    """Build the docs once with ``-W`` and return the HTML folder."""
    pytest.importorskip("sphinx", reason="Sphinx is not installed (pip install -e '.[docs]')")
    pytest.importorskip("pydata_sphinx_theme",
                        reason="pydata-sphinx-theme is not installed (pip install -e '.[docs]')")
    out = tmp_path_factory.mktemp("docs") / "html"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b",
                           "html", str(DOCS), str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"docs build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return out


def test_a_page_per_registered_stage_type_with_its_keys(html):
    import astrogen.stages  # noqa: F401 - registers the built-in stage types
    from astrogen.registry import STAGES

    # the package's own stage types (other tests register plug-ins in this process)
    names = sorted(n for n, c in STAGES.items() if c.__module__.startswith("astrogen."))
    assert len(names) > 20
    index = (html / "_generated" / "stages" / "index.html").read_text()
    for name in names:
        page = html / "_generated" / "stages" / f"{name}.html"
        assert page.is_file(), f"no stage page for {name}"
        text = page.read_text()
        for key in STAGES.get(name).parameters():
            assert f"<span class=\"pre\">{key}</span>" in text, f"{name}: key {key} not listed"
        assert f"{name}.html" in index


def test_every_tutorial_ran_and_its_output_is_embedded(html):
    assert len(TUTORIALS) >= 3
    gen = DOCS / "_generated" / "tutorials"
    for script in TUTORIALS:
        printed = (gen / script.stem / "stdout.txt").read_text()
        assert printed.strip(), f"{script.name} printed nothing"
        pngs = sorted((gen / script.stem).glob("*.png"))
        assert pngs, f"{script.name} wrote no figure"
        page = (html / "_generated" / "tutorials" / f"{script.stem}.html").read_text()
        assert printed.splitlines()[0].split()[0] in page
        for png in pngs:
            assert png.name in page, f"{png.name} not embedded in {script.stem}.html"
            assert (html / "_images" / png.name).stat().st_size > 1000


def test_api_reference_has_the_public_packages(html):
    api = html / "_generated" / "api"
    for mod in ["astrogen", "astrogen.api", "astrogen.deblend", "astrogen.physics.observe",
                "astrogen.nbody.pm", "astrogen.models.flowvae", "astrogen.stages.flowvae",
                "astrogen.training.loop", "astrogen.pipeline.runner"]:
        page = api / f"{mod}.html"
        assert page.is_file(), f"no API page for {mod}"
    observe = (api / "astrogen.physics.observe.html").read_text()
    assert "Parameters" in observe  # numpy sections rendered, not left as raw text
