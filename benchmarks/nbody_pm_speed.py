"""Time one particle-mesh step against its floor, numpy backend vs the TensorFlow one, same run.

The *floor* of a PM step is what any PM code must do once per step at that size, each part
timed alone with the numpy tools the solver uses:

* one real FFT pair (``scipy.fft.rfftn`` + ``irfftn``, float32, the solver's threads) on the
  force mesh;
* one CIC paint of all particles;
* one CIC readout of one scalar mesh at all particles;

paint and readout with the tools the solver's force uses: the compiled kernels of
:mod:`astrogen.nbody.cic_kernels` when the solver uses them (numba installed, the default),
else the numpy stencil + ``np.bincount`` / ``np.take``. The numpy-tool floor is timed too
(``floor_*_numpy_tools``), and so is the step of the same solver with ``kernels="numpy"``
(``step_numpy_kernels``: the force before the compiled kernels).

A *step* is :meth:`astrogen.nbody.ParticleMesh.kdk_step` (kick, drift, one force evaluation,
kick), timed on the particles of a z = 0 run of the same box, for both backends. Every timing
is the minimum over ``--repeats`` interleaved rounds, both in wall-clock time and in the CPU
time of this process (``time.process_time``, all threads): on a shared machine the CPU time
is the steadier measure of the work done, the wall time what a user waits. The force of the
numpy backend is also broken down into its parts.

    python benchmarks/nbody_pm_speed.py                 # 64^3 particles, 128^3 mesh (~2 min)
    python benchmarks/nbody_pm_speed.py --n 128 --box 256

Writes ``pm_speed_<n>.json`` under ``--out`` (default ``benchmarks/results/nbody_pm_speed``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from astrogen.nbody import cic_kernels  # noqa: E402
from astrogen.nbody.mesh import cic_stencil, paint_stencil, readout_stencil  # noqa: E402
from astrogen.nbody.pm import ParticleMesh, stencil_derivative  # noqa: E402


def _timer(fn, rounds: dict, name: str):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    t1, c1 = time.perf_counter(), time.process_time()
    rounds.setdefault(name, []).append((t1 - t0, c1 - c0))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=64, help="particles per side")
    ap.add_argument("--box", type=float, default=128.0, help="box side, Mpc/h")
    ap.add_argument("--mesh-factor", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5, help="steps of the run giving the particles")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-tf", action="store_true", help="skip the TensorFlow backend")
    ap.add_argument("--workers", type=int, default=None,
                    help="FFT threads of the numpy backend (default: all CPUs)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/nbody_pm_speed"))
    args = ap.parse_args(argv)
    import scipy.fft as sfft

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kw = dict(n_particles=args.n, box_size=args.box, mesh_factor=args.mesh_factor,
              n_steps=args.steps)
    pm = ParticleMesh(**kw, backend="numpy", workers=args.workers)
    pm_np = ParticleMesh(**kw, backend="numpy", workers=args.workers, kernels="numpy")
    res = pm.run(a_out=[1.0], seed=args.seed)
    snap = res.snapshots[-1]
    pos, mom = snap.positions, snap.momenta
    nm, w_ = pm.n_mesh, pm.workers
    print(f"{args.n}^3 particles, {nm}^3 force mesh, L = {args.box} Mpc/h, z = 0 particles, "
          f"{w_} FFT threads, {os.cpu_count()} CPUs")

    compiled = pm.compiled
    print("compiled CIC kernels (numba):", compiled)
    states = {"numpy": pm.start(pos, mom), "numpy_kernels": pm_np.start(pos, mom)}
    pm_tf = None
    if not args.no_tf:
        pm_tf = ParticleMesh(**kw, backend="tensorflow")
        states["tensorflow"] = pm_tf.start(pos, mom)
        pm_tf.kdk_step(*states["tensorflow"], 0.95, 1.0)  # trace the tf.function once
    pm.kdk_step(*states["numpy"], 0.95, 1.0)
    pm_np.kdk_step(*states["numpy_kernels"], 0.95, 1.0)

    x3 = np.ascontiguousarray(np.mod(pos.T, args.box), dtype=np.float32)
    cells = x3 * np.float32(nm / args.box)
    to_mesh = np.float32(nm / args.box)
    if compiled:  # compile before timing
        cic_kernels.readout3(cic_kernels.gradient_mesh(
            cic_kernels.paint(cells, nm).astype(np.float32)), cells)
        cic_kernels.readout(np.zeros((nm,) * 3, np.float32), cells[:, :8])
    scal = np.random.default_rng(0).normal(size=(nm,) * 3).astype(np.float32)
    psi = np.random.default_rng(1).normal(size=(nm,) * 3).astype(np.float32)
    kern = pm._potential_kernel()
    grad = np.empty_like(psi)
    t: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        # ---- floor parts, each alone
        _timer(lambda: sfft.irfftn(sfft.rfftn(scal, workers=w_), s=(nm,) * 3, workers=w_),
               t, "floor_fft_pair")
        _timer(lambda: paint_stencil(*cic_stencil(x3 * to_mesh, nm), nm), t,
               "floor_paint_numpy_tools")
        _timer(lambda: readout_stencil(scal, *cic_stencil(x3 * to_mesh, nm)), t,
               "floor_readout_numpy_tools")
        if compiled:
            _timer(lambda: cic_kernels.paint(x3 * to_mesh, nm), t, "floor_paint")
            _timer(lambda: cic_kernels.readout(scal, x3 * to_mesh), t, "floor_readout")
            # ---- compiled force, part by part
            rho_c = _timer(lambda: cic_kernels.paint(x3 * to_mesh, nm), t, "force_c_paint")
            g3 = _timer(lambda: cic_kernels.gradient_mesh(psi, pm.gradient), t,
                        "force_c_gradient_mesh")
            _timer(lambda: cic_kernels.readout3(g3, cells), t, "force_c_readout3")
            _timer(lambda: cic_kernels.readout_gradient(psi, cells, pm.gradient), t,
                   "force_c_readout_gradient")
            del rho_c
        # ---- numpy-kernel force, part by part
        idx, w = _timer(lambda: cic_stencil(cells, nm), t, "force_stencil")
        rho = _timer(lambda: paint_stencil(idx, w, nm), t, "force_bincount")
        dk = _timer(lambda: sfft.rfftn((rho - args.n**3 / nm**3).astype(np.float32),
                                       workers=w_), t, "force_rfftn")
        _timer(lambda: sfft.irfftn(dk * kern, s=(nm,) * 3,
                                   workers=w_), t, "force_irfftn")
        _timer(lambda: [stencil_derivative(psi, a, pm.gradient, out=grad) for a in range(3)], t,
               "force_derivatives_x3")
        _timer(lambda: [readout_stencil(psi, idx, w) for _ in range(3)], t, "force_readout_x3")
        # ---- whole steps
        _timer(lambda: pm.kdk_step(*states["numpy"], 0.95, 1.0), t, "step_numpy")
        _timer(lambda: pm_np.kdk_step(*states["numpy_kernels"], 0.95, 1.0), t,
               "step_numpy_kernels")
        _timer(lambda: pm.force(pos), t, "force_numpy")
        if pm_tf is not None:
            _timer(lambda: pm_tf.kdk_step(*states["tensorflow"], 0.95, 1.0), t,
                   "step_tensorflow")
    if not compiled:
        for k in ("paint", "readout"):
            t[f"floor_{k}"] = t[f"floor_{k}_numpy_tools"]
    summary = {"args": vars(args), "n_mesh": nm, "fft_workers": w_, "cpus": os.cpu_count(),
               "compiled_kernels": compiled,
               "machine": platform.machine(),
               "load_average_1_5_15": list(os.getloadavg())}
    for j, clock in enumerate(("wall", "cpu")):
        best = {k: float(np.min([r[j] for r in v])) for k, v in t.items()}
        floor = best["floor_fft_pair"] + best["floor_paint"] + best["floor_readout"]
        floor_np = (best["floor_fft_pair"] + best["floor_paint_numpy_tools"]
                    + best["floor_readout_numpy_tools"])
        res_c = {"time_s_min_over_repeats": best, "floor_s": floor,
                 "floor_numpy_tools_s": floor_np,
                 "step_over_floor": {"numpy": best["step_numpy"] / floor},
                 "step_over_numpy_tools_floor": {
                     "numpy": best["step_numpy"] / floor_np,
                     "numpy_kernels": best["step_numpy_kernels"] / floor_np},
                 "speedup_vs_numpy_kernels": best["step_numpy_kernels"] / best["step_numpy"]}
        if pm_tf is not None:
            res_c["step_over_floor"]["tensorflow"] = best["step_tensorflow"] / floor
            res_c["speedup_numpy_vs_tensorflow"] = best["step_tensorflow"] / best["step_numpy"]
        summary[clock] = res_c
    print(f"\n  {'part':24s} {'wall ms':>8s} {'CPU ms':>8s}")
    for k in sorted(t):
        print(f"  {k:24s} {1e3 * summary['wall']['time_s_min_over_repeats'][k]:8.2f} "
              f"{1e3 * summary['cpu']['time_s_min_over_repeats'][k]:8.2f}")
    for clock in ("wall", "cpu"):
        r = summary[clock]
        print(f"\n{clock}: floor (FFT pair + paint + readout) = {1e3 * r['floor_s']:.2f} ms")
        for b, v in r["step_over_floor"].items():
            print(f"{clock}: step / floor, {b:10s}: {v:.2f}")
        print(f"{clock}: numpy-tool floor = {1e3 * r['floor_numpy_tools_s']:.2f} ms; step / it:"
              f" {r['step_over_numpy_tools_floor']['numpy']:.2f} (kernels='numpy': "
              f"{r['step_over_numpy_tools_floor']['numpy_kernels']:.2f}); the step is "
              f"{r['speedup_vs_numpy_kernels']:.2f}x faster than with kernels='numpy'")
        if pm_tf is not None:
            print(f"{clock}: numpy step is {r['speedup_numpy_vs_tensorflow']:.2f}x faster than "
                  "the TensorFlow step")
    print(f"load average (1, 5, 15 min): {summary['load_average_1_5_15']}")
    path = out / f"pm_speed_{args.n}_w{w_}.json"
    path.write_text(json.dumps(summary, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
