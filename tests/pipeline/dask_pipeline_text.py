"""YAML text of the small pipelines of the Dask tests, and output comparison helpers."""
from pathlib import Path

HERE = Path(__file__).resolve().parent


def pipeline_text(output, n_objects=48, chunk_size=8, seed=11, probe=None, executor=None,
                  render_size=32, scene=True, pngs=True):
    """A fast parametric pipeline; ``probe``: parameters of a ``dasktest.probe`` stage put
    between the catalog and the positions; ``executor``: YAML text of the executor key;
    ``pngs``: also the PNG previews (matplotlib, slow to import)."""
    head = f"name: small_dask\nseed: {seed}\noutput: {output}\n"
    if executor:
        head += f"executor: {executor}\n"
    src = "catalog"
    items = [dict(name="catalog", type="catalog.cosmos", n_objects=n_objects,
                  chunk_size=chunk_size)]
    if probe is not None:
        head += "modules: [dask_test_plugins]\n"
        items.append(dict(name="probe", type="dasktest.probe", inputs="[catalog]", **probe))
        src = "probe"
    items += [
        dict(name="positions", type="catalog.positions", inputs=f"[{src}]", survey="lsst_i",
             size=128),
        dict(name="render", type="galsim.parametric", inputs="[positions]",
             stamp_size=render_size),
        dict(name="observe", type="observe", inputs="[render]", survey="lsst_i", stamp_size=16),
        dict(name="stamps", type="output.stamps", inputs="[observe]"),
        dict(name="truth", type="output.catalog", inputs="[observe]"),
    ]
    if pngs:
        items.append(dict(name="preview", type="output.preview", inputs="[observe]", n_max=9))
    if scene:
        items.append(dict(name="scene", type="scene", inputs="[render]", survey="lsst_i",
                          stamp_size=24, preview="scene.png" if pngs else "null"))
    stages = "stages:\n" + "".join(
        "  - " + "\n    ".join(f"{k}: {v}" for k, v in item.items()) + "\n" for item in items)
    return head + stages


def output_bytes(out) -> dict:
    """File name -> bytes of every product of a finished run (``provenance.json`` aside:
    it holds timings), and of nothing else."""
    out = Path(out)
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "provenance.json"}


def assert_same_outputs(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name] == b[name], f"{name} differs"
