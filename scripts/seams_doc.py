"""Numbers and pictures of ``docs/seams.md``: the halo sweep and the stride-offset experiment.

Two settings, as in Majurski & Bajcsy (2021), and a third that explains a difference:

``nuclei``
    The default model on the bundled ``nuclei2d.tif`` (512 x 512) with 256-pixel windows, so
    that there are seams; halos 0 to 112 in steps of F = 16; offsets 0 to 32 (float64); then
    ``seamless compare`` in the exact, naive and overlap-average modes. Through the command
    line, exactly as a user would::

        seamless sweep src/napari_seamless/data/nuclei2d.tif --tile 256 --halos 0:112:16 \\
            --offsets 0:32 -o DIR
        seamless compare src/napari_seamless/data/nuclei2d.tif --tile 256 --mode naive --json

``noise-he``
    The paper's Table 3 setting, smaller: the built-in ``unet4-random`` (the paper's U-Net at
    width 16, 4 classes, He-initialised random weights) on N(0, 1) noise
    (``numpy.random.default_rng(0)``, float32, 1024 x 1024, written to a TIFF) with 512-px
    windows, halos 0 to 112, and the three compare modes. Also through the command line.

``noise-torchinit``, ``noise-torchinit-float64``, ``noise-offsets``
    The paper's U-Net at its width (64) with 4 classes and PyTorch's default initialisation
    (``torch.manual_seed(0)``) on the same noise, fed as it is (no normalisation), 512-px
    windows, in float32 and in float64: its far receptive field fades below float32
    rounding, which float64 still resolves. The offset experiment runs with it on the
    top-left 352 x 352 of the noise in float64. Through the public API (``qa.halo_sweep``,
    ``qa.offset_experiment``, ``qa.sweep_figure`` ...).

Writes ``docs/images/seams_*.png`` and the tables of ``docs/seams.md`` between its
``<!-- seams:NAME:start -->`` / ``<!-- seams:NAME:end -->`` markers (only those of the parts
run). Run from the repository root; on one thread of a 2-core CPU the parts take about 3,
2, 7, 25 and 5 minutes. The runtimes are wall times: run it on an otherwise idle machine::

    OMP_NUM_THREADS=1 python scripts/seams_doc.py                         # everything
    OMP_NUM_THREADS=1 python scripts/seams_doc.py --only nuclei,noise-he  # some parts
    python scripts/seams_doc.py --only noise-torchinit --size 256 --tile 256 --width 8 \\
        --print --images /tmp/x                                           # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "seams.md"
IMAGES = ROOT / "docs" / "images"
HALOS = "0:112:16"
OFFSETS = "0:32"
PARTS = ("nuclei", "noise-he", "noise-torchinit", "noise-torchinit-float64", "noise-offsets")


def sweep_table(rows: list[dict[str, Any]], tile: int) -> str:
    """Markdown: halo, ZoR, tiles, RMSE, ME, NME, max |diff|, relative runtime."""
    exact = int(rows[0]["exact_halo"])
    lines = [
        "| halo (px) | ZoR (px) | tiles | RMSE | ME (px) | NME | max \\|diff\\| | runtime (x whole) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        halo = int(r["halo"])
        mark = " (exact)" if halo == exact else (" (naive)" if halo == 0 else "")
        lines.append(
            f"| {halo}{mark} | {tile - 2 * halo} | {int(r['tiles'])} | {float(r['rmse']):.3g} "
            f"| {int(r['me'])} | {float(r['nme']):.3g} | {float(r['max_abs']):.3g} "
            f"| {float(r['relative_runtime']):.2f} |"
        )
    return "\n".join(lines)


#: Majurski & Bajcsy (2021), Table 1 (trained U-Net, tile 512) and Table 3 (random 4-class
#: U-Net on N(0, 1) noise, tile 1024): halo -> (RMSE, ME, NME, relative runtime), averages
#: over K = 20 images of 3584 x 3584.
PAPER_TABLE1 = {
    0: ("1.11e-2", "7773.4", "6.1e-4", "1.08"),
    16: ("6.35e-3", "5455.4", "4.2e-4", "1.31"),
    32: ("3.29e-3", "2372.2", "1.8e-4", "1.36"),
    48: ("1.95e-3", "1193.7", "9.3e-5", "1.61"),
    64: ("7.79e-4", "434.1", "3.4e-5", "1.85"),
    80: ("1.50e-4", "71.6", "5.6e-6", "2.21"),
    96: ("4.17e-10", "0.0", "0.0", "2.58"),
}
PAPER_TABLE3 = {
    0: ("2.36e-4", "21856.9", "1.7e-3", "1.08"),
    16: ("1.05e-6", "234.8", "1.8e-5", "1.23"),
    32: ("1.92e-7", "49.7", "3.9e-6", "1.30"),
    48: ("5.47e-8", "13.2", "1.0e-6", "1.35"),
    64: ("1.44e-8", "2.8", "2.1e-7", "1.31"),
    80: ("5.87e-9", "1.4", "1.1e-7", "1.5"),
    96: ("3.54e-10", "0.0", "0.0", "1.58"),
}


def paper_table(paper: dict[int, tuple[str, ...]], rows: list[dict[str, Any]]) -> str:
    """Markdown: the paper's row and ours side by side, for the halos both have."""
    ours = {int(r["halo"]): r for r in rows}
    lines = [
        "| halo | paper RMSE | paper ME | paper NME | paper runtime "
        "| our RMSE | our ME | our NME | our runtime |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for halo, (rmse, me, nme, runtime) in paper.items():
        if halo not in ours:
            continue
        r = ours[halo]
        lines.append(
            f"| {halo} | {rmse} | {me} | {nme} | {runtime} | {_sci(float(r['rmse']), 2)} "
            f"| {int(r['me'])} | {_sci(float(r['nme']), 1)} "
            f"| {float(r['relative_runtime']):.2f} |"
        )
    return "\n".join(lines)


def _sci(x: float, decimals: int) -> str:
    """``x`` as the paper writes it: ``1.11e-2``, and ``0`` for zero."""
    if x == 0:
        return "0"
    mantissa, exponent = f"{x:.{decimals}e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def offsets_summary(rows: list[dict[str, Any]], factor: int) -> str:
    """Markdown: what is bit-identical, and the range of the differences elsewhere."""
    same = [int(r["offset"]) for r in rows if str(r["identical"]) == "True"]
    other = [float(r["max_abs"]) for r in rows if str(r["identical"]) != "True"]
    aligned = [int(r["offset"]) for r in rows if int(r["offset"]) % factor == 0]
    offsets = [int(r["offset"]) for r in rows]
    text = (
        f"Offsets {min(offsets)} to {max(offsets)} px, F = {factor}, float64, "
        f"{int(rows[0]['pixels'])} to {int(rows[-1]['pixels'])} interior pixels compared. "
        f"Bit-identical at offsets {', '.join(map(str, same)) or 'none'}"
        f"{' (exactly the multiples of F)' if same == aligned else ' (NOT the multiples of F)'}"
    )
    if other:
        text += f"; max |diff| {min(other):.2g} to {max(other):.2g} at the {len(other)} others."
    return text + "\n"


def environment() -> str:
    import torch

    return (
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()} "
        f"({os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s)), Python "
        f"{platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}.\n"
    )


def _read_csv(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _cli(args: list[str]) -> str:
    """Run ``seamless ARGS`` in this process; its stdout, also echoed."""
    from napari_seamless.cli import main

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(args)
    print(printed.getvalue(), end="")
    if code != 0:
        raise SystemExit(f"seamless {' '.join(args)} failed ({code})")
    return printed.getvalue()


def _cli_sweep(image: Path, args: list[str], out: Path, images: Path, stem: str) -> list[dict]:
    """``seamless sweep IMAGE ARGS -o OUT``; its PNGs copied to ``images/STEM_*.png``."""
    _cli(["sweep", str(image), *args, "-o", str(out)])
    names = [("halo_sweep.png", "sweep"), ("error_profile.png", "profile")]
    names += [("offsets.png", "offsets")] if (out / "offsets.png").exists() else []
    for name, kind in names:
        shutil.copyfile(out / name, images / f"{stem}_{kind}.png")
    return _read_csv(out / "halo_sweep.csv")


def modes_table(image: Path, args: list[str]) -> str:
    """Markdown: ``seamless compare`` in the exact, naive and overlap-average modes."""
    lines = [
        "| mode | halo / overlap (px) | RMSE | ME (px) | NME | max \\|diff\\| | runtime (x whole) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for mode in ("exact", "naive", "overlap-average"):
        out = _cli(["compare", str(image), *args, "--mode", mode, "--json"])
        r = json.loads(out.strip().splitlines()[-1])
        context = (
            f"overlap {r['overlap']}, {r['weights']}" if r.get("overlap") else f"halo {r['halo']}"
        )
        lines.append(
            f"| `{mode}` | {context} | {r['rmse']:.3g} | {r['me']} | {r['nme']:.3g} "
            f"| {r['max_abs']:.3g} | {r['relative_runtime']:.2f} |"
        )
    return "\n".join(lines)


def run_nuclei(work: Path, images: Path) -> dict[str, str]:
    """The default model on nuclei2d.tif through ``seamless sweep`` and ``seamless compare``."""
    from napari_seamless.data import DATA_DIR

    image = DATA_DIR / "nuclei2d.tif"
    args = ["--tile", "256", "--halos", HALOS, "--offsets", OFFSETS]
    rows = _cli_sweep(image, args, work / "nuclei", images, "seams_nuclei")
    offsets = _read_csv(work / "nuclei" / "offsets.csv")
    return {
        "nuclei-table": sweep_table(rows, 256),
        "nuclei-modes": modes_table(image, ["--tile", "256"]),
        "paper-table1": paper_table(PAPER_TABLE1, rows),
        "nuclei-offsets": offsets_summary(offsets, int(rows[0]["factor"])),
    }


def run_noise_he(work: Path, images: Path, size: int) -> dict[str, str]:
    """The built-in ``unet4-random`` (He init) on N(0, 1) noise, through the command line."""
    import tifffile

    image = work / f"noise{size}.tif"
    tifffile.imwrite(image, _noise(size))
    model = ["--model", "unet4-random", "--tile", "512"]
    rows = _cli_sweep(image, [*model, "--halos", HALOS], work / "he", images, "seams_noise_he")
    return {
        "noise-he-table": sweep_table(rows, 512),
        "noise-he-modes": modes_table(image, model),
        "paper-table3": paper_table(PAPER_TABLE3, rows),
    }


def random_unet4(width: int = 64) -> Any:
    """The paper's U-Net (depth 4), 4 classes, PyTorch's default random init (seed 0), eval."""
    import torch

    from napari_seamless.models import UNet

    torch.manual_seed(0)
    return UNet(in_channels=1, classes=4, width=width, depth=4).eval()


def _noise(size: int) -> np.ndarray:
    """N(0, 1) noise, float32, seeded: the input of the paper's Table 3."""
    return np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)


def run_noise_sweep(size: int, tile: int, width: int, dtype: str, images: Path) -> dict[str, str]:
    """The halo sweep of :func:`random_unet4` on noise, in ``dtype``, via the public API."""
    from napari_seamless.engine import InexactHaloWarning, Predictor
    from napari_seamless.qa import halo_sweep, profile_figure, save_png, sweep_figure

    pred = Predictor(random_unet4(width), device="cpu", dtype=dtype)
    factor, exact = pred.factor[0], pred.halo[0]
    halos = list(range(0, exact + 2 * factor, factor))
    print(f"noise {size} x {size}, U-Net width {width}, 4 classes, torch init, {dtype}: ", end="")
    print(f"F {factor}, halo {exact}")
    with warnings.catch_warnings():  # halos below the exact one are the point here
        warnings.simplefilter("ignore", InexactHaloWarning)
        t0 = time.perf_counter()
        rows = halo_sweep(pred, _noise(size), tile, halos, normalization=None)
    print(f"sweep: {time.perf_counter() - t0:.0f} s")
    title = (
        f"N(0, 1) noise {size} x {size}: random 4-class U-Net (width {width}), tile {tile}, {dtype}"
    )
    tag = "_torchinit" + ("" if dtype == "float32" else f"_{dtype}")
    stem = f"seams_noise{tag}"
    # what an exact run may still differ by: float32 rounding, or float64's (eps 2.2e-16)
    level = 1e-6 if dtype == "float32" else 1e-15
    rounding = {"rounding": level, "rounding_label": f"{dtype} rounding"}
    save_png(sweep_figure(rows, exact, title=title, **rounding), images / f"{stem}_sweep.png")
    profile = profile_figure(rows, exact_halo=exact, title=title, **rounding)
    save_png(profile, images / f"{stem}_profile.png")
    table = [
        {
            "halo": r.halo,
            "exact_halo": exact,
            "tiles": r.tiles,
            "rmse": r.comparison.rmse,
            "me": r.comparison.me,
            "nme": r.comparison.nme,
            "max_abs": r.comparison.max_abs,
            "relative_runtime": r.relative_runtime,
        }
        for r in rows
    ]
    for r in table:
        print(
            "  ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items())
        )
    return {f"noise{tag.replace('_', '-')}-table": sweep_table(table, tile)}


def run_noise_offsets(size: int, width: int, offsets_size: int, images: Path) -> dict[str, str]:
    """The offset experiment (float64) on the top-left ``offsets_size`` px of the noise."""
    from napari_seamless.engine import Predictor
    from napari_seamless.qa import offset_experiment, offsets_figure, save_png

    pred = Predictor(random_unet4(width), device="cpu", dtype="float64")
    factor = pred.factor[0]
    crop = _noise(size)[:offsets_size, :offsets_size].astype(np.float64)  # the sweep's corner
    t0 = time.perf_counter()
    offsets = offset_experiment(pred, crop, range(0, 2 * factor + 1))
    print(f"offsets: {time.perf_counter() - t0:.0f} s")
    title = f"N(0, 1) noise {offsets_size} x {offsets_size}: random 4-class U-Net, float64"
    save_png(offsets_figure(offsets, factor, title=title), images / "seams_noise_offsets.png")
    rows = [
        {
            "offset": o.offset,
            "identical": str(o.identical),
            "max_abs": o.max_abs,
            "pixels": o.pixels,
        }
        for o in offsets
    ]
    return {"noise-offsets": offsets_summary(rows, factor)}


def write_sections(sections: dict[str, str]) -> None:
    """Replace each ``<!-- seams:NAME:start -->`` ... ``end`` block of docs/seams.md."""
    text = DOC.read_text()
    for name, body in sections.items():
        start, end = f"<!-- seams:{name}:start -->", f"<!-- seams:{name}:end -->"
        pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
        if not pattern.search(text):
            raise SystemExit(f"{DOC} has no {start} ... {end} block")
        block = f"{start}\n{body.rstrip()}\n{end}"
        text = pattern.sub(lambda _, block=block: block, text)
    tmp = DOC.with_name(f".{DOC.name}.partial-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, DOC)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--only",
        default=",".join(PARTS),
        help=f"comma list of parts to run (default all): {', '.join(PARTS)}",
    )
    parser.add_argument("--size", type=int, default=1024, help="noise image size (px)")
    parser.add_argument("--tile", type=int, default=512, help="window for the noise (px)")
    parser.add_argument("--width", type=int, default=64, help="U-Net width for the noise")
    parser.add_argument(
        "--offsets-size", type=int, default=352, help="noise crop for the offsets (px)"
    )
    parser.add_argument(
        "--print", action="store_true", help="print the tables; write nothing to docs/seams.md"
    )
    parser.add_argument("--images", type=Path, default=IMAGES, help="folder for the PNGs")
    args = parser.parse_args(argv)
    args.images.mkdir(parents=True, exist_ok=True)
    sections: dict[str, str] = {}
    parts = args.only.split(",")
    if not set(parts) <= set(PARTS):
        parser.error(f"--only takes {', '.join(PARTS)}, got {args.only!r}")
    with tempfile.TemporaryDirectory() as work:
        if "nuclei" in parts:
            sections.update(run_nuclei(Path(work), args.images))
        if "noise-he" in parts:
            sections.update(run_noise_he(Path(work), args.images, args.size))
        for dtype, part in (("float32", "noise-torchinit"), ("float64", "noise-torchinit-float64")):
            if part in parts:
                sections.update(
                    run_noise_sweep(args.size, args.tile, args.width, dtype, args.images)
                )
        if "noise-offsets" in parts:
            sections.update(
                run_noise_offsets(args.size, args.width, args.offsets_size, args.images)
            )
    sections["environment"] = environment()
    for name, body in sections.items():
        print(f"\n[{name}]\n{body}")
    if not args.print:
        write_sections(sections)
        print(f"wrote {DOC.relative_to(ROOT)}", file=sys.stderr)
    print(f"wrote {args.images}/seams_*.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
