"""Eisenstein & Hu linear P(k) against CAMB (optional: skipped when camb is not installed)."""
import numpy as np
import pytest

from astrogen.cosmology import Cosmology, LinearPower


def test_eisenstein_hu_matches_camb_linear_power():
    camb = pytest.importorskip("camb")
    c = Cosmology()
    h = c.h
    pars = camb.CAMBparams()
    pars.set_cosmology(H0=100 * h, ombh2=c.Ob0 * h * h, omch2=c.Oc0 * h * h, mnu=0.0,
                       num_massive_neutrinos=0, TCMB=c.Tcmb0)
    pars.InitPower.set_params(As=2.1e-9, ns=c.n_s)
    pars.set_matter_power(redshifts=[0.0], kmax=2.0)
    res = camb.get_results(pars)
    k, _, pk = res.get_matter_power_spectrum(minkh=1e-3, maxkh=1.0, npoints=200)
    pk = pk[0] * (c.sigma8 / res.get_sigma8_0()) ** 2
    ratio = LinearPower(c)(k) / pk
    # EH98 fits the CDM+baryon transfer function to a few per cent (their fig. 4)
    assert np.max(np.abs(ratio - 1)) < 0.05
    # and a CAMB table loaded through from_arrays reproduces CAMB's sigma8
    assert LinearPower.from_arrays(k, pk, c).sigma(8.0) == pytest.approx(c.sigma8, rel=5e-3)
