"""Fast mode (issue 9): bfloat16 autocast and channels-last, offered and labelled NOT bit-exact."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_seamless.cli import main
from napari_seamless.data import nuclei
from napari_seamless.engine import ArgumentError, Predictor, predict


@pytest.fixture(scope="module")
def image():
    return nuclei()[:256, :320]


def test_fast_mode_is_close_but_not_exact_and_keeps_the_grid(image):
    exact = Predictor("nuclei")
    fast = Predictor("nuclei", fast=True)
    assert fast.halo == exact.halo and fast.factor == exact.factor and not fast.exact
    ref = predict(exact, image, None)
    got = predict(fast, image, 256)
    assert got.dtype == np.float32 and got.shape == ref.shape and got.flags.c_contiguous
    diff = np.abs(got - ref).max()
    # bfloat16 has 8 significant bits: close, and (the point of the label) not exact
    assert 0 < diff < 0.2, diff
    assert (got.argmax(0) == ref.argmax(0)).mean() > 0.99


def test_fast_mode_refuses_float64():
    with pytest.raises(ArgumentError, match="fast=True runs in bfloat16"):
        Predictor("nuclei", fast=True, dtype="float64")


def test_cli_fast_says_it_is_not_exact(tmp_path, image, capsys):
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, image)
    out = tmp_path / "labels.tif"
    assert main(["predict", str(src), "-o", str(out), "--tile", "256", "--fast", "-q"]) == 0
    assert "NOT bit-exact" in capsys.readouterr().err
    assert tifffile.imread(out).shape == image.shape
    assert main(["predict", str(src), "-o", str(out), "--fast", "--float64", "--overwrite"]) == 2
    assert "cannot be combined with dtype='float64'" in capsys.readouterr().err


def test_fast_mode_is_probed_apart_from_float32(monkeypatch):
    from napari_seamless.engine import choose_tile

    passes = []
    real = Predictor._forward
    monkeypatch.setattr(
        Predictor, "_forward", lambda self, w: passes.append(self.fast) or real(self, w)
    )
    shape, kw = (256, 320), {"budget": "2GB", "probe_seconds": 0.5}
    choose_tile(Predictor("nuclei"), shape, **kw)
    assert passes and not any(passes)
    passes.clear()
    choose_tile(Predictor("nuclei"), shape, **kw)  # the same model loaded again: measured once
    assert passes == []
    choose_tile(Predictor("nuclei", fast=True), shape, **kw)
    assert passes and all(passes)  # bfloat16 costs other time and memory: its own measurements
