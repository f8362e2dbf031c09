"""Compatibility table: the halo analysis on third-party architectures and the paper's ones.

For every entry of ``tests/zoo.py`` (smp and MONAI, random weights, nothing downloaded) and
every architecture of ``napari_seamless.models.architectures.ARCHITECTURES``:

1. run the analysis (``receptive_field``) on the model at the library's default widths
   (``--small``: the reduced test widths) and time it;
2. when it gives a halo: float64, tiled inference at that halo vs whole-image inference on an
   odd-shaped random image that needs several tiles (max |diff| <= 1e-12 and the same argmax),
   and at one F-step less (must differ);
3. compare the verdict with the one expected from reading the architecture.

The Markdown table goes into ``docs/models.md`` between ``<!-- compat-table:start -->`` and
``<!-- compat-table:end -->``. Run from the repository root::

    python scripts/compat_table.py                 # everything, writes docs/models.md
    python scripts/compat_table.py --only resnet34 --print   # one row, nothing written

Needs ``segmentation-models-pytorch``, ``timm``, ``monai`` (the ``testing`` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

START, END = "<!-- compat-table:start -->", "<!-- compat-table:end -->"
HEADING = "## Compatibility with third-party architectures"


@dataclass
class Row:
    name: str
    library: str
    norm: str
    widths: str
    expected: str
    verdict: str = ""
    factor: str = ""
    halo: str = ""
    seconds: float | None = None
    check: str = ""
    agrees: bool | None = None
    notes: list[str] = field(default_factory=list)


def _fmt_axes(values) -> str:
    values = tuple(values)
    return str(values[0]) if len(set(values)) == 1 else " x ".join(map(str, values))


def _refusal_text(outcome, expect=None) -> str:
    refusals = getattr(outcome.error, "refusals", None)
    if not refusals:
        return str(outcome.error)[:200]
    chosen = [r for r in refusals if expect is None or expect.matches(str(r.path))] or refusals
    parts = []
    for r in chosen[:2]:
        reason = str(getattr(r, "reason", "")).split(". ")[0].rstrip(".")
        parts.append(f"`{getattr(r, 'op', '?')}` at `{r.path or '<model>'}`: {reason}")
    more = len(refusals) - len(chosen[:2])
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def _check(model, ndim, in_channels, rf) -> tuple[str, bool]:
    from zoo import tiled_check

    r = tiled_check(model, ndim, in_channels, rf.factor, rf.halo)
    ok = r["max_diff"] <= 1e-12 and r["argmax_equal"]
    below = r["max_diff_below"]
    tight = below is None or below > 1e-12
    if below is None:
        low = "n/a"
    elif tight:
        low = f"differs ({below:.0e})"
    else:
        # the random weights' influence at the receptive field's edge is below float64
        # rounding: ask the support test's positive-weight copy instead
        try:
            from napari_seamless.analysis import verify_halo

            support = verify_halo(model, rf, ndim=ndim, in_channels=in_channels)
            tight = support.leaks_below and not support.leaks_at_halo
            low = f"equal at rounding ({below:.0e}); support test: " + (
                "differs" if support.leaks_below else "**equal**"
            )
        except Exception as err:  # noqa: BLE001
            low = f"**equal** ({below:.0e}); support test failed: {type(err).__name__}"
    text = (
        f"{'equal' if ok else '**DIFFERS**'} (max {r['max_diff']:.0e}"
        f"{'' if r['argmax_equal'] else ', argmax differs'}), {r['tiles']} tiles on "
        f"{' x '.join(map(str, r['shape']))}; one F less: {low}"
    )
    return text, ok and tight


def run_zoo_entry(entry, small: bool, check: bool, budget: float, hard_limit: int) -> Row:
    from zoo import Tileable, analyse

    widths = "test widths: " + entry.small_note if small and entry.small_note else "default"
    expected = (
        f"exact, F {entry.expect.factor}"
        if isinstance(entry.expect, Tileable)
        else f"refused: {entry.expect.op}"
    )
    row = Row(entry.name, f"{entry.library} {entry.version}", entry.norm, widths, expected)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = entry.build(full=not small)
    except Exception as err:  # noqa: BLE001
        row.verdict = f"could not build: {type(err).__name__}: {err}"[:200]
        return row
    outcome = analyse(model, entry.ndim, entry.in_channels, budget, hard_limit)
    row.seconds = outcome.seconds
    if outcome.error is None:
        rf = outcome.rf
        row.verdict, row.factor, row.halo = "exact", _fmt_axes(rf.factor), _fmt_axes(rf.halo)
        ok = True
        if check:
            row.check, ok = _check(model, entry.ndim, entry.in_channels, rf)
        good_f = isinstance(entry.expect, Tileable) and set(rf.factor) == {entry.expect.factor}
        row.agrees = good_f and ok
        if isinstance(entry.expect, Tileable) and not good_f:
            row.notes.append(f"F {row.factor}, expected {entry.expect.factor}")
    elif outcome.refused:
        expect = None if isinstance(entry.expect, Tileable) else entry.expect
        row.verdict = "refused: " + _refusal_text(outcome, expect)
        row.agrees = not isinstance(entry.expect, Tileable) and any(
            entry.expect.matches(p) for p in outcome.refusal_paths()
        )
    else:
        row.verdict = f"error: {type(outcome.error).__name__}: {str(outcome.error)[:200]}"
        row.agrees = False
    return row


def run_paper(name: str, check: bool, budget: float, hard_limit: int) -> Row:
    """A paper architecture: analysis at width 64 (the paper's), check at width 4."""
    import torch
    from zoo import analyse

    from napari_seamless.models.architectures import ARCHITECTURES

    row = Row(name, "napari-seamless (paper)", "BatchNorm (eval)", "", "exact")
    torch.manual_seed(0)
    if name.startswith("fc-densenet"):
        full, small = {}, dict(growth_rate=1, stem_channels=2)
        row.widths = "analysis: default (growth 16); check: growth 1"
    else:
        full, small = {}, dict(width=4)
        row.widths = "analysis: width 64; check: width 4"
    model = ARCHITECTURES[name](in_channels=1, classes=2, ndim=2, **full).eval()
    outcome = analyse(model, 2, 1, budget, hard_limit)
    row.seconds = outcome.seconds
    if outcome.error is not None:
        row.verdict = f"{type(outcome.error).__name__}: {str(outcome.error)[:200]}"
        row.agrees = False
        return row
    rf = outcome.rf
    row.verdict, row.factor, row.halo = "exact", _fmt_axes(rf.factor), _fmt_axes(rf.halo)
    ok = True
    if check:
        small_model = ARCHITECTURES[name](in_channels=1, classes=2, ndim=2, **small).eval()
        row.check, ok = _check(small_model, 2, 1, rf)
    row.agrees = ok
    return row


def table(rows: list[Row], meta: str) -> str:
    lines = [
        meta,
        "",
        "| architecture | library | normalisation | widths | verdict | F | halo (px) "
        "| analysis | tiled vs whole, float64 | expected |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        secs = "" if r.seconds is None else f"{r.seconds:.1f} s"
        exp = r.expected + (
            "" if r.agrees is None else (" - agrees" if r.agrees else " - **MISMATCH**")
        )
        if r.notes:
            exp += " (" + "; ".join(r.notes) + ")"
        cells = [r.name, r.library, r.norm, r.widths, r.verdict, r.factor, r.halo, secs, r.check]
        cells.append(exp)
        lines.append(
            "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"
        )
    return "\n".join(lines)


def write_docs(path: Path, body: str) -> None:
    text = path.read_text() if path.exists() else "# Models\n"
    block = f"{START}\n{body}\n{END}"
    if START in text and END in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        intro = (
            f"\n{HEADING}\n\n"
            "Models people bring, built as a user would (random weights, nothing downloaded), "
            "analysed by `napari_seamless.analysis.receptive_field`. *Exact*: the analysis gave "
            "F and the halo, and tiled inference at that halo equals whole-image inference in "
            "float64 (max |diff| <= 1e-12, same argmax) on a random image of several tiles, "
            "while one F-step less differs. *Refused*: `NotTileableError`, with the operation "
            "that couples space and the module that runs it. *Expected* is written from "
            "reading each architecture; `tests/test_zoo.py` checks the same at test widths (a core of the table by default, every row with `-m slow`).\n\n"
            "Regenerate with `python scripts/compat_table.py` (about 20 minutes on 2 shared CPU "
            "cores; needs the `testing` extra).\n\n"
        )
        text = text.rstrip("\n") + "\n" + intro + block + "\n"
    path.write_text(text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--small", action="store_true", help="reduced test widths for the zoo")
    p.add_argument("--only", action="append", default=[], help="substring of names to run")
    p.add_argument("--no-check", action="store_true", help="skip the float64 tiled checks")
    p.add_argument("--no-paper", action="store_true", help="skip the paper's architectures")
    p.add_argument("--time-budget", type=float, default=30.0)
    p.add_argument("--hard-limit", type=int, default=300, help="seconds, per analysis")
    p.add_argument("--docs", type=Path, default=ROOT / "docs" / "models.md")
    p.add_argument("--print", action="store_true", help="print the table, write nothing")
    p.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = p.parse_args(argv)

    import torch
    from _thirdparty import import_monai, import_smp, version
    from zoo import ENTRIES, analysis

    import_smp()
    import_monai()
    _, _, module = analysis()

    def wanted(name: str) -> bool:
        return not args.only or any(s.lower() in name.lower() for s in args.only)

    rows: list[Row] = []
    for entry in ENTRIES:
        if wanted(entry.name):
            t = time.perf_counter()
            rows.append(
                run_zoo_entry(
                    entry, args.small, not args.no_check, args.time_budget, args.hard_limit
                )
            )
            print(
                f"{entry.name}: {rows[-1].verdict[:120]} [{time.perf_counter() - t:.0f} s]",
                flush=True,
            )
    if not args.no_paper:
        from napari_seamless.models.architectures import ARCHITECTURES

        for name in ARCHITECTURES:
            if wanted(name):
                rows.append(run_paper(name, not args.no_check, args.time_budget, args.hard_limit))
                print(f"{name}: {rows[-1].verdict[:120]}", flush=True)
    meta = (
        f"Measured with `{module}` on {platform.machine()} ({os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads), "
        f"segmentation-models-pytorch {version('segmentation-models-pytorch')}, "
        f"timm {version('timm')}, monai {version('monai')}; {time.strftime('%Y-%m-%d')}. "
        "Analysis times are wall-clock on a machine shared with other jobs."
    )
    body = table(rows, meta)
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in rows], indent=1))
    if args.print:
        print(body)
    else:
        write_docs(args.docs, body)
        print(f"wrote {len(rows)} rows to {args.docs}")
    mismatches = [r.name for r in rows if r.agrees is False]
    if mismatches:
        print("mismatches with the expected verdicts: " + ", ".join(mismatches))
    return 0


if __name__ == "__main__":
    sys.exit(main())
