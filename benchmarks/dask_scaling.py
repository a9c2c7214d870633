"""Benchmark of the Dask executor (issue: scale-out on Dask).

1. Scaling: wall time of the parametric mock (``pipelines/parametric_mock.yaml``) on
   ``--galaxies`` galaxies (default 20,000) with the local executor and with the dask
   executor on a LocalCluster of 1 and 2 worker processes (1 thread each), end to end as
   ``astrogen run`` does it (cluster start-up included; also measured on its own). Two
   variants: ``stamps`` (the mock without its ``scene`` stage: every stage but the sinks
   runs on the workers) and, with ``--full-mock``, the whole mock, whose ``scene`` sink
   draws every galaxy into the scene in the driver (serial by construction).
2. Per-task overhead of the dask executor vs local: a pipeline whose map stage does almost
   nothing (``catalog.cosmos`` in chunks of 10 rows -> ``catalog.positions``, no sink), on
   an already running cluster of 1 worker with one chunk in flight (no overlap of the
   driver and the worker): (wall dask - wall local) / number of chunks.
3. Peak resident memory (``VmHWM`` from ``/proc``) of the driver (which also holds the
   scheduler and the nannies of the LocalCluster) and of each worker process for
   ``astrogen run --workers 2`` of a catalog pipeline (``catalog.cosmos`` ->
   ``catalog.positions`` -> ``output.catalog``, chunks of 10,000 rows) of 10^4 vs 10^6 rows.

Every figure depends on the machine being otherwise idle: the script records the load
average and any ``astrogen train`` process running at the start and at the end.

Usage::

    python benchmarks/dask_scaling.py                 # the measurements of the README
    python benchmarks/dask_scaling.py --full-mock     # + the whole mock with its scene
    python benchmarks/dask_scaling.py --quick         # small sizes, to check the script
    python benchmarks/dask_scaling.py --parts 3       # only some measurements (1,2,3)

Writes ``benchmarks/results/dask/dask_scaling.json`` (``dask_scaling_quick.json`` with
``--quick``) and prints a Markdown table for the README.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIPE = ROOT / "pipelines" / "parametric_mock.yaml"
OUT = ROOT / "benchmarks" / "results" / "dask"


# ----------------------------------------------------------------------------- helpers
def machine_state() -> dict:
    """Load average and other training processes (the figures are meaningless under load)."""
    r = subprocess.run(["pgrep", "-af", "astrogen train"], capture_output=True, text=True)
    others = [line for line in r.stdout.splitlines() if "pgrep" not in line]
    return {"loadavg_1_5_15": list(os.getloadavg()), "astrogen_train_running": others,
            "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def build(overrides: list[str], drop: tuple[str, ...] = (), text: str | None = None):
    """The parametric mock (or ``text``) with overrides, without the stages in ``drop``."""
    from astrogen.pipeline import build_pipeline, load_config
    from astrogen.pipeline.config import Config, apply_overrides

    cfg = apply_overrides(load_config(text if text else PIPE), overrides)
    data = copy.deepcopy(cfg.data)
    data["stages"] = [s for s in data["stages"] if s["name"] not in drop]
    return build_pipeline(Config(data, cfg.lines, cfg.source))


def run(p, spec) -> float:
    """Wall time (s) of ``run_pipeline(p)`` with executor ``spec`` (start-up included)."""
    from astrogen.pipeline.runner import run_pipeline

    t0 = time.perf_counter()
    run_pipeline(p, progress=False, executor=spec)
    return time.perf_counter() - t0


def cluster_start_close(n_workers: int) -> float:
    """Seconds to start and close a LocalCluster as the dask executor does."""
    from astrogen.pipeline.executors import DaskExecutor, ExecutorSpec

    t0 = time.perf_counter()
    ex = DaskExecutor(ExecutorSpec(type="dask", n_workers=n_workers))
    ex.start()
    ex.close()
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- 1. scaling
def scaling(n_galaxies: int, chunk_size: int, full: bool, work: Path) -> dict:
    from astrogen.pipeline.executors import ExecutorSpec

    variants = {"stamps": ("scene",)}
    if full:
        variants["full_mock"] = ()
    res = {"galaxies": n_galaxies, "chunk_size": chunk_size,
           "cluster_start_close_s": {str(k): round(cluster_start_close(k), 2) for k in (1, 2)}}
    for name, drop in variants.items():
        ov = [f"stages.catalog.n_objects={n_galaxies}", f"stages.catalog.chunk_size={chunk_size}"]
        walls = {}
        for label, spec in (("local", ExecutorSpec()),
                            ("dask_1_worker", ExecutorSpec(type="dask", n_workers=1)),
                            ("dask_2_workers", ExecutorSpec(type="dask", n_workers=2))):
            p = build(ov + [f"output={work / name / label}"], drop)
            walls[label] = round(run(p, spec), 2)
            print(f"  {name} {label}: {walls[label]} s", flush=True)
        res[name] = {
            "stages": [n.name for n in p.nodes], "wall_s": walls,
            "galaxies_per_s": {k: round(n_galaxies / v, 1) for k, v in walls.items()},
            "speedup_2_vs_1_worker": round(walls["dask_1_worker"] / walls["dask_2_workers"], 3),
            "speedup_2_workers_vs_local": round(walls["local"] / walls["dask_2_workers"], 3),
        }
    return res


# ----------------------------------------------------------------------------- 2. overhead
OVERHEAD_YAML = """\
name: overhead
seed: 1
output: {out}
stages:
  - name: catalog
    type: catalog.cosmos
    n_objects: {n}
    chunk_size: {chunk}
  - name: positions
    type: catalog.positions
    inputs: [catalog]
    size: 1024
"""


def overhead(n_chunks: int, chunk: int, work: Path) -> dict:
    """Per-chunk wall time, local vs dask on a warm 1-worker cluster.

    With ``max_in_flight: 1`` the driver waits for each chunk before reading the next, so
    the difference is the latency a task adds (serialisation, scheduler, transfers); with
    the default window the driver reads ahead while the worker computes.
    """
    import logging

    from distributed import LocalCluster

    from astrogen.pipeline.executors import LOOPBACK_NO_DASHBOARD, ExecutorSpec

    text = OVERHEAD_YAML.format(out=work / "overhead", n=n_chunks * chunk, chunk=chunk)
    p = build([], text=text)
    run(p, ExecutorSpec())  # warm caches and imports
    local = min(run(p, ExecutorSpec()) for _ in range(3))
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                           host="127.0.0.1", silence_logs=logging.CRITICAL,
                           **LOOPBACK_NO_DASHBOARD)
    try:
        serial = ExecutorSpec(type="dask", address=cluster.scheduler_address, max_in_flight=1)
        window = ExecutorSpec(type="dask", address=cluster.scheduler_address)
        run(p, serial)  # the worker imports astrogen and sets the stages up
        dask_serial = min(run(p, serial) for _ in range(3))
        dask_window = min(run(p, window) for _ in range(3))
    finally:
        cluster.close()
    ms = lambda t: round(1e3 * t / n_chunks, 2)  # noqa: E731
    return {"chunks": n_chunks, "rows_per_chunk": chunk, "stages": "catalog.cosmos -> "
            "catalog.positions (no sink)", "local_per_chunk_ms": ms(local),
            "dask_per_chunk_ms_max_in_flight_1": ms(dask_serial),
            "dask_per_chunk_ms_default_window": ms(dask_window),
            "overhead_per_task_ms": round(ms(dask_serial) - ms(local), 2)}


# ----------------------------------------------------------------------------- 3. memory
MEMORY_YAML = """\
name: memory
seed: 1
output: {out}
stages:
  - name: catalog
    type: catalog.cosmos
    n_objects: {n}
    chunk_size: {chunk}
  - name: positions
    type: catalog.positions
    inputs: [catalog]
    size: 4096
  - name: truth
    type: output.catalog
    inputs: [positions]
"""


def _hwm_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_memory(n_rows: int, chunk: int, work: Path, workers: int = 2) -> dict:
    """Peak RSS (MiB) of the driver, its nannies and workers in ``astrogen run --workers``."""
    import psutil

    yaml_path = work / f"memory_{n_rows}.yaml"
    yaml_path.write_text(MEMORY_YAML.format(out=work / f"memory_{n_rows}", n=n_rows,
                                            chunk=chunk))
    cmd = [sys.executable, "-m", "astrogen", "-v", "0", "run", str(yaml_path), "--no-progress",
           "--workers", str(workers)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    peaks: dict[int, tuple[str, int]] = {}
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            # LocalCluster runs the scheduler and the nannies in the driver process; each
            # nanny spawns one worker process (multiprocessing "spawn")
            try:
                root = psutil.Process(proc.pid)
                tree = [(root, "driver")]
                for child in root.children(recursive=True):
                    cmd = " ".join(child.cmdline())
                    tree.append((child, "worker" if "spawn_main" in cmd else "other"))
            except psutil.NoSuchProcess:
                tree = []
            for p, role in tree:
                hwm = _hwm_kib(p.pid)
                if hwm:
                    peaks[p.pid] = (role, max(hwm, peaks.get(p.pid, (role, 0))[1]))
            time.sleep(0.05)

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    rc = proc.wait()
    stop.set()
    th.join()
    if rc:
        raise SystemExit(f"astrogen run failed ({rc})")
    by_role: dict[str, list[float]] = {}
    for role, kib in peaks.values():
        by_role.setdefault(role, []).append(round(kib / 1024.0, 1))
    return {"rows": n_rows, "chunk_size": chunk, "chunks": -(-n_rows // chunk),
            "wall_s": round(time.perf_counter() - t0, 1),
            "peak_rss_mib": {"driver": max(by_role.get("driver", [0])),
                             "worker_max": max(by_role.get("worker", [0])),
                             "all": {k: sorted(v) for k, v in by_role.items()}}}


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--galaxies", type=int, default=20_000)
    ap.add_argument("--chunk-size", type=int, default=250)
    ap.add_argument("--rows-small", type=int, default=10_000)
    ap.add_argument("--rows-large", type=int, default=1_000_000)
    ap.add_argument("--full-mock", action="store_true",
                    help="also the whole mock with its scene (driver-bound)")
    ap.add_argument("--quick", action="store_true", help="small sizes, to check the script")
    ap.add_argument("--parts", default="1,2,3", help="which measurements (default: 1,2,3)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if args.quick:
        args.galaxies, args.rows_small, args.rows_large = 400, 1_000, 20_000
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    result = {"benchmark": "dask_scaling", "quick": args.quick,
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "platform": platform.platform()},
              "state_at_start": machine_state()}
    import dask
    import distributed

    from astrogen.version import __version__

    result["versions"] = {"astrogen": __version__, "dask": dask.__version__,
                          "distributed": distributed.__version__}
    with tempfile.TemporaryDirectory(prefix="astrogen-dask-bench-") as tmp:
        work = Path(tmp)
        parts = {int(x) for x in args.parts.split(",")}
        if 1 in parts:
            print("1. scaling", flush=True)
            result["scaling"] = scaling(args.galaxies, args.chunk_size, args.full_mock, work)
        if 2 in parts:
            print("2. per-task overhead", flush=True)
            result["overhead"] = overhead(100 if args.quick else 400, 10, work)
        if 3 in parts:
            print("3. peak memory", flush=True)
            result["memory"] = [peak_memory(n, min(10_000, n), work)
                                for n in (args.rows_small, args.rows_large)]
    result["state_at_end"] = machine_state()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / ("dask_scaling_quick.json" if args.quick else "dask_scaling.json")
    if parts != {1, 2, 3} and path.exists():
        # a partial rerun replaces only its own measurements; the others keep their run's
        # machine state under "state_of_part"
        old = json.loads(path.read_text())
        states = old.pop("state_of_part", {})
        for k, n in (("scaling", 1), ("overhead", 2), ("memory", 3)):
            if n not in parts and k in old:
                states.setdefault(k, {"state_at_start": old.get("state_at_start"),
                                      "state_at_end": old.get("state_at_end"),
                                      "versions": old.get("versions")})
                result[k] = old[k]
            else:
                states.pop(k, None)
        result["state_of_part"] = states
    path.write_text(json.dumps(result, indent=2) + "\n")

    s, o, m = (result.get(k) for k in ("scaling", "overhead", "memory"))
    print(f"\nwrote {path}\n")
    print("| measure | value |\n| --- | --- |")
    for name in ("stamps", "full_mock") if s else ():
        if name in s:
            w = s[name]["wall_s"]
            print(f"| {name}, {s['galaxies']:,} galaxies: local / dask 1 worker / dask 2 workers "
                  f"| {w['local']} s / {w['dask_1_worker']} s / {w['dask_2_workers']} s |")
            print(f"| {name}: speed-up 2 vs 1 worker | {s[name]['speedup_2_vs_1_worker']} |")
    if s:
        print(f"| LocalCluster start + close, 1 / 2 workers | {s['cluster_start_close_s']['1']} "
              f"s / {s['cluster_start_close_s']['2']} s |")
    if o:
        print(f"| per-task overhead, dask (1 warm worker, 1 chunk in flight) vs local | "
              f"{o['overhead_per_task_ms']} ms ({o['dask_per_chunk_ms_max_in_flight_1']} vs "
              f"{o['local_per_chunk_ms']} ms per chunk of {o['rows_per_chunk']} rows) |")
    for r in m or ():
        pk = r["peak_rss_mib"]
        print(f"| peak RSS, {r['rows']:,} rows: driver / worker | {pk['driver']} MiB / "
              f"{pk['worker_max']} MiB |")
    if result["state_at_start"]["astrogen_train_running"] or \
            result["state_at_end"]["astrogen_train_running"]:
        print("\nWARNING: an 'astrogen train' process was running: these figures are not "
              "representative.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
