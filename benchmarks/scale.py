"""Peak memory of ``seamless predict`` against image size, and the output checked (issue 9).

    python benchmarks/scale.py [--sizes 2048 8192 20000] [--workdir /tmp/seamless-scale]
                               [--tile 1024] [--no-3d] [--phases generate measure check report]

1. **Inputs**, made once and cached in ``--workdir``: a ``size x size`` uint16 mosaic of the
   bundled nuclei image (its 8 rotations / flips, the same order as
   :func:`napari_seamless.data.mosaic`), computed block by block so the whole image is never
   in memory, written as (a) a tiled (512 x 512), zlib-compressed BigTIFF, tile by tile, and
   (b) an OME-Zarr image (NGFF 0.4, one level, 512 x 512 chunks), band by band.
2. **Runs**: for each size x input x output (OME-Zarr labels ``.zarr``, pyramidal BigTIFF
   ``.tif``), ``seamless predict IN -o OUT --tile T`` in a fresh process under
   ``/usr/bin/time -v`` (else a small wrapper reading ``RUSAGE_CHILDREN``): peak RSS and wall
   time. torch's own floor (import torch, load the model, its halo analysis) is measured the
   same way.
3. **Checks**, by routes other than the CLI's: on the ``8192`` image (or the largest size up to
   it) the whole output equals :func:`napari_seamless.engine.segment` on the numpy mosaic at the
   same tile; on a few regions of the larger images (some straddling ZoR borders) the output
   equals the model run directly (one torch forward pass, no tiling code) on an F-aligned crop
   that adds at least the halo on every side, normalised by the statistics fitted on the whole
   image; the TIFF output equals the zarr output; the zarr output opens through the plugin's
   napari reader as a multiscale labels layer.
4. **Report**: the ``scale`` section of ``docs/benchmarks.md`` and
   ``benchmarks/results/scale.json``.

A 3D row (``--no-3d`` to skip) runs a random-weight 3D U-Net (``benchmarks/scale.py:unet3d``,
loaded by the CLI like any ``file.py:function`` model) on a volume tiled from the stardist
3D nuclei volume (3D convolutions on two cores are slow: the volume is small).

The module keeps its top level light (numpy only): the CLI executes it to build ``unet3d``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

TILE_IO = 512  # TIFF tile and zarr chunk side of the inputs
SHARED_3D = Path("/work/shared/data/nuclei3d.tif")
VOLUMES = ((32, 768, 768),)  # 3D rows: (Z, Y, X)
TILE_3D = 128


# --------------------------------------------------------------------------- inputs


def _dihedral(block: np.ndarray, k: int) -> np.ndarray:
    out = np.rot90(block, k % 4)
    return out[:, ::-1] if k >= 4 else out


def texture(src: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Pixels ``[y0:y1, x0:x1]`` of the unbounded mosaic of ``src`` (square, 2D).

    Block ``(i, j)`` of the mosaic is the ``(3i + 5j + ij) % 8``-th rotation / flip of
    ``src``, as in :func:`napari_seamless.data.mosaic`, so ``texture(src, 0, s, 0, s)``
    equals ``mosaic(s, src)``; only the blocks under the region are made.

    Parameters
    ----------
    src : numpy.ndarray
        Square 2D source image.
    y0, y1, x0, x1 : int
        The region, ``0 <= y0 < y1`` and ``0 <= x0 < x1``.

    Returns
    -------
    numpy.ndarray, shape (y1 - y0, x1 - x0)
        Same dtype as ``src``.
    """
    n = src.shape[0]
    out = np.empty((y1 - y0, x1 - x0), src.dtype)
    for i in range(y0 // n, -(-y1 // n)):
        for j in range(x0 // n, -(-x1 // n)):
            by0, by1 = max(y0, i * n), min(y1, (i + 1) * n)
            bx0, bx1 = max(x0, j * n), min(x1, (j + 1) * n)
            block = _dihedral(src, (3 * i + 5 * j + i * j) % 8)
            out[by0 - y0 : by1 - y0, bx0 - x0 : bx1 - x0] = block[
                by0 - i * n : by1 - i * n, bx0 - j * n : bx1 - j * n
            ]
    return out


def _source() -> np.ndarray:
    from napari_seamless.data import nuclei

    return nuclei()


def write_tiff(path: Path, size: int) -> None:
    """The ``size x size`` mosaic as a tiled, zlib-compressed BigTIFF, one tile at a time."""
    import tifffile

    src = _source()

    def tiles():
        for y0 in range(0, size, TILE_IO):
            y1 = min(y0 + TILE_IO, size)
            for x0 in range(0, size, TILE_IO):
                x1 = min(x0 + TILE_IO, size)
                t = np.zeros((TILE_IO, TILE_IO), np.uint16)
                t[: y1 - y0, : x1 - x0] = texture(src, y0, y1, x0, x1)
                yield t

    tmp = path.with_suffix(".tmp.tif")
    with tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        tif.write(
            tiles(),
            shape=(size, size),
            dtype=np.uint16,
            tile=(TILE_IO, TILE_IO),
            compression="zlib",
            metadata={"axes": "YX"},
        )
    os.replace(tmp, path)


def write_ome_zarr(path: Path, size: int) -> None:
    """The ``size x size`` mosaic as a one-level OME-Zarr image (NGFF 0.4), band by band."""
    import zarr

    src = _source()
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    group = zarr.open_group(str(tmp), mode="w", zarr_format=2)
    arr = group.create_array(
        "0", shape=(size, size), chunks=(TILE_IO, TILE_IO), dtype=np.uint16, fill_value=0
    )
    for y0 in range(0, size, TILE_IO):
        y1 = min(y0 + TILE_IO, size)
        arr[y0:y1, :] = texture(src, y0, y1, 0, size)
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "name": path.name.split(".")[0],
            "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
            "datasets": [
                {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1]}]}
            ],
        }
    ]
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def volume(shape: tuple[int, int, int]) -> np.ndarray:
    """A (Z, Y, X) uint16 volume tiled from the stardist 3D nuclei with flips (small: in RAM)."""
    import tifffile

    src = tifffile.imread(SHARED_3D)
    reps = [-(-s // n) for s, n in zip(shape, src.shape, strict=True)]
    out = np.empty([r * n for r, n in zip(reps, src.shape, strict=True)], src.dtype)
    nz, ny, nx = src.shape
    for k, j, i in np.ndindex(*reps):
        b = src
        if k % 2:
            b = b[::-1]
        if j % 2:
            b = b[:, ::-1]
        if i % 2:
            b = b[:, :, ::-1]
        out[k * nz : (k + 1) * nz, j * ny : (j + 1) * ny, i * nx : (i + 1) * nx] = b
    return np.ascontiguousarray(out[: shape[0], : shape[1], : shape[2]])


def unet3d():
    """A 3D U-Net (depth 2, width 4, random weights, seeded): the 3D row's model.

    Returns
    -------
    napari_seamless.models.UNet
        One input channel, two classes, ``ndim=3``.
    """
    import torch

    from napari_seamless.models import UNet, UNetConfig, he_init

    torch.manual_seed(0)
    model = UNet(UNetConfig(in_channels=1, classes=2, width=4, depth=2, ndim=3))
    he_init(model)
    return model.eval()


def inputs(workdir: Path, size: int) -> dict[str, Path]:
    """Make (once) and return the inputs of one size: ``{"tiff": ..., "ome-zarr": ...}``."""
    made = {
        "tiff": workdir / "inputs" / f"mosaic_{size}.tif",
        "ome-zarr": workdir / "inputs" / f"mosaic_{size}.ome.zarr",
    }
    made["tiff"].parent.mkdir(parents=True, exist_ok=True)
    if not made["tiff"].exists():
        t0 = time.perf_counter()
        write_tiff(made["tiff"], size)
        print(f"wrote {made['tiff']} in {time.perf_counter() - t0:.0f} s", flush=True)
    if not (made["ome-zarr"] / ".zattrs").exists():
        t0 = time.perf_counter()
        write_ome_zarr(made["ome-zarr"], size)
        print(f"wrote {made['ome-zarr']} in {time.perf_counter() - t0:.0f} s", flush=True)
    return made


def inputs_3d(workdir: Path) -> dict[str, Path]:
    """The 3D volumes as zlib-compressed, tiled TIFF (Z pages of 512 x 512 tiles)."""
    import tifffile

    made = {}
    for shape in VOLUMES:
        path = workdir / "inputs" / f"volume_{'x'.join(map(str, shape))}.tif"
        if not path.exists():
            tmp = path.with_suffix(".tmp.tif")
            tifffile.imwrite(
                tmp,
                volume(shape),
                bigtiff=True,
                tile=(TILE_IO, TILE_IO),
                compression="zlib",
                metadata={"axes": "ZYX"},
            )
            os.replace(tmp, path)
        made["x".join(map(str, shape))] = path
    return made


# --------------------------------------------------------------------------- measuring

_TIME = Path("/usr/bin/time")
_WRAPPER = (
    "import resource, subprocess, sys, time; t = time.perf_counter(); "
    "rc = subprocess.call(sys.argv[1:]); w = time.perf_counter() - t; "
    "r = resource.getrusage(resource.RUSAGE_CHILDREN); "
    "print(f'Maximum resident set size (kbytes): {r.ru_maxrss}', file=sys.stderr); "
    "print(f'wrapper wall seconds: {w}', file=sys.stderr); sys.exit(rc)"
)


def measured(cmd: list[str], log: Path) -> dict[str, Any]:
    """Run ``cmd`` in a fresh process; its peak RSS (MB), wall time (s) and exit code."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if _TIME.exists():
        full = [str(_TIME), "-v", *cmd]
    else:
        full = [sys.executable, "-c", _WRAPPER, *cmd]
    t0 = time.perf_counter()
    proc = subprocess.run(full, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    log.write_text(f"$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    kb = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    return {
        "command": " ".join(cmd),
        "rc": proc.returncode,
        "peak_rss_mb": int(kb.group(1)) / 1024 if kb else None,
        "wall_s": wall,
        "log": str(log),
    }


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _save(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _record(book: Path, key: str, rec: dict[str, Any]) -> None:
    """Add one result to the JSON ``book`` under an exclusive lock (runs may overlap)."""
    import fcntl

    with open(book.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = _load(book)
        data[key] = rec
        _save(book, data)


FLOOR = (
    "import torch; from napari_seamless.models import load_model; "
    "p = load_model('{model}').predictor(time_budget=None); print(p.halo, p.factor)"
)


def measure(
    workdir: Path,
    sizes: list[int],
    tile: int,
    rerun: bool,
    do_3d: bool,
    kinds: tuple[str, ...] = ("tiff", "ome-zarr"),
    exts: tuple[str, ...] = ("zarr", "tif"),
    extra: tuple[str, ...] = (),
) -> None:
    """Run every combination not measured yet, saving after each (``measure.json``).

    ``extra`` arguments are added to every ``seamless predict`` (e.g. ``--low-memory``).

    Several of these may run at once (each takes the book's lock to record a result).
    """
    book = workdir / "measure.json"
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    outdir = workdir / "outputs"
    outdir.mkdir(exist_ok=True)
    seamless = shutil.which("seamless") or "seamless"
    if rerun or "floor" not in _load(book):
        rec = measured([sys.executable, "-c", FLOOR.format(model="nuclei")], logs / "floor.log")
        _record(book, "floor", rec)
        print(f"floor: {rec['peak_rss_mb']:.0f} MB", flush=True)
    for size in sizes:
        made = inputs(workdir, size)
        for kind, src in made.items():
            if kind not in kinds:
                continue
            for ext in exts:
                key = f"{size}/{kind}/{ext}"
                if _load(book).get(key, {}).get("rc") == 0 and not rerun:
                    continue
                out = outdir / f"{size}_{kind}.{ext}"
                cmd = [seamless, "predict", str(src), "-o", str(out), "--tile", str(tile)]
                cmd += ["--overwrite", "-q", "--time-budget", "0", *extra]
                rec = measured(cmd, logs / f"{size}_{kind}_{ext}.log")
                rec.update(size=size, input=kind, output=ext, out=str(out))
                _record(book, key, rec)
                print(
                    f"{key}: rc {rec['rc']} peak {rec['peak_rss_mb'] or float('nan'):.0f} MB "
                    f"{rec['wall_s']:.0f} s",
                    flush=True,
                )
    if do_3d:
        here = Path(__file__).resolve()
        for name, src in inputs_3d(workdir).items():
            key = f"3d/{name}"
            if _load(book).get(key, {}).get("rc") == 0 and not rerun:
                continue
            out = outdir / f"volume_{name}.zarr"
            cmd = [seamless, "predict", str(src), "-o", str(out), "--tile", str(TILE_3D)]
            cmd += ["--model", f"{here}:unet3d", "--overwrite", "-q", "--time-budget", "0"]
            cmd += list(extra)
            rec = measured(cmd, logs / f"volume_{name}.log")
            rec.update(size=name, input="tiff (3D)", output="zarr", out=str(out))
            _record(book, key, rec)
            print(f"{key}: rc {rec['rc']} peak {rec['peak_rss_mb']:.0f} MB", flush=True)
        if rerun or "floor3d" not in _load(book):
            floor = (
                f"import torch, runpy; ns = runpy.run_path('{here}'); "
                "from napari_seamless.engine import Predictor; p = Predictor(ns['unet3d'](), time_budget=None); "
                "print(p.halo, p.factor)"
            )
            rec = measured([sys.executable, "-c", floor], logs / "floor3d.log")
            _record(book, "floor3d", rec)


# --------------------------------------------------------------------------- checks


def _labels_level0(path: Path) -> Any:
    """Level 0 of a written output, lazily: a zarr array (OME-Zarr or the TIFF's zarr view)."""
    import tifffile
    import zarr

    if path.suffix == ".zarr":
        group = zarr.open_group(str(path), mode="r")
        attrs = dict(group.attrs)
        ms = attrs.get("ome", attrs)["multiscales"][0]
        return group[ms["datasets"][0]["path"]]
    tif = tifffile.TiffFile(path)
    return zarr.open(tif.series[0].aszarr(level=0), mode="r")


def _compare_bands(a: Any, b: Any, band: int = 2048) -> int:
    """Pixels that differ between two equally shaped 2D arrays, read band by band."""
    if tuple(a.shape) != tuple(b.shape):
        raise AssertionError(f"shapes differ: {a.shape} vs {b.shape}")
    diff = 0
    for y0 in range(0, a.shape[0], band):
        diff += int(
            np.count_nonzero(np.asarray(a[y0 : y0 + band]) != np.asarray(b[y0 : y0 + band]))
        )
    return diff


def _regions(size: int, zor: int, halo: int, side: int = 512) -> list[tuple[int, int]]:
    """Top-left corners of ``side``-square regions: interior, straddling ZoR borders."""
    # a ZoR corner near the centre, a border crossing near a quarter, one near the far edge
    k = max(1, (size // 2) // zor)
    corners = [
        (k * zor - side // 2, k * zor - side // 2),  # straddles a ZoR corner (4 tiles)
        (size // 4 // zor * zor - side // 3, size // 3),  # straddles a horizontal border
        (size // 2 + 37, size // 2 + 101),  # inside, unaligned
        (size - side - 2 * halo - 16, 3 * size // 4 // zor * zor - side // 2),
    ]
    lo, hi = halo + 16, size - side - halo - 16
    return [(min(max(y, lo), hi), min(max(x, lo), hi)) for y, x in corners]


def check(
    workdir: Path, sizes: list[int], tile: int, do_3d: bool, in_memory_max: int = 8192
) -> None:
    """Equality and reader checks of the measured outputs (``check.json``)."""
    import torch
    import zarr

    from napari_seamless._napari.reader import get_reader, read_ome_zarr
    from napari_seamless.data import mosaic
    from napari_seamless.engine import segment
    from napari_seamless.io import lazy, read_image
    from napari_seamless.models import load_model
    from napari_seamless.preprocessing import PercentileNormalization, Preprocessing

    book = workdir / "check.json"
    result = _load(book)
    measured_runs = _load(workdir / "measure.json")
    loaded = load_model("nuclei")
    pred = loaded.predictor(time_budget=None)  # a loaded machine can take minutes
    grid_zor = pred.grid((max(sizes), max(sizes)), tile).zor_size[0]
    halo, f = pred.halo[0], pred.factor[0]
    src = _source()

    # the block-by-block texture is the package's mosaic
    small = 1500
    result["texture_equals_mosaic"] = bool(
        np.array_equal(texture(src, 0, small, 0, small), mosaic(small))
    )

    def fitted_norm(data: Any):
        arr = lazy(data)[None]  # channel-first, still lazy (zarr -> dask)
        norm = loaded.normalization
        if isinstance(norm, str):
            return PercentileNormalization.fit(arr)
        if isinstance(norm, Preprocessing):
            return norm.fit(arr)
        raise TypeError(f"unexpected normalization {norm!r}")

    for size in sizes:
        key = str(size)
        outs = {
            (kind, ext): Path(measured_runs[f"{size}/{kind}/{ext}"]["out"])
            for kind in ("tiff", "ome-zarr")
            for ext in ("zarr", "tif")
            if measured_runs.get(f"{size}/{kind}/{ext}", {}).get("rc") == 0
        }
        if not outs:
            continue
        rec: dict[str, Any] = {}
        ref_key = ("ome-zarr", "zarr") if ("ome-zarr", "zarr") in outs else next(iter(outs))
        ref = _labels_level0(outs[ref_key])
        rec["reference_output"] = "/".join(ref_key)
        # every output equals the reference output (the TIFF ones read through tifffile)
        rec["outputs_equal"] = {
            "/".join(k): _compare_bands(_labels_level0(p), ref) for k, p in outs.items()
        }
        # the napari reader: a multiscale labels layer
        zpath = outs[ref_key]
        reader = get_reader(str(zpath))
        if zpath.suffix != ".zarr":
            data, kwargs, layer_type = None, {}, None
        else:
            (data, kwargs, layer_type), *_ = read_ome_zarr(str(zpath))
        rec["napari_reader"] = {
            "accepted": reader is read_ome_zarr,
            "layer_type": layer_type,
            "multiscale": bool(kwargs.get("multiscale")),
            "levels": [list(d.shape) for d in data] if isinstance(data, list) else None,
            "level0_is_output": isinstance(data, list)
            and tuple(data[0].shape) == (size, size)
            and _compare_bands(data[0], ref) == 0,
        }
        # whole output against the in-memory result (numpy mosaic, same tile)
        if size <= in_memory_max:
            t0 = time.perf_counter()
            image = mosaic(size)
            labels = segment(pred, image, tile)
            rec["in_memory_tiled"] = {
                "differ": _compare_bands(labels, ref),
                "pixels": size * size,
                "seconds": time.perf_counter() - t0,
            }
            del image, labels
        # regions against the model run directly on a crop (no tiling code)
        source = read_image(workdir / "inputs" / f"mosaic_{size}.ome.zarr").data
        norm = fitted_norm(source)
        regions = []
        for y, x in _regions(size, grid_zor, halo):
            side = 512
            cy0 = (y - halo) // f * f
            cx0 = (x - halo) // f * f
            cy1 = -(-(y + side + halo) // f) * f
            cx1 = -(-(x + side + halo) // f) * f
            crop = texture(src, cy0, cy1, cx0, cx1)
            assert cy1 <= size and cx1 <= size, (cy1, cx1, size)
            x_in = norm(crop[None], dtype=np.float32)
            with torch.inference_mode():
                logits = pred.model(torch.from_numpy(np.ascontiguousarray(x_in))[None])
                probs = torch.softmax(logits, 1)[0].numpy()
            direct = pred.labels(probs)[y - cy0 : y - cy0 + side, x - cx0 : x - cx0 + side]
            got = np.asarray(ref[y : y + side, x : x + side])
            regions.append(
                {
                    "region": f"{y}:{y + side}, {x}:{x + side}",
                    "crop": f"{cy0}:{cy1}, {cx0}:{cx1}",
                    "zor_borders_crossed": int(
                        (y + side - 1) // grid_zor
                        - y // grid_zor
                        + (x + side - 1) // grid_zor
                        - x // grid_zor
                    ),
                    "differ": int(np.count_nonzero(direct != got)),
                    "crop_equals_input": bool(np.array_equal(crop, source[cy0:cy1, cx0:cx1])),
                }
            )
        rec["regions_vs_direct_forward"] = regions
        result[key] = rec
        _save(book, result)
        print(f"checked {size}: {json.dumps(rec)}", flush=True)
    if do_3d:
        rec3 = {}
        for name, run in measured_runs.items():
            if name.startswith("3d/") and run.get("rc") == 0:
                out = Path(run["out"])
                (data, kwargs, layer_type), *_ = read_ome_zarr(str(out))
                rec3[name] = {
                    "layer_type": layer_type,
                    "multiscale": bool(kwargs.get("multiscale")),
                    "level0": list((data[0] if isinstance(data, list) else data).shape),
                    "labels_present": [
                        int(v) for v in np.unique(np.asarray(_labels_level0(out)[::8]))
                    ],
                }
        result["3d"] = rec3
        _save(book, result)
    _ = zarr


# --------------------------------------------------------------------------- report


def report(workdir: Path, sizes: list[int], tile: int, extra: tuple[str, ...] = ()) -> None:
    """The ``scale`` section of docs/benchmarks.md and benchmarks/results/scale.json."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _report import machine, replace_section, save_json

    runs = _load(workdir / "measure.json")
    checks = _load(workdir / "check.json")
    floor = runs.get("floor", {}).get("peak_rss_mb")
    lines = [
        "## Peak memory against image size (issue 9)",
        "",
        f"Machine: {machine()}. Made by `python benchmarks/scale.py --sizes "
        f"{' '.join(map(str, sizes))} --tile {tile}"
        + (f" --predict-args='{' '.join(extra)}'" if extra else "")
        + "`; each row is one fresh `seamless predict IN -o OUT --tile "
        f"{tile} --overwrite -q{''.join(' ' + a for a in extra)}` (default model `nuclei`) "
        "under `/usr/bin/time -v`. Inputs: "
        "a uint16 mosaic of the bundled nuclei image, as a 512 x 512-tiled, zlib BigTIFF and "
        "as a one-level OME-Zarr (512 x 512 chunks); outputs: OME-Zarr labels (`.zarr`) and a "
        "tiled pyramidal BigTIFF (`.tif`). Wall times are indicative only: two cores, shared "
        "with other jobs.",
        "",
    ]
    if floor:
        lines += [
            f"Floor: `import torch` + loading the model + its halo analysis peaks at "
            f"{floor:.0f} MB on its own.",
            "",
        ]
    lines += [
        "| size | input | output | peak RSS (MB) | wall (s) | RSS / RSS at smallest size |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    table = []
    for size in sizes:
        for kind in ("tiff", "ome-zarr"):
            for ext in ("zarr", "tif"):
                r = runs.get(f"{size}/{kind}/{ext}")
                if not r:
                    continue
                base = runs.get(f"{sizes[0]}/{kind}/{ext}", {}).get("peak_rss_mb")
                rel = r["peak_rss_mb"] / base if base and r["peak_rss_mb"] else float("nan")
                ok = "" if r["rc"] == 0 else f" (exit {r['rc']})"
                if r.get("partial"):
                    ok = " (stopped early: peak so far)"
                lines.append(
                    f"| {size}² | {kind} | {ext}{ok} | {r['peak_rss_mb']:.0f} | "
                    f"{'-' if r['wall_s'] != r['wall_s'] else round(r['wall_s'])} | {rel:.3f} |"
                )
                table.append({**r, "rss_relative": rel})
    rows3 = {k: v for k, v in runs.items() if k.startswith("3d/")}
    if rows3:
        f3 = runs.get("floor3d", {}).get("peak_rss_mb")
        lines += [
            "",
            f"3D (a random-weight 3D U-Net, depth 2, width 4: `--model "
            f"benchmarks/scale.py:unet3d --tile {TILE_3D}`; volumes tiled from the stardist "
            "3D nuclei, zlib TIFF, output OME-Zarr labels"
            + (f"; the same model's floor {f3:.0f} MB" if f3 else "")
            + "):",
            "",
            "| volume (Z x Y x X) | peak RSS (MB) | wall (s) |",
            "| --- | ---: | ---: |",
        ]
        for k, r in rows3.items():
            lines.append(f"| {k[3:]} | {r['peak_rss_mb']:.0f} | {r['wall_s']:.0f} |")
    lines += ["", "Checks (routes other than the CLI's own):", ""]
    for size in sizes:
        c = checks.get(str(size))
        if not c:
            continue
        eq = ", ".join(f"{k} {v}" for k, v in c["outputs_equal"].items())
        lines.append(f"- {size}²: pixels differing from the {c['reference_output']} output: {eq}.")
        nr = c["napari_reader"]
        if nr["layer_type"] is None:
            lines.append("  napari reader: not checked (no OME-Zarr output measured at this size).")
        else:
            lines.append(
                f"  napari reader: accepted {nr['accepted']}, layer `{nr['layer_type']}`, "
                f"multiscale {nr['multiscale']}, {len(nr['levels'] or [])} levels, level 0 "
                f"equals the output {nr['level0_is_output']}."
            )
        if "in_memory_tiled" in c:
            m = c["in_memory_tiled"]
            lines.append(
                f"  Whole output vs `segment(predictor, mosaic({size}), {tile})` in memory: "
                f"{m['differ']} of {m['pixels']} pixels differ."
            )
        regs = c["regions_vs_direct_forward"]
        lines.append(
            f"  {len(regs)} regions of 512² (ZoR borders crossed: "
            f"{', '.join(str(r['zor_borders_crossed']) for r in regs)}) vs one direct forward "
            "pass on an F-aligned crop with at least the halo around it: "
            f"{', '.join(str(r['differ']) for r in regs)} pixels differ."
        )
    if "texture_equals_mosaic" in checks:
        lines.append(
            f"- The block-by-block input generator equals `napari_seamless.data.mosaic`: "
            f"{checks['texture_equals_mosaic']}."
        )
    notes = workdir / "notes.md"
    if notes.exists():  # findings of this run, written by hand beside the figures
        lines += ["", notes.read_text().strip()]
    replace_section("scale", "\n".join(lines))
    save_json(
        "scale",
        {"machine": machine(), "tile": tile, "runs": runs, "table": table, "checks": checks},
    )
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments and run the phases asked for."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192, 20000])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/seamless-scale"))
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument(
        "--in-memory-max",
        type=int,
        default=8192,
        help="largest size whose whole output is compared with an in-memory run",
    )
    ap.add_argument("--rerun", action="store_true", help="measure again what was measured")
    ap.add_argument(
        "--predict-args",
        default="",
        help="more arguments for every seamless predict, e.g. '--low-memory'",
    )
    ap.add_argument("--no-3d", dest="do_3d", action="store_false")
    ap.add_argument(
        "--inputs", nargs="+", default=["tiff", "ome-zarr"], choices=["tiff", "ome-zarr"]
    )
    ap.add_argument("--outputs", nargs="+", default=["zarr", "tif"], choices=["zarr", "tif"])
    ap.add_argument(
        "--phases",
        nargs="+",
        default=["generate", "measure", "check", "report"],
        choices=["generate", "measure", "check", "report"],
    )
    args = ap.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(args.workdir).free / 2**30
    print(f"workdir {args.workdir}: {free:.0f} GiB free", flush=True)
    if "generate" in args.phases:
        for size in args.sizes:
            inputs(args.workdir, size)
    if "measure" in args.phases:
        measure(
            args.workdir,
            args.sizes,
            args.tile,
            args.rerun,
            args.do_3d,
            tuple(args.inputs),
            tuple(args.outputs),
            tuple(args.predict_args.split()),
        )
    if "check" in args.phases:
        check(args.workdir, args.sizes, args.tile, args.do_3d, args.in_memory_max)
    if "report" in args.phases:
        report(args.workdir, args.sizes, args.tile, tuple(args.predict_args.split()))


if __name__ == "__main__":
    main()
