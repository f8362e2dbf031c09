"""Benchmarks, measured side by side in one run; writes docs/benchmarks.md.

    python benchmarks/run_benchmarks.py [--size 2048] [--repeats 2] [--out docs/benchmarks.md]

1. Speed: whole-image inference vs exact tiling at several tile sizes on the same image,
   reported as ratios to the whole-image time (the paper's "relative runtime").
2. Exactness at those tile sizes: max |score difference| and misclassified pixels (ME).
3. Halo sweep at one tile size: RMSE, ME and NME (paper Eqs. 3-5) against the whole image
   for halos 0, 16, ... up to the exact halo, as in the paper's Table 1.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from napari_seamless.data import mosaic
from napari_seamless.engine import Predictor, predict
from napari_seamless.models import load_model
from napari_seamless.qa import max_abs_difference, misclassification_error, nme, rmse


def timed(fn, repeats):
    best = float("inf")
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--tiles", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--sweep-tile", type=int, default=512)
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    args = ap.parse_args()

    model = load_model("nuclei").module
    pred = Predictor(model)
    image = mosaic(args.size)
    t_whole, ref = timed(lambda: predict(pred, image, None), args.repeats)
    rows = []
    for tile in args.tiles:
        grid = pred.grid(image.shape, tile)
        t, out = timed(lambda tile=tile: predict(pred, image, tile), args.repeats)
        rows.append(
            (
                tile,
                grid.zor_size[0],
                len(grid),
                grid.overhead,
                t,
                t / t_whole,
                max_abs_difference(ref, out),
                misclassification_error(ref.argmax(0), out.argmax(0)),
            )
        )

    sweep = []
    f = pred.factor[0]
    for halo in range(0, pred.halo[0] + 1, f):
        p = Predictor(model, halo=halo, factor=f)
        out = predict(p, image, args.sweep_tile)
        sweep.append(
            (
                halo,
                args.sweep_tile - 2 * halo,
                rmse(ref, out),
                misclassification_error(ref.argmax(0), out.argmax(0)),
                nme(ref.argmax(0), out.argmax(0)),
            )
        )

    dev = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    lines = [
        "# Benchmarks",
        "",
        "Made by `python benchmarks/run_benchmarks.py` (all numbers from one run, side by side;",
        f"best of {args.repeats}). Image: the {args.size} x {args.size} nuclei mosaic; model: the bundled",
        f"`nuclei` U-Net (F {f}, halo {pred.halo[0]}); device: {pred.device} ({dev}).",
        "",
        "## Relative runtime of exact tiling",
        "",
        f"Whole image in one pass: {t_whole:.2f} s (= 1.00). Overhead is window area / ZoR area.",
        "",
        "| tile | ZoR | tiles | overhead | time (s) | relative runtime | max abs score diff | ME (pixels) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for tile, zor, n, ovh, t, rel, diff, me in rows:
        lines.append(
            f"| {tile} | {zor} | {n} | {ovh:.2f} | {t:.2f} | {rel:.2f}x | {diff:.1e} | {me} |"
        )
    lines += [
        "",
        "The paper measured 2.58x at tile 512 and 1.58x at 1024 on a GPU. On a CPU the whole-image pass",
        "is itself slowed by its large activations (memory-bound), so mid-sized tiles can cost about",
        "as much as one pass despite computing `overhead` times the kept pixels; very small tiles",
        "pay their overhead in full.",
        "",
        f"## Halo sweep at tile {args.sweep_tile} (paper Table 1, Eqs. 3-5)",
        "",
        "| halo | ZoR | RMSE | ME (pixels) | NME |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for halo, zor, r, me, n_ in sweep:
        lines.append(f"| {halo} | {zor} | {r:.2e} | {me} | {n_:.2e} |")
    lines += [
        "",
        f"Errors fall to float32 rounding (ME 0) only at the exact halo {pred.halo[0]}.",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
