"""The OME-Zarr reader in a real napari viewer: labels and images open multiscale and lazy."""

import numpy as np
import zarr
from napari.layers import Image, Labels

from napari_seamless._napari.reader import get_reader, read_ome_zarr


def _ome_zarr(path, levels, axes, *, labels, version="0.4"):
    """Write an OME-Zarr group: NGFF 0.4 on zarr v2, or 0.5 on zarr v3 (under ``ome``)."""
    fmt = 2 if version == "0.4" else 3
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt)
    datasets = []
    for k, level in enumerate(levels):
        group.create_array(str(k), shape=level.shape, dtype=level.dtype, chunks=(32,) * level.ndim)
        group[str(k)][...] = level
        scale = [1.0 if a == "c" else float(2**k) for a in axes]
        transforms = [{"type": "scale", "scale": scale}]
        datasets.append({"path": str(k), "coordinateTransformations": transforms})
    kinds = {"c": "channel", "y": "space", "x": "space", "z": "space"}
    multiscales = [
        {
            "version": version,
            "name": "cells",
            "axes": [{"name": a, "type": kinds[a]} for a in axes],
            "datasets": datasets,
        }
    ]
    ome = {"multiscales": multiscales}
    if labels:
        ome["image-label"] = {"version": version}
    if fmt == 2:
        group.attrs.update(ome)
    else:
        group.attrs["ome"] = {"version": version, **ome}
    return path


def test_ome_zarr_labels_open_as_a_lazy_multiscale_labels_layer(make_napari_viewer, tmp_path):
    full = np.random.default_rng(0).integers(0, 9, (96, 128)).astype(np.uint32)
    path = _ome_zarr(tmp_path / "labels.zarr", [full, full[::2, ::2]], "yx", labels=True)
    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin="napari-seamless")
    assert len(layers) == 1 and isinstance(layers[0], Labels)
    layer = layers[0]
    assert layer.multiscale and len(layer.data) == 2 and layer.name == "cells"
    assert isinstance(layer.data[0], zarr.Array)  # lazy: nothing read up front
    np.testing.assert_array_equal(np.asarray(layer.data[0]), full)
    np.testing.assert_array_equal(np.asarray(layer.data[1]), full[::2, ::2])
    assert tuple(layer.scale) == (1.0, 1.0)


def test_ome_zarr_05_image_with_channels_opens_one_image_layer_per_channel(
    make_napari_viewer, tmp_path
):
    full = np.random.default_rng(1).integers(0, 4000, (2, 64, 64)).astype(np.uint16)
    path = _ome_zarr(
        tmp_path / "image.zarr", [full, full[:, ::2, ::2]], "cyx", labels=False, version="0.5"
    )
    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin="napari-seamless")
    assert len(layers) == 2 and all(isinstance(layer, Image) for layer in layers)
    for c, layer in enumerate(layers):
        assert layer.multiscale and layer.data[0].shape == (64, 64)
        np.testing.assert_array_equal(np.asarray(layer.data[0]), full[c])


def test_paths_that_are_not_ome_zarr_are_declined(tmp_path):
    zarr.open_array(str(tmp_path / "plain.zarr"), mode="w", shape=(8, 8), dtype=np.uint8)
    group = zarr.open_group(str(tmp_path / "group.zarr"), mode="w")
    group.create_array("raw", shape=(8, 8), dtype=np.uint8)
    (tmp_path / "image.tif").write_bytes(b"II*\x00")
    for name in ("plain.zarr", "group.zarr", "image.tif", "missing.zarr"):
        assert get_reader(str(tmp_path / name)) is None, name
    assert get_reader([str(tmp_path / "plain.zarr"), str(tmp_path / "group.zarr")]) is None
    labels = _ome_zarr(tmp_path / "l.zarr", [np.zeros((8, 8), np.uint8)], "yx", labels=True)
    assert get_reader(str(labels)) is read_ome_zarr
    (data, kwargs, kind) = read_ome_zarr([str(labels)])[0]
    assert kind == "labels" and kwargs["multiscale"] is False and data.shape == (8, 8)


# -- label TIFFs and exports ------------------------------------------------------------------


def _cli_labels(tmp_path):
    """A label TIFF from ``seamless predict`` (built-in nuclei model) on a 256 x 256 crop."""
    import tifffile

    from napari_seamless.cli import main as cli_main
    from napari_seamless.data import nuclei

    image = tmp_path / "crop.tif"
    tifffile.imwrite(image, nuclei()[128:384, 128:384])
    out = tmp_path / "labels.tif"
    assert cli_main(["predict", str(image), "-o", str(out), "--tile", "448", "-q"]) == 0
    return out, tifffile.imread(out)


def test_cli_label_tiff_opens_as_labels(make_napari_viewer, tmp_path, monkeypatch):
    from napari.settings import get_settings

    from napari_seamless._napari.reader import get_tiff_reader, read_labels_tiff
    from napari_seamless.io import OWNER_KEY

    out, expected = _cli_labels(tmp_path)
    assert expected.shape == (256, 256) and 0 < expected.mean() < 1
    assert get_tiff_reader(str(out)) is read_labels_tiff
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(out), plugin="napari-seamless")
    assert isinstance(layer, Labels) and layer.name == "labels"
    # small enough to edit: one plain array, not a pyramid
    assert not layer.multiscale and isinstance(layer.data, np.ndarray)
    np.testing.assert_array_equal(layer.data, expected)
    assert layer.data.dtype == expected.dtype
    record = layer.metadata[OWNER_KEY]
    assert record["kind"] == "labels" and record["settings"]["model"] == "nuclei"
    assert record["settings"]["tile"] == [448, 448]

    # no plugin named, as napari's File > Open and drag-and-drop ask: with two readers for
    # *.tif napari asks which one; once napari-seamless is chosen (and remembered), label
    # TIFFs open as labels
    monkeypatch.setattr(get_settings().plugins, "extension2reader", {"*.tif": "napari-seamless"})
    [again] = viewer.open(str(out), plugin=None)
    assert isinstance(again, Labels)
    np.testing.assert_array_equal(again.data, expected)


def test_tiffs_without_the_labels_record_are_declined(tmp_path):
    import tifffile

    from napari_seamless._napari.reader import get_tiff_reader
    from napari_seamless.stores import write_tiff_pyramid

    labels = np.random.default_rng(2).integers(0, 9, (64, 64)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "plain.tif", labels)
    tifffile.imwrite(tmp_path / "ome.ome.tif", labels, metadata={"axes": "YX"})
    write_tiff_pyramid([labels], tmp_path / "unmarked.tiff", axes="YX")
    write_tiff_pyramid([labels[None]], tmp_path / "scores.tif", axes="CYX", kind="image")
    (tmp_path / "broken.tif").write_bytes(b"II*\x00")
    names = ["plain.tif", "ome.ome.tif", "unmarked.tiff", "scores.tif", "broken.tif"]
    for name in [*names, "missing.tif"]:
        assert get_tiff_reader(str(tmp_path / name)) is None, name
    write_tiff_pyramid([labels], tmp_path / "marked.TIF", axes="YX", kind="labels")
    assert get_tiff_reader([str(tmp_path / "marked.TIF")]) is not None
    assert get_tiff_reader([str(tmp_path / "marked.TIF")] * 2) is None


def test_exported_multiscale_results_reopen_as_multiscale_labels(make_napari_viewer, tmp_path):
    from napari_seamless.io import export_labels

    rng = np.random.default_rng(3)
    small = rng.integers(0, 40, (600, 500)).astype(np.uint16)
    big = np.zeros((4500, 300), np.uint8)  # past the plain-layer limit of 4096 px a side
    big[::7, ::5] = rng.integers(1, 9, big[::7, ::5].shape)
    group = zarr.open_group(str(tmp_path / "result.zarr"), mode="w")
    level0 = group.create_array("0", shape=small.shape, dtype=small.dtype, chunks=(128, 128))
    level0[...] = small
    layer_data = [level0, small[::2, ::2]]  # as a multiscale result layer holds it
    zarr_out = export_labels(layer_data, tmp_path / "cells.ome.zarr")
    tiff_out = export_labels(big, tmp_path / "big.tif")

    viewer = make_napari_viewer()
    [from_zarr] = viewer.open(str(zarr_out), plugin="napari-seamless")
    assert isinstance(from_zarr, Labels) and from_zarr.multiscale and from_zarr.name == "cells"
    assert len(from_zarr.data) == 3 and isinstance(from_zarr.data[0], zarr.Array)
    np.testing.assert_array_equal(np.asarray(from_zarr.data[0]), small)
    np.testing.assert_array_equal(np.asarray(from_zarr.data[2]), small[::4, ::4])

    [from_tiff] = viewer.open(str(tiff_out), plugin="napari-seamless")
    assert isinstance(from_tiff, Labels) and from_tiff.multiscale and from_tiff.name == "big"
    assert isinstance(from_tiff.data[0], zarr.Array)  # lazy, over the file's tiles
    assert [tuple(d.shape) for d in from_tiff.data][:2] == [(4500, 300), (2250, 150)]
    np.testing.assert_array_equal(np.asarray(from_tiff.data[0]), big)
    np.testing.assert_array_equal(np.asarray(from_tiff.data[1]), big[::2, ::2])
