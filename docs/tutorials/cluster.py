"""Running on a cluster
====================

The map stages of a pipeline (everything between the catalog and the files) run wherever
its ``executor:`` key says, one catalog chunk per Dask task; the products are the same
bytes whatever the executor (every random draw is a function of the seed, stage and row).
Two ways onto a SLURM cluster (see :doc:`/slurm`):

1. ``executor: {type: slurm, cores: ..., memory: ..., jobs: ...}``: astrogen submits the
   worker jobs itself with dask-jobqueue. Below, the batch script those jobs would run is
   generated from the YAML and checked (no queue system is needed for that).
2. ``executor: {type: dask, scheduler_file: ...}``: a scheduler started by a batch job
   (``dask scheduler --scheduler-file``, ``dask-mpi``) writes its address to a file, and
   the run connects to it. Below, a local Dask cluster (one worker process of two threads)
   plays the batch job's scheduler and workers: it writes the same scheduler file, and the
   pipeline runs on it through exactly the code path of a cluster, then is compared, file by file,
   with the same pipeline run in this process.
"""
import json
from pathlib import Path

import matplotlib
import numpy as np
from astropy.io import fits

import astrogen
from astrogen.pipeline import build_pipeline, load_config
from astrogen.pipeline.executors import jobqueue_cluster

matplotlib.use("Agg")
import matplotlib.pyplot as plt

PIPELINE_YAML = """
name: cluster_demo
seed: 5
output: out_local
executor:                        # the batch-queue executor (dask-jobqueue)
  type: slurm
  cores: 32                      # per job
  memory: 64GB                   # per job
  processes: 8                   # Dask workers per job (4 threads each)
  jobs: 4
  queue: regular
  account: m1234
  walltime: '02:00:00'
  job_script_prologue: ['source ~/astrogen-env/bin/activate']
stages:
  - {name: catalog, type: catalog.cosmos, n_objects: 24, chunk_size: 6}
  - {name: positions, type: catalog.positions, inputs: [catalog], survey: lsst_i, size: 96}
  - {name: render, type: galsim.parametric, inputs: [positions], stamp_size: 32}
  - {name: observe, type: observe, inputs: [render], survey: lsst_i, stamp_size: 16}
  - {name: stamps, type: output.stamps, inputs: [observe]}
  - {name: scene, type: scene, inputs: [render], survey: lsst_i, stamp_size: 24,
     preview: null}
"""


def main():
    """Both paths; the Dask worker processes import this script, so it runs only as main."""
    Path("pipeline.yaml").write_text(PIPELINE_YAML)

    # 1. the SLURM job script dask-jobqueue would submit (4 times), from the YAML
    spec = build_pipeline(load_config("pipeline.yaml")).executor
    cluster = jobqueue_cluster(spec)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    print(script)
    lines = script.splitlines()
    for directive in ("#SBATCH -p regular", "#SBATCH -A m1234", "#SBATCH -t 02:00:00",
                      "#SBATCH --cpus-per-task=32"):
        assert directive in lines, directive
    worker = next(line for line in lines if "dask_worker" in line)
    assert "--nworkers 8" in worker and "--nthreads 4" in worker
    assert lines.index("source ~/astrogen-env/bin/activate") < lines.index(worker)

    # 2. the scheduler-file path, on a local stand-in for the batch job's Dask cluster
    from distributed import Client, LocalCluster

    from astrogen.pipeline.executors import LOOPBACK_NO_DASHBOARD

    local = astrogen.run("pipeline.yaml", executor="local")
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, host="127.0.0.1",
                      **LOOPBACK_NO_DASHBOARD) as dask_cluster:
        with Client(dask_cluster.scheduler_address) as client:
            client.write_scheduler_file("scheduler.json")  # what `dask scheduler` writes
        remote = astrogen.run("pipeline.yaml", overrides={"output": "out_cluster"},
                              executor={"type": "dask", "scheduler_file": "scheduler.json"})
    prov = json.loads(Path("out_cluster/provenance.json").read_text())["executor"]
    print("executor of the cluster run:", {k: prov[k] for k in ("type", "scheduler_file")},
          f"{remote.n_chunks} chunks")
    assert prov["type"] == "dask" and prov["scheduler_file"] == "scheduler.json"

    # the same products, pixel for pixel (headers name their own output folder)
    for name in sorted(f.name for f in Path("out_local").glob("*.fits")):
        with fits.open(f"out_local/{name}") as a, fits.open(f"out_cluster/{name}") as b:
            same = all(np.array_equal(np.asarray(x.data), np.asarray(y.data))
                       for x, y in zip(a, b) if x.data is not None)
        print(f"{name}: local and cluster data identical: {same}")
        assert same, name

    scene = fits.getdata("out_cluster/scene.fits")
    fig, ax = plt.subplots(figsize=(3.5, 3.5))
    ax.imshow(np.arcsinh(scene / np.std(scene)), origin="lower", cmap="gray")
    ax.set_title("scene.fits of the cluster run (asinh)")
    ax.axis("off")
    fig.tight_layout()
    fig.savefig("cluster_scene.png", dpi=80)


if __name__ == "__main__":
    main()
