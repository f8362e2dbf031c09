"""The exact grid on a LocalCluster of 1 and 2 worker processes against one process.

    python benchmarks/cluster_scale.py [--size 8192] [--tile 1024] [--float64]

Runs ``seamless predict`` on a ``size`` x ``size`` nuclei mosaic three ways, side by side
in one run: one process (the default threaded pipeline), ``--workers 1`` and
``--workers 2``; checks that the three label TIFFs are identical, and writes the wall
times (and their ratios) to ``benchmarks/results/cluster_scale.json``. On a machine with
2 cores the two workers share the cores the single process uses alone, so the ratio says
what the task machinery costs, not what a real cluster gains.

``--float64``: ``--float64 --probabilities`` into OME-Zarr, one process against
``--workers 2`` only; the two float64 score arrays must be equal bit for bit (compared
band by band) and the labels (argmax) too. Results in ``cluster_scale_float64.json``.
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


def _same_scores(a: Path, b: Path, result: dict) -> bool:
    """Whether two float64 score outputs are equal bit for bit (and their argmax labels)."""
    import zarr

    x, y = zarr.open_group(str(a), mode="r")["0"], zarr.open_group(str(b), mode="r")["0"]
    assert x.dtype == y.dtype == np.float64 and x.shape == y.shape
    bits = labels = True
    band = 512
    for r in range(0, x.shape[1], band):
        p, q = np.asarray(x[:, r : r + band]), np.asarray(y[:, r : r + band])
        bits &= np.array_equal(p.view(np.uint64), q.view(np.uint64))
        labels &= np.array_equal(p.argmax(0), q.argmax(0))
    result.update(scores_shape=list(x.shape), scores_bit_identical=bool(bits))
    result["labels_identical"] = bool(labels)
    return bool(bits and labels)


def main() -> None:
    """Make the input, run the three ways, compare, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--batch-tiles", type=int, default=4)
    parser.add_argument("--float64", action="store_true")
    args = parser.parse_args()

    from napari_seamless.data import mosaic

    work = Path(tempfile.mkdtemp(prefix="seamless-cluster-"))
    src = work / f"mosaic{args.size}.tif"
    tifffile.imwrite(src, mosaic(args.size), tile=(512, 512), compression="zlib")
    env = dict(os.environ, OMP_NUM_THREADS="1")  # workers: one thread each, as the cores
    batch = ["--batch-tiles", str(args.batch_tiles)]
    ways = {"one process": [], "1 worker": ["--workers", "1", *batch]}
    ways["2 workers"] = ["--workers", "2", *batch]
    precision = []
    if args.float64:
        del ways["1 worker"]
        precision = ["--float64", "--probabilities"]
    seconds, outputs = {}, {}
    for name, extra in ways.items():
        out = work / f"{name.replace(' ', '_')}.{'zarr' if args.float64 else 'tif'}"
        cmd = [sys.executable, "-m", "napari_seamless.cli", "predict", str(src), "-o", str(out)]
        cmd += ["--tile", str(args.tile), "-q", *precision, *extra]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env=env if extra else dict(os.environ), capture_output=True)
        seconds[name] = round(time.perf_counter() - t0, 1)
        outputs[name] = out
        print(f"{name}: {seconds[name]} s", flush=True)
    result = {
        "size": args.size,
        "tile": args.tile,
        "batch_tiles": args.batch_tiles,
        "cores": os.cpu_count(),
        "precision": "float64 scores" if args.float64 else "float32, labels",
        "seconds": seconds,
        "ratio_2_workers_vs_one_process": round(seconds["2 workers"] / seconds["one process"], 2),
    }
    if args.float64:
        identical = _same_scores(outputs["one process"], outputs["2 workers"], result)
    else:
        result["ratio_2_vs_1_worker"] = round(seconds["2 workers"] / seconds["1 worker"], 2)
        first = tifffile.imread(outputs["one process"])
        identical = all(np.array_equal(first, tifffile.imread(o)) for o in outputs.values())
        result["labels_identical"] = bool(identical)
    name = "cluster_scale_float64.json" if args.float64 else "cluster_scale.json"
    out = ROOT / "benchmarks" / "results" / name
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if not identical:
        raise SystemExit("the outputs differ: the cluster run is not exact")


if __name__ == "__main__":
    main()
