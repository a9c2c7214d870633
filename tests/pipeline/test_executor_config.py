"""The ``executor:`` key and the command-line options: checked like the rest of the YAML."""
import logging

import pytest

from astrogen.cli import main
from astrogen.errors import ConfigError, UnknownKeyError
from astrogen.pipeline import build_pipeline, load_config
from astrogen.pipeline.executors import (DaskExecutor, ExecutorSpec, LocalExecutor,
                                         executor_with, make_executor, parse_executor)


def test_default_is_local(write_pipeline):
    path, _ = write_pipeline()
    p = build_pipeline(load_config(path))
    assert p.executor == ExecutorSpec() and p.executor.type == "local"
    assert isinstance(make_executor(p.executor), LocalExecutor)


def test_yaml_forms(write_pipeline):
    path, _ = write_pipeline(executor="{type: dask, n_workers: 2, threads_per_worker: 1}")
    spec = build_pipeline(load_config(path)).executor
    assert (spec.type, spec.n_workers, spec.threads_per_worker) == ("dask", 2, 1)
    assert isinstance(make_executor(spec), DaskExecutor)
    path, _ = write_pipeline(executor="dask")
    assert build_pipeline(load_config(path)).executor.type == "dask"
    spec = parse_executor({"type": "dask", "address": "tcp://10.0.0.1:8786", "retries": 5})
    assert spec.address == "tcp://10.0.0.1:8786" and spec.retries == 5
    assert spec.to_dict() == {"type": "dask", "address": "tcp://10.0.0.1:8786", "retries": 5,
                              "max_in_flight": None}


def test_executor_is_not_part_of_the_configuration_hash(write_pipeline):
    a, _ = write_pipeline("a")
    b, _ = write_pipeline("b", executor="{type: dask, n_workers: 2}")
    pa, pb = build_pipeline(load_config(a)), build_pipeline(load_config(b))
    assert pa.output != pb.output  # different folders: compare the rest of the config
    ra = {k: v for k, v in pa.resolved.items() if k != "output"}
    rb = {k: v for k, v in pb.resolved.items() if k != "output"}
    assert ra == rb and "executor" not in pb.resolved


def test_unknown_key_names_path_and_line(write_pipeline):
    path, _ = write_pipeline(executor="{type: dask, n_worker: 2}")
    with pytest.raises(UnknownKeyError) as e:
        build_pipeline(load_config(path))
    text = str(e.value)
    assert text.startswith("executor.n_worker (line 4): is not an executor key.")
    assert "Did you mean 'n_workers'?" in text


@pytest.mark.parametrize("value, message", [
    ({"type": "dusk"}, "must be one of ['local', 'dask', 'slurm', 'pbs']. Did you mean 'dask'?"),
    ({"n_workers": 2}, "the executor needs a 'type'"),
    ({"type": "dask", "n_workers": 0}, "executor.n_workers: must be an integer >= 1."),
    ({"type": "dask", "n_workers": True}, "executor.n_workers: must be an integer"),
    ({"type": "dask", "threads_per_worker": "2"}, "executor.threads_per_worker: must be an"),
    ({"type": "dask", "retries": -1}, "executor.retries: must be an integer >= 0."),
    ({"type": "local", "n_workers": 2}, "executor.n_workers: is used only by the dask"),
    ({"type": "dask", "address": "tcp://h:1", "n_workers": 2}, "not to an existing scheduler"),
    (["dask"], "must be 'local', 'dask' or a mapping"),
])
def test_bad_values(value, message):
    with pytest.raises(ConfigError, match=None) as e:
        parse_executor(value)
    assert message in str(e.value)


def test_command_line_options():
    local = ExecutorSpec()
    assert executor_with(local) is local
    assert executor_with(local, type="dask").type == "dask"
    s = executor_with(local, n_workers=3)  # --workers implies dask
    assert (s.type, s.n_workers) == ("dask", 3)
    s = executor_with(ExecutorSpec(type="dask", n_workers=2, retries=1), address="tcp://h:1")
    assert (s.address, s.n_workers, s.retries) == ("tcp://h:1", None, 1)
    s = executor_with(ExecutorSpec(type="dask", address="tcp://h:1"), n_workers=2)
    assert (s.address, s.n_workers) == (None, 2)
    assert executor_with(ExecutorSpec(type="dask", n_workers=2), type="local").type == "local"
    with pytest.raises(ConfigError, match=r"^--workers: is used only by the dask executor"):
        executor_with(local, type="local", n_workers=2)
    with pytest.raises(ConfigError, match=r"^--workers: must be an integer >= 1"):
        executor_with(local, n_workers=0)


def test_cli_reports_bad_option_in_one_line(write_pipeline, capsys):
    path, out = write_pipeline()
    assert main(["run", str(path), "--executor", "local", "--workers", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["astrogen: error: ConfigError: --workers: is used only by the dask "
                   "executor (set type: dask). Received: n_workers=2"]
    assert not out.exists()


def test_quiet_command_line_keeps_dask_quiet_when_distributed_is_imported_later():
    # importing distributed sets its loggers to INFO; below -v 2 the command line must win,
    # or Dask's connection tear-down messages reach the user after a one-line error
    import subprocess
    import sys

    code = ("import logging\n"
            "from astrogen.cli import _quiet_dask_logs\n"
            "_quiet_dask_logs()\n"
            "import distributed\n"
            "print(min(logging.getLogger(n).getEffectiveLevel() for n in\n"
            "          ('distributed', 'distributed.batched', 'distributed.client')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert int(out) == logging.CRITICAL
