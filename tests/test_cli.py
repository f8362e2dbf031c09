import json

import numpy as np
import pytest
import tifffile

from napari_seamless.cli import main
from napari_seamless.data import DATA_DIR
from napari_seamless.metrics import dice

NUCLEI = DATA_DIR / "nuclei2d.tif"


def test_predict_default_settings_dice(tmp_path, nuclei_truth):
    out = tmp_path / "out.tif"
    assert main(["predict", str(NUCLEI), "-o", str(out), "-q"]) == 0
    labels = tifffile.imread(out)
    assert labels.shape == (512, 512) and labels.dtype == np.uint8
    assert dice(labels > 0, nuclei_truth) >= 0.85
    assert not list(tmp_path.glob(".*partial"))


def test_predict_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "out.tif"
    out.write_bytes(b"precious")
    assert main(["predict", str(NUCLEI), "-o", str(out), "-q"]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"


def test_predict_probabilities_to_zarr_equal_tiff(tmp_path):
    import zarr

    z, t = tmp_path / "p.zarr", tmp_path / "p.tif"
    assert (
        main(["predict", str(NUCLEI), "-o", str(z), "--probabilities", "--tile", "256", "-q"]) == 0
    )
    assert main(["predict", str(NUCLEI), "-o", str(t), "--probabilities", "-q"]) == 0
    a, b = zarr.open_array(str(z), mode="r")[:], tifffile.imread(t)
    assert a.shape == (2, 512, 512) and np.abs(a - b).max() <= 1e-5


@pytest.mark.parametrize(
    "args,message",
    [
        (["--tile", "200"], "not a multiple of F=16"),
        (["--tile", "192"], "larger than 2 * halo = 192"),
        (["--model", "missing.pt"], "does not exist"),
    ],
)
def test_predict_bad_input_clear_message_no_output(tmp_path, capsys, args, message):
    out = tmp_path / "out.tif"
    assert main(["predict", str(NUCLEI), "-o", str(out), "-q", *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_halo_json(capsys):
    assert main(["halo", "--model", "nuclei", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["factor"] == [16, 16] and info["halo"] == [96, 96] and info["eq1"] == [92, 92]
