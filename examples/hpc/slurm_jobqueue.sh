#!/bin/bash
# From a login node: astrogen starts the Dask scheduler in this process and submits the worker
# jobs itself (dask-jobqueue, pip install 'astrogen[hpc]'); the jobs are cancelled when the run
# ends. The same keys can live in the pipeline's YAML under executor: (see README).
# The dashboard is on 127.0.0.1:8787 of this node (address in the log): ssh -L 8787:localhost:8787
astrogen run pipelines/flowvae_mock.yaml output=$SCRATCH/flowvae_mock --no-progress \
    executor.type=slurm executor.cores=32 executor.memory=64GB executor.processes=8 \
    executor.jobs=4 executor.queue=regular executor.walltime=02:00:00 \
    'executor.job_script_prologue=["source ~/astrogen-env/bin/activate"]'
