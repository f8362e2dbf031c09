"""Task overhead of dask.distributed and a simulated cluster run of a 10^5-tile grid (issue 11).

    OMP_NUM_THREADS=1 python benchmarks/cluster_sim.py [--overhead-tasks 2000]
        [--overhead-batches 1 8 64] [--sizes 1024 512] [--batches 1 8 64]
        [--window 10000] [--skip-window] [--skip-overhead]
        [--out benchmarks/results/cluster_sim.json]

1. **Task overhead**: a ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``
   runs ``--overhead-tasks`` no-op tasks submitted one by one with ``client.submit(pure=False)``
   and drained with ``distributed.as_completed``, once per batch size: each task carries 1, 8
   or 64 tile indices and returns them. Drain ``each``: one result fetch per future (what
   ``run_on_cluster`` does); drain ``batches``: ``as_completed(...).batches()`` and one
   ``client.gather`` per batch of finished futures. Seconds per task and per tile, submission
   included.
2. **Simulated slide**: the grid of a 100000 x 100000 slide under the default nuclei model's
   geometry (F = 16, halo = 96) at tile 1024 (ZoR 832, 121^2 = 14,641 tiles) and tile 512
   (ZoR 320, 313^2 = 97,969 tiles). Every task gets a batch of tile indices and the grid's
   *shape parameters* (never the grid), rebuilds the :class:`~napari_seamless.grid.TileGrid`,
   computes each tile's window / ZoR / crop slices (no model, no I/O) and returns the indices;
   the client checks that every tile came back exactly once. The client side is the
   product's own :class:`~napari_seamless.engine.cluster.DaskExecutor` (``client.submit`` per
   batch as the schedule is taken, ``as_completed(...).batches()`` and one ``client.gather``
   per batch of finished tasks), with all tasks submitted at once, or (``--window``, unless
   ``--skip-window``) for the smallest grid and batch at most that many in flight.
   The cluster here is a scheduler process and a 2-process worker pool started with
   ``python -m distributed.cli.dask_scheduler`` / ``dask_worker``, so the scheduler's memory
   is its own (a ``LocalCluster`` runs its scheduler inside the client process). Reported per
   run: wall time (submit + drain), task count, pickled task-argument bytes, the scheduler's
   RSS before / peak / after (``client.run_on_scheduler`` and a 0.2 s psutil poll of its pid),
   and the client's RSS before / peak / after.

Everything runs on whatever CPU cores the machine has; no model, no GPU.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import gc
import json
import math
import os
import pickle
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import psutil  # noqa: E402

SLIDE = (100_000, 100_000)
HALO, FACTOR = 96, 16  # the default nuclei model: F = 16, halo 96
RESULTS = Path(__file__).resolve().parent / "results" / "cluster_sim.json"


# ---------------------------------------------------------------------------- task bodies
def noop(indices):
    """The no-op task: returns its tile indices."""
    return indices


def tile_slices(indices, params):
    """A simulated tile task: the tiles' slices from a TileGrid rebuilt from ``params``.

    Returns what :class:`~napari_seamless.engine.cluster.RemoteTiles` returns, so the
    client side is the real :class:`~napari_seamless.engine.cluster.DaskExecutor`.
    """
    from napari_seamless.grid import TileGrid

    shape, tile, halo, factor = params
    grid = TileGrid(shape, tile, halo, factor)
    out = []
    for i in indices:
        t = grid[i]
        assert t.window[0].start <= t.zor[0].start < t.zor[0].stop <= t.window[0].stop
        out.append(t.index)
    return {"indices": out, "worker": "sim", "forward": 0.0, "read": 0.0, "write": 0.0}


# ---------------------------------------------------------------------------- memory
def _trim() -> int:
    """Collect garbage and return freed heap to the OS (glibc); the process's RSS after."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    return psutil.Process().memory_info().rss


class PeakRSS:
    """Poll the RSS of some pids every ``interval`` seconds in a thread; keep the peaks."""

    def __init__(self, pids: dict[str, int], interval: float = 0.2) -> None:
        self.procs = {k: psutil.Process(p) for k, p in pids.items()}
        self.peak = {k: p.memory_info().rss for k, p in self.procs.items()}
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            for k, p in self.procs.items():
                self.peak[k] = max(self.peak[k], p.memory_info().rss)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        for k, p in self.procs.items():
            self.peak[k] = max(self.peak[k], p.memory_info().rss)


def mib(n: float) -> float:
    return round(n / 2**20, 1)


# ---------------------------------------------------------------------------- part 1
def overhead(n_tasks: int, batches: list[int]) -> list[dict]:
    from distributed import Client, LocalCluster, as_completed

    rows = []
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(2)
        client.gather(client.map(noop, [[0]] * 20, pure=False))  # warm the workers
        for b, drain in [(b, "each") for b in batches] + [(1, "batches")]:
            payloads = [list(range(i * b, (i + 1) * b)) for i in range(n_tasks)]
            t0 = time.perf_counter()
            futures = [client.submit(noop, p, pure=False) for p in payloads]
            t_submit = time.perf_counter() - t0
            got = 0
            if drain == "each":  # one result fetch per future, as run_on_cluster does
                for _, result in as_completed(futures, with_results=True):
                    got += len(result)
            else:  # the finished futures in batches, one gather per batch
                for finished in as_completed(futures).batches():
                    got += sum(len(r) for r in client.gather(finished))
            wall = time.perf_counter() - t0
            assert got == n_tasks * b
            del futures
            rows.append(
                {
                    "tiles_per_task": b,
                    "drain": drain,
                    "tasks": n_tasks,
                    "tiles": n_tasks * b,
                    "first_tile_s": round(t_submit, 3),
                    "wall_s": round(wall, 3),
                    "ms_per_task": round(1e3 * wall / n_tasks, 3),
                    "ms_per_tile": round(1e3 * wall / (n_tasks * b), 4),
                }
            )
            print(
                f"overhead: {n_tasks} tasks x {b:>2} tiles, drain {drain}: {wall:6.2f} s, "
                f"{rows[-1]['ms_per_task']:.2f} ms/task, {rows[-1]['ms_per_tile']:.3f} ms/tile",
                flush=True,
            )
    return rows


# ---------------------------------------------------------------------------- part 2
class ProcessCluster:
    """A scheduler and a 2-process worker pool started with the dask commands."""

    def __init__(self, workers: int = 2) -> None:
        self.dir = tempfile.mkdtemp(prefix="cluster-sim-")
        self.file = str(Path(self.dir) / "scheduler.json")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}

        def start(command: str, *args: str) -> subprocess.Popen:
            """``python -m distributed.cli.<command>`` on this scheduler file, quiet."""
            return subprocess.Popen(
                [sys.executable, "-m", f"distributed.cli.{command}", "--scheduler-file"]
                + [self.file, *args, "--no-dashboard", "--host", "127.0.0.1"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

        self.scheduler = start("dask_scheduler", "--port", "0")
        deadline = time.time() + 60
        while not Path(self.file).exists():
            if time.time() > deadline or self.scheduler.poll() is not None:
                raise RuntimeError("the dask scheduler did not start")
            time.sleep(0.2)
        self.workers = start("dask_worker", "--nworkers", str(workers), "--nthreads", "1")

    def close(self) -> None:
        for p in (self.workers, self.scheduler):
            p.terminate()
        for p in (self.workers, self.scheduler):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def simulate(client, tile: int, batch: int, window: int | None) -> dict:
    from napari_seamless.engine.cluster import DaskExecutor
    from napari_seamless.engine.executors import RunSteps, Schedule
    from napari_seamless.grid import TileGrid

    grid = TileGrid(SLIDE, tile, HALO, FACTOR)
    params = (SLIDE, tile, HALO, FACTOR)
    n = len(grid)
    n_tasks = -(-n // batch)
    remote = functools.partial(tile_slices, params=params)
    arg_bytes = sum(
        len(pickle.dumps((remote, list(range(i, min(i + batch, n)))))) for i in range(0, n, batch)
    )

    client.run_on_scheduler(_trim)
    sched_before = client.run_on_scheduler(lambda: psutil.Process().memory_info().rss)
    client_before = _trim()
    sched_pid = client.run_on_scheduler(os.getpid)
    seen = bytearray(n)
    max_in_scheduler = 0
    executor = DaskExecutor(client, batch_tiles=batch, max_tasks=window, retries=0)
    steps = RunSteps(prepare=None, forward=None, finish=None, remote=remote)
    schedule = Schedule(list(grid))
    t0 = time.perf_counter()
    t_submit = None
    with PeakRSS({"scheduler": sched_pid, "client": os.getpid()}) as peak:
        for done, t in enumerate(executor.execute(schedule, steps), start=1):
            if t_submit is None:
                t_submit = time.perf_counter() - t0  # submission until the first tile back
            seen[t.index] += 1
            if not max_in_scheduler and done >= n // 2:
                max_in_scheduler = client.run_on_scheduler(
                    lambda dask_scheduler: len(dask_scheduler.tasks)
                )
    wall = time.perf_counter() - t0
    assert executor.tasks == n_tasks and seen == bytearray([1]) * n, "a tile missing or repeated"
    time.sleep(0.5)  # let the scheduler forget the released tasks
    sched_after = client.run_on_scheduler(lambda: psutil.Process().memory_info().rss)
    client_after = psutil.Process().memory_info().rss
    row = {
        "tile": tile,
        "zor": grid.zor_size[0],
        "tiles": n,
        "tiles_per_task": batch,
        "tasks": n_tasks,
        "window": window,
        "task_arg_bytes": arg_bytes,
        "first_tile_s": round(t_submit, 3),
        "wall_s": round(wall, 2),
        "ms_per_task": round(1e3 * wall / n_tasks, 3),
        "ms_per_tile": round(1e3 * wall / n, 4),
        "tasks_in_scheduler_at_half": max_in_scheduler,
        "scheduler_rss_mib": {
            "before": mib(sched_before),
            "peak": mib(peak.peak["scheduler"]),
            "after": mib(sched_after),
        },
        "client_rss_mib": {
            "before": mib(client_before),
            "peak": mib(peak.peak["client"]),
            "after": mib(client_after),
        },
    }
    s, c = row["scheduler_rss_mib"], row["client_rss_mib"]
    print(
        f"sim: tile {tile} ({n} tiles) x {batch:>2}/task = {n_tasks:>6} tasks"
        f"{'' if window is None else f' (window {window})'}: {wall:7.2f} s, "
        f"{row['ms_per_task']:.2f} ms/task; scheduler RSS {s['before']} -> peak {s['peak']} MiB, "
        f"client {c['before']} -> peak {c['peak']} MiB",
        flush=True,
    )
    return row


def geometry(tile: int) -> dict:
    from napari_seamless.grid import TileGrid

    g = TileGrid(SLIDE, tile, HALO, FACTOR)
    zor_bytes = math.prod(SLIDE)
    return {
        "tile": tile,
        "zor": g.zor_size[0],
        "grid_shape": list(g.grid_shape),
        "tiles": len(g),
        "overhead_full_tile": round(g.overhead, 4),
        "image_overhead": round(g.image_overhead, 4),
        "window_bytes_read_uint16_gib": round(g.computed_pixels * 2 / 2**30, 1),
        "level0_labels_uint8_gib": round(zor_bytes / 2**30, 1),
        "level0_scores_float32_per_class_gib": round(zor_bytes * 4 / 2**30, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--overhead-tasks", type=int, default=2000)
    ap.add_argument("--overhead-batches", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 512])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--window", type=int, default=10_000)
    ap.add_argument("--skip-window", action="store_true")
    ap.add_argument("--skip-overhead", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    import dask
    import distributed

    started = time.perf_counter()
    result: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "dask": dask.__version__,
            "distributed": distributed.__version__,
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "slide": list(SLIDE),
        "halo": HALO,
        "factor": FACTOR,
        "geometry": [geometry(t) for t in args.sizes],
    }
    if not args.skip_overhead:
        result["overhead"] = overhead(args.overhead_tasks, args.overhead_batches)

    from distributed import Client

    cluster = ProcessCluster(2)
    rows = []
    try:
        with Client(scheduler_file=cluster.file) as client:
            client.wait_for_workers(2, timeout=120)
            client.gather(client.map(tile_slices, [[0]] * 4, params=(SLIDE, 1024, HALO, FACTOR)))
            for tile in args.sizes:
                for b in sorted(args.batches, reverse=True):
                    rows.append(simulate(client, tile, b, None))
            if not args.skip_window:
                rows.append(simulate(client, min(args.sizes), min(args.batches), args.window))
    finally:
        cluster.close()
    result["simulation"] = rows
    result["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["total_s"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{result['total_s']} s in all; written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
