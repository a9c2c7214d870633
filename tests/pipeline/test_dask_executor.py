"""The dask executor on a loopback LocalCluster: same bytes as local, models set up once per
worker, bad input reported as the usual one-line error, bounded number of chunks in flight."""
import json
import time

import numpy as np
import pytest
from astropy.io import fits
from dask_pipeline_text import assert_same_outputs, output_bytes

from astrogen.cli import main
from astrogen.errors import CatalogError
from astrogen.pipeline import build_pipeline, load_config
from astrogen.pipeline.config import apply_overrides
from astrogen.pipeline.executors import ExecutorSpec
from astrogen.pipeline.runner import WORK_DIR, run_pipeline
from astrogen.stages.catalog import CosmosCatalog
from astrogen.stages.output import CatalogOutput


FITS = ("stamps.fits", "truth_catalog.fits", "scene.fits")


def _hdu_data(path):
    with fits.open(path) as hl:
        return [np.asarray(h.data).tobytes() for h in hl if h.data is not None]


def _run(path, overrides=(), **kw):
    cfg = apply_overrides(load_config(path), list(overrides))
    return run_pipeline(build_pipeline(cfg), progress=False, **kw)


def test_local_and_dask_outputs_are_bit_identical(write_pipeline, dask_address):
    path, out = write_pipeline(n_objects=40, chunk_size=8)
    _run(path)
    local = output_bytes(out)
    assert {"stamps.fits", "truth_catalog.fits", "scene.fits", "preview.png"} <= set(local)
    # 2 workers, tasks finishing in any order, two chunks in flight
    res = _run(path, executor=ExecutorSpec(type="dask", address=dask_address, max_in_flight=2))
    assert_same_outputs(local, output_bytes(out))
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["executor"]["type"] == "dask" and prov["executor"]["worker_threads"] == 2
    assert res.timings["observe"] > 0  # map-stage timings come back from the workers
    # another chunk size (so another HISTORY and AG_CHASH in the headers): the data of the
    # stamps, the truth table and the scene are unchanged byte for byte
    data = {name: _hdu_data(out / name) for name in FITS}
    _run(path, ["stages.catalog.chunk_size=5"],
         executor=ExecutorSpec(type="dask", address=dask_address))
    for name in FITS:
        assert _hdu_data(out / name) == data[name], name


def test_models_set_up_once_per_worker_not_per_task(write_pipeline, dask_address, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    path, out = write_pipeline(n_objects=64, chunk_size=4, render_size=16,
                               probe={"log_dir": str(logs)})
    res = _run(path, executor=ExecutorSpec(type="dask", address=dask_address))
    assert res.n_chunks == 16
    setups = (logs / "setup.txt").read_text().split()
    calls = [line.split() for line in (logs / "calls.txt").read_text().splitlines()]
    assert len(calls) == 16 and sorted(int(r) for _, r in calls) == list(range(0, 64, 4))
    assert len(setups) == len(set(setups)) <= 2  # once per worker process
    assert {pid for pid, _ in calls} <= set(setups)


def test_bad_input_in_a_worker_is_the_usual_error(write_pipeline, dask_address, tmp_path,
                                                 capsys):
    logs = tmp_path / "logs"
    logs.mkdir()
    path, out = write_pipeline(n_objects=48, chunk_size=8,
                               probe={"fail_row": 29, "log_dir": str(logs)})
    with pytest.raises(CatalogError) as local:
        _run(path)
    assert not out.exists()
    with pytest.raises(CatalogError) as remote:
        _run(path, executor=ExecutorSpec(type="dask", address=dask_address, retries=3))
    assert str(remote.value) == str(local.value)
    assert (remote.value.key, remote.value.received) == ("mag", {"row_id": 29, "mag": -99.0})
    assert not out.exists()  # a failed run leaves nothing behind, as with local
    # through the command line: one line, exit status 2, no traceback
    capsys.readouterr()
    assert main(["-v", "0", "run", str(path), "--scheduler", dask_address,
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"astrogen: error: CatalogError: {local.value}"]
    # bad input is not retried (retries=3): the chunk of rows 24-31 ran once in each of the
    # three runs (local, dask, command line)
    calls = [line.split()[1] for line in (logs / "calls.txt").read_text().splitlines()]
    assert calls.count("24") == 3


def test_unexpected_exception_is_retried_then_raised(write_pipeline, dask_address, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    path, out = write_pipeline(n_objects=24, chunk_size=8, render_size=16, pngs=False,
                               probe={"crash_row": 10, "log_dir": str(logs)})
    with pytest.raises(RuntimeError, match="probe crashed on row 10"):
        _run(path, executor=ExecutorSpec(type="dask", address=dask_address, retries=2))
    calls = [line.split()[1] for line in (logs / "calls.txt").read_text().splitlines()]
    assert calls.count("8") == 3  # the first attempt and 2 retries


def test_chunks_in_flight_are_bounded(write_pipeline, dask_address, monkeypatch):
    path, out = write_pipeline(n_objects=60, chunk_size=3, render_size=16, scene=False)
    reads, ahead = [], []
    read_chunk, consume = CosmosCatalog.read_chunk, CatalogOutput.consume

    def counting_read(self, index):
        reads.append(index)
        return read_chunk(self, index)

    def counting_consume(self, index, data):
        ahead.append(len(reads) - (index + 1))
        time.sleep(0.02)  # a slow sink: the workers would run far ahead if not bounded
        return consume(self, index, data)

    monkeypatch.setattr(CosmosCatalog, "read_chunk", counting_read)
    monkeypatch.setattr(CatalogOutput, "consume", counting_consume)
    _run(path, executor=ExecutorSpec(type="dask", address=dask_address, max_in_flight=3))
    assert len(ahead) == 20 and max(ahead) <= 3 - 1 and sorted(reads) == list(range(20))
    assert not (out / WORK_DIR).exists()


def test_cli_dask_with_scheduler_address(write_pipeline, dask_address, capsys):
    path, out = write_pipeline(n_objects=16, chunk_size=8, render_size=16, scene=False)
    assert main(["-v", "0", "run", str(path), "--scheduler", dask_address,
                 "--no-progress"]) == 0
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["executor"] == {"type": "dask", "address": dask_address, "retries": 3,
                                "max_in_flight": None, "worker_threads": 2}
    assert (out / "stamps.fits").is_file()


def test_driver_keeps_no_old_chunks(tmp_path, monkeypatch):
    """The driver's memory does not grow with the catalog: by the last chunk, no copy of an
    earlier chunk is alive in the driver (Dask's recent-message logs once kept them all, as
    the copies the in-process scheduler unpickled). This run's tables are told apart from
    other tests' by their magnitude range."""
    import gc

    from astropy.table import Table

    lo, hi = 23.1234, 23.1236
    path = tmp_path / "mem.yaml"
    path.write_text(f"name: mem\nseed: 1\noutput: {tmp_path / 'out'}\nstages:\n"
                    "  - {name: catalog, type: catalog.cosmos, n_objects: 600, chunk_size: 20, "
                    f"mag_range: [{lo}, {hi}]}}\n"
                    "  - {name: positions, type: catalog.positions, inputs: [catalog], "
                    "size: 256}\n"
                    "  - {name: truth, type: output.catalog, inputs: [positions]}\n")
    alive, consume = [], CatalogOutput.consume

    def census(self, index, data):
        consume(self, index, data)
        if index == 29:
            gc.collect()
            alive.extend(int(o["row_id"][0]) // 20 for o in gc.get_objects()
                         if isinstance(o, Table) and {"row_id", "mag"} <= set(o.colnames)
                         and len(o) and lo <= float(o["mag"].min()) <= float(o["mag"].max())
                         <= hi)

    monkeypatch.setattr(CatalogOutput, "consume", census)
    _run(path, executor=ExecutorSpec(type="dask", n_workers=1, max_in_flight=2))
    assert 29 in alive  # the census sees this run's tables
    assert sorted(set(i for i in alive if i < 29 - 2)) == []
