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
