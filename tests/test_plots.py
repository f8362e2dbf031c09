"""qa.plots: the sweep, error-profile and offset figures, and their PNGs from the CLI."""

from __future__ import annotations

import numpy as np
import pytest

from napari_seamless.qa import (
    Comparison,
    OffsetRow,
    SweepRow,
    offsets_figure,
    profile_figure,
    save_png,
    sweep_figure,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _rows(exact=96, step=16, last=112, pixels=512 * 512):
    """Sweep rows shaped like a real one: errors fall with the halo, 0 from ``exact``."""
    rows = []
    for i, h in enumerate(range(0, last + 1, step)):
        below = h < exact
        rmse = 1e-2 * 10 ** (-0.6 * i) if below else (2.5e-8 if h == exact else 0.0)
        me = int(600 * 10 ** (-0.5 * i)) if below else 0
        d = np.arange(0, 128 - h // 2)
        mean = 1e-2 * np.exp(-d / (exact - h)) if below else np.zeros(len(d))
        comparison = Comparison(rmse, me, me / pixels, 20 * rmse, pixels)
        rows.append(SweepRow(h, comparison, 1.0, 1 + h / 40, (h // step + 2) ** 2, d, mean))
    return rows


def _vertical_lines(ax):
    """x of every vertical line (axvline) of ``ax``."""
    xs = []
    for line in ax.get_lines():
        x = np.asarray(line.get_xdata(), dtype=float)
        if len(x) == 2 and x[0] == x[1] and line.get_transform() != ax.transData:
            xs.append(float(x[0]))
    return xs


def _open_markers(ax):
    """(x, y) of the markers drawn open (white face): the zeros on the floor."""
    points = []
    for line in ax.get_lines():
        if line.get_marker() not in ("None", "", None) and line.get_markerfacecolor() == "white":
            points += list(zip(line.get_xdata(), line.get_ydata(), strict=True))
    return points


def test_sweep_figure_marks_the_exact_halo_and_draws_zeros_on_a_floor():
    rows = _rows()
    fig = sweep_figure(rows, 96, title="test")
    score, me, runtime = fig.axes[:3]
    assert score.get_yscale() == "log" and me.get_yscale() == "log"
    assert runtime.get_yscale() == "linear"  # 1x to 3.8x: no need for a log axis
    for ax in (score, me, runtime):
        assert _vertical_lines(ax) == [96.0]
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "exact halo 96 px" in texts
    assert sorted(runtime.get_xticks()) == list(range(0, 113, 16))
    # ME = 0 at 96 and 112: open markers on the floor, which is labelled "0"
    zeros = _open_markers(me)
    assert [x for x, _ in zeros] == [96, 112]
    floor = zeros[0][1]
    assert 0 < floor < 1 and me.get_ylim()[0] < floor
    assert [t.get_text() for t in me.get_yticklabels()][0] == "0"
    assert me.get_yticks()[0] == pytest.approx(floor)
    # RMSE = 0 only at 112; the positive RMSE of 96 is drawn where it is
    rmse_line = next(line for line in score.get_lines() if line.get_label() == "RMSE")
    y = np.asarray(rmse_line.get_ydata(), dtype=float)
    assert y[6] == pytest.approx(2.5e-8) and np.isnan(y[7])
    assert [x for x, _ in _open_markers(score)] == [112, 112]  # RMSE and max |difference|
    assert any(t.get_text() == "0" for t in score.get_yticklabels())
    legend = [t.get_text() for t in score.get_legend().get_texts()]
    assert legend == [
        "RMSE",
        "max |difference|",
        "1e-6: float32 rounding",
        "0: open marker on the dotted floor",
    ]
    assert me.get_legend() is None  # one legend for the figure
    # the NME axis reads the ME axis divided by the pixels
    (nme,) = me.child_axes
    assert nme.get_ylabel().startswith("NME")
    assert len(fig.axes) == 3


def test_sweep_figure_redraws_into_the_given_figure_as_rows_arrive():
    rows = _rows()
    fig = sweep_figure(rows[:1], 96)
    again = sweep_figure(rows[:3], 96, figure=fig)
    assert again is fig and len(fig.axes) == 3  # cleared, not stacked
    assert len(fig.axes[1].child_axes) == 1  # one NME axis
    score = fig.axes[0]
    rmse_line = next(line for line in score.get_lines() if line.get_label() == "RMSE")
    assert list(rmse_line.get_xdata()) == [0, 16, 32]
    assert _vertical_lines(score) == [96.0]  # the exact halo is shown before it is run
    assert score.get_xlim()[1] > 96
    legend = [t.get_text() for t in score.get_legend().get_texts()]
    assert "0: open marker on the dotted floor" not in legend  # no zero drawn yet
    empty = sweep_figure([], 96, figure=fig)
    assert "no halo run yet" in [t.get_text() for t in empty.axes[2].texts]


def test_sweep_figure_draws_the_rounding_level_it_is_given():
    rows = _rows()
    fig = sweep_figure(rows, 96, rounding=1e-12, rounding_label="float64 rounding")
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "1e-12: float64 rounding" in legend and "1e-6: float32 rounding" not in legend
    dashed = [line for line in fig.axes[0].get_lines() if line.get_linestyle() == "--"]
    assert [tuple(line.get_ydata()) for line in dashed] == [(1e-12, 1e-12)]
    bare = sweep_figure(rows, 96, rounding=None)
    assert not [line for line in bare.axes[0].get_lines() if line.get_linestyle() == "--"]


def test_sweep_figure_uses_a_log_runtime_axis_for_a_wide_range():
    rows = _rows()
    rows = [
        SweepRow(r.halo, r.comparison, r.seconds, 0.6 * 2 ** (i / 1.5), r.tiles)
        for i, r in enumerate(rows)
    ]
    fig = sweep_figure(rows, 96)
    assert fig.axes[2].get_yscale() == "log"
    labels = {t.get_text() for t in fig.axes[2].get_yticklabels()}
    assert {"1", "2", "5"} <= labels


def test_profile_figure_has_one_line_per_halo_with_errors():
    rows = _rows()
    fig = profile_figure(rows, exact_halo=96)
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    drawn = [line for line in ax.get_lines() if len(line.get_xdata())]
    labels = [line.get_label() for line in drawn]
    assert labels[:6] == ["0", "16", "32", "48", "64", "80"]
    for line, row in zip(drawn, rows[:6], strict=False):
        np.testing.assert_array_equal(line.get_xdata(), row.profile_distances)
    # 96 and 112 are 0 everywhere: a legend entry that says so, no line on a log axis
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "96 (exact): 0 everywhere" in legend and "112: 0 everywhere" in legend
    assert ax.get_xlabel() == "distance to the nearest ZoR seam (px)"
    # a mapping {halo: (distances, mean)} draws the same
    mapping = {r.halo: (r.profile_distances, r.profile_mean) for r in rows[:2]}
    (ax2,) = profile_figure(mapping).axes
    assert [line.get_label() for line in ax2.get_lines()][:2] == ["0", "16"]
    # a mean of exactly 0 between others breaks the line instead of being bridged
    holes = {0: (np.arange(5), np.array([1e-3, 1e-4, 0.0, 1e-5, 1e-6]))}
    (ax3,) = profile_figure(holes).axes
    y = np.asarray(ax3.get_lines()[0].get_ydata(), dtype=float)
    assert np.isnan(y[2]) and np.isfinite(y[[0, 1, 3, 4]]).all()
    assert "break" in ax3.get_legend().get_title().get_text()
    bare = SweepRow(0, rows[0].comparison, 1.0, 1.0, 4)  # made without a profile
    with pytest.raises(ValueError, match="no error profile"):
        profile_figure([bare])


def test_offsets_figure_marks_multiples_of_f():
    rows = [
        OffsetRow(o, o % 16 == 0, 0.0 if o % 16 == 0 else 1e-3 * (1 + o % 5), o % 16 == 0, 64)
        for o in range(33)
    ]
    fig = offsets_figure(rows, 16)
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    assert _vertical_lines(ax) == [0.0, 16.0, 32.0]
    assert [x for x, _ in _open_markers(ax)] == [0, 16, 32]
    assert ax.get_yticklabels()[0].get_text() == "0"


def test_save_png_writes_whole_files_only(tmp_path):
    import matplotlib.image

    fig = sweep_figure(_rows(), 96)
    out = save_png(fig, tmp_path / "sweep.png", dpi=50)
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(out)
    width, height = fig.get_size_inches() * 50
    assert image.shape[:2] == (round(height), round(width))
    before = out.read_bytes()

    def broken(f, **kwargs):
        f.write(PNG_SIGNATURE)  # half a PNG, then the renderer fails
        raise RuntimeError("renderer died")

    fig.savefig = broken
    with pytest.raises(RuntimeError, match="renderer died"):
        save_png(fig, out)
    assert out.read_bytes() == before  # the old picture stays whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.png"]  # no partial left


def test_halo_sweep_profiles_put_the_errors_next_to_the_seams():
    """Below the exact halo a pixel errs only within (exact - halo) px of a seam."""
    import torch

    from napari_seamless.engine import Predictor
    from napari_seamless.models import UNet
    from napari_seamless.qa import halo_sweep

    torch.manual_seed(0)
    model = UNet(in_channels=1, classes=4, width=4, depth=2).eval()
    pred = Predictor(model, device="cpu", dtype="float64")
    f, exact = pred.factor[0], pred.halo[0]
    image = np.random.default_rng(0).normal(size=(160, 176)).astype(np.float32)
    tile = 2 * exact + 2 * f + 16
    rows = halo_sweep(pred, image, tile, [0, f, exact], normalization=None)
    # a pixel d px from a seam sees halo + d px of context across it: the errors end where
    # that reaches the model's dependency extent, the same for every halo
    reach = {r.halo + r.profile_distances[r.profile_mean > 1e-12].max() for r in rows[:2]}
    assert len(reach) == 1 and 0 < reach.pop() < exact
    for r in rows:
        d, mean = r.profile_distances, r.profile_mean
        assert d.shape == mean.shape and len(d) > 0 and np.all(np.diff(d) > 0)
        if r.halo < exact:
            assert mean[d == 0][0] > 1e-9, r  # the seam itself
            assert np.all(mean[d >= exact - r.halo] <= 1e-12), r  # enough context
        else:
            assert np.all(mean <= 1e-12), r
    fig = profile_figure(rows, exact_halo=exact)
    assert len([line for line in fig.axes[0].get_lines() if len(line.get_xdata())]) >= 2


def test_cli_sweep_writes_pngs(tmp_path):
    import matplotlib.image
    import tifffile

    from napari_seamless.cli import main
    from napari_seamless.data import nuclei

    tifffile.imwrite(tmp_path / "crop.tif", nuclei()[:256, :256])
    out = tmp_path / "sweep"
    args = ["sweep", str(tmp_path / "crop.tif"), "-o", str(out), "--tile", "256"]
    assert main([*args, "--halos", "64,96", "--offsets", "0,1,16"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "error_profile.png",
        "halo_sweep.csv",
        "halo_sweep.png",
        "offsets.csv",
        "offsets.png",
    ]  # and no partial file
    for name in ("error_profile.png", "halo_sweep.png", "offsets.png"):
        path = out / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE, name
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400, name
        assert image[..., :3].std() > 0.05, name  # something is drawn
