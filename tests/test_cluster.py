"""The exact grid on a dask.distributed cluster equals the single-process run (issue 11).

The cluster is a real one (worker processes, see ``dask_client`` in conftest); the
reference is computed in this process by another route: ``segment`` / ``Predictor.run``
with the default serial executor on the array in memory.
"""

import os
import pickle

import numpy as np
import pytest

from napari_seamless.errors import ArgumentError
from napari_seamless.grid import TileGrid
from napari_seamless.io import read_image
from napari_seamless.stores import ArrayStore, OmeZarrStore, PyramidStore

pytest.importorskip("distributed")

from napari_seamless.engine.cluster import DaskExecutor, run_on_cluster  # noqa: E402


def _levels_equal(store, expected):
    np.testing.assert_array_equal(np.asarray(store.levels[0][...]), expected)
    for k, level in enumerate(store.levels[1:], start=1):  # filled on the client
        np.testing.assert_array_equal(np.asarray(level[...]), expected[..., :: 2**k, :: 2**k])


def test_cluster_run_equals_single_process_and_resumes(tmp_path, dask_client, nuclei_tif):
    from napari_seamless.engine import segment

    image = np.asarray(read_image(nuclei_tif).data)
    expected = segment("nuclei", image, tile=256)  # the reference, in this process

    out = tmp_path / "out.ome.zarr"
    # the Python API: segment(..., client=) is run_on_cluster, and returns level 0
    got = segment("nuclei", str(nuclei_tif), 256, client=dask_client, out=out, progress=True)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    np.testing.assert_array_equal(np.asarray(got), expected)
    store = OmeZarrStore.open(out, mode="r")
    assert store.complete and store.missing == []
    _levels_equal(store, expected)
    assert store.settings["model"] == "nuclei" and store.settings["tile"] == [256, 256]
    with pytest.raises(ArgumentError, match="never overwritten"):
        segment("nuclei", str(nuclei_tif), 256, client=dask_client, out=out)
    with pytest.raises(TypeError, match="path the workers can read"):
        segment("nuclei", expected, 256, client=dask_client, out=tmp_path / "x.zarr")

    # a stopped run (half the tiles recorded done, the rest empty) resumed on the cluster
    part = tmp_path / "part.ome.zarr"
    half = OmeZarrStore.create(
        part,
        expected.shape,
        expected.dtype,
        chunks=64,  # the ZoR of tile 256
        n_tiles=64,
        attrs=store.settings,
    )
    from napari_seamless.models import load_model

    grid = load_model("nuclei").predictor().grid((512, 512), 256)
    for t in list(grid)[::2]:
        half.write(t.zor, expected[t.zor])
        half.mark_done(t.index)
    half.flush()
    seen = []
    resumed = run_on_cluster(
        dask_client,
        "nuclei",
        nuclei_tif,
        part,
        256,
        batch_tiles=5,
        resume=True,
        callback=lambda done, total: seen.append((done, total)),
    )
    assert (resumed.computed, resumed.tasks) == (32, 7)
    assert len(resumed.workers) == 2 and sum(resumed.workers.values()) == 32
    assert seen[0] == (33, 64) and seen[-1] == (64, 64)
    again = OmeZarrStore.open(part, mode="r")
    assert again.complete and again.missing == []
    _levels_equal(again, expected)

    # resuming with another setting is refused before any tile runs, naming the setting
    with pytest.raises(ArgumentError, match="precision float32, this one float64"):
        run_on_cluster(
            dask_client,
            "nuclei",
            nuclei_tif,
            part,
            256,
            resume=True,
            predictor_kwargs={"dtype": "float64"},
        )


def test_dask_executor_in_predictor_run_gives_bit_identical_float64_scores(
    tmp_path, dask_client, nuclei_tif
):
    """The executor seam: Predictor.run with a DaskExecutor, the scores bit for bit."""
    import tifffile

    from napari_seamless.models import load_model, save_checkpoint

    # the model from a file given by a relative path: each worker loads the same file
    save_checkpoint(load_model("nuclei").module, tmp_path / "mine.pt")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        loaded = load_model("mine.pt")
    finally:
        os.chdir(cwd)
    assert loaded.source.spec == str(tmp_path / "mine.pt")
    pred = loaded.predictor(dtype="float64")
    crop = np.asarray(read_image(nuclei_tif).data)[:256, 64:448]
    tifffile.imwrite(tmp_path / "crop.tif", crop)
    opened = read_image(tmp_path / "crop.tif")
    local = np.zeros((2, *crop.shape), np.float64)
    for _ in pred.run(crop, ArrayStore(local), 256):  # serial, in memory
        pass

    grid = pred.grid(crop.shape, 256)
    assert len(grid) == 24  # ZoR 64: 4 x 6 tiles
    store = pred.create_output(tmp_path / "p.ome.zarr", grid, "probabilities")
    executor = DaskExecutor(dask_client, batch_tiles=3, max_tasks=2)  # 2 in flight at a time
    run = pred.run(opened, store, 256, executor=executor)
    order = [next(run).tile.index]
    last = len(grid) - 1
    # tiles not yet submitted move forward, as in napari after a pan: the next task takes them
    assert run.prioritize([last, last - 1]) == 2
    order += [ev.tile.index for ev in run]
    assert sorted(order) == list(range(len(grid)))
    assert order.index(last) < order.index(last - 1) < 9
    assert executor.tasks == -(-len(grid) // 3)
    assert store.levels[0].dtype == np.float64
    assert np.array_equal(np.asarray(store.levels[0][...]), local)  # bit-identical
    assert run.stats.forward > 0 and run.stats.tiles == len(grid)
    # the workers were each given one GPU, as on a GPU machine (without CUDA: the CPU)
    assert sorted(dask_client.run(lambda: os.environ["CUDA_VISIBLE_DEVICES"]).values()) == [
        "0",
        "1",
    ]


class _Client:  # enough of a client for the refusals, which come before any task
    def submit(self, *args, **kwargs):  # pragma: no cover - never reached
        raise AssertionError("nothing may be submitted")


def test_what_workers_cannot_reproduce_is_refused_in_one_sentence(tmp_path, nuclei_tif):
    import torch

    from napari_seamless.engine import Predictor
    from napari_seamless.models import load_model

    loaded = load_model("nuclei")
    pred = loaded.predictor()
    grid = pred.grid((512, 512), 256)
    store = pred.create_output(tmp_path / "o.ome.zarr", grid)
    opened = read_image(nuclei_tif)
    ex = DaskExecutor(_Client())
    with pytest.raises(ArgumentError, match="load the model again"):
        Predictor(torch.nn.Conv2d(1, 2, 3, padding=1)).run(opened, store, 256, executor=ex)
    with pytest.raises(ArgumentError, match="read_image"):
        pred.run(np.asarray(opened.data), store, 256, executor=ex)
    with pytest.raises(ArgumentError, match="OmeZarrStore"):
        pred.run(opened, ArrayStore(np.zeros((512, 512), np.uint8)), 256, executor=ex)
    with pytest.raises(ArgumentError, match="exact tile grid"):
        pred.run(opened, store, 256, executor=ex, mode="naive")
    with pytest.raises(ArgumentError, match="batch_tiles"):
        DaskExecutor(_Client(), batch_tiles=0)
    with pytest.raises(ArgumentError, match="distributed.Client"):
        DaskExecutor(object())


def test_what_a_worker_receives_reopens_the_same_model_and_planes(tmp_path, nuclei_image):
    """Model sources and images pickle as paths and choices, never as modules or pixels."""
    import tifffile

    from napari_seamless.models import load_model

    stack = np.stack([nuclei_image[:64, :64] + k for k in range(3)])
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, photometric="minisblack")
    plane = read_image(path).select({"Z": 2}, "ZYX")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        relative = read_image("stack.tif").select({"Z": 2}, "ZYX")
        blob = pickle.dumps(relative)
    finally:
        os.chdir(cwd)
    assert len(blob) < 1000  # a path and choices, not 3 x 64 x 64 pixels
    again = pickle.loads(blob)  # opened again, from another working directory
    assert again.axes == "YX" and again.planes == (("ZYX", (("Z", 2),)),)
    np.testing.assert_array_equal(np.asarray(again.data), stack[2])
    np.testing.assert_array_equal(np.asarray(plane.data), stack[2])

    source = load_model("nuclei").source
    assert source is not None and source.spec == "nuclei"
    assert len(pickle.dumps(source)) < 1000
    assert load_model(torch_module()).source is None  # a live module cannot be loaded again


def torch_module():
    import torch

    return torch.nn.Conv2d(1, 2, 3, padding=1)


def test_fill_coarse_builds_the_decimated_levels():
    rng = np.random.default_rng(0)
    full = rng.integers(0, 5, (100, 70)).astype(np.uint8)
    levels = [full.copy(), np.zeros((50, 35), np.uint8), np.zeros((25, 18), np.uint8)]
    grid = TileGrid((100, 70), (48, 48), (8, 8), (8, 8))
    PyramidStore(levels).fill_coarse([t.zor for t in grid])
    np.testing.assert_array_equal(levels[1], full[::2, ::2])
    np.testing.assert_array_equal(levels[2], full[::4, ::4])


def test_level0_writer_refuses_zors_that_share_chunks(tmp_path):
    grid = TileGrid((200, 140), (80, 80), (8, 8), (8, 8))  # ZoR 64
    zors = [t.zor for t in grid]
    store = OmeZarrStore.create(tmp_path / "a.zarr", (200, 140), np.uint8, chunks=128, n_tiles=9)
    with pytest.raises(ArgumentError, match="whole chunks"):
        store.level0_writer(zors)
    ok = OmeZarrStore.create(tmp_path / "b.zarr", (200, 140), np.uint8, chunks=64, n_tiles=9)
    writer = pickle.loads(pickle.dumps(ok.level0_writer(zors)))
    writer.write(grid[4].zor, np.full((64, 64), 7, np.uint8))
    assert (np.asarray(ok.levels[0][grid[4].zor]) == 7).all()
    assert np.asarray(ok.levels[0][...]).sum() == 7 * 64 * 64


def test_local_cluster_arguments_are_checked_before_anything_starts():
    from napari_seamless.engine.cluster import local_cluster

    with pytest.raises(ArgumentError, match="workers must be 1 or more"):
        local_cluster(0, gpus=0)
    with pytest.raises(ArgumentError, match="gpus must be 0 or more"):
        local_cluster(2, gpus=-1)


def test_an_output_says_why_a_run_cannot_resume_it(tmp_path):
    store = OmeZarrStore.create(
        tmp_path / "o.zarr", (64, 64), np.uint8, chunks=64, n_tiles=4, attrs={"tile": [256]}
    )
    assert store.mismatch({"tile": (256,)}, 4) is None
    assert store.mismatch({"tile": (512,)}, 4) == ("tile", [256], [512])
    assert store.mismatch({"tile": [256]}, 9) == ("tiles", 4, 9)
