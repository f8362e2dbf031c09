"""Exact tiling against whole-image inference and MONAI's sliding window, side by side.

    python benchmarks/monai_compare.py [--sizes 2048 4096] [--tiles 512 1024] [--repeats 3]

Writes section "monai" of docs/benchmarks.md and benchmarks/results/monai.json.

For each image size (the nuclei mosaic) and window size, in one run, interleaved (every
configuration once per round, rounds repeated, the best of them kept, because other work
may share the CPU):

* whole: the whole image in one forward pass (the reference), through the engine;
* exact: exact tiling (ZoR + halo) through the engine's pipelined executor
  (``ThreadedExecutor``), with its pipeline efficiency = time inside forward / wall time,
  and the ideal ratio = sum of window areas / image area;
* MONAI ``sliding_window_inference`` (Gaussian blending, ``sw_batch_size=1``) with the same
  window, (a) the smallest overlap whose stride leaves at least ``2 * halo`` pixels of
  overlap between neighbouring windows, and (b) MONAI's default overlap 0.25.

Every method gets the same model, the same torch threads and the same input: the
percentile normalisation (the nuclei model's declared preprocessing) is fitted once, the
engine applies it to each window as it reads it, and MONAI receives the whole image
normalised by the same map, as a float32 tensor (the normalisation of the whole image is
not counted in MONAI's time; the engine's per-window normalisation is counted in its own).
MONAI blends the model's logits (``predictor=model``); softmax follows, as in the engine.
ME (misclassified pixels, paper Eq. 4) and the largest |score difference| are taken
against the whole-image reference.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from napari_seamless.data import mosaic
from napari_seamless.engine import Predictor, SerialExecutor, ThreadedExecutor
from napari_seamless.preprocessing import PercentileNormalization
from napari_seamless.qa import max_abs_difference, misclassification_error
from napari_seamless.stores import ArrayStore

try:  # run as a script (python benchmarks/monai_compare.py) or as a module
    from _report import machine, replace_section, save_json
except ImportError:  # pragma: no cover
    from benchmarks._report import machine, replace_section, save_json


def monai_stride(tile: int, overlap: float) -> int:
    """The stride MONAI uses for a window of ``tile`` pixels and an overlap fraction.

    MONAI 1.x (``monai.inferers.utils._get_scan_interval``) takes ``int(tile * (1 -
    overlap))``, at least 1, for an axis shorter or longer than the window.
    """
    return max(int(tile * (1 - overlap)), 1)


def halo_overlap(tile: int, halo: int) -> float:
    """The smallest overlap fraction whose MONAI stride is at most ``tile - 2 * halo``."""
    o = 2 * halo / tile
    while monai_stride(tile, o) > tile - 2 * halo:  # float rounding of tile * (1 - o)
        o = math.nextafter(o, 1.0)
    return o


def monai_windows(size: int, tile: int, overlap: float) -> list[tuple[int, int]]:
    """Window starts and stops along one axis as MONAI places them (checked against it)."""
    from monai.data.utils import dense_patch_slices

    stride = monai_stride(tile, overlap)
    slices = dense_patch_slices((size,), (tile,), (stride,))
    return [(s[0].start, s[0].stop) for s in slices]


def exact_windows(pred: Predictor, size: int, tile: int | None) -> list[tuple[int, int]]:
    """Window starts and stops along one axis of the engine's grid (a square image)."""
    grid = pred.grid((size, size), tile)
    return sorted({(t.window[0].start, t.window[0].stop) for t in grid})


def area_ratio(windows_1d: list[tuple[int, int]], size: int) -> float:
    """Sum of window areas / image area for a square image tiled alike on both axes."""
    return (sum(b - a for a, b in windows_1d) / size) ** 2


def run_engine(pred, image, norm, tile, executor):
    """Probabilities of the engine; returns (wall seconds, PipelineStats, output)."""
    out = np.zeros((2, *image.shape), dtype=np.float32)
    t0 = time.perf_counter()
    run = pred.run(image, ArrayStore(out), tile, normalization=norm, executor=executor)
    for _ in run:
        pass
    return time.perf_counter() - t0, run.stats, out


def run_monai(model, x, tile, overlap):
    """Probabilities by MONAI's Gaussian sliding window; returns (wall seconds, output)."""
    from monai.inferers import sliding_window_inference

    t0 = time.perf_counter()
    with torch.inference_mode():
        logits = sliding_window_inference(
            x,
            roi_size=(tile, tile),
            sw_batch_size=1,
            predictor=model,
            overlap=overlap,
            mode="gaussian",
        )
        probs = torch.softmax(logits, dim=1)[0].numpy()
    return time.perf_counter() - t0, probs


def errors(ref: np.ndarray, out: np.ndarray) -> dict:
    return {
        "me": int(misclassification_error(ref.argmax(0), out.argmax(0))),
        "max_abs_diff": float(max_abs_difference(ref, out)),
    }


def measure(pred: Predictor, size: int, tiles: list[int], repeats: int, readers: int) -> dict:
    """Every configuration for one image size, interleaved, best of ``repeats``."""
    image = mosaic(size)
    norm = PercentileNormalization.fit(image[None])
    x = torch.from_numpy(norm(image[None], dtype=np.float32)[None])  # (1, 1, H, W) float32
    halo = pred.halo[0]
    configs = [("whole", None, None)]
    for tile in tiles:
        o = halo_overlap(tile, halo)
        configs += [("exact", tile, None), ("monai-halo", tile, o), ("monai-0.25", tile, 0.25)]
    best: dict[tuple, dict] = {}
    outputs: dict[tuple, np.ndarray] = {}
    for r in range(repeats):
        for kind, tile, overlap in configs:
            key = (kind, tile)
            if kind == "whole":
                t, stats, out = run_engine(pred, image, norm, None, SerialExecutor())
                rec = {"time": t, "efficiency": stats.efficiency}
            elif kind == "exact":
                ex = ThreadedExecutor(readers=readers)
                t, stats, out = run_engine(pred, image, norm, tile, ex)
                rec = {
                    "time": t,
                    "efficiency": stats.efficiency,
                    "forward": stats.forward,
                    "wall": stats.wall,
                    "wait": stats.wait,
                }
            else:
                t, out = run_monai(pred.model, x, tile, overlap)
                rec = {"time": t, "overlap": overlap, "stride": monai_stride(tile, overlap)}
            rec["times"] = best.get(key, {}).get("times", []) + [t]
            if key not in best or t < best[key]["time"]:
                best[key] = rec
            else:
                best[key]["times"] = rec["times"]
            if r == 0:
                outputs[key] = out
            print(f"  size {size} round {r + 1}: {kind:10s} tile {tile}: {t:6.2f} s", flush=True)
    ref = outputs[("whole", None)]
    for key, out in outputs.items():
        if key[0] != "whole":
            best[key].update(errors(ref, out))
    for tile in tiles:
        grid = pred.grid((size, size), tile)
        best[("exact", tile)]["ideal"] = area_ratio(exact_windows(pred, size, tile), size)
        best[("exact", tile)]["windows"] = len(grid)
        best[("exact", tile)]["stride"] = grid.zor_size[0]
        for kind in ("monai-halo", "monai-0.25"):
            rec = best[(kind, tile)]
            w = monai_windows(size, tile, rec["overlap"])
            if kind == "monai-halo":  # the overlap really covers the halo
                assert all(b0 - a1 >= 2 * halo for (_, b0), (a1, _) in zip(w, w[1:], strict=False))
            rec["ideal"] = area_ratio(w, size)
            rec["windows"] = len(w) ** 2
    return {f"{k}@{t}" if t else k: v for (k, t), v in best.items()}


def table(size: int, res: dict, tiles: list[int]) -> list[str]:
    """Markdown rows for one image size."""
    whole = res["whole"]["time"]
    lines = [
        f"**{size} x {size}**: whole image in one pass {whole:.2f} s (= 1.00x).",
        "",
        "| tile | method | stride | windows | ideal ratio | time (s) | relative to whole "
        "| s per computed Mpx | MONAI / exact time | efficiency | ME (pixels) "
        "| max abs score diff |",
        "| ---: | :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for tile in tiles:
        exact = res[f"exact@{tile}"]["time"]
        for kind in ("exact", "monai-halo", "monai-0.25"):
            r = res[f"{kind}@{tile}"]
            if kind == "exact":
                name, ratio, eff = "exact (ZoR + halo), pipelined", "", f"{r['efficiency']:.3f}"
            else:
                name = f"MONAI Gaussian, overlap {r['overlap']:.4g}"
                name += " (covers the halo)" if kind == "monai-halo" else " (default)"
                ratio, eff = f"{r['time'] / exact:.2f}x", ""
            per_mpx = r["time"] / (r["ideal"] * size * size / 1e6)
            lines.append(
                f"| {tile} | {name} | {r['stride']} | {r['windows']} | {r['ideal']:.2f} "
                f"| {r['time']:.2f} | {r['time'] / whole:.2f}x | {per_mpx:.2f} | {ratio} | {eff} "
                f"| {r['me']} | {r['max_abs_diff']:.1e} |"
            )
    return lines


def geometry(pred: Predictor, sizes: list[int], tiles: list[int]) -> list[dict]:
    """Pixels each method computes on larger images (window areas only, nothing run)."""
    halo = pred.halo[0]
    rows = []
    for size in sizes:
        for tile in tiles:
            exact = area_ratio(exact_windows(pred, size, tile), size)
            monai = area_ratio(monai_windows(size, tile, halo_overlap(tile, halo)), size)
            rows.append({"size": size, "tile": tile, "exact": exact, "monai_halo": monai})
    return rows


def render(data: dict) -> str:
    """The markdown of section "monai" from the saved numbers."""
    halo, f, repeats, readers = data["halo"], data["factor"], data["repeats"], data["readers"]
    results = {int(k): v for k, v in data["results"].items()}
    tiles = data["tiles"]
    lines = [
        "## Exact tiling against whole-image inference and MONAI's sliding window",
        "",
        f"Made by `{data['command']}` on {data['machine']}. Model: the bundled `nuclei`",
        f"U-Net (F {f}, exact halo {halo}); image: the nuclei mosaic. All configurations ran",
        f"in one process, interleaved (each once per round, {repeats} rounds; the best round",
        "is shown), because other jobs share this 2-core machine: absolute times vary from",
        "run to run, the ratios within a table are the comparison.",
        "",
        "- *exact*: `Predictor.run(image, store, tile, executor=ThreadedExecutor("
        f"readers={readers}))`;",
        "  *efficiency* = time inside the forward pass / wall time (`TileRun.stats`).",
        "- *MONAI*: `sliding_window_inference(x, roi_size=(tile, tile), sw_batch_size=1,",
        '  predictor=model, overlap=o, mode="gaussian")` under `torch.inference_mode()`, then',
        "  softmax. MONAI's stride is `int(tile * (1 - o))`; the halo-covering `o` is the",
        f"  smallest with stride <= tile - 2 x {halo}, so neighbouring windows overlap by at",
        "  least twice the halo (its stride equals the exact ZoR).",
        "- Same model, same torch threads, same input: the model's percentile normalisation",
        "  is fitted once; the engine applies it to each window it reads (counted in its",
        "  time), MONAI gets the whole image normalised by the same map as float32 (not",
        "  counted).",
        "- *ideal ratio* = sum of window areas / image area: the pixels the model computes.",
        "  The exact grid clips its border windows to the image; MONAI keeps every window",
        "  whole and moves the last one inward. *s per computed Mpx* = time / those pixels.",
        "- ME = misclassified pixels against the whole-image reference (paper Eq. 4).",
        "",
    ]
    for size, res in results.items():
        lines += table(size, res, tiles) + [""]
    lines += [
        "Pixels computed at larger sizes (sum of window areas / image area; geometry only,",
        "nothing run):",
        "",
        "| image | tile | exact | MONAI covering the halo | MONAI / exact |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for g in data["geometry"]:
        lines.append(
            f"| {g['size']} | {g['tile']} | {g['exact']:.2f} | {g['monai_halo']:.2f} "
            f"| {g['monai_halo'] / g['exact']:.2f}x |"
        )
    lines += ["", *summary(results, tiles), "", *NOTES]
    return "\n".join(lines)


NOTES = [
    "What this shows:",
    "",
    "- With the same window and a stride that covers the halo, MONAI's stride *is* the",
    "  exact ZoR, so both run the model on about the same pixels; the exact grid saves",
    "  only at the borders (clipped windows) and MONAI where its last window is moved",
    "  inward. On slide-sized images the pixel-count ratio tends to 1.00x (table above),",
    "  so no implementation detail can make exact tiling 1.5x faster at equal window and",
    "  halo-covering overlap in general: the 1.9x at 2048^2 / tile 1024 is the geometry of",
    "  that image size (1.60x the pixels) plus larger windows costing more per pixel on",
    "  this CPU. What exact tiling buys at equal cost is the answer: ME 0 against ME in",
    "  the hundreds, because MONAI's Gaussian weights are floored at 1e-3, so the",
    "  halo-deep edge of every window still leaks into the blend where the other",
    "  windows' weights are small too.",
    "- At tile 512 the exact run is slower than its pixel count predicts. The pipeline is",
    "  not the cause (efficiency ~1.0: the model never waits for reads or writes). On this",
    "  shared CPU, many short forward passes suffer more from other jobs than few long",
    "  ones (each parallel region waits for both OpenMP threads to be scheduled); the",
    "  model's own CPU time for the 9 window shapes of the 512 grid, one thread, is",
    "  within 10 % per pixel of the 512 x 512 windows MONAI runs.",
]


def summary(results: dict, tiles: list[int]) -> list[str]:
    """The acceptance lines of issue 9, computed from the figures."""
    out = ["Issue 9 acceptance, from these figures:", ""]
    for s, r in results.items():
        for t in tiles:
            exact, monai = r[f"exact@{t}"], r[f"monai-halo@{t}"]
            speed, eff = monai["time"] / exact["time"], exact["efficiency"]
            out.append(
                f"- {s}^2, tile {t}: exact tiling is {speed:.2f}x as fast as MONAI covering the "
                f"halo ({'meets' if speed >= 1.5 else 'does not meet'} 1.5x; the pixel-count "
                f"ratio is {monai['ideal'] / exact['ideal']:.2f}x); pipeline efficiency "
                f"{eff:.3f} ({'meets' if eff >= 0.9 else 'does not meet'} 0.9)."
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2048])
    ap.add_argument("--tiles", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--readers", type=int, default=2)
    ap.add_argument("--dry-run", action="store_true", help="print only; write no files")
    ap.add_argument(
        "--render", action="store_true", help="rewrite the section from results/monai.json"
    )
    args = ap.parse_args()

    json_path = Path(__file__).resolve().parent / "results" / "monai.json"
    if args.render:
        data = json.loads(json_path.read_text())
    else:
        pred = Predictor("nuclei")
        print(f"nuclei U-Net, halo {pred.halo[0]}, F {pred.factor[0]}; {machine()}", flush=True)
        results = {}
        for size in args.sizes:
            results[size] = measure(pred, size, args.tiles, args.repeats, args.readers)
        cmd = (
            f"python benchmarks/monai_compare.py --sizes {' '.join(map(str, args.sizes))} "
            f"--tiles {' '.join(map(str, args.tiles))} --repeats {args.repeats} "
            f"--readers {args.readers}"
        )
        data = {
            "command": cmd,
            "machine": machine(),
            "halo": pred.halo[0],
            "factor": pred.factor[0],
            "repeats": args.repeats,
            "readers": args.readers,
            "tiles": args.tiles,
            "results": results,
        }
    if "geometry" not in data:
        pred = Predictor("nuclei")
        data["geometry"] = geometry(pred, [2048, 4096, 8192, 20000], data["tiles"])
    text = render(data)
    print(text)
    if not args.dry_run:
        save_json("monai", data)
        replace_section("monai", text)


if __name__ == "__main__":
    main()
