"""FlowVAE decoder artefacts (issue 20): blocks, streaks, border frame, holes, taper loss.

    python benchmarks/flowvae_artefacts.py                                  # shipped model
    python benchmarks/flowvae_artefacts.py --models before=flowvae_cosmos64 \\
        after=/work/runs_real/flowvae_af/flowvae_cosmos64.keras            # before / after

Writes ``artefacts.json`` and ``stamps.png`` / ``spectra.png`` into ``--out`` (default
``benchmarks/results/flowvae_artefacts``). For ``--n`` rows of the package's COSMOS sampler
(conditions clipped to each model's training range, row seeds ``row_seeds(seed, row)``) the
raw decoder output (``FlowVAE.generate``: PSF-free, noise-free, native 64 x 64 at 0.03",
before any taper) is compared with a smooth reference drawn the same way: a round GalSim
Sersic profile of the row's (n, hlr) on the same grid (``method='no_pixel'``).

Per stamp, normalised to unit flux:

* ``blockiness_p`` (p = 2, 4, 8, 16: the decoder's upsampling grids): mean |difference of
  adjacent pixels| across the boundaries of a p-pixel grid (pixel index ``i = -1 mod p`` to
  ``i + 1``, both axes) over the mean on the lines next to them. Smooth images: ~1; steps
  on the grid: > 1.
* ``nyquist_frac`` / ``half_nyquist_frac`` / ``axis_frac``: fraction of the stamp's power
  (|DFT|^2, the zero frequency excluded) that its *residual* (stamp minus its Gaussian
  smoothing of sigma 1.5 pixels) has on the lines ``|kx|`` or ``|ky| = N/2`` (Nyquist),
  ``= N/4`` (half-Nyquist), and on the axes ``kx = 0`` or ``ky = 0`` beyond ``N/8``
  (straight streaks and a square frame put their power there).

Besides generated stamps (needs a trained flow), the decoder is measured on reconstructions
(decoder of the encoder mean) of 200 simulated galaxies no model saw (``--heldout``, seed 7),
next to their PSF-free truth: the same galaxies, so the truth is the reference.
* ``ring_frac``: light in the outer 2-pixel ring (``stages.generated.ring_fraction``).
* ``hole_frac``: fraction of the pixels within ``2 hlr`` (2 to 30 pixels) of the centre
  below a fifth of the stamp's Gaussian smoothing there ("zero-valued holes" inside the
  footprint);
  ``negative_frac``: fraction of negative pixels.

Then the ``flowvae.generate`` stage itself (``--stage-rows`` rows, ``out_of_range: clip``):
light kept after its edge taper (``1 - gen_taper_loss``: min, 1st percentile, median) and the
taper loss's median and 99th percentile.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PERIODS = (2, 4, 8, 16)


def blockiness(img: np.ndarray, p: int, exclude: float = 2.0) -> np.ndarray:
    """Per stamp: mean |adjacent-pixel difference| across the boundaries of the p-pixel grid
    (between pixels ``i = -1 mod p`` and ``i + 1``) over the mean of the differences on the
    two lines next to each boundary (``i - 1``, ``i + 1``), both axes; lines within
    ``exclude`` pixels of the stamp centre left out (a centred profile turns over there).
    Smooth images: ~1 whatever their size; steps on the grid: > 1."""
    n = img.shape[-1]
    dx = np.abs(np.diff(img, axis=-1))  # between i and i+1, i = 0..N-2
    dy = np.abs(np.diff(img, axis=-2))
    i = np.arange(1, n - 2)
    on = i[((i % p) == p - 1) & (np.abs(i + 0.5 - (n - 1) / 2.0) > exclude)]
    num = dx[..., on].mean(axis=(-1, -2)) + dy[..., on, :].mean(axis=(-1, -2))
    den = 0.5 * (dx[..., on - 1].mean(axis=(-1, -2)) + dx[..., on + 1].mean(axis=(-1, -2))
                 + dy[..., on - 1, :].mean(axis=(-1, -2)) + dy[..., on + 1, :].mean(axis=(-1, -2)))
    with np.errstate(divide="ignore", invalid="ignore"):
        return num / den


def residual_line_fractions(img: np.ndarray, sigma: float = 1.5) -> tuple:
    """Per stamp, fractions of the stamp's power (|DFT|^2, zero frequency excluded) that its
    high-pass residual (stamp minus its Gaussian smoothing) has on the lines |kx| or |ky| =
    N/2 (Nyquist), = N/4 (half-Nyquist), and = 0 with |k| >= N/8 (the axes: straight
    streaks and a square frame put their power there)."""
    from scipy.ndimage import gaussian_filter

    n = img.shape[-1]
    smooth = gaussian_filter(img, sigma=(0, sigma, sigma), mode="nearest")
    res = img - smooth
    pw = np.abs(np.fft.fft2(img)) ** 2
    pr = np.abs(np.fft.fft2(res)) ** 2
    total = pw.sum(axis=(1, 2)) - pw[:, 0, 0]
    k = np.abs(np.fft.fftfreq(n, 1.0 / n).astype(int))
    ky, kx = k[:, None], k[None, :]
    lines = [(ky == n // 2) | (kx == n // 2), (ky == n // 4) | (kx == n // 4),
             ((ky == 0) & (kx >= n // 8)) | ((kx == 0) & (ky >= n // 8))]
    return tuple(pr[:, m].sum(axis=1) / total for m in lines)


def hole_fraction(img: np.ndarray, hlr_pix: np.ndarray) -> np.ndarray:
    """Fraction of the pixels within ``2 hlr`` (2 to 30 pixels) of the centre that are
    below a fifth of the stamp's Gaussian smoothing (sigma 2 pixels) there: dark holes and
    rims inside the footprint (a smooth, centrally peaked profile has none)."""
    from scipy.ndimage import gaussian_filter

    n = img.shape[-1]
    c = (n - 1) / 2.0
    yy, xx = np.mgrid[:n, :n]
    r = np.hypot(yy - c, xx - c)
    smooth = gaussian_filter(img, sigma=(0, 2, 2), mode="nearest")
    out = np.empty(len(img))
    for i, h in enumerate(hlr_pix):
        m = r <= min(30.0, max(2 * h, 2.0))
        out[i] = np.mean(img[i][m] < 0.2 * smooth[i][m])
    return out


def _stats(x) -> dict:
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    return {"median": float(np.median(x)), "p1": float(np.percentile(x, 1)),
            "p99": float(np.percentile(x, 99)), "min": float(x.min()), "max": float(x.max())}


def metrics(img: np.ndarray, hlr_pix: np.ndarray) -> dict:
    from astrogen.stages.generated import ring_fraction

    img = np.asarray(img, np.float64)
    img = img / img.sum(axis=(1, 2), keepdims=True)
    nyq, half, axes = residual_line_fractions(img)
    out = {f"blockiness_{p}": _stats(blockiness(img, p)) for p in PERIODS}
    out["nyquist_frac"] = _stats(nyq)
    out["half_nyquist_frac"] = _stats(half)
    out["axis_frac"] = _stats(axes)
    out["ring_frac"] = _stats(ring_fraction(img))
    out["hole_frac"] = _stats(hole_fraction(img, hlr_pix))
    out["negative_frac"] = _stats((img < 0).mean(axis=(1, 2)))
    return out


def sersic_stamps(t, n: int, scale: float) -> np.ndarray:
    import galsim

    out = np.empty((len(t), n, n))
    for i in range(len(t)):
        prof = galsim.Sersic(n=float(np.clip(t["sersic_n"][i], 0.3, 6.2)),
                             half_light_radius=float(t["hlr"][i]), flux=1.0)
        out[i] = prof.drawImage(nx=n, ny=n, scale=scale, method="no_pixel").array
    return out


def stage_taper(model: str, rows: int, seed: int) -> dict:
    from astrogen.catalog.cosmos import CosmosSampler
    from astrogen.stages.base import StageContext
    from astrogen.stages.flowvae import FlowVAEGenerate

    t = CosmosSampler().sample(seed, np.arange(rows))
    with tempfile.TemporaryDirectory() as tmp:
        stage = FlowVAEGenerate(model=model, out_of_range="clip", batch_size=64)
        stage.setup(StageContext(name="gen", seed=seed, output_dir=Path(tmp),
                                 work_dir=Path(tmp)))
        t0 = time.perf_counter()
        cats = [stage.process(t[k:k + 500]).catalog for k in range(0, rows, 500)]
        dt = time.perf_counter() - t0
    loss = np.concatenate([np.asarray(c["gen_taper_loss"], float) for c in cats])
    kept = 1 - loss
    return {"rows": rows, "seconds": dt,
            "kept": {"min": float(kept.min()), "p1": float(np.percentile(kept, 1)),
                     "median": float(np.median(kept))},
            "taper_loss": {"median": float(np.median(loss)),
                           "p99": float(np.percentile(loss, 99)), "max": float(loss.max())}}


HELDOUT = {"n_galaxies": 200, "shard_size": 100, "stamp_size": 64, "pixel_scale": 0.03,
           "profile": "sersic", "mag_range": [16.5, 26.0], "noise": "cosmos",
           "noise_variance": "catalog", "seed": 7}


def load_any(spec: str):
    """``label=NAME`` (shipped name or .keras file) or ``label=ckpt:RUN_DIR`` (the latest
    checkpoint of a FlowVAE training run). Returns (label, model, stage model or None,
    flow trained?, description)."""
    from astrogen.models.flowvae import FlowVAE, load_flowvae
    from astrogen.models.pretrained import resolve_model_path

    label, name = spec.split("=", 1)
    if not name.startswith("ckpt:"):
        path = resolve_model_path(name, "flowvae")
        return label, load_flowvae(path), name, True, str(path)
    from astrogen.training.checkpoint import load_checkpoint

    run = Path(name[len("ckpt:"):])
    cfg = json.loads((run / "config.json").read_text())
    cfg = cfg.get("config", cfg)
    latest = json.loads((run / "checkpoints" / "latest.json").read_text())
    state, values = load_checkpoint(run / "checkpoints" / latest["file"], groups=("model",))
    arch = dict(cfg["flowvae"])
    model = FlowVAE(stamp_size=int(cfg["dataset"]["stamp_size"]),
                    condition_names=["mag", "hlr", "z"], **arch)
    for v, a in zip(model.weights, values["model"]):
        v.assign(a)
    vae_steps = int(cfg["training"]["vae_steps"])
    step = int(state["step"])
    return (label, model, None, step > vae_steps + 0.9 * int(cfg["training"]["flow_steps"]),
            f"{run} checkpoint step {step} (VAE phase: {vae_steps} steps)")


def reconstruct(model, data: dict, batch: int = 50) -> np.ndarray:
    out = []
    for k in range(0, len(data["observed"]), batch):
        z = model.encode(data["observed"][k:k + batch])
        out.append(np.asarray(model.decode(z), np.float64))
    return np.concatenate(out)


def show(path: Path, stamps: dict, pick, titles, what: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(stamps)
    fig, axes = plt.subplots(len(labels), len(pick), figsize=(2 * len(pick),
                                                              2 * len(labels)))
    for r, lab in enumerate(labels):
        for j, i in enumerate(pick):
            a = stamps[lab][i] / stamps[lab][i].max()
            axes[r, j].imshow(np.log10(np.clip(a, 1e-4, None)), vmin=-4, vmax=0,
                              cmap="magma", origin="lower")
            axes[r, j].set_xticks([])
            axes[r, j].set_yticks([])
            if r == 0:
                axes[r, j].set_title(titles[j], fontsize=8)
        axes[r, 0].set_ylabel(lab, fontsize=8)
    fig.suptitle(f"{what}, log10(pixel / peak) from -4 to 0")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["before=flowvae_cosmos64"],
                    help="label=model name or .keras path, or label=ckpt:RUN_DIR")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--stage-rows", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--heldout", default=str(REPO / "output" / "datasets" /
                                             "flowvae_artefacts_heldout_64"),
                    help="simulated stamp set (built if missing, seed 7: no model saw it)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "flowvae_artefacts"))
    args = ap.parse_args(argv)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from astrogen.catalog.cosmos import CosmosSampler
    from astrogen.datasets import build_stamp_dataset, read_stamps
    from astrogen.seeds import row_seeds

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    t = CosmosSampler().sample(args.seed, np.arange(args.n))
    res = {"command": "python benchmarks/flowvae_artefacts.py " + " ".join(
        argv if argv is not None else sys.argv[1:]), "n": args.n, "seed": args.seed,
        "machine": platform.platform(), "models": {}}
    build_stamp_dataset(args.heldout, HELDOUT)
    held = read_stamps(args.heldout, fields=("observed", "truth", "conditions"))
    held_hlr = np.minimum(held["conditions"][:, 1], 10.0) / 0.03
    res["heldout"] = {"path": args.heldout, "config": HELDOUT}
    res["truth_reference"] = metrics(held["truth"], held_hlr)
    gen, rec = {}, {"truth": np.asarray(held["truth"], np.float64)}
    n_pix, scale = 64, 0.03
    for spec in args.models:
        label, model, stage_name, flow_ok, desc = load_any(spec)
        n_pix, scale = model.stamp_size, model.pixel_scale
        entry = {"model": desc, "config": {k: model.get_config().get(k) for k in
                                            ("upsampling", "padding", "channels",
                                             "output_activation")}}
        rec[label] = reconstruct(model, held)
        entry["reconstructed"] = metrics(rec[label], held_hlr)
        err = np.abs(rec[label] - held["truth"]).sum(axis=(1, 2)) / np.abs(
            held["truth"]).sum(axis=(1, 2))
        entry["reconstruction_l1_over_truth"] = _stats(err)
        if flow_ok:
            c = np.stack([np.asarray(t[k], float) for k in ("mag", "hlr", "z")], axis=1)
            if model.condition_range is not None:
                c = np.clip(c, model.condition_range[0], model.condition_range[1])
            t0 = time.perf_counter()
            img = model.generate(c, row_seeds(args.seed, np.arange(args.n)), batch_size=64)
            entry["decoder_seconds"] = time.perf_counter() - t0
            gen[label] = np.asarray(img, np.float64)
            entry["generated"] = metrics(gen[label], np.minimum(c[:, 1], 10.0) / scale)
        else:
            entry["generated"] = "not measured: the flow of this checkpoint is not trained"
        if stage_name is not None and flow_ok:
            entry["stage"] = stage_taper(stage_name, args.stage_rows, args.seed)
        res["models"][label] = entry
        print(label, json.dumps({k: round(v["median"], 5) for k, v in
                                 entry["reconstructed"].items()}), flush=True)
        if isinstance(entry["generated"], dict):
            print("  generated", json.dumps({k: round(v["median"], 5) for k, v in
                                             entry["generated"].items()}), flush=True)
        if "stage" in entry:
            print("  stage", entry["stage"], flush=True)
    print("truth", json.dumps({k: round(v["median"], 5) for k, v in
                               res["truth_reference"].items()}))
    if gen:
        gen["sersic"] = sersic_stamps(t, n_pix, scale)
        res["sersic_reference"] = metrics(gen["sersic"],
                                          np.minimum(np.asarray(t["hlr"]), 10.0) / scale)
    (out_dir / "artefacts.json").write_text(json.dumps(res, indent=1))

    hlr_h = held["conditions"][:, 1]
    pick = np.argsort(hlr_h)[np.linspace(0, len(hlr_h) - 1, 8).astype(int)]
    show(out_dir / "reconstructions.png", rec, pick,
         [f"hlr {hlr_h[i]:.2f}\", m {held['conditions'][i, 0]:.1f}" for i in pick],
         "held-out simulated galaxies: PSF-free truth and decoder(encoder mean)")
    if gen:
        pick = np.argsort(np.asarray(t["hlr"]))[np.linspace(0, args.n - 1, 8).astype(int)]
        show(out_dir / "stamps.png", gen, pick, [f"hlr {t['hlr'][i]:.2f}\"" for i in pick],
             "generated raw 64x64 PSF-free stamps (no taper)")
    # mean axis power spectrum (|DFT|^2 summed over ky, normalised stamps)
    fig, ax = plt.subplots(figsize=(6, 4))
    for lab, st in rec.items():
        a = st / st.sum(axis=(1, 2), keepdims=True)
        p = (np.abs(np.fft.rfft2(a)) ** 2).mean(axis=0).sum(axis=0)
        ax.semilogy(np.arange(len(p)), p, label=f"{lab} (reconstruction)" if lab != "truth"
                    else "truth")
    for kk in (n_pix // 16, n_pix // 8, n_pix // 4, n_pix // 2):
        ax.axvline(kk, color="0.8", lw=0.8)
    ax.set_xlabel("kx [cycles per stamp]")
    ax.set_ylabel("mean power (summed over ky)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "spectra.png", dpi=90)
    plt.close(fig)
    return res


if __name__ == "__main__":
    main()
