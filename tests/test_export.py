"""export_labels: plain and multiscale labels to OME-Zarr and TIFF, atomically, never over the input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import zarr
from _files import folder, tree

from napari_seamless.errors import ArgumentError, ArgumentTypeError
from napari_seamless.io import OWNER_KEY, OutputError, export_labels
from napari_seamless.stores import pyramid_shapes, read_tiff_record, write_tiff_pyramid

RNG = np.random.default_rng(7)


def _labels(shape, dtype=np.uint16, high=60):
    return RNG.integers(0, high, shape).astype(dtype)


def _zarr(path, data, chunks):
    z = zarr.open_array(str(path), mode="w", shape=data.shape, dtype=data.dtype, chunks=chunks)
    z[...] = data
    return z


def _zarr_levels(path):
    group = zarr.open_group(str(path), mode="r")
    attrs = dict(group.attrs)
    paths = [d["path"] for d in attrs["multiscales"][0]["datasets"]]
    return attrs, [group[p] for p in paths]


def _tiff_levels(path):
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        return series.axes, [level.asarray() for level in series.levels]


def _same_bytes(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# -- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".ome.zarr", ".tif"])
def test_plain_numpy_labels_round_trip_byte_identical(tmp_path, suffix):
    labels = _labels((200, 150), np.uint8)
    out = export_labels(labels, tmp_path / f"cells{suffix}", metadata={"model": "nuclei"})
    assert out == tmp_path / f"cells{suffix}"
    if suffix == ".tif":
        axes, levels = _tiff_levels(out)
        assert axes == "YX" and len(levels) == 1
        record = read_tiff_record(out)
        assert record["kind"] == "labels" and record["settings"] == {"model": "nuclei"}
    else:
        attrs, levels = _zarr_levels(out)
        assert "image-label" in attrs and attrs["multiscales"][0]["name"] == "cells"
        assert attrs[OWNER_KEY]["complete"] is True
        assert attrs[OWNER_KEY]["settings"] == {"model": "nuclei"}
        assert len(levels) == 1
    assert _same_bytes(levels[0], labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no partial, no lock


@pytest.mark.parametrize("suffix", [".zarr", ".tiff"])
@pytest.mark.parametrize("source", ["numpy", "zarr", "levels"])
def test_multiscale_labels_round_trip_with_decimated_levels(tmp_path, suffix, source):
    labels = _labels((1100, 700), np.uint32, high=5000)
    if source == "numpy":
        data = labels
    else:  # chunks that are no multiple of the TIFF tile: bands must still line up
        z = _zarr(tmp_path / "src.zarr", labels, (300, 200))
        data = z if source == "zarr" else [z, labels[::2, ::2]]  # napari multiscale data
    before = tree(tmp_path / "src.zarr") if source != "numpy" else None
    out = export_labels(data, tmp_path / f"result{suffix}")
    shapes = pyramid_shapes(labels.shape)
    assert len(shapes) == 4
    if suffix == ".tiff":
        axes, levels = _tiff_levels(out)
        assert axes == "YX" and read_tiff_record(out)["kind"] == "labels"
    else:
        attrs, levels = _zarr_levels(out)
        assert "image-label" in attrs
    assert [tuple(level.shape) for level in levels] == shapes
    assert _same_bytes(levels[0], labels)
    for k, level in enumerate(levels):
        assert _same_bytes(level, labels[:: 2**k, :: 2**k]), k  # nearest: labels preserved
    if before is not None:
        assert tree(tmp_path / "src.zarr") == before  # the input is untouched


def test_napari_multiscale_data_is_accepted(tmp_path):
    from napari.layers import Labels

    labels = _labels((600, 300), np.int32)
    layer = Labels([labels, labels[::2, ::2]], multiscale=True)
    with pytest.raises(
        ArgumentTypeError, match=r"got Labels \(for a napari layer, pass layer.data\)"
    ):
        export_labels(layer, tmp_path / "ms.tif")
    out = export_labels(layer.data, tmp_path / "ms.tif")  # a MultiScaleData
    _, levels = _tiff_levels(out)
    assert _same_bytes(levels[0], labels) and len(levels) == 3


@pytest.mark.parametrize("suffix", [".ome.zarr", ".tif"])
def test_3d_labels_and_booleans(tmp_path, suffix):
    volume = _labels((20, 300, 260), np.uint16)
    source = _zarr(tmp_path / "v.zarr", volume, (8, 128, 128))
    out = export_labels(source, tmp_path / f"v3{suffix}", axes="ZYX")
    if suffix == ".tif":  # a TIFF pyramid cannot halve Z: level 0 only, one page a plane
        axes, levels = _tiff_levels(out)
        assert axes == "ZYX" and len(levels) == 1
    else:
        attrs, levels = _zarr_levels(out)
        assert [a["name"] for a in attrs["multiscales"][0]["axes"]] == ["z", "y", "x"]
        assert _same_bytes(levels[1], volume[::2, ::2, ::2])
    assert _same_bytes(levels[0], volume)

    for shape in ((70, 290), (3, 70, 290)):
        mask = RNG.random(shape) > 0.5
        out = export_labels(mask, tmp_path / f"mask{len(shape)}{suffix}")
        level = _tiff_levels(out)[1][0] if suffix == ".tif" else _zarr_levels(out)[1][0]
        assert _same_bytes(level, mask.astype(np.uint8))


# -- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".ome.zarr", ".tif"])
def test_an_existing_output_is_refused_unless_overwrite(tmp_path, suffix):
    first, second = _labels((64, 64), np.uint8), _labels((64, 64), np.uint8)
    out = export_labels(first, tmp_path / f"cells{suffix}")
    before = tree(out)
    with pytest.raises(OutputError, match=r"exists; pass overwrite=True to replace it") as err:
        export_labels(second, out)
    assert len(str(err.value).split(". ")) == 1  # one sentence
    assert tree(out) == before
    export_labels(second, out, overwrite=True)
    level = _tiff_levels(out)[1][0] if suffix == ".tif" else _zarr_levels(out)[1][0]
    assert _same_bytes(level, second)
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]


def test_a_folder_not_written_by_napari_seamless_is_never_replaced(tmp_path):
    other = _zarr(tmp_path / "other.zarr", _labels((8, 8), np.uint8), (8, 8))
    before = tree(tmp_path / "other.zarr")
    with pytest.raises(OutputError, match="not written by napari-seamless"):
        export_labels(np.asarray(other), tmp_path / "other.zarr", overwrite=True)
    assert tree(tmp_path / "other.zarr") == before


def test_the_input_is_never_written_over(tmp_path):
    labels = _labels((128, 96), np.uint8)
    out = export_labels(labels, tmp_path / "result.ome.zarr")
    before = tree(out)
    level0 = zarr.open_group(str(out), mode="r")["0"]
    for data in (level0, [level0]):
        with pytest.raises(OutputError, match="labels are read from .*export to another path"):
            export_labels(data, out, overwrite=True)
    raw = tmp_path / "raw.tif"  # a memory map of a file named like an output
    labels.tofile(raw)
    mapped = np.memmap(raw, dtype=labels.dtype, mode="r", shape=labels.shape)
    with pytest.raises(OutputError, match="labels are read from"):
        export_labels(mapped, raw, overwrite=True)
    assert tree(out) == before and raw.read_bytes() == labels.tobytes()


@pytest.mark.parametrize(
    ("data", "path", "error", "words"),
    [
        (np.zeros((8, 8), np.uint8), "cells.png", OutputError, "must end in .ome.zarr"),
        (np.zeros((8, 8), np.float32), "cells.tif", ArgumentError, "integers or booleans"),
        (np.zeros((2, 2, 8, 8), np.uint8), "cells.tif", ArgumentError, "2D (Y, X) or 3D"),
        (np.zeros((0, 8), np.uint8), "cells.tif", ArgumentError, "2D (Y, X) or 3D"),
        ([], "cells.tif", ArgumentError, "list of levels is empty"),
        ([[1, 2], [3, 4]], "cells.tif", ArgumentTypeError, "got list"),
        ("labels.tif", "cells.tif", ArgumentTypeError, "got str"),
    ],
)
def test_bad_arguments_are_one_sentence_errors(tmp_path, data, path, error, words):
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        export_labels(data, tmp_path / path)
    assert list(tmp_path.iterdir()) == []


def test_axes_or_min_size_that_do_not_fit_are_refused(tmp_path):
    with pytest.raises(ArgumentError, match="axes 'cyx' do not fit"):
        export_labels(np.zeros((4, 8, 8), np.uint8), tmp_path / "c.tif", axes="cyx")
    with pytest.raises(ArgumentError, match="min_size must be at least 1"):
        export_labels(np.zeros((8, 8), np.uint8), tmp_path / "c.tif", min_size=0)


# -- failures -------------------------------------------------------------------------------


class _FailsOnOneBlock:
    """A zarr-like source whose read of the block holding ``bad`` (y, x) raises."""

    def __init__(self, data, chunks, bad):
        self.data, self.chunks, self.bad = data, chunks, bad
        self.shape, self.dtype = data.shape, data.dtype
        self.reads = 0

    def __getitem__(self, key):
        self.reads += 1
        (y0, y1, _), (x0, x1, _) = (k.indices(n) for k, n in zip(key, self.shape, strict=True))
        y, x = self.bad
        if y0 <= y < y1 and x0 <= x < x1:
            raise OSError("disk read failed")
        return self.data[key]


@pytest.mark.parametrize("suffix", [".ome.zarr", ".tif"])
@pytest.mark.parametrize("existing", [False, True])
def test_a_failure_mid_way_leaves_nothing_half_written(tmp_path, suffix, existing):
    labels = _labels((900, 700), np.uint16)
    out = tmp_path / f"result{suffix}"
    if existing:
        export_labels(_labels((50, 40), np.uint16), out)
    before = folder(tmp_path)
    source = _FailsOnOneBlock(labels, (256, 256), bad=(700, 600))  # past the first blocks
    with pytest.raises(OSError, match="disk read failed"):
        export_labels(source, out, overwrite=True)
    assert source.reads > 1  # it failed mid-way, not at the start
    assert folder(tmp_path) == before  # the old output (if any) as it was, no partial, no lock


def test_interrupt_leaves_nothing_either(tmp_path):
    class Interrupted(_FailsOnOneBlock):
        def __getitem__(self, key):
            if self.reads == 3:
                raise KeyboardInterrupt
            return super().__getitem__(key)

    with pytest.raises(KeyboardInterrupt):
        export_labels(Interrupted(_labels((600, 600)), (128, 128), (-1, -1)), tmp_path / "i.tif")
    assert list(tmp_path.iterdir()) == []


# -- the TIFF record ------------------------------------------------------------------------


def test_tiff_record_is_json_in_the_first_description_and_absent_elsewhere(tmp_path):
    levels = [np.zeros((300, 300), np.uint8), np.zeros((150, 150), np.uint8)]
    marked = write_tiff_pyramid(
        levels,
        tmp_path / "marked.tif",
        axes="YX",
        kind="labels",
        settings={"tile": (512, 512), "path": tmp_path / "in é.tif", "nan": float("nan")},
    )
    with tifffile.TiffFile(marked) as tif:
        meta = json.loads(tif.pages.first.description)
        assert tif.series[0].axes == "YX" and len(tif.series[0].levels) == 2
    assert meta["axes"] == "YX" and meta[OWNER_KEY]["kind"] == "labels"
    record = read_tiff_record(marked)
    assert record["record_version"] == 1
    assert record["settings"] == {
        "tile": [512, 512],
        "path": str(tmp_path / "in é.tif"),
        "nan": "nan",
    }

    write_tiff_pyramid(levels, tmp_path / "unmarked.tif", axes="YX")
    tifffile.imwrite(tmp_path / "plain.tif", levels[0])
    tifffile.imwrite(tmp_path / "imagej.tif", levels[0], imagej=True)
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    (tmp_path / "text.tif").write_text('{"napari_seamless": {"kind": "labels"}}')
    for name in ("unmarked.tif", "plain.tif", "imagej.tif", "broken.tif", "text.tif", "none.tif"):
        assert read_tiff_record(tmp_path / name) is None, name


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_cli_3d_label_tiff_is_level_0_with_the_record(tmp_path):
    """A 3D result larger than one pyramid level: a TIFF cannot halve Z, so level 0 only."""
    import torch

    from napari_seamless.cli import main
    from napari_seamless.models import UNet

    torch.manual_seed(0)
    model = tmp_path / "unet3d.pt"
    torch.jit.script(UNet(width=2, depth=2, ndim=3).eval()).save(str(model))
    image = tmp_path / "volume.tif"
    tifffile.imwrite(image, RNG.random((8, 300, 24)).astype(np.float32))
    out = tmp_path / "labels.tif"
    argv = ["predict", str(image), "-o", str(out), "--model", str(model), "--axes", "ZYX"]
    assert main([*argv, "--tile", "88", "-q"]) == 0
    axes, levels = _tiff_levels(out)
    assert axes == "ZYX" and [level.shape for level in levels] == [(8, 300, 24)]
    record = read_tiff_record(out)
    assert record["kind"] == "labels" and record["settings"]["model"] == str(model)
