"""Tiling benchmarks, measured side by side in one run; section "tiling" of docs/benchmarks.md.

    python benchmarks/run_benchmarks.py [--size 2048] [--repeats 2] [--dry-run]

1. Speed: whole-image inference vs exact tiling at several tile sizes on the same image,
   reported as ratios to the whole-image time (the paper's "relative runtime"), next to
   the ideal ratio: the pixels the model computes, sum of window areas / image area.
2. Exactness at those tile sizes: max |score difference| and misclassified pixels (ME).
3. Halo sweep at one tile size: RMSE, ME and NME (paper Eqs. 3-5) against the whole image
   for halos 0, 16, ... up to the exact halo, as in the paper's Table 1.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from napari_seamless.data import mosaic
from napari_seamless.engine import Predictor, predict
from napari_seamless.models import load_model
from napari_seamless.qa import max_abs_difference, misclassification_error, nme, rmse

try:  # run as a script (python benchmarks/run_benchmarks.py) or as a module
    from _report import machine, replace_section, save_json
except ImportError:  # pragma: no cover
    from benchmarks._report import machine, replace_section, save_json


TILE_FIELDS = (
    "tile",
    "zor",
    "tiles",
    "overhead",
    "ideal",
    "time",
    "relative",
    "max_abs_diff",
    "me",
)
SWEEP_FIELDS = ("halo", "zor", "rmse", "me", "nme")


def window_area(grid) -> int:
    """Pixels the model computes for a grid: the sum of its window areas."""
    return sum(int(np.prod([w.stop - w.start for w in tile.window])) for tile in grid)


def interleaved(fns: dict, repeats: int) -> tuple[dict, dict]:
    """Best time of each function over ``repeats`` rounds, each round running all once.

    Interleaving (A, B, C, A, B, C, ...) spreads slow spells of a shared CPU over every
    configuration instead of one. Returns (best seconds, output of the first round).
    """
    best = dict.fromkeys(fns, float("inf"))
    outs = {}
    for r in range(repeats):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            out = fn()
            best[key] = min(best[key], time.perf_counter() - t0)
            if r == 0:
                outs[key] = out
            print(f"  round {r + 1}: tile {key}: {time.perf_counter() - t0:.2f} s", flush=True)
    return best, outs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--tiles", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--sweep-tile", type=int, default=512)
    ap.add_argument("--dry-run", action="store_true", help="print only; write no files")
    args = ap.parse_args()

    model = load_model("nuclei").module
    pred = Predictor(model)
    image = mosaic(args.size)
    fns = {tile: (lambda tile=tile: predict(pred, image, tile)) for tile in [None, *args.tiles]}
    times, outs = interleaved(fns, args.repeats)
    t_whole, ref = times[None], outs.pop(None)
    rows = []
    for tile, out in outs.items():
        grid = pred.grid(image.shape, tile)
        rows.append(
            (
                tile,
                grid.zor_size[0],
                len(grid),
                grid.overhead,
                window_area(grid) / image.size,
                times[tile],
                times[tile] / t_whole,
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

    cmd = (
        f"python benchmarks/run_benchmarks.py --size {args.size} --repeats {args.repeats} "
        f"--tiles {' '.join(map(str, args.tiles))} --sweep-tile {args.sweep_tile}"
    )
    lines = [
        "## Relative runtime of exact tiling",
        "",
        f"Made by `{cmd}` (all numbers from one run, side by side, interleaved;",
        f"best of {args.repeats}, serial executor). Image: the {args.size} x {args.size} nuclei",
        f"mosaic; model: the bundled `nuclei` U-Net (F {f}, halo {pred.halo[0]}); device:",
        f"{pred.device} ({machine()}).",
        "Other jobs may share this CPU: compare the ratios within the table.",
        "",
        f"Whole image in one pass: {t_whole:.2f} s (= 1.00). Overhead is window area / ZoR area",
        "of an inner tile; the ideal ratio is the sum of all window areas / image area (border",
        "windows are clipped to the image), the runtime to expect if time were proportional to",
        "the pixels the model computes.",
        "",
        "| tile | ZoR | tiles | overhead | ideal ratio | time (s) | relative runtime "
        "| max abs score diff | ME (pixels) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for tile, zor, n, ovh, ideal, t, rel, diff, me in rows:
        lines.append(
            f"| {tile} | {zor} | {n} | {ovh:.2f} | {ideal:.2f}x | {t:.2f} | {rel:.2f}x "
            f"| {diff:.1e} | {me} |"
        )
    lines += [
        "",
        "The paper measured 2.58x at tile 512 and 1.58x at 1024 on a GPU. On a CPU the",
        "whole-image pass is itself slowed by its large activations (memory-bound), so the",
        "measured ratio can fall below the ideal one; very small tiles pay their overhead in",
        "full.",
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
    print("\n".join(lines))
    if not args.dry_run:
        replace_section("tiling", "\n".join(lines))
        save_json(
            "tiling",
            {
                "command": cmd,
                "machine": machine(),
                "whole": t_whole,
                "tiles": [dict(zip(TILE_FIELDS, map(float, r), strict=True)) for r in rows],
                "sweep": [dict(zip(SWEEP_FIELDS, map(float, r), strict=True)) for r in sweep],
            },
        )


if __name__ == "__main__":
    main()
