"""The COSMOS zero point and pixel scale: defined once (``astrogen.constants``), equal to the
values of the shipped COSMOS data, and written as a literal nowhere else in the package."""
import ast
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from astrogen.constants import COSMOS_PIXEL_SCALE, COSMOS_ZERO_POINT, NANOMAGGY_ZERO_POINT
from astrogen.data import cosmos_dir

PKG = Path(__file__).resolve().parents[1] / "astrogen"
#: float literals equal to a constant's value that mean something else: (file, value)
NOT_THE_CONSTANT = {("deblend/evaluate.py", 0.03)}  # a blendedness bin edge


def _literals(value: float, pkg: Path = PKG) -> list[str]:
    """``file:line`` of every float literal ``value`` in the package's code (not docstrings)."""
    found = []
    for path in sorted(pkg.rglob("*.py")):
        rel = path.relative_to(pkg).as_posix()
        if rel == "constants.py" or (rel, value) in NOT_THE_CONSTANT:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and type(node.value) is float and node.value == value:
                found.append(f"{rel}:{node.lineno}")
    return found


@pytest.mark.parametrize("value", [COSMOS_ZERO_POINT, COSMOS_PIXEL_SCALE, NANOMAGGY_ZERO_POINT])
def test_constant_is_written_once(value):
    """Every module takes the value from astrogen.constants, none repeats it as a literal."""
    assert _literals(value) == []


def test_literal_check_finds_a_planted_literal(tmp_path):
    """The check above is not vacuous: a module with the literals back is found, the allowed
    bin edge and a docstring mentioning the values are not."""
    fake = tmp_path / "astrogen"
    (fake / "stages").mkdir(parents=True)
    (fake / "deblend").mkdir()
    (fake / "stages" / "planted.py").write_text(
        '"""Zero point 25.94, 0.03 arcsec."""\n\n\ndef f(pixel_scale=0.03, zp=25.94):\n    pass\n')
    (fake / "deblend" / "evaluate.py").write_text("BINS = (0.0, 0.03)\n")
    assert _literals(COSMOS_PIXEL_SCALE, fake) == ["stages/planted.py:4"]
    assert _literals(COSMOS_ZERO_POINT, fake) == ["stages/planted.py:4"]


def test_old_homes_are_the_same_constants():
    """Existing imports (batch, catalog.cosmos, physics.noise_power) give these very values."""
    from astrogen import batch
    from astrogen.catalog import cosmos
    from astrogen.physics import noise_power

    assert batch.COSMOS_ZERO_POINT is COSMOS_ZERO_POINT
    assert cosmos.COSMOS_PIXEL_SCALE is COSMOS_PIXEL_SCALE
    assert noise_power.COSMOS_PIXEL_SCALE is COSMOS_PIXEL_SCALE
    assert batch.StampBatch.__dataclass_fields__["zero_point"].default == COSMOS_ZERO_POINT


def test_zero_point_and_pixel_scale_match_the_shipped_cosmos_data():
    """The RealGalaxyCatalog's stamp fluxes [count/s] give its MAG [AB] with the zero point
    (extension sample: the stamps hold the whole measured flux), and its PIXEL_SCALE
    [arcsec/pixel] is the pixel scale."""
    ext = Table.read(Path(cosmos_dir()) / "real_galaxy_catalog_26_extension_example.fits")
    zp = np.asarray(ext["MAG"], float) + 2.5 * np.log10(np.asarray(ext["stamp_flux"], float))
    assert len(zp) >= 50 and np.all(np.isfinite(zp))
    assert abs(np.median(zp) - COSMOS_ZERO_POINT) < 0.01
    for name in ("real_galaxy_catalog_23.5_example.fits",
                 "real_galaxy_catalog_26_extension_example.fits"):
        scales = np.asarray(Table.read(Path(cosmos_dir()) / name)["PIXEL_SCALE"], float)
        np.testing.assert_allclose(scales, COSMOS_PIXEL_SCALE, rtol=1e-6)
