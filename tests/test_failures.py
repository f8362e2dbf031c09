"""Bad input and faults: one clear sentence, nothing of the user's lost (issue 7, part)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

import napari_seamless as ns
from napari_seamless.cli import main
from napari_seamless.models import UNet
from napari_seamless.preprocessing import NonFiniteInputError


@pytest.mark.parametrize("normalization", ["percentile", None])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_refused_not_poisoning_the_result(nuclei_model, bad, normalization):
    img = np.random.default_rng(0).random((300, 300)).astype(np.float32)
    img[10, 20] = bad
    with pytest.raises(NonFiniteInputError, match="1 non-finite value"):
        ns.segment(nuclei_model.module, img, tile=256, normalization=normalization)


def test_cli_non_finite_tiff_is_one_line_and_writes_nothing(tmp_path, capsys):
    img = np.random.default_rng(0).random((200, 200)).astype(np.float32)
    img[5, 5] = np.nan
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, img)
    before = src.read_bytes()
    out = tmp_path / "out.tif"
    assert main(["predict", str(src), "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("seamless: error: the image holds 1 non-finite value")
    assert not any("Traceback" in line for line in err)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]
    assert src.read_bytes() == before


def test_cli_debug_shows_the_traceback(tmp_path):
    from napari_seamless.io import InputError

    with pytest.raises(InputError, match="does not exist"):
        main(["--debug", "predict", str(tmp_path / "missing.tif"), "-o", str(tmp_path / "o.tif")])


def test_cli_interrupt_exits_130_in_one_line(monkeypatch, tmp_path, capsys):
    from napari_seamless import cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_cmd_halo", interrupted)
    assert main(["halo"]) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("seamless: interrupted") and "\n" not in err


def test_unexpected_error_is_one_line_naming_a_bug(monkeypatch, capsys):
    from napari_seamless import cli

    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli, "_cmd_halo", broken)
    assert main(["halo"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unexpected ZeroDivisionError" in err and "--debug" in err and "\n" not in err


def test_predictor_leaves_the_callers_model_as_it_found_it():
    model = UNet(width=2, depth=2).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pred = ns.Predictor(model, device="cpu", dtype="float64")
    ns.segment(pred, np.zeros((64, 64), np.float32), tile=None)
    assert model.training
    assert all(
        v.dtype == torch.float32 for v in model.state_dict().values() if v.is_floating_point()
    )
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_output_equal_to_or_inside_the_input_is_refused(tmp_path, capsys):
    import zarr

    src = tmp_path / "in.tif"
    tifffile.imwrite(src, np.zeros((64, 64), np.uint8))
    before = src.read_bytes()
    assert main(["predict", str(src), "-o", str(src), "--overwrite", "-q"]) == 2
    assert "the input is never written over" in capsys.readouterr().err
    assert src.read_bytes() == before
    group = tmp_path / "in.zarr"
    zarr.open_array(str(group), mode="w", shape=(64, 64), dtype="uint8")
    inner = group / "labels.zarr"
    assert main(["predict", str(group), "-o", str(inner), "-q"]) == 2
    assert not inner.exists()


def test_channel_mismatch_is_told_before_any_analysis(tmp_path, capsys, monkeypatch):
    from napari_seamless.analysis import halo

    def never(*args, **kwargs):
        raise AssertionError("the analysis ran before the channels were checked")

    monkeypatch.setattr(halo, "receptive_field", never)
    src = tmp_path / "rgb.tif"
    tifffile.imwrite(src, np.zeros((64, 64, 3), np.uint8))
    assert main(["predict", str(src), "-o", str(tmp_path / "o.tif"), "-q"]) == 2
    assert "expects 1 input channel" in capsys.readouterr().err
