"""Pictures of the seam QA: the halo sweep, the error profile, the stride-offset experiment.

Each function returns a :class:`matplotlib.figure.Figure` built directly, never through
``pyplot``, so that a Qt widget can embed the same figure in a ``FigureCanvasQTAgg`` (and
redraw into it as rows arrive, by passing it back as ``figure``) while the CLI saves it
with the Agg renderer (:func:`save_png`). matplotlib is imported when a function is called, so importing
:mod:`napari_seamless.qa` stays numpy-only.

Log axes cannot show 0, and 0 is the answer that matters here (ME = 0 at the exact halo,
bit-identical scores at multiples of F). Zeros are therefore drawn on a dotted floor line
below the smallest non-zero value, with open markers, and the legend says so.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .offsets import OffsetRow
    from .sweep import SweepRow

__all__ = ["offsets_figure", "profile_figure", "save_png", "sweep_figure"]

#: float32 rounding: the RMSE and max |difference| an exact tiled run may still show.
FLOAT32_ROUNDING = 1e-6


def _figure(figure: Figure | None, size: tuple[float, float]) -> Figure:
    """A fresh constrained-layout figure, or ``figure`` cleared for a redraw."""
    from matplotlib.figure import Figure

    if figure is None:
        return Figure(figsize=size, layout="constrained")
    figure.clear()
    figure.set_layout_engine("constrained")
    return figure


def _floor(values: Iterable[float], default: float) -> float:
    """A power of ten at least one decade below the smallest positive finite value."""
    positive = [v for v in values if v > 0 and math.isfinite(v)]
    if not positive:
        return default
    return 10.0 ** (math.floor(math.log10(min(positive))) - 1)


def _log_series(
    ax: Axes, x: Sequence[float], y: Sequence[float], floor: float, **style: Any
) -> tuple[Any, bool]:
    """Plot ``y`` on log ``ax``: positive values joined and filled, zeros open on ``floor``.

    A zero breaks the line: its height on the floor is a convention, not a value, so no
    slope is drawn to it. ``style`` takes ``marker``, ``color``, ``label``, ``ls``.
    Returns the line of the positive values and whether any zero was drawn.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    zero = y == 0
    marker, color = style.pop("marker", "o"), style.pop("color", None)
    (line,) = ax.plot(x, np.where(y > 0, y, np.nan), marker=marker, color=color, **style)
    if zero.any():
        ax.plot(
            x[zero],
            np.full(int(zero.sum()), floor),
            marker,
            ls="none",
            mfc="white",
            mec=line.get_color(),
            mew=1.5,
        )
    return line, bool(zero.any())


def _zero_floor(ax: Axes, floor: float, values: Iterable[float]) -> None:
    """Make the dotted ``floor`` of log ``ax`` read "0": its own tick, decades above it."""
    from matplotlib.ticker import FixedLocator, NullLocator

    positive = [v for v in values if v > 0 and math.isfinite(v)]
    top = max([*positive, floor * 10]) * 3
    ax.set_ylim(floor / 2.5, top)
    ax.axhline(floor, color="0.6", ls=":", lw=1, zorder=0)
    first, last = round(math.log10(floor)) + 1, math.floor(math.log10(top))
    step = max(1, math.ceil((last - first + 1) / 6))  # at most ~6 decade labels
    exponents = list(range(last, first - 1, -step))[::-1]
    ax.yaxis.set_major_locator(FixedLocator([floor, *(10.0**e for e in exponents)]))
    ax.set_yticklabels(["0", *(f"$10^{{{e}}}$" for e in exponents)])
    ax.yaxis.set_minor_locator(NullLocator())


def _zero_handle(label: str = "0: open marker on the dotted floor") -> Any:
    """A legend entry for the open markers that stand for exact zeros."""
    from matplotlib.lines import Line2D

    return Line2D([], [], marker="o", ls="none", mfc="white", mec="0.3", mew=1.5, label=label)


def _halo_limits(halos: Sequence[int], exact_halo: int | None, step: int) -> tuple[float, float]:
    values = [*halos, *([exact_halo] if exact_halo is not None else []), 0]
    return min(values) - step / 2, max(values) + step / 2


def _runtime_axis(ax: Axes, values: Sequence[float]) -> None:
    """Linear from 0, or log (ticks 1, 2, 5, 10, ...) when the runtimes span more than 6x."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    lo, hi = min(values), max(values)
    if lo <= 0 or hi / lo <= 6:
        ax.set_ylim(0, hi * 1.35)
        return
    ax.set_yscale("log")
    ax.set_ylim(lo / 1.5, hi * 2)
    ticks = [m * 10.0**e for e in range(-2, 6) for m in (1, 2, 5)]
    ax.yaxis.set_major_locator(FixedLocator([t for t in ticks if lo / 1.5 <= t <= hi * 2]))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_locator(NullLocator())


def sweep_figure(
    rows: Sequence[SweepRow],
    exact_halo: int | None,
    figure: Figure | None = None,
    *,
    title: str | None = None,
    rounding: float | None = FLOAT32_ROUNDING,
    rounding_label: str = "float32 rounding",
) -> Figure:
    """The halo sweep as a picture (the paper's Tables 1 and 3): error and cost per halo.

    Three panels over a shared x axis, the halo in pixels:

    1. score error: RMSE (paper Eq. 3) and max ``|difference|`` of the scores, log y, with
       the rounding level (``rounding``, 1e-6 for float32) as a dashed line;
    2. misclassification error ME (paper Eq. 4, pixels whose label differs), log y; the right
       axis reads the same points as NME (Eq. 5, the fraction of pixels);
    3. runtime relative to the whole-image reference (linear y from 0, or log y when the
       runtimes span more than 6x), each point labelled with its number of tiles.

    Zeros sit on a dotted floor line with open markers. The exact halo (the one the model's
    dependency analysis gives) is a vertical line labelled "exact halo 96 px".

    Parameters
    ----------
    rows : sequence of SweepRow
        From :func:`~napari_seamless.qa.halo_sweep`, any order; may be empty or hold only
        the halos done so far (the widget redraws as rows arrive).
    exact_halo : int or None
        The computed halo in pixels, marked on every panel; None to leave it out.
    figure : matplotlib.figure.Figure, optional
        Cleared and drawn into (for a canvas that is already shown); default a new
        6.4 x 7.4 inch figure.
    title : str, optional
        Figure title, e.g. the image, model and tile.
    rounding : float or None
        Score difference drawn as a dashed line: what an exact run may still show (1e-6
        for float32; e.g. 1e-12 for float64); None for no line.
    rounding_label : str
        Its legend text, after the value.

    Returns
    -------
    matplotlib.figure.Figure
        ``figure`` if given; its axes are ``[score, me, runtime]`` (plus the NME axis).
    """
    fig = _figure(figure, (6.4, 7.4))
    ax_score, ax_me, ax_time = fig.subplots(3, 1, sharex=True, height_ratios=[1.25, 1.0, 0.8])
    rows = sorted(rows, key=lambda r: r.halo)
    halos = [r.halo for r in rows]
    step = int(min(np.diff(halos))) if len(halos) > 1 else 0
    x_min, x_max = _halo_limits(halos, exact_halo, step or 16)
    for ax in (ax_score, ax_me):
        ax.set_yscale("log")

    # 1. score error
    rmse = [r.comparison.rmse for r in rows]
    max_abs = [r.comparison.max_abs for r in rows]
    levels = [rounding] if rounding else []
    floor = min([_floor([*rmse, *max_abs], 1e-9), *(v / 10 for v in levels)])
    _, zeros = _log_series(ax_score, halos, rmse, floor, marker="o", color="C0", label="RMSE")
    _, more = _log_series(
        ax_score, halos, max_abs, floor, marker="s", color="C1", label="max |difference|"
    )
    if rounding:
        label = f"{rounding:.0e}: {rounding_label}".replace("e-0", "e-")
        ax_score.axhline(rounding, color="0.3", ls="--", lw=1, label=label)
    if zeros or more:
        _zero_floor(ax_score, floor, [*rmse, *max_abs, *levels])
    ax_score.set_ylabel("score difference")

    # 2. misclassified pixels
    me = [float(r.comparison.me) for r in rows]
    me_zeros = _log_series(ax_me, halos, me, 0.1, marker="D", color="C3")[1]
    if me_zeros:
        _zero_floor(ax_me, 0.1, me)
    elif any(v > 0 for v in me):  # at least a decade, so that some tick is labelled
        ax_me.set_ylim(max(min(me) / 3, 0.3), max(me) * 3)
    else:
        ax_me.set_ylim(0.5, 100)  # nothing drawn yet
    ax_me.set_ylabel("ME (pixels)")
    # one legend for the figure, above the top panel (never on the data): the open-marker
    # convention it explains holds for every panel
    handles, _ = ax_score.get_legend_handles_labels()
    if zeros or more or me_zeros:
        handles.append(_zero_handle())
    ax_score.legend(
        handles=handles,
        loc="lower left",
        bbox_to_anchor=(0, 1.01),
        borderaxespad=0,
        ncols=2,
        fontsize="small",
        frameon=False,
    )
    pixels = rows[0].comparison.pixels if rows else 0
    if pixels:
        nme = ax_me.secondary_yaxis("right", functions=(lambda m: m / pixels, lambda n: n * pixels))
        nme.set_ylabel("NME (fraction)")
        # NME below 1 / pixels (less than one pixel) means nothing: no ticks there
        from matplotlib.ticker import FixedLocator

        bottom, top = ax_me.get_ylim()
        lo = math.ceil(math.log10(max(bottom, 1.0) / pixels))
        hi = math.floor(math.log10(top / pixels))
        nme.yaxis.set_major_locator(FixedLocator([10.0**e for e in range(lo, hi + 1)]))
        nme.yaxis.set_minor_locator(FixedLocator([]))

    # 3. runtime
    timed = [r for r in rows if math.isfinite(r.relative_runtime)]
    if timed:
        ax_time.plot([r.halo for r in timed], [r.relative_runtime for r in timed], "o-", color="C2")
        for r in timed:
            ax_time.annotate(
                f"{r.tiles}",
                (r.halo, r.relative_runtime),
                xytext=(4, 4),
                textcoords="offset points",
                ha="left",
                va="bottom",
                fontsize="x-small",
                color="0.35",
            )
        _runtime_axis(ax_time, [r.relative_runtime for r in timed])
        ax_time.axhline(1, color="0.6", ls=":", lw=1)
        ax_time.text(
            0.01,
            0.95,
            "point labels: tiles run",
            transform=ax_time.transAxes,
            ha="left",
            va="top",
            fontsize="x-small",
            color="0.35",
        )
    else:
        ax_time.text(
            0.5,
            0.5,
            "runtime not measured" if rows else "no halo run yet",
            transform=ax_time.transAxes,
            ha="center",
            va="center",
            color="0.4",
        )
    ax_time.set_ylabel("runtime / whole image")
    ax_time.set_xlabel("halo (px)")

    for ax in (ax_score, ax_me, ax_time):
        if exact_halo is not None:
            ax.axvline(exact_halo, color="k", lw=1.2, alpha=0.7)
        ax.grid(True, which="major", alpha=0.25)
    if exact_halo is not None:  # ME falls with the halo: the top left of the line is free
        ax_me.annotate(
            f"exact halo {exact_halo} px",
            (exact_halo, 1),
            xycoords=("data", "axes fraction"),
            xytext=(-4, -4),
            textcoords="offset points",
            ha="right",
            va="top",
            fontsize="small",
        )
    ax_time.set_xlim(x_min, x_max)
    ticks = {*halos, *([exact_halo] if exact_halo is not None else [])}
    if step and all((t - halos[0]) % step == 0 for t in ticks):  # the whole F lattice
        ticks |= set(range(halos[0], max(ticks) + 1, step))
    ax_time.set_xticks(sorted(ticks))
    if title:
        fig.suptitle(title, fontsize="medium")
    return fig


def _profiles(profiles: Any) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """``(halo, distances, mean)`` sorted by halo, from rows or a mapping."""
    if isinstance(profiles, Mapping):
        items = [(int(h), *map(np.asarray, dm)) for h, dm in profiles.items()]
    else:
        items = []
        for r in profiles:
            if r.profile_distances is None or r.profile_mean is None:
                raise ValueError(
                    f"the sweep row of halo {r.halo} has no error profile; run it with "
                    "qa.halo_sweep, which records one"
                )
            items.append((int(r.halo), np.asarray(r.profile_distances), r.profile_mean))
    return sorted(items, key=lambda t: t[0])


def profile_figure(
    profiles: Iterable[SweepRow] | Mapping[int, tuple[np.ndarray, np.ndarray]],
    figure: Figure | None = None,
    *,
    exact_halo: int | None = None,
    title: str | None = None,
    rounding: float | None = FLOAT32_ROUNDING,
    rounding_label: str = "float32 rounding",
) -> Figure:
    """Where tiling errors live: mean ``|score difference|`` against distance to a seam.

    One line per halo, coloured from small (dark) to large (light) halo, log y. A pixel
    next to a ZoR seam sees the least context of its window, so errors are largest there
    and fall off with the distance; at the exact halo there is nothing left but rounding.
    Distances where the mean is exactly 0 break the line (log axis); a halo that is 0 at
    every distance gets a legend entry that says so instead of a line.

    Parameters
    ----------
    profiles : iterable of SweepRow, or mapping of int to (distances, mean)
        Rows of :func:`~napari_seamless.qa.halo_sweep` (their ``profile_distances`` and
        ``profile_mean``), or ``{halo: (distances, mean)}`` as returned by
        :func:`~napari_seamless.qa.error_profile`: distances in pixels to the nearest ZoR
        seam, shape (k,), and the mean absolute score difference there, shape (k,).
    figure : matplotlib.figure.Figure, optional
        Cleared and drawn into; default a new 7.6 x 4.2 inch figure.
    exact_halo : int, optional
        The computed halo in pixels; its line is drawn thicker and labelled "exact".
    title : str, optional
        Figure title.
    rounding, rounding_label : float or None, str
        As for :func:`sweep_figure`: the dashed rounding line and its legend text.

    Returns
    -------
    matplotlib.figure.Figure
        With one axes (log y); its lines are one per halo with a non-zero value.

    Raises
    ------
    ValueError
        If a row carries no profile.
    """
    from matplotlib import colormaps

    fig = _figure(figure, (7.6, 4.2))
    ax = fig.subplots()
    ax.set_yscale("log")
    items = _profiles(profiles)
    cmap = colormaps["viridis"]
    dropped = False
    for i, (halo, distances, mean) in enumerate(items):
        colour = cmap(0.9 * i / max(len(items) - 1, 1))
        label = f"{halo}" + (" (exact)" if exact_halo is not None and halo == exact_halo else "")
        keep = mean > 0
        if not keep.any():
            label += ": 0 everywhere" if len(mean) else ": one tile, no seam"
            ax.plot([], [], "-", color=colour, label=label)  # a legend entry, no line
            continue
        dropped |= not keep.all()
        lw = 2.4 if exact_halo is not None and halo == exact_halo else 1.4
        y = np.where(keep, mean, np.nan)  # a zero breaks the line: no slope drawn to it
        ax.plot(distances, y, "-", color=colour, lw=lw, label=label)
    if not any(len(line.get_xdata()) for line in ax.get_lines()):
        ax.set_ylim(1e-9, 1e-1)  # nothing but zeros (or nothing yet): a sensible empty frame
    if rounding:
        label = f"{rounding:.0e}: {rounding_label}".replace("e-0", "e-").replace(": ", ":\n", 1)
        ax.axhline(rounding, color="0.3", ls="--", lw=1, label=label)
    ax.set_xlabel("distance to the nearest ZoR seam (px)")
    ax.set_ylabel("mean |score difference|")
    ax.set_xlim(left=0)
    ax.grid(True, which="major", alpha=0.25)
    ax.legend(
        title="halo (px)" + ("\n(means of 0 break\nthe lines)" if dropped else ""),
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize="small",
        title_fontsize="small",
    )
    if title:
        ax.set_title(title, fontsize="medium")
    return fig


def offsets_figure(
    rows: Sequence[OffsetRow],
    factor: int,
    figure: Figure | None = None,
    *,
    title: str | None = None,
) -> Figure:
    """The stride-offset experiment (the paper's Fig. 4): max ``|difference|`` per offset.

    x is the offset in pixels at which the crop starts, y (log) the largest score
    difference against the uncropped image in their shared interior. Offsets that are
    multiples of F are marked by vertical lines; there the scores are bit-identical (0,
    drawn on the floor with open markers).

    Parameters
    ----------
    rows : sequence of OffsetRow
        From :func:`~napari_seamless.qa.offset_experiment`.
    factor : int
        F in pixels, the network's total downsampling.
    figure : matplotlib.figure.Figure, optional
        Cleared and drawn into; default a new 7.2 x 3.8 inch figure.
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        With one axes (log y).
    """
    fig = _figure(figure, (7.2, 3.8))
    ax = fig.subplots()
    ax.set_yscale("log")
    rows = sorted(rows, key=lambda r: r.offset)
    x = [r.offset for r in rows]
    y = [0.0 if r.identical else r.max_abs for r in rows]
    floor = _floor(y, 1e-12)
    line, zeros = _log_series(
        ax, x, y, floor, marker="o", color="C0", ls="none", label="max |difference|"
    )
    handles = [line]
    for k, m in enumerate(range(0, max(x, default=-1) + 1, factor)):
        mark = ax.axvline(m, color="C3", lw=1, alpha=0.5, zorder=0)
        if k == 0:
            mark.set_label(f"multiples of F = {factor}")
            handles.append(mark)
    if x:
        ax.set_xticks(range(0, max(x) + 1, max(1, factor // 4)))
    if zeros:
        _zero_floor(ax, floor, y)
        handles.append(_zero_handle("bit-identical (0, on the dotted floor)"))
    ax.set_xlabel("crop offset (px)")
    ax.set_ylabel("max |score difference|\nin the shared interior")
    ax.grid(True, which="major", alpha=0.25)
    ax.legend(  # above the panel: never on the data
        handles=handles,
        loc="lower left",
        bbox_to_anchor=(0, 1.01),
        borderaxespad=0,
        ncols=3,
        fontsize="small",
        frameon=False,
    )
    if title:
        fig.suptitle(title, fontsize="medium")
    return fig


def save_png(figure: Figure, path: str | os.PathLike[str], *, dpi: int = 120) -> Path:
    """Render ``figure`` with Agg to a PNG at ``path``, never leaving a half-written file.

    The PNG is written to a temporary sibling (``.NAME.partial-PID``) and swapped in by one
    :func:`os.replace`. The figure's own canvas (a Qt one in the widget) is left as it is:
    matplotlib renders through Agg for the PNG and puts the canvas back.

    Parameters
    ----------
    figure : matplotlib.figure.Figure
        From :func:`sweep_figure`, :func:`profile_figure` or :func:`offsets_figure`.
    path : path-like
        The PNG file; its folder must exist. An existing file is replaced.
    dpi : int
        Dots per inch.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            figure.savefig(f, format="png", dpi=dpi, backend="agg")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
