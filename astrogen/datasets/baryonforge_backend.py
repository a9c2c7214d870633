r"""The BaryonForge backend of :mod:`astrogen.datasets.baryons` (reference gas fields).

Runs only in the separate environment made by ``make baryons-env`` (BaryonForge 1.0.0 pins
``pyccl==2.8.0`` and ``numpy<2``); nothing else in the package imports it.

Model: Schneider et al. (2019) profiles (``BaryonForge.Profiles.Schneider19``) with the
parameters of BaryonForge's own test suite (``DEFAULT_PARAMS``, overridable by the data set's
``bf_params``), FoF masses taken as ``M200c`` (Msun; CCL units without ``h``), at the data
set's redshift, on the PM grid (cell size ``L / n`` Mpc/h). Per box:

1. ``total``: ``BaryonifyGrid`` with ``Baryonification3D(DarkMatterOnly, DarkMatterBaryon)``
   displaces the cells of the dark-matter-only mass grid (mass conserved to float rounding).
2. ``PaintProfilesGrid`` paints, out to ``epsilon_max R200c``, the halo ``Gas`` density,
   the one-halo ``DarkMatterBaryon`` matter density (its two-halo term set to zero) and the
   hydrostatic ``ElectronPressure``, each convolved with the grid cell (``ConvolvedProfile``
   with ``GridPixelApprox``) so that sub-cell haloes paint cell averages.
3. The gas follows the baryonified matter with the local gas fraction: in each cell a share
   ``alpha = min(rho_halo / rho_total, 1)`` of the matter belongs to haloes, whose gas
   fraction is ``rho_gas / rho_halo`` (Schneider et al. 2019: bound + ejected gas, stars
   removed), and the rest is unbound matter at the cosmic fraction ``Ob0 / Om0``;
   ``gas = total (alpha f_halo + (1 - alpha) Ob0/Om0) / (Ob0/Om0)``. A box without haloes
   therefore gets ``gas = total = dm``.
4. ``pressure`` = halo ``P_e`` + unbound gas at ``T_igm (rho / rho_b)^(2/3)``;
   ``temperature`` = ``P_e / (n_e k)`` of the sum (electron-weighted), clipped to
   ``[T_MIN, T_MAX]``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["DEFAULT_PARAMS", "paint", "ERG_PER_KEV", "T_MIN", "T_MAX"]

#: temperature floor and ceiling (K): cells whose painted pressure sits on almost no gas
#: (a halo centre displaced out of its cell) would otherwise get unphysical temperatures
T_MIN, T_MAX = 1.0e2, 1.0e9

#: erg per keV
ERG_PER_KEV = 1.602176634e-9

#: Schneider et al. (2019) parameters of BaryonForge's test suite (``tests/defaults.py``,
#: ``bpar_S19``; masses in Msun with h = 0.7 folded in as there)
DEFAULT_PARAMS = dict(theta_ej=4.0, theta_co=0.1, M_c=1e14 / 0.7, mu_beta=0.4, eta=0.3,
                      eta_delta=0.3, tau=-1.5, tau_delta=0.0, A=0.09 / 2, M1=2.5e11 / 0.7,
                      epsilon_h=0.015, a=0.3, n=2, epsilon=4.0, p=0.3, q=0.707, gamma=2.0,
                      delta=7.0)

_CACHE: dict = {}


def _no_two_halo(par: dict, cut: dict):
    """A zero profile in place of the two-halo term: the painted ``DarkMatterBaryon`` is then
    the halo's own (one-halo) matter."""
    import BaryonForge as bfg

    class NoTwoHalo(bfg.Profiles.Schneider19.SchneiderProfiles):
        def _real(self, cosmo, r, M, a):
            out = np.zeros((np.atleast_1d(M).size, np.atleast_1d(r).size))
            if np.ndim(r) == 0:
                out = out[:, 0]
            return out[0] if np.ndim(M) == 0 else out

    return NoTwoHalo(**par, **cut)


def _models(cfg, res_mpc: float, m_min: float, m_max: float):
    import BaryonForge as bfg
    import pyccl as ccl

    par = {**DEFAULT_PARAMS, **dict(cfg.bf_params)}
    key = (tuple(sorted(par.items())), cfg.Om0, cfg.Ob0, cfg.h, cfg.sigma8, cfg.n_s,
           round(res_mpc, 9), cfg.redshift, cfg.epsilon_max)
    hit = _CACHE.get(key)
    if hit is not None and hit["m_min"] <= m_min and hit["m_max"] >= m_max:
        return hit
    cosmo = ccl.Cosmology(Omega_c=cfg.Om0 - cfg.Ob0, Omega_b=cfg.Ob0, h=cfg.h,
                          sigma8=cfg.sigma8, n_s=cfg.n_s, matter_power_spectrum="linear")
    cosmo.compute_sigma()
    cut = {"cutoff": 0.5 * cfg.box_size / cfg.h, "proj_cutoff": 0.5 * cfg.box_size / cfg.h}
    dmo = bfg.Profiles.Schneider19.DarkMatterOnly(**par, **cut)
    dmb = bfg.Profiles.Schneider19.DarkMatterBaryon(**par, **cut)
    bar = bfg.Profiles.Baryonification3D(dmo, dmb, cosmo, epsilon_max=cfg.epsilon_max)
    z = float(cfg.redshift)
    lo, hi = m_min / 1.5, m_max * 1.5
    bar.setup_interpolator(z_min=z, z_max=z + 1e-3, N_samples_z=2, z_linear_sampling=True, M_min=lo, M_max=hi,
                           N_samples_Mass=20, R_min=1e-3, R_max=cfg.box_size / cfg.h,
                           N_samples_R=200, verbose=False)
    pix = bfg.utils.GridPixelApprox(res_mpc)
    tabs = {}
    for name, prof in (("gas", bfg.Profiles.Schneider19.Gas(**par, **cut)),
                       ("pe", bfg.Profiles.ElectronPressure(**par, **cut)),
                       ("halo", bfg.Profiles.Schneider19.DarkMatterBaryon(
                           twohalo=_no_two_halo(par, cut), **par, **cut))):
        t = bfg.utils.TabulatedProfile(bfg.utils.ConvolvedProfile(prof, pix), cosmo)
        t.setup_interpolator(z_min=z, z_max=z + 1e-3, N_samples_z=2, z_linear_sampling=True, M_min=lo, M_max=hi,
                             N_samples_Mass=20, R_min=1e-3, R_max=cfg.box_size / cfg.h,
                             N_samples_R=200, verbose=False)
        tabs[name] = t
    out = {"cosmo": cosmo, "baryonify": bar, "m_min": lo, "m_max": hi, **tabs,
           "params": par}
    _CACHE.clear()
    _CACHE[key] = out
    return out


def paint(dm: np.ndarray, halos: dict, cfg) -> dict:
    """BaryonForge fields of one box (see the module docstring).

    Parameters
    ----------
    dm : numpy.ndarray, shape (n, n, n)
        Dark-matter-only ``1 + delta``.
    halos : dict
        ``x, y, z`` (Mpc/h) and ``mass`` (Msun/h) arrays.
    cfg : astrogen.datasets.baryons.BaryonDatasetConfig

    Returns
    -------
    dict
        ``total`` (1 + delta), ``gas`` (/ mean baryon density), ``temperature`` (K),
        ``pressure`` (keV cm^-3), as float64 arrays of shape (n, n, n).
    """
    import BaryonForge as bfg
    import pyccl as ccl

    from astrogen.datasets.baryons import K_B_KEV, MU_E, T_IGM, mean_gas_density_cgs

    dm = np.asarray(dm, np.float64)
    n = dm.shape[0]
    h = float(cfg.h)
    a = 1.0 / (1.0 + float(cfg.redshift))
    res = float(cfg.box_size) / n / h  # comoving Mpc
    mass = np.asarray(halos["mass"], float) / h  # Msun
    m_lo = float(mass.min()) if mass.size else 1e12
    m_hi = float(mass.max()) if mass.size else 1e13
    mods = _models(cfg, res, m_lo, m_hi)
    cosmo = mods["cosmo"]
    cdict = {"Omega_m": cfg.Om0, "Omega_b": cfg.Ob0, "sigma8": cfg.sigma8, "h": h,
             "n_s": cfg.n_s, "w0": -1.0}
    bins = np.arange(n) * res
    pos = {c: np.asarray(halos[c], float) / h for c in ("x", "y", "z")}
    cat = bfg.utils.HaloNDCatalog(x=pos["x"], y=pos["y"], z=pos["z"], M=mass,
                                  redshift=float(cfg.redshift), cosmo=cdict)
    rho_m = float(ccl.rho_x(cosmo, a, "matter", is_comoving=True))  # Msun / Mpc^3 comoving
    cell_mass = rho_m * res ** 3
    grid = bfg.utils.GriddedMap(map=dm * cell_mass, bins=bins, redshift=float(cfg.redshift),
                                cosmo=cdict)
    if mass.size:
        total = bfg.Runners.BaryonifyGrid(cat, grid, epsilon_max=cfg.epsilon_max,
                                          model=mods["baryonify"], verbose=False).process()
        total = total / cell_mass

        def run(model):
            return bfg.Runners.PaintProfilesGrid(cat, grid, epsilon_max=cfg.epsilon_max,
                                                 model=model, verbose=False).process()

        gas_halo = run(mods["gas"]) / rho_m * a ** 3
        pe_halo = run(mods["pe"]) / ERG_PER_KEV  # keV cm^-3
        mat_halo = run(mods["halo"]) / rho_m * a ** 3
    else:
        total, gas_halo, pe_halo, mat_halo = dm.copy(), 0.0 * dm, 0.0 * dm, 0.0 * dm
    fb = cfg.Ob0 / cfg.Om0
    gas_halo = np.maximum(np.nan_to_num(gas_halo), 0.0)
    pe_halo = np.maximum(np.nan_to_num(pe_halo), 0.0)
    mat_halo = np.maximum(np.nan_to_num(mat_halo), 0.0)
    # share of the local (baryonified) matter that belongs to haloes, and its gas fraction
    alpha = np.clip(mat_halo / np.maximum(total, 1e-12), 0.0, 1.0)
    f_halo = np.clip(gas_halo / np.maximum(mat_halo, 1e-30), 0.0, 1.0)
    f_loc = alpha * f_halo + (1.0 - alpha) * fb
    gas = total * f_loc / fb  # / mean baryon density
    field = total * (1.0 - alpha)  # unbound gas, / mean baryon density
    rho_b = mean_gas_density_cgs(cfg.Ob0, h, cfg.redshift)  # g cm^-3
    m_p = 1.67262192e-24
    n_e_field = field * rho_b / (MU_E * m_p)
    pe = pe_halo + n_e_field * K_B_KEV * T_IGM * np.maximum(field, 1e-6) ** (2.0 / 3.0)
    n_e = np.maximum(gas, 1e-6) * rho_b / (MU_E * m_p)
    temp = np.clip(pe / (n_e * K_B_KEV), T_MIN, T_MAX)
    return {"total": total, "gas": gas, "temperature": temp, "pressure": pe}
