"""Does fine-tuning the FlowVAE on real COSMOS galaxies (with rotations and flips) help?

    python benchmarks/flowvae_finetune_real.py            # shipped model
    python benchmarks/flowvae_finetune_real.py --model m.keras --steps 300

The 100 real HST/COSMOS I<26 galaxies are split at random (``--seed``) into 50 for fine-tuning
and 50 held out. The fine-tuning set is augmented with the 8 rotations/flips of the dihedral
group (the stamp and its PSF transformed together, re-centred on pixel N//2). Only the decoder
is fine-tuned (encoder and flow frozen, so the conditional flow still describes the latent
codes), on the ELBO with the PSF-convolved likelihood (white noise of each stamp's variance,
bright stamps tempered like the main training: ``max_peak_snr``).

Evidence written to ``benchmarks/results/flowvae/finetune_real.json``:

* negative ELBO (nats per stamp) of the 50 held-out real stamps (correlated-noise likelihood),
  before and after;
* realism on the 50 held-out galaxies (statmorph statistics, two-sample KS distance, as in
  ``benchmarks/flowvae_benchmark.py``), before / after / the Sersic baseline.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from flowvae_benchmark import STATS, _ctx, realism_scores  # noqa: E402


def dihedral(images: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Rotate by ``k`` quarter turns (and flip), keeping pixel ``(N//2, N//2)`` fixed."""
    n = images.shape[-1]
    probe = np.zeros((n, n))
    probe[n // 2, n // 2] = 1.0

    def op(a):
        a = np.rot90(a, k, axes=(-2, -1))
        return a[..., ::-1] if flip else a

    y, x = np.argwhere(op(probe) == 1.0)[0]
    return np.roll(op(images), (n // 2 - y, n // 2 - x), axis=(-2, -1)).copy()


def neg_elbo(model, obs, psf, power, seed: int) -> float:
    out = model.vae_losses(obs, psf, noise_power=power, seed=(seed, 0), beta=1.0, free_bits=0.0)
    return float(-out["elbo"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="flowvae_cosmos64")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--max-peak-snr", type=float, default=50.0)
    ap.add_argument("--realizations", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "flowvae"))
    args = ap.parse_args(argv)

    from astrogen.tf_quiet import import_tensorflow_quietly

    tf = import_tensorflow_quietly()
    import keras

    from astrogen.datasets.galaxy_stamps import load_real_cosmos
    from astrogen.models.flowvae import load_flowvae
    from astrogen.models.pretrained import resolve_model_path
    from astrogen.stages.flowvae import FlowVAEGenerate
    from astrogen.stages.galsim_stages import ParametricGalaxies
    from astrogen.training.flowvae_trainer import temper_bright_stamps

    out = Path(args.out)
    tmp = out / ".tmp_finetune"
    tmp.mkdir(parents=True, exist_ok=True)
    path = resolve_model_path(args.model, "flowvae")
    base = load_flowvae(path)
    tuned = load_flowvae(path)  # a separate copy to fine-tune
    n = base.stamp_size
    real = load_real_cosmos(n, seed=args.seed)
    perm = np.random.default_rng(args.seed).permutation(len(real["observed"]))
    train, test = np.sort(perm[:50]), np.sort(perm[50:])

    obs = np.concatenate([dihedral(real["observed"][train], k, f)
                          for k in range(4) for f in (False, True)]).astype(np.float32)
    psf = np.concatenate([dihedral(real["psf"][train], k, f)
                          for k in range(4) for f in (False, True)]).astype(np.float32)
    sig = np.tile(real["noise_sigma"][train], 8).astype(np.float32)

    before = {"train_neg_elbo": neg_elbo(base, real["observed"][train], real["psf"][train],
                                         real["noise_power"][train], args.seed),
              "heldout_neg_elbo": neg_elbo(base, real["observed"][test], real["psf"][test],
                                           real["noise_power"][test], args.seed)}
    keras.utils.set_random_seed(args.seed)
    opt = keras.optimizers.Adam(args.lr)
    variables = tuned.decoder.trainable_variables
    rng = np.random.default_rng(args.seed + 1)
    losses = []
    t0 = time.perf_counter()
    for step in range(args.steps):
        rows = rng.choice(len(obs), args.batch, replace=False)
        b = temper_bright_stamps({"observed": obs[rows], "noise_sigma": sig[rows]},
                                 args.max_peak_snr)
        with tf.GradientTape() as tape:
            loss = tuned.vae_losses(b["observed"], psf[rows], noise_sigma=b["noise_sigma"],
                                    seed=(args.seed, step), beta=1.0, free_bits=0.0,
                                    training=True)["loss"]
        grads = tape.gradient(loss, variables)
        opt.apply_gradients(zip(grads, variables))
        losses.append(float(loss))
    t_ft = time.perf_counter() - t0
    after = {"train_neg_elbo": neg_elbo(tuned, real["observed"][train], real["psf"][train],
                                        real["noise_power"][train], args.seed),
             "heldout_neg_elbo": neg_elbo(tuned, real["observed"][test], real["psf"][test],
                                          real["noise_power"][test], args.seed)}

    gen_base = FlowVAEGenerate(model=str(path), out_of_range="clip", batch_size=64)
    gen_base.setup(_ctx("generate", args.seed, tmp))
    gen_tuned = FlowVAEGenerate(model=str(path), out_of_range="clip", batch_size=64)
    gen_tuned.setup(_ctx("generate", args.seed, tmp))
    gen_tuned.model = tuned  # same stage seed -> the same latent draws as the base model
    param = ParametricGalaxies(profile="sersic", stamp_size=n, pixel_scale=base.pixel_scale)
    param.setup(_ctx("parametric", args.seed, tmp))
    realism, *_ = realism_scores({"base": gen_base, "finetuned": gen_tuned,
                                  "galsim_sersic": param}, real, test, args.realizations,
                                 args.seed)
    ks = {k: {m: realism["statistics"][k][m]["ks"] for m in ("base", "finetuned",
                                                              "galsim_sersic")} for k in STATS}
    better = int(sum(ks[k]["finetuned"] < ks[k]["base"] for k in STATS))
    result = {"model": args.model, "args": vars(args), "train_rows": train.tolist(),
              "heldout_rows": test.tolist(), "n_augmented": int(len(obs)),
              "finetune_seconds": t_ft, "loss_first_20": float(np.mean(losses[:20])),
              "loss_last_20": float(np.mean(losses[-20:])), "before": before, "after": after,
              "realism_ks_heldout": ks, "realism_full": realism,
              "finetuned_better_ks_count": better, "n_statistics": len(STATS),
              "verdict": ("fine-tuning improves" if better > len(STATS) / 2 and
                          after["heldout_neg_elbo"] < before["heldout_neg_elbo"]
                          else "fine-tuning does not clearly improve")
              + f" the held-out realism ({better}/{len(STATS)} statistics closer) and the "
              f"held-out negative ELBO ({before['heldout_neg_elbo']:.1f} -> "
              f"{after['heldout_neg_elbo']:.1f})"}
    (out / "finetune_real.json").write_text(json.dumps(result, indent=1) + "\n")
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    print(json.dumps({k: result[k] for k in ("before", "after", "realism_ks_heldout",
                                              "verdict")}, indent=1))


if __name__ == "__main__":
    main()
