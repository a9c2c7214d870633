"""PSF convolution and Gaussian likelihood (astrogen.models.psf_likelihood)."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

galsim = pytest.importorskip("galsim")
pytest.importorskip("tensorflow")

from astrogen.errors import ConfigError  # noqa: E402
from astrogen.models.psf_likelihood import (convolve, estimate_noise_power,  # noqa: E402
                                             gaussian_log_likelihood, padded_shape,
                                             psf_fourier, psf_log_likelihood)

N = 64
SCALE = 0.03  # arcsec / pixel (COSMOS ACS)


def _draw(gal, psf):
    """Unconvolved galaxy, PSF (centre at pixel N//2) and GalSim's convolution."""
    gi = gal.drawImage(nx=N, ny=N, scale=SCALE, method="no_pixel").array
    pi = psf.drawImage(nx=N, ny=N, scale=SCALE, method="no_pixel", use_true_center=False).array
    ref = galsim.Convolve(gal, psf).drawImage(nx=N, ny=N, scale=SCALE, method="no_pixel").array
    return gi.astype(np.float64), pi.astype(np.float64), ref.astype(np.float64)


def test_convolve_matches_galsim_sersic_moffat():
    gal = galsim.Sersic(n=1, half_light_radius=0.2, flux=2.5).shear(e1=0.2, e2=0.1)
    psf = galsim.Moffat(beta=3.5, fwhm=0.25)
    gi, pi, ref = _draw(gal, psf)
    out = convolve(gi[None].astype(np.float32), pi[None].astype(np.float32)).numpy()[0]
    assert out.shape == (N, N)
    assert np.abs(out - ref).max() < 1e-3 * ref.max()
    # flux conserved (up to light scattered out of the stamp)
    assert abs(out.sum() - ref.sum()) < 2e-3 * ref.sum()


def test_convolve_gaussians_exact_and_fourier_path():
    # smooth, well-sampled profiles: the discrete convolution is exact to float precision,
    # which checks the centring convention to a small fraction of a pixel
    gal = galsim.Gaussian(half_light_radius=0.2, flux=1.7).shear(e1=-0.3, e2=0.1)
    psf = galsim.Gaussian(fwhm=0.12)
    gi, pi, ref = _draw(gal, psf)
    direct = convolve(gi[None], pi[None]).numpy()[0]  # float64 path
    assert np.abs(direct - ref).max() < 1e-5 * ref.max()
    psf_k = psf_fourier(pi[None], gi[None].shape)
    assert padded_shape((N, N), (N, N)) == (2 * N, 2 * N)
    assert tuple(psf_k.shape) == (1, 2 * N, N + 1)
    via_k = convolve(gi[None], psf_k).numpy()[0]
    np.testing.assert_allclose(via_k, direct, rtol=0, atol=1e-12)
    # one (ny, nx) PSF broadcast over a batch
    batch = convolve(np.stack([gi, 2 * gi]), pi).numpy()
    np.testing.assert_allclose(batch[1], 2 * direct, rtol=0, atol=1e-12)


def test_convolve_centring_padding_and_wraparound():
    img = np.zeros((1, 16, 16))
    img[0, 2, 15] = 1.0
    delta = np.zeros((1, 16, 16))
    delta[0, 8, 8] = 1.0  # centred delta: identity
    np.testing.assert_allclose(convolve(img, delta).numpy(), img, atol=1e-12)
    shifted = np.zeros((1, 16, 16))
    shifted[0, 8, 9] = 1.0  # moves light by +1 pixel in x
    padded = convolve(img, shifted).numpy()
    assert np.abs(padded).max() < 1e-12  # pushed out of the stamp: lost, not wrapped
    circular = convolve(img, shifted, pad=False).numpy()
    assert abs(circular[0, 2, 0] - 1.0) < 1e-12  # wrapped around


def test_white_noise_log_likelihood_matches_numpy():
    gal = galsim.Exponential(half_light_radius=0.25, flux=3.0)
    psf = galsim.Gaussian(fwhm=0.15)
    gi, pi, ref = _draw(gal, psf)
    rng = np.random.default_rng(4)
    sigmas = np.array([0.01, 0.02])
    obs = ref[None] + rng.normal(size=(2, N, N)) * sigmas[:, None, None]
    model = np.stack([gi, 0.9 * gi])
    ll = psf_log_likelihood(obs, model, np.stack([pi, pi]), sigma=sigmas).numpy()
    conv = convolve(model, pi).numpy()
    n_pix = N * N
    expected = (-0.5 * ((obs - conv) ** 2).sum(axis=(1, 2)) / sigmas ** 2
                - n_pix * np.log(sigmas) - 0.5 * n_pix * np.log(2 * np.pi))
    np.testing.assert_allclose(ll, expected, rtol=1e-10)
    # the right model is more likely than a wrong one
    assert ll[0] > gaussian_log_likelihood(obs[:1], conv[1:], sigma=sigmas[:1]).numpy()[0]
    # white noise given as a flat power spectrum gives the same answer
    power = np.broadcast_to(sigmas[:, None, None] ** 2, (2, N, N // 2 + 1))
    ll_k = psf_log_likelihood(obs, model, pi, noise_power=power).numpy()
    np.testing.assert_allclose(ll_k, expected, rtol=1e-9)
    # float32 training path agrees to float32 precision
    ll32 = psf_log_likelihood(obs.astype(np.float32), model.astype(np.float32),
                              pi.astype(np.float32), sigma=sigmas.astype(np.float32)).numpy()
    np.testing.assert_allclose(ll32, expected, rtol=1e-4)


@pytest.mark.parametrize("nx", [8, 7])
def test_correlated_noise_log_likelihood_matches_dense_covariance(nx):
    from scipy.stats import multivariate_normal

    ny = 6
    ky = np.fft.fftfreq(ny)[:, None] * 2 * np.pi
    kx = np.fft.fftfreq(nx)[None, :] * 2 * np.pi
    power = 0.04 * (2.0 + np.cos(kx) + 0.5 * np.cos(ky) + 0.3 * np.cos(kx + ky))  # > 0
    autocov = np.fft.ifft2(power).real  # covariance of pixels at separation (dy, dx)
    yy, xx = np.indices((ny, nx))
    dy = (yy.ravel()[:, None] - yy.ravel()[None, :]) % ny
    dx = (xx.ravel()[:, None] - xx.ravel()[None, :]) % nx
    cov = autocov[dy, dx]
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(3, ny, nx))
    model = rng.normal(size=(3, ny, nx)) * 0.1
    expected = [multivariate_normal(mean=model[i].ravel(), cov=cov).logpdf(obs[i].ravel())
                for i in range(3)]
    got_full = gaussian_log_likelihood(obs, model, noise_power=power[None]).numpy()
    got_half = gaussian_log_likelihood(obs, model, noise_power=power[None, :, : nx // 2 + 1])
    np.testing.assert_allclose(got_full, expected, rtol=1e-9)
    np.testing.assert_allclose(got_half.numpy(), expected, rtol=1e-9)


def test_estimate_noise_power_white():
    rng = np.random.default_rng(1)
    p = estimate_noise_power(rng.normal(scale=0.5, size=(400, 16, 16)))
    assert p.shape == (16, 9)
    assert abs(p.mean() - 0.25) < 0.01


def test_errors():
    img = np.zeros((1, 8, 8))
    with pytest.raises(ConfigError, match="exactly one"):
        gaussian_log_likelihood(img, img)
    with pytest.raises(ConfigError, match="noise_power"):
        gaussian_log_likelihood(img, img, noise_power=np.ones((1, 8, 3)))
    with pytest.raises(ConfigError, match="pad=False"):
        convolve(img, np.ones((1, 9, 9)), pad=False)
