"""`seamless predict --workers N`: the same output as the single-process command."""

import numpy as np
import pytest
import tifffile

from napari_seamless.cli import main
from napari_seamless.data import DATA_DIR

pytest.importorskip("distributed")


@pytest.mark.slow  # ~22 s: run with -m slow (tests/test_cluster.py checks the engine)
def test_predict_on_a_local_cluster_equals_the_single_process_run(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the worker processes inherit it
    # a tiled TIFF is read lazily (dask): the client's own reads must stay local, not be
    # sent to the cluster with the open file inside (they were, and failed to pickle)
    # and a plane of a stack (--axes, --index): the workers open the file and pick the plane
    src = tmp_path / "nuclei_tiled.tif"
    plane = tifffile.imread(DATA_DIR / "nuclei2d.tif")
    stack = np.stack([plane[::-1], plane, plane[:, ::-1]])
    tifffile.imwrite(src, stack, tile=(128, 128), photometric="minisblack")
    local, cluster = tmp_path / "local.tif", tmp_path / "cluster.tif"
    pick = ["--axes", "ZYX", "--index", "Z=1", "--tile", "256", "-q"]
    assert main(["predict", str(src), "-o", str(local), *pick]) == 0
    capfd.readouterr()
    args = ["predict", str(src), "-o", str(cluster), *pick]
    assert main([*args, "--workers", "2", "--batch-tiles", "4"]) == 0
    err = capfd.readouterr().err
    assert "local cluster of 2 worker(s)" in err and "dashboard: http" in err
    assert " - INFO - " not in err  # dask's start-up chatter (workers' too) is not shown
    assert "cluster: 16 tasks" in err and "64 tiles computed" in err
    expected = tifffile.imread(local)
    got = tifffile.imread(cluster)
    assert got.dtype == expected.dtype and np.array_equal(got, expected)
    assert expected.any() and not np.array_equal(expected, 0)
    from napari_seamless.engine import segment

    np.testing.assert_array_equal(got, segment("nuclei", plane, tile=None))  # plane 1 it is
    # the file is complete and ours: the napari reader's record says labels
    from napari_seamless.stores import read_tiff_record

    assert read_tiff_record(cluster)["kind"] == "labels"


@pytest.mark.parametrize(
    "extra, told",
    [
        (["--workers", "0"], "--workers must be 1 or more"),
        (["--workers", "2", "--batch-tiles", "0"], "--batch-tiles must be 1 or more"),
    ],
)
def test_cluster_options_that_cannot_run_are_refused_in_one_sentence(tmp_path, capsys, extra, told):
    out = tmp_path / "out.tif"
    code = main(["predict", str(DATA_DIR / "nuclei2d.tif"), "-o", str(out), "-q", *extra])
    err = capsys.readouterr().err
    assert code != 0 and told in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
