"""The reader (io.read_image, select_planes): every input a user brings is read as they
meant it, or refused in one sentence naming the file (issue 7, input checking)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tifffile
import zarr

from napari_seamless.cli import main
from napari_seamless.io import InputError, parse_index, read_image, select_planes


def _pixels(shape, seed=0, dtype=np.uint16):
    return np.random.default_rng(seed).integers(0, 4000, shape).astype(dtype)


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "nothing was said"
    assert not any("Traceback" in line for line in err), err
    errors = [line for line in err if line.startswith("seamless: error:")]
    assert len(errors) == 1, err
    return errors[0]


# ----------------------------------------------------------------- unreadable files


def _make_bad(tmp_path, kind):
    good = _pixels((300, 300))
    path = tmp_path / "in.tif"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("sample,value\n1,2\n")
    elif kind == "png":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    elif kind in ("truncated-zlib", "corrupt-zlib", "truncated-raw"):
        compression = None if kind == "truncated-raw" else "zlib"
        tifffile.imwrite(
            path, good, compression=compression, tile=(128, 128) if compression else None
        )
        data = bytearray(path.read_bytes())
        if kind.startswith("truncated"):
            data = data[: len(data) // 2]
        else:
            for i in range(len(data) // 3, len(data) // 3 + 300):
                data[i] ^= 0x5A
        path.write_bytes(bytes(data))
    elif kind == "not-zarr-folder":
        path = tmp_path / "in.zarr"
        path.mkdir()
        (path / "notes.txt").write_text("x")
    elif kind == "other-suffix":
        path = tmp_path / "in.png"
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    elif kind == "missing":
        path = tmp_path / "nowhere.tif"
    return path


BAD = {
    "empty": "empty (0 bytes)",
    "text": "text file",
    "png": "PNG file",
    "truncated-zlib": "cannot read",
    "corrupt-zlib": "cannot read",
    "truncated-raw": "cannot read",
    "not-zarr-folder": "not a zarr array or group",
    "other-suffix": "not a TIFF file or a zarr folder",
    "missing": "does not exist",
}


@pytest.mark.parametrize("kind", list(BAD))
def test_unreadable_input_is_one_line_naming_the_file(tmp_path, capsys, kind):
    path = _make_bad(tmp_path, kind)
    with pytest.raises(InputError, match=re.escape(BAD[kind])):
        read_image(path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    out = tmp_path / "out.tif"
    assert main(["predict", str(path), "-o", str(out), "-q"]) == 2
    line = _one_error_line(capsys)
    assert path.name in line and BAD[kind] in line
    assert not out.exists()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_a_header_declaring_more_than_memory_is_refused_before_reading(tmp_path):
    # a 512-byte file whose header says 200000 x 200000 uint16 (75 GiB): refused, not read
    path = tmp_path / "huge.tif"
    tifffile.imwrite(path, np.zeros((256, 256), np.uint16), tile=(128, 128), compression="zlib")
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tif.pages[0].tags["ImageWidth"].overwrite(200_000)
        tif.pages[0].tags["ImageLength"].overwrite(200_000)
    with pytest.raises(InputError, match=r"declares \(200000, 200000\) uint16 .* more than"):
        read_image(path)


@pytest.mark.parametrize(
    ("shape", "dtype", "message"),
    [((0, 64), np.uint8, "no pixels"), ((4, 64), np.complex64, "complex64")],
)
def test_zarr_without_pixels_or_numbers_is_refused(tmp_path, shape, dtype, message):
    path = tmp_path / "a.zarr"
    zarr.open_array(str(path), mode="w", shape=shape, dtype=dtype)
    with pytest.raises(InputError, match=message):
        read_image(path)


# ----------------------------------------------------------------- choices told


def test_several_series_are_told_and_any_can_be_chosen(tmp_path, capsys):
    path = tmp_path / "two.tif"
    a, b = _pixels((200, 200), 1), _pixels((2, 160, 160), 2)
    with tifffile.TiffWriter(path) as w:
        w.write(a)
        w.write(b)
    first = read_image(path)
    np.testing.assert_array_equal(first.data, a)
    assert any("holds 2 series" in n and "--series" in n for n in first.notes)
    np.testing.assert_array_equal(read_image(path, series=1).data, b)
    assert read_image(path, series=0).notes == ()  # chosen explicitly: nothing to tell
    with pytest.raises(InputError, match="has 2 series"):
        read_image(path, series=2)


def test_pyramid_levels_are_told_and_any_can_be_chosen(tmp_path):
    path = tmp_path / "pyramid.ome.tif"
    full = _pixels((512, 512), 3)
    with tifffile.TiffWriter(path) as w:
        w.write(full, subifds=2, tile=(128, 128), compression="zlib")
        w.write(full[::2, ::2], subfiletype=1, tile=(128, 128), compression="zlib")
        w.write(full[::4, ::4], subfiletype=1, tile=(128, 128), compression="zlib")
    image = read_image(path)
    np.testing.assert_array_equal(image.data, full)
    assert any("3 pyramid levels" in n and "--level" in n for n in image.notes)
    np.testing.assert_array_equal(read_image(path, level=2).data, full[::4, ::4])
    with pytest.raises(InputError, match="--level 3 is not one of them"):
        read_image(path, level=3)


def test_zarr_groups_name_their_arrays_and_ome_zarr_gives_level_0(tmp_path):
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    raw = _pixels((64, 80), 4)
    group.create_array("raw", shape=raw.shape, dtype=raw.dtype)[:] = raw
    group.create_array("masks/cells", shape=(64, 80), dtype=np.uint8)
    with pytest.raises(InputError, match=r"holding 2 arrays \(raw .*masks/cells .*--array"):
        read_image(tmp_path / "g.zarr")
    np.testing.assert_array_equal(read_image(tmp_path / "g.zarr", array="raw").data[:], raw)
    with pytest.raises(InputError, match="no array 'nope'"):
        read_image(tmp_path / "g.zarr", array="nope")

    ome = zarr.open_group(str(tmp_path / "ome.zarr"), mode="w")
    full = _pixels((2, 96, 96), 5)
    for k, a in enumerate([full, full[:, ::2, ::2]]):
        ome.create_array(str(k), shape=a.shape, dtype=a.dtype)[:] = a
    axes = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"}]
    axes.append({"name": "x", "type": "space"})
    datasets = [{"path": str(k), "coordinateTransformations": []} for k in range(2)]
    ome.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": datasets}]
    image = read_image(tmp_path / "ome.zarr")
    assert image.axes == "CYX" and image.shape == (2, 96, 96)
    assert any("2 levels" in n for n in image.notes)
    assert read_image(tmp_path / "ome.zarr", level=1).shape == (2, 48, 48)


def test_metadata_axes_are_read(tmp_path):
    tifffile.imwrite(
        tmp_path / "stack.tif", _pixels((5, 64, 64)), imagej=True, metadata={"axes": "ZYX"}
    )
    assert read_image(tmp_path / "stack.tif").axes == "ZYX"
    tifffile.imwrite(tmp_path / "rgb.tif", _pixels((64, 64, 3), dtype=np.uint8), photometric="rgb")
    assert read_image(tmp_path / "rgb.tif").axes == "YXC"
    tifffile.imwrite(tmp_path / "plain.tif", _pixels((5, 64, 64)))  # shaped: axes unknown
    assert read_image(tmp_path / "plain.tif").axes is None


# ----------------------------------------------------------------- planes of N-D data


def test_select_planes_matches_numpy_indexing_and_stays_lazy():
    data = _pixels((3, 4, 32, 48))
    plane, axes = select_planes(data, "TZYX", parse_index("t=2, Z=-1"))
    assert axes == "YX"
    np.testing.assert_array_equal(plane, data[2, 3])
    lazy = zarr.array(data, chunks=(1, 1, 32, 48))
    plane, axes = select_planes(lazy, "TZYX", {"T": 1})
    assert axes == "ZYX" and not isinstance(plane, np.ndarray)  # nothing read yet
    np.testing.assert_array_equal(np.asarray(plane), data[1])
    with pytest.raises(InputError, match="outside axis Z of length 4"):
        select_planes(data, "TZYX", {"Z": 4})
    with pytest.raises(InputError, match="names axis C, but the image axes are TZYX"):
        select_planes(data, "TZYX", {"C": 0})
    for bad in ("T3", "Q=1", "T=x", "T=1,T=2"):
        with pytest.raises(InputError):
            parse_index(bad)


def test_cli_zstack_plane_equals_that_plane_alone(tmp_path, capsys):
    from napari_seamless.data import nuclei

    img = nuclei()[:256, :256]
    stack = np.stack([img[::-1], img, img.T])
    tifffile.imwrite(tmp_path / "stack.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "plane.tif", img)
    out = tmp_path / "stack_labels.tif"
    # a Z-stack with a 2D model: refused, with advice that the CLI can follow
    assert main(["predict", str(tmp_path / "stack.tif"), "-o", str(out), "-q"]) == 2
    line = _one_error_line(capsys)
    assert "--index Z=" in line
    assert (
        main(["predict", str(tmp_path / "stack.tif"), "-o", str(out), "-q", "--index", "Z=1"]) == 0
    )
    ref = tmp_path / "plane_labels.tif"
    assert main(["predict", str(tmp_path / "plane.tif"), "-o", str(ref), "-q"]) == 0
    np.testing.assert_array_equal(tifffile.imread(out), tifffile.imread(ref))
    # a file that does not name its axes: --index needs --axes
    tifffile.imwrite(tmp_path / "plain.tif", np.concatenate([stack, stack]))  # 6 planes: QYX
    capsys.readouterr()
    assert (
        main(
            [
                "predict",
                str(tmp_path / "plain.tif"),
                "-o",
                str(out),
                "-q",
                "--overwrite",
                "--index",
                "Z=1",
            ]
        )
        == 2
    )
    assert "pass them with --axes" in _one_error_line(capsys)
    # ... and without --index the 6 planes are not taken for channels without a word
    assert main(["predict", str(tmp_path / "plain.tif"), "-o", str(out), "-q", "--overwrite"]) == 2
    assert "If these 6 are Z planes or time points" in _one_error_line(capsys)


def test_cli_2d_zarr_array_equals_the_same_pixels_as_tiff(tmp_path):
    from napari_seamless.data import nuclei

    img = nuclei()[:200, :300]
    zarr.open_array(
        str(tmp_path / "in.zarr"), mode="w", shape=img.shape, dtype=img.dtype, chunks=(64, 64)
    )[:] = img
    tifffile.imwrite(tmp_path / "in.tif", img)
    for name in ("in.zarr", "in.tif"):
        args = ["predict", str(tmp_path / name), "-o", str(tmp_path / f"{name}.out.tif"), "-q"]
        assert main([*args, "--tile", "224"]) == 0
    np.testing.assert_array_equal(
        tifffile.imread(tmp_path / "in.zarr.out.tif"), tifffile.imread(tmp_path / "in.tif.out.tif")
    )
