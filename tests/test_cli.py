import json

import numpy as np
import pytest
import tifffile

from napari_seamless.cli import main
from napari_seamless.data import DATA_DIR
from napari_seamless.qa import dice

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
    a, b = zarr.open_group(str(z), mode="r")["0"][:], tifffile.imread(t)  # OME-Zarr level 0
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


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    pytest.importorskip("bioimageio.spec")
    from bioimageio_package import build_package

    root = tmp_path_factory.mktemp("bioimageio")
    return {
        "ok": build_package(root / "ok"),
        "small_halo": build_package(root / "small", halo=32, as_zip=False),
    }


@pytest.fixture(scope="module")
def builtin_cli_labels(tmp_path_factory):
    out = tmp_path_factory.mktemp("builtin") / "labels.tif"
    assert main(["predict", str(NUCLEI), "-o", str(out), "-q", "--tile", "256"]) == 0
    return tifffile.imread(out)


def test_predict_bioimageio_package_equals_builtin(
    tmp_path, capsys, packages, builtin_cli_labels, monkeypatch
):
    from bioimageio_package import block_network

    block_network(monkeypatch)
    out = tmp_path / "pkg.tif"
    args = ["predict", str(NUCLEI), "-o", str(out), "-q", "--tile", "256"]
    assert main([*args, "--model", str(packages["ok"])]) == 0
    err = capsys.readouterr().err
    assert "declares a halo" not in err and "warning" not in err
    labels = tifffile.imread(out)
    assert labels.mean() > 0.1 and np.array_equal(labels, builtin_cli_labels)
    # the declared halo is too small: one warning line naming both numbers, same result
    small = tmp_path / "small.tif"
    assert main([*args[:3], str(small), *args[4:], "--model", str(packages["small_halo"])]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1
    assert "halo of 32 px" in warnings[0] and "exact halo of 96 px" in warnings[0]
    assert np.array_equal(tifffile.imread(small), builtin_cli_labels)


def test_predict_pickle_needs_allow_pickle(tmp_path, capsys):
    import torch

    from napari_seamless.models import UNet

    torch.manual_seed(0)
    path = tmp_path / "whole.pt"
    torch.save(UNet(width=4).eval(), path)
    out = tmp_path / "out.tif"
    args = ["predict", str(NUCLEI), "-o", str(out), "-q", "--model", str(path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "unpickling runs code" in err and "--allow-pickle" in err and not out.exists()
    assert main([*args, "--allow-pickle"]) == 0 and tifffile.imread(out).shape == (512, 512)


def test_predict_entry_point_tuple_output_and_sigmoid(tmp_path, capsys, builtin_cli_labels):
    script = tmp_path / "net.py"
    script.write_text(
        "import torch\n"
        "from napari_seamless.models import load_model\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.net = load_model('nuclei').module\n"
        "    def forward(self, x):\n"
        "        z = self.net(x)\n"
        "        return z, z[:, 1:2] - z[:, 0:1]\n"
    )
    out = tmp_path / "out.tif"
    args = ["predict", str(NUCLEI), "-o", str(out), "-q", "--tile", "256"]
    assert main([*args, "--model", f"{script}:Net"]) == 2
    assert "--output-index" in capsys.readouterr().err
    assert main([*args, "--model", f"{script}:Net", "--output-index", "1"]) == 0
    assert "using sigmoid" in capsys.readouterr().err  # one channel: said so
    labels = tifffile.imread(out)
    assert labels.mean() > 0.1 and (labels != builtin_cli_labels).mean() < 1e-4
    assert main([*args, "--model", f"{script}:Net", "--output-index", "1", "--overwrite",
                 "--activation", "softmax"]) == 2  # fmt: skip
    assert "softmax over one channel" in capsys.readouterr().err


def test_analysis_past_its_time_budget_is_one_line_and_writes_nothing(
    tmp_path, capsys, monkeypatch
):
    from napari_seamless.analysis import halo
    from napari_seamless.analysis.identity import KeyedCache

    monkeypatch.setattr(halo, "_ANALYSED", KeyedCache())  # analysed afresh, not recalled
    out = tmp_path / "labels.tif"
    args = ["predict", str(DATA_DIR / "nuclei2d.tif"), "-o", str(out), "--time-budget", "0.001"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("seamless: error: the halo analysis ran past its 0.001 s budget")
    assert "\n" not in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_halo_verify_reports_both_support_tests(capsys):
    assert main(["halo", "--model", "nuclei", "--verify"]) == 0
    out = capsys.readouterr().out
    assert "support test (positive copy): halo 96: no dependency outside it" in out
    assert "support test (perturbation, real weights, float64): halo 96: no dependency" in out


def test_compare_exact_equals_whole_image_and_naive_does_not(capsys):
    from napari_seamless.data import DATA_DIR

    image = str(DATA_DIR / "nuclei2d.tif")
    rows = {}
    for mode in ("exact", "naive"):
        assert main(["compare", image, "--tile", "256", "--mode", mode, "--json"]) == 0
        rows[mode] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    exact, naive = rows["exact"], rows["naive"]
    assert exact["halo"] == exact["exact_halo"] == 96 and exact["exact"] is True
    assert exact["me"] == 0 and exact["max_abs"] <= 1e-5
    assert naive["halo"] == 0 and naive["me"] > 0 and naive["rmse"] > 1e-3


def test_compare_overlap_average_and_region_reference(capsys):
    from napari_seamless.data import DATA_DIR

    image = str(DATA_DIR / "nuclei2d.tif")
    common = [image, "--tile", "256", "--json"]
    assert main(["compare", *common, "--mode", "overlap-average", "--overlap", "0.5"]) == 0
    oa = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert oa["overlap"] == 128 and oa["weights"] == "gaussian" and oa["halo"] is None
    assert oa["exact"] is False and oa["rmse"] > 1e-4  # the common practice is not exact
    # a region reference: one exact window; the tiled result compared there only
    assert main(["compare", *common, "--halo", "80", "--region", "100:300,0:512"]) == 0
    low = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert low["reference"] == "region" and low["region"] == "100:300,0:512"
    assert low["me"] > 0 and low["exact"] is False
    assert main(["compare", *common, "--region", "100:300,0:512"]) == 0
    exact = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert exact["exact"] is True and exact["me"] == 0 and exact["rmse"] <= 1e-6


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--halo", "70"], "halo 70 px is not a multiple of F=16 px"),
        (["--region", "0:600,0:3"], "outside the image, whose extent is 0:512,0:512"),
        (["--budget", "0.01"], "over the memory budget of 10 MiB: choose a region"),
        (["--mode", "naive", "--halo", "32"], "halo is set by the exact mode only"),
    ],
)
def test_compare_refuses_bad_settings_in_one_sentence(capsys, extra, message):
    from napari_seamless.data import DATA_DIR

    assert main(["compare", str(DATA_DIR / "nuclei2d.tif"), "--tile", "256", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_sweep_writes_a_table_that_is_exact_from_the_computed_halo(tmp_path, capsys):
    import csv

    from napari_seamless.data import nuclei

    tifffile.imwrite(tmp_path / "crop.tif", nuclei()[:256, :256])
    args = ["sweep", str(tmp_path / "crop.tif"), "-o", str(tmp_path / "sweep"), "--tile", "256"]
    assert main([*args, "--halos", "64,96", "--offsets", "0,1,16"]) == 0
    with open(tmp_path / "sweep" / "halo_sweep.csv") as f:
        rows = {int(r["halo"]): r for r in csv.DictReader(f)}
    with open(tmp_path / "sweep" / "offsets.csv") as f:
        offsets = {int(r["offset"]): r["identical"] for r in csv.DictReader(f)}
    assert offsets == {0: "True", 1: "False", 16: "True"}  # the paper's Fig. 4, F = 16
    assert sorted(rows) == [64, 96] and rows[96]["exact_halo"] == "96"
    assert int(rows[96]["me"]) == 0 and float(rows[96]["max_abs"]) <= 1e-5
    assert float(rows[64]["rmse"]) > 1e-4
    assert "<- exact" in capsys.readouterr().out
    assert main([*args, "--halos", "1:x"]) == 2
