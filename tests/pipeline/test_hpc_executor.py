"""The HPC path of the executor: scheduler files (dask-mpi, ``dask scheduler
--scheduler-file``), dask-jobqueue clusters from the YAML (checked by their job scripts, and
run through the same code path with dask-jobqueue's local stand-in), dashboards on loopback."""
import json
import logging

import numpy as np
import pytest
from astropy.io import fits

from astrogen.cli import main
from astrogen.errors import ConfigError, UnknownKeyError
from astrogen.pipeline import build_pipeline, load_config
from astrogen.pipeline import executors
from astrogen.pipeline.executors import (DaskExecutor, ExecutorError, ExecutorSpec,
                                         executor_with, jobqueue_cluster, make_executor,
                                         parse_executor)
from astrogen.pipeline.runner import run_pipeline

pytest.importorskip("dask_jobqueue")

SLURM = ("{type: slurm, cores: 8, memory: 32GB, processes: 2, jobs: 3, queue: regular, "
         "account: m1234, walltime: '01:30:00', interface: lo, "
         "job_extra_directives: ['--constraint=cpu', '--qos=debug'], "
         "job_script_prologue: ['source /opt/venv/bin/activate']}")


def _run(path, **kw):
    return run_pipeline(build_pipeline(load_config(path)), progress=False, **kw)


def _data(out) -> dict:
    """File name -> pixel and table data of every FITS product (headers aside: they name the
    output folder, and each run here writes to its own)."""
    data = {}
    for path in sorted(out.glob("*.fits")):
        with fits.open(path) as hl:
            data[path.name] = [np.asarray(h.data).tobytes() for h in hl if h.data is not None]
    return data


def _bound_hosts(http_server) -> set:
    return {s.getsockname()[0] for s in http_server._sockets.values()}


def test_slurm_job_script_from_the_yaml(write_pipeline):
    path, _ = write_pipeline(executor=SLURM)
    spec = build_pipeline(load_config(path)).executor
    assert (spec.type, spec.cores, spec.memory, spec.jobs) == ("slurm", 8, "32GB", 3)
    cluster = jobqueue_cluster(spec)
    try:
        script = cluster.job_script()
        lines = script.splitlines()
        for directive in ("#SBATCH -p regular", "#SBATCH -A m1234", "#SBATCH -t 01:30:00",
                          "#SBATCH --cpus-per-task=8", "#SBATCH --constraint=cpu",
                          "#SBATCH --qos=debug"):
            assert directive in lines, directive
        assert any(line.startswith("#SBATCH --mem=") for line in lines)
        assert lines.index("source /opt/venv/bin/activate") < next(
            i for i, line in enumerate(lines) if "dask_worker" in line)
        worker = next(line for line in lines if "dask_worker" in line)
        # 2 processes of 4 threads, pointed at this cluster's scheduler
        assert "--nworkers 2" in worker and "--nthreads 4" in worker
        assert cluster.scheduler_address in worker and "--interface lo" in worker
        # the dashboard of a cluster started here listens on loopback only
        assert _bound_hosts(cluster.scheduler.http_server) == {"127.0.0.1"}
    finally:
        cluster.close()
    assert spec.to_dict()["job_extra_directives"] == ["--constraint=cpu", "--qos=debug"]
    assert isinstance(make_executor(spec), DaskExecutor)


def test_pbs_job_script():
    spec = parse_executor({"type": "pbs", "cores": 4, "memory": "8GB", "queue": "workq",
                           "account": "astro", "walltime": "00:30:00", "interface": "lo"})
    cluster = jobqueue_cluster(spec)
    try:
        lines = cluster.job_script().splitlines()
    finally:
        cluster.close()
    for directive in ("#PBS -q workq", "#PBS -A astro", "#PBS -l walltime=00:30:00"):
        assert directive in lines, directive
    assert any(line.startswith("#PBS -l select=1:ncpus=4") for line in lines)


@pytest.mark.parametrize("value, exc, message", [
    ({"type": "slurm", "cores": 4}, ConfigError,
     "executor: a slurm cluster needs 'memory'"),
    ({"type": "slurm", "cores": 4, "memory": "lots"}, ConfigError,
     "executor.memory: must be an amount of memory such as '16GB'"),
    ({"type": "slurm", "cores": 4, "memory": "4GB", "walltime": "1h"}, ConfigError,
     "executor.walltime: must be a time limit such as '01:30:00'"),
    ({"type": "slurm", "cores": 2, "memory": "4GB", "processes": 3}, ConfigError,
     "executor.processes: must be <= cores"),
    ({"type": "pbs", "cores": 2, "memory": "4GB", "n_workers": 2}, ConfigError,
     "executor.n_workers: does not apply to a pbs cluster"),
    ({"type": "dask", "cores": 2}, ConfigError,
     "executor.cores: is used only by the batch-queue executors"),
    ({"type": "dask", "address": "tcp://h:1", "scheduler_file": "s.json"}, ConfigError,
     "executor.scheduler_file: give either address or scheduler_file"),
    ({"type": "dask", "scheduler_file": "s.json", "n_workers": 2}, ConfigError,
     "executor.n_workers: applies to the LocalCluster started by astrogen, not to an "
     "existing scheduler (scheduler_file)"),
    ({"type": "slurm", "cores": 2, "memory": "4GB", "job_extra_directives": "--qos=x"},
     ConfigError, "executor.job_extra_directives: must be a list of strings"),
    ({"type": "slurm", "cores": 2, "memory": "4GB", "job_extra_directives": [3]},
     ConfigError, "executor.job_extra_directives: must be a list of strings"),
    ({"type": "slurm", "cores": 2, "memory": "4GB", "queues": "x"}, UnknownKeyError,
     "executor.queues: is not an executor key. Did you mean 'queue'?"),
    ({"type": "local", "scheduler_file": "s.json"}, ConfigError,
     "executor.scheduler_file: is used only by the dask executor"),
    ({"type": "dask", "timeout": 0}, ConfigError, "executor.timeout: must be > 0 seconds"),
    ({"type": "slurn"}, ConfigError, "Did you mean 'slurm'?"),
])
def test_bad_hpc_settings_name_the_key(value, exc, message):
    with pytest.raises(exc) as e:
        parse_executor(value)
    assert message in str(e.value)


def test_yaml_error_gives_the_line(write_pipeline):
    path, _ = write_pipeline(executor="{type: slurm, cores: 4, memory: 4GB, walltime: 90min}")
    with pytest.raises(ConfigError, match=r"^executor.walltime \(line 4\): must be a time"):
        build_pipeline(load_config(path))


def test_command_line_scheduler_file_and_batch_types():
    local = ExecutorSpec()
    s = executor_with(local, scheduler_file="/scratch/s.json")  # implies dask
    assert (s.type, s.scheduler_file, s.address) == ("dask", "/scratch/s.json", None)
    # a scheduler file given on the command line replaces the YAML's scheduler
    s = executor_with(ExecutorSpec(type="dask", address="tcp://h:1", retries=1),
                      scheduler_file="s.json")
    assert (s.address, s.scheduler_file, s.retries) == (None, "s.json", 1)
    yaml_slurm = parse_executor({"type": "slurm", "cores": 4, "memory": "8GB", "jobs": 2})
    assert executor_with(yaml_slurm, type="slurm") == yaml_slurm
    with pytest.raises(ConfigError, match=r"^--scheduler-file: give either address or sched"):
        executor_with(local, address="tcp://h:1", scheduler_file="s.json")
    with pytest.raises(ConfigError, match=r"^executor: a slurm cluster needs 'cores'"):
        executor_with(local, type="slurm")
    with pytest.raises(ConfigError, match=r"^--workers: does not apply to a slurm cluster"):
        executor_with(yaml_slurm, type="slurm", n_workers=2)


def test_missing_scheduler_file_fails_before_writing(write_pipeline, tmp_path):
    path, out = write_pipeline()
    spec = parse_executor({"type": "dask", "scheduler_file": str(tmp_path / "none.json"),
                           "timeout": 0.5})
    with pytest.raises(ExecutorError) as e:
        _run(path, executor=spec)
    assert str(e.value).startswith("executor.scheduler_file: no scheduler file after 0.5 s")
    assert not out.exists()


def test_unreachable_scheduler_fails_within_the_timeout(write_pipeline, tmp_path):
    import time

    path, out = write_pipeline()
    sfile = tmp_path / "stale.json"  # a scheduler file left by a cluster that is gone
    sfile.write_text(json.dumps({"type": "Scheduler", "address": "tcp://127.0.0.1:9"}))
    for spec, key in ((parse_executor({"type": "dask", "address": "tcp://127.0.0.1:9",
                                       "timeout": 1}), "executor.address"),
                      (parse_executor({"type": "dask", "scheduler_file": str(sfile),
                                       "timeout": 1}), "executor.scheduler_file")):
        t0 = time.monotonic()
        with pytest.raises(ExecutorError) as e:
            _run(path, executor=spec)
        assert time.monotonic() - t0 < 30
        assert str(e.value).startswith(f"{key}: cannot reach the Dask scheduler")
    assert not out.exists()


def test_run_through_a_scheduler_file_matches_local(write_pipeline, dask_address, tmp_path,
                                                     capsys):
    """As on SLURM with ``dask scheduler --scheduler-file``: the scheduler's file is all the
    run is told, from the YAML or from ``--scheduler-file``."""
    from distributed import Client

    sfile = tmp_path / "scheduler.json"
    with Client(dask_address, set_as_default=False) as client:
        client.write_scheduler_file(str(sfile))
    assert json.loads(sfile.read_text())["address"] == dask_address
    path, out = write_pipeline(n_objects=24, chunk_size=6, render_size=16, pngs=False)
    _run(path)
    local = _data(out)
    assert {"stamps.fits", "truth_catalog.fits", "scene.fits"} <= set(local)
    path_f, out_f = write_pipeline("file", n_objects=24, chunk_size=6, render_size=16,
                                   pngs=False,
                                   executor=f"{{type: dask, scheduler_file: {sfile}}}")
    _run(path_f)
    assert _data(out_f) == local
    prov = json.loads((out_f / "provenance.json").read_text())
    assert prov["executor"]["scheduler_file"] == str(sfile)
    assert prov["executor"]["worker_threads"] == 2
    out_cli = tmp_path / "out_cli"
    assert main(["-v", "0", "run", str(path), f"output={out_cli}", "--scheduler-file",
                 str(sfile), "--no-progress"]) == 0
    assert _data(out_cli) == local
    prov = json.loads((out_cli / "provenance.json").read_text())
    assert prov["executor"]["scheduler_file"] == str(sfile)


def test_batch_queue_code_path_runs_the_pipeline(write_pipeline, monkeypatch, caplog):
    """``type: slurm`` end to end, with dask-jobqueue's own stand-in for a queue (its
    LocalCluster runs each job script's worker as a local process): same cluster object,
    scale(jobs=...), client and run as on a real cluster; same data as a local run."""
    path, out = write_pipeline(n_objects=24, chunk_size=6, render_size=16, pngs=False)
    _run(path)
    local = _data(out)
    monkeypatch.setitem(executors.JOBQUEUE_TYPES, "slurm", "dask_jobqueue.local:LocalCluster")
    path_q, out_q = write_pipeline(
        "queue", n_objects=24, chunk_size=6, render_size=16, pngs=False,
        executor="{type: slurm, cores: 1, memory: 2GB, processes: 1, jobs: 1, "
                 "walltime: '00:10:00', interface: lo}")
    with caplog.at_level(logging.INFO, logger="astrogen"):
        _run(path_q)
    assert _data(out_q) == local
    prov = json.loads((out_q / "provenance.json").read_text())["executor"]
    assert (prov["type"], prov["cores"], prov["jobs"], prov["memory"]) == ("slurm", 1, 1,
                                                                             "2GB")
    assert prov["worker_threads"] == 1  # the chunks ran on the job's worker
    text = caplog.text
    assert "slurm cluster, 1 job(s) of 1 core(s) and 2GB submitted" in text
    assert "dask dashboard: http://127.0.0.1:" in text


def test_local_cluster_dashboard_on_loopback_and_logged(caplog):
    ex = DaskExecutor(parse_executor({"type": "dask", "n_workers": 1,
                                      "dashboard_address": "127.0.0.1:0"}))
    with caplog.at_level(logging.INFO, logger="astrogen"):
        ex.start()
    try:
        server = ex.cluster.scheduler.http_server
        assert _bound_hosts(server) == {"127.0.0.1"}
        link = ex.dashboard_link()
        assert link.startswith(f"http://127.0.0.1:{server.port}/status")
        assert f"dask dashboard: {link}" in caplog.text
    finally:
        ex.close()
    assert ExecutorSpec(type="dask").dashboard == "127.0.0.1:8787"
    assert parse_executor({"type": "dask", "dashboard_address": False}).dashboard is None
    off = DaskExecutor(parse_executor({"type": "dask", "n_workers": 1,
                                       "dashboard_address": False}))
    off.start()
    try:
        assert off.dashboard_link() is None
    finally:
        off.close()


def test_shipped_hpc_examples_stay_valid(tmp_path):
    """examples/hpc: the overrides of the login-node script give a valid slurm executor
    (its job script has the settings), the batch script's command line uses existing options."""
    import re
    import shlex
    from pathlib import Path

    from astrogen.cli import _parser
    from astrogen.pipeline.config import apply_overrides

    root = Path(__file__).resolve().parents[2]
    text = (root / "examples/hpc/slurm_jobqueue.sh").read_text().replace("\\\n", " ")
    args = shlex.split(next(line for line in text.splitlines()
                            if line.startswith("astrogen run")).replace("$SCRATCH",
                                                                       str(tmp_path)))
    overrides = [a for a in args[3:] if "=" in a and not a.startswith("-")]
    cfg = apply_overrides(load_config(root / args[2]), overrides)
    spec = build_pipeline(cfg).executor
    assert (spec.type, spec.cores, spec.jobs, spec.queue) == ("slurm", 32, 4, "regular")
    cluster = jobqueue_cluster(spec)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "source ~/astrogen-env/bin/activate" in script and "#SBATCH -t 02:00:00" in script
    sbatch = (root / "examples/hpc/slurm_scheduler_file.sbatch").read_text()
    sbatch = sbatch.replace("\\\n", " ")
    line = next(line for line in sbatch.splitlines() if line.startswith("astrogen run"))
    ns = _parser().parse_known_args(shlex.split(re.sub(r"\$\w+", "x", line))[1:])[0]
    assert ns.scheduler_file and ns.file == "pipelines/parametric_mock.yaml"
