"""The exact grid on a LocalCluster of 1 and 2 worker processes against one process.

    python benchmarks/cluster_scale.py [--size 8192] [--tile 1024]

Runs ``seamless predict`` on a ``size`` x ``size`` nuclei mosaic three ways, side by side
in one run: one process (the default threaded pipeline), ``--workers 1`` and
``--workers 2``; checks that the three label TIFFs are identical, and writes the wall
times (and their ratios) to ``benchmarks/results/cluster_scale.json``. On a machine with
2 cores the two workers share the cores the single process uses alone, so the ratio says
what the task machinery costs, not what a real cluster gains.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    """Make the input, run the three ways, compare, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--batch-tiles", type=int, default=4)
    args = parser.parse_args()

    from napari_seamless.data import mosaic

    work = Path(tempfile.mkdtemp(prefix="seamless-cluster-"))
    src = work / f"mosaic{args.size}.tif"
    tifffile.imwrite(src, mosaic(args.size), tile=(512, 512), compression="zlib")
    env = dict(os.environ, OMP_NUM_THREADS="1")  # workers: one thread each, as the cores
    ways = {
        "one process": [],
        "1 worker": ["--workers", "1", "--batch-tiles", str(args.batch_tiles)],
        "2 workers": ["--workers", "2", "--batch-tiles", str(args.batch_tiles)],
    }
    seconds, outputs = {}, {}
    for name, extra in ways.items():
        out = work / f"{name.replace(' ', '_')}.tif"
        cmd = [sys.executable, "-m", "napari_seamless.cli", "predict", str(src), "-o", str(out)]
        cmd += ["--tile", str(args.tile), "-q", *extra]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env=env if extra else dict(os.environ), capture_output=True)
        seconds[name] = round(time.perf_counter() - t0, 1)
        outputs[name] = tifffile.imread(out)
        print(f"{name}: {seconds[name]} s", flush=True)
    first = outputs["one process"]
    identical = all(np.array_equal(first, o) for o in outputs.values())
    result = {
        "size": args.size,
        "tile": args.tile,
        "batch_tiles": args.batch_tiles,
        "cores": os.cpu_count(),
        "seconds": seconds,
        "ratio_2_vs_1_worker": round(seconds["2 workers"] / seconds["1 worker"], 2),
        "ratio_2_workers_vs_one_process": round(seconds["2 workers"] / seconds["one process"], 2),
        "labels_identical": bool(identical),
    }
    out = ROOT / "benchmarks" / "results" / "cluster_scale.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if not identical:
        raise SystemExit("the outputs differ: the cluster run is not exact")


if __name__ == "__main__":
    main()
