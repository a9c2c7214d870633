"""Flux calibration in one place (astrogen/physics/photometry.py)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from astrogen.constants import COSMOS_ZERO_POINT
from astrogen.physics.photometry import (flux_from_mag, image_zero_point, mag_from_flux,
                                         sky_level_per_pixel)
from astrogen.physics.surveys import get_survey

PKG = Path(__file__).resolve().parents[2] / "astrogen"


def test_zero_point_magnitude_gives_one_unit():
    assert flux_from_mag(COSMOS_ZERO_POINT, COSMOS_ZERO_POINT) == 1.0
    assert flux_from_mag(27.0, 27.0, exposure_time=30.0) == 30.0
    # AB: 5 mag brighter is 100 times the flux; 2.5 mag is 10 times
    assert flux_from_mag(20.0, 25.0) == pytest.approx(100.0, rel=1e-12)
    assert flux_from_mag(22.5, 25.0, exposure_time=2.0) == pytest.approx(20.0, rel=1e-12)


def test_known_ab_example_nanomaggy():
    # 1 nanomaggy = 3.631 uJy is AB mag 22.5: with zero point 22.5 it is 1 unit, and the
    # AB zero point of a flux density in Jy is 8.90 mag (3631 Jy = 0 mag)
    assert flux_from_mag(22.5, 22.5) == 1.0
    assert flux_from_mag(0.0, 8.90) * 1.0 == pytest.approx(3631.0, rel=5e-4)
    assert mag_from_flux(3631.0, 8.90) == pytest.approx(0.0, abs=5e-4)


def test_round_trip_with_zero_point_and_exposure():
    rng = np.random.default_rng(1)
    mag = rng.uniform(14.0, 30.0, 1000)
    for zp, t in ((COSMOS_ZERO_POINT, 1.0), (28.36, 5520.0), (24.6, 565.0)):
        f = flux_from_mag(mag, zp, exposure_time=t)
        assert f.shape == mag.shape and np.all(f > 0)
        np.testing.assert_allclose(mag_from_flux(f, zp, exposure_time=t), mag, rtol=0,
                                   atol=1e-10)
        # exposure time scales the flux linearly; the image zero point absorbs it
        np.testing.assert_allclose(f / t, flux_from_mag(mag, zp), rtol=1e-12)
        np.testing.assert_allclose(flux_from_mag(mag, image_zero_point(zp, t)), f, rtol=1e-12)


def test_nonpositive_and_nan_handling():
    m = mag_from_flux(np.array([0.0, -3.0, np.nan, 1.0]), 25.0)
    assert np.isnan(m[:3]).all() and m[3] == 25.0
    m = mag_from_flux(np.array([0.0, 10.0]), 25.0, nonpositive=np.inf)
    assert m[0] == np.inf and m[1] == pytest.approx(22.5)
    f = flux_from_mag(np.array([np.nan, np.inf, -np.inf]), 25.0)
    assert np.isnan(f[0]) and f[1] == 0.0 and f[2] == np.inf


def test_scalars_stay_scalars_and_dtypes_are_kept():
    assert isinstance(flux_from_mag(20.0, 25.0), float)
    assert flux_from_mag(np.float32([20.0]), 25.0).dtype == np.float32
    assert flux_from_mag([20, 21], 25).dtype == np.float64  # integers -> float64
    assert np.ndim(mag_from_flux(10.0, 25.0)) == 0


def test_identical_to_the_expressions_the_stages_used():
    """Bit for bit: outputs of pipelines stay identical after the move."""
    rng = np.random.default_rng(2)
    mag = rng.uniform(15.0, 28.0, 500)
    s = get_survey("lsst_i")
    assert np.array_equal(flux_from_mag(mag, COSMOS_ZERO_POINT),
                          10.0 ** (-0.4 * (mag - COSMOS_ZERO_POINT)))
    assert np.array_equal(s.electrons(mag),
                          10.0 ** (-0.4 * (mag - s.zero_point)) * s.exposure_time)
    assert s.sky_level == float(10.0 ** (-0.4 * (s.sky_brightness - s.zero_point))
                                * s.exposure_time * s.pixel_scale ** 2)
    assert sky_level_per_pixel(s.sky_brightness, s.zero_point, s.exposure_time,
                               s.pixel_scale) == s.sky_level
    f = rng.uniform(0.1, 1e5, 500)
    assert np.array_equal(mag_from_flux(f, 25.0), 25.0 - 2.5 * np.log10(f))
    assert image_zero_point(s.zero_point, s.exposure_time) == \
        s.zero_point + 2.5 * np.log10(s.exposure_time)


#: a magnitude-to-flux conversion written out: ``10 ** (-0.4 ...`` / ``10.0**(0.4 ...``,
#: or ``... - 2.5 * np.log10(`` (flux to magnitude)
CALIBRATION = re.compile(r"10(\.0*)?\s*\*\*\s*\(\s*-?\s*0?\.4\b|-\s*2\.5\s*\*\s*(np\.)?log10\(")


def _code_lines(path: Path):
    """``{line number: the line's code tokens joined}``: no docstrings, strings, comments."""
    import ast
    import io
    import tokenize

    text = path.read_text()
    doc_lines = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Expr) and isinstance(getattr(node, "value", None), ast.Constant) \
                and isinstance(node.value.value, str):
            doc_lines.update(range(node.lineno, node.end_lineno + 1))
    code = {}
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type in (tokenize.COMMENT, tokenize.STRING, tokenize.NL, tokenize.NEWLINE,
                        tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
            continue
        if tok.start[0] not in doc_lines:
            code.setdefault(tok.start[0], []).append(tok.string)
    return {n: "".join(toks) for n, toks in code.items()}


def test_no_module_but_photometry_writes_the_calibration():
    offenders = []
    for p in sorted(PKG.rglob("*.py")):
        if p == PKG / "physics" / "photometry.py":
            continue
        for n, line in _code_lines(p).items():
            if CALIBRATION.search(line):
                offenders.append(f"{p.relative_to(PKG.parent)}:{n}: {line.strip()}")
    assert not offenders, ("flux calibration written outside astrogen/physics/photometry.py "
                           "(use flux_from_mag / mag_from_flux):\n" + "\n".join(offenders))


@pytest.mark.parametrize("line", ["flux = 10.0 ** (-0.4 * (mag - zp))",
                                  "f = 10**(0.4*(a - b))", "m = zp - 2.5 * np.log10(f)"])
def test_the_calibration_check_finds_a_written_out_conversion(line):
    assert CALIBRATION.search(line)
