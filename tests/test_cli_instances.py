"""``seamless predict --instances``: instance labels written in place of semantic labels."""

import numpy as np
import tifffile
import zarr
from scipy import ndimage

from napari_seamless.cli import main
from napari_seamless.data import DATA_DIR, nuclei_mask
from napari_seamless.instances import watershed_labels
from napari_seamless.qa import dice, match_f1, same_partition

NUCLEI = DATA_DIR / "nuclei2d.tif"


def hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_predict_instances_watershed_tiff(tmp_path, capsys):
    out = tmp_path / "nuclei.tif"
    args = ["predict", str(NUCLEI), "-o", str(out), "--tile", "256", "-q"]
    assert main([*args, "--instances", "watershed"]) == 0
    assert "labelled on the ZoR grid" in capsys.readouterr().err
    labels = tifffile.imread(out)
    assert labels.shape == (512, 512) and labels.dtype == np.uint32
    # tiles of ZoR 64 give the objects of the whole-image watershed of the same foreground
    assert same_partition(labels, watershed_labels(labels > 0))
    n = int(labels.max())
    assert np.array_equal(np.unique(labels), np.arange(n + 1))
    truth = nuclei_mask()
    assert dice(labels > 0, truth > 0) >= 0.85
    assert match_f1(labels, truth)["f1"] >= 0.82
    assert hidden(tmp_path) == []


def test_predict_instances_stopped_while_labelling_then_resumed(tmp_path, capsys, monkeypatch):
    import napari_seamless.instances as instances

    out = tmp_path / "cc.zarr"
    args = ["predict", str(NUCLEI), "-o", str(out), "--tile", "384", "-q"]

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(instances, "label_instances", interrupted)
        assert main([*args, "--instances", "components"]) == 130
    assert "finished tiles are kept" in capsys.readouterr().err
    assert not out.exists()
    assert [h.split("-")[0] for h in hidden(tmp_path)] == [".cc.zarr.partial"]  # semantic only
    assert main([*args, "--instances", "components", "--resume"]) == 0
    err = capsys.readouterr().err
    assert "resuming: 9 of 9 tiles were done" in err and "objects (components)" in err
    group = zarr.open_group(str(out), mode="r")
    labels = group["0"][:]
    assert labels.dtype == np.uint32
    ref, n = ndimage.label(labels > 0, structure=np.ones((3, 3)))
    assert same_partition(labels, ref) and labels.max() == n
    assert group.attrs["napari_seamless"]["settings"]["instances"] == "components"
    assert hidden(tmp_path) == []


def test_predict_instances_refusals(tmp_path, capsys):
    out = tmp_path / "x.tif"
    base = ["predict", str(NUCLEI), "-o", str(out), "-q"]
    assert main([*base, "--instances", "watershed", "--probabilities"]) == 2
    assert "cannot write --probabilities" in capsys.readouterr().err
    assert main([*base, "--min-distance", "4"]) == 2
    assert "add --instances watershed" in capsys.readouterr().err
    assert not out.exists()
