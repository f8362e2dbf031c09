"""napari readers for what napari-seamless writes: OME-Zarr images and labels, label TIFFs.

An OME-Zarr image is a zarr group whose attributes hold ``multiscales`` (NGFF 0.4, zarr
v2 ``.zattrs``) or ``ome.multiscales`` (NGFF 0.5, zarr v3 ``zarr.json``). A group with
``image-label`` opens as a multiscale Labels layer, any other as an Image layer (one per
channel when the axes have ``c``). The levels are the zarr arrays themselves: nothing is
read until napari draws it, so a 20000 x 20000 result opens at once.

A TIFF opens here only when it carries the labels record napari-seamless writes into
level 0's description (``seamless predict`` and :func:`napari_seamless.io.export_labels`;
see :func:`napari_seamless.stores.read_tiff_record`): then as a Labels layer, in memory
when small enough to edit, else lazy and multiscale. Any other TIFF is declined (the
reader returns None), for napari's own reader.

No Qt; napari itself is not imported either.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["get_reader", "get_tiff_reader", "read_labels_tiff", "read_ome_zarr"]

LayerData = tuple[Any, dict[str, Any], str]

#: label TIFFs with level 0 at most this many pixels a side (and at most
#: :data:`PLAIN_MAX_BYTES`) open as one plain, editable array; larger ones lazy, multiscale
PLAIN_MAX_SIDE = 4096
#: most bytes of level 0 a label TIFF may have to open as one plain array
PLAIN_MAX_BYTES = 2**29


def _ome_attrs(group: Any) -> dict[str, Any] | None:
    """The OME attributes of a zarr group (0.5's ``ome`` block, or 0.4's top level)."""
    attrs = dict(group.attrs)
    ome = attrs.get("ome")
    if isinstance(ome, dict) and ome.get("multiscales"):
        return ome
    if attrs.get("multiscales"):
        return attrs
    return None


def _open(path: Path) -> tuple[Any, dict[str, Any]] | None:
    """The group and its OME attributes, or None if ``path`` is not an OME-Zarr image."""
    import zarr

    if not path.is_dir():
        return None
    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception:  # noqa: BLE001 - not a zarr group (zarr's errors vary by version)
        return None
    ome = _ome_attrs(group)
    if ome is None:
        return None
    image = ome["multiscales"][0]
    paths = [d.get("path") for d in image.get("datasets", []) if isinstance(d, dict)]
    if not paths or not all(isinstance(p, str) and p in group.array_keys() for p in paths):
        return None
    return group, ome


def get_reader(path: str | list[str]) -> Callable[[Any], list[LayerData]] | None:
    """The reader for ``path`` if it is an OME-Zarr image folder, else None (declined).

    Parameters
    ----------
    path : str or list of str
        What napari asks to open; a list is accepted when it holds one path.

    Returns
    -------
    callable or None
        :func:`read_ome_zarr`, or None so that napari asks another reader.
    """
    if isinstance(path, list | tuple):
        if len(path) != 1:
            return None
        path = path[0]
    if not isinstance(path, str | Path) or _open(Path(path)) is None:
        return None
    return read_ome_zarr


def _axis_names(axes: Any, ndim: int) -> list[str]:
    names = [str(a.get("name") if isinstance(a, dict) else a).lower() for a in axes or []]
    return names if len(names) == ndim else []


def _transform(image: dict[str, Any], kind: str, ndim: int) -> list[float] | None:
    """Level 0's ``scale`` or ``translation`` (of the image, then of the dataset)."""
    values = None
    for where in (image.get("datasets", [{}])[0], image):
        for t in where.get("coordinateTransformations", []) or []:
            if isinstance(t, dict) and t.get("type") == kind and len(t.get(kind, [])) == ndim:
                v = [float(x) for x in t[kind]]
                if values is None:
                    values = v
                else:  # the image-level transform applies after the dataset's
                    values = (
                        [a * b for a, b in zip(values, v, strict=True)]
                        if kind == "scale"
                        else [a + b for a, b in zip(values, v, strict=True)]
                    )
    return values


def read_ome_zarr(path: str | list[str]) -> list[LayerData]:
    """Read an OME-Zarr image folder as one napari layer, its levels lazy.

    Parameters
    ----------
    path : str or list of str
        The folder (or a list holding it).

    Returns
    -------
    list of (data, kwargs, layer_type)
        One tuple. ``data`` is the list of level arrays (zarr, shape ``(..., Y, X)``,
        level 0 the full resolution) or the one array when there is one level.
        ``layer_type`` is ``"labels"`` for a group with ``image-label`` metadata, else
        ``"image"`` (with ``channel_axis`` when the axes name ``c``). ``kwargs`` holds
        ``name``, ``multiscale`` and, from level 0's metadata, ``scale`` and
        ``translate`` (channel axis left out).

    Raises
    ------
    ValueError
        If ``path`` is not an OME-Zarr image (napari only calls this after
        :func:`get_reader` accepted the path).
    """
    if isinstance(path, list | tuple):
        path = path[0]
    path = Path(path)
    opened = _open(path)
    if opened is None:
        raise ValueError(f"{path} is not an OME-Zarr image")
    group, ome = opened
    image = ome["multiscales"][0]
    levels = [group[d["path"]] for d in image["datasets"]]
    ndim = len(levels[0].shape)
    axes = _axis_names(image.get("axes"), ndim)
    name = image.get("name") or path.name.removesuffix(".zarr").removesuffix(".ome")
    kwargs: dict[str, Any] = {"name": name, "multiscale": len(levels) > 1}
    scale = _transform(image, "scale", ndim)
    translate = _transform(image, "translation", ndim)
    labels = "image-label" in ome
    channel = axes.index("c") if "c" in axes and not labels else None
    if channel is not None:
        kwargs["channel_axis"] = channel
        scale = scale and scale[:channel] + scale[channel + 1 :]
        translate = translate and translate[:channel] + translate[channel + 1 :]
    if scale:
        kwargs["scale"] = scale
    if translate:
        kwargs["translate"] = translate
    record = dict(group.attrs).get("napari_seamless")
    if isinstance(record, dict):  # the settings of the run that made it, as for label TIFFs
        kwargs["metadata"] = {"napari_seamless": record}
    data = levels if len(levels) > 1 else levels[0]
    return [(data, kwargs, "labels" if labels else "image")]


def _one_path(path: Any) -> Path | None:
    """The one path napari asks about (a str, a Path, or a list holding one), else None."""
    if isinstance(path, list | tuple):
        if len(path) != 1:
            return None
        path = path[0]
    return Path(path) if isinstance(path, str | Path) else None


def _labels_record(path: Path) -> dict[str, Any] | None:
    """The labels record of a TIFF napari-seamless wrote, or None for any other file."""
    from ..stores.tiff import read_tiff_record

    if path.suffix.lower() not in (".tif", ".tiff") or not path.is_file():
        return None
    record = read_tiff_record(path)
    return record if record is not None and record.get("kind") == "labels" else None


def get_tiff_reader(path: str | list[str]) -> Callable[[Any], list[LayerData]] | None:
    """The reader for ``path`` if it is a label TIFF napari-seamless wrote, else None.

    Only the file's header and first page are read to decide. Every TIFF without the
    labels record (any TIFF another program wrote, a probabilities TIFF) is declined.

    Parameters
    ----------
    path : str or list of str
        What napari asks to open; a list is accepted when it holds one path.

    Returns
    -------
    callable or None
        :func:`read_labels_tiff`, or None so that napari reads the file another way.
    """
    one = _one_path(path)
    if one is None or _labels_record(one) is None:
        return None
    return read_labels_tiff


def read_labels_tiff(path: str | list[str]) -> list[LayerData]:
    """Read a label TIFF napari-seamless wrote as one napari Labels layer.

    Parameters
    ----------
    path : str or list of str
        The file (or a list holding it).

    Returns
    -------
    list of (data, kwargs, layer_type)
        One tuple with ``layer_type`` ``"labels"``. ``data`` is level 0 as a numpy array
        (shape ``(Y, X)`` or ``(Z, Y, X)``, the file's integer dtype) when it has at most
        :data:`PLAIN_MAX_SIDE` pixels a side and :data:`PLAIN_MAX_BYTES` bytes, so the
        layer can be painted and saved; otherwise the pyramid levels as lazy, read-only
        zarr arrays over the file's tiles (level 0 first; ``multiscale`` True), or the
        one lazy array when the file has a single level. ``kwargs`` holds ``name`` (the
        file name without ``.tif``), ``multiscale`` and ``metadata`` with the file's
        record under ``"napari_seamless"`` (the settings of the run that wrote it).

    Raises
    ------
    ValueError
        If ``path`` is not a label TIFF of napari-seamless (napari only calls this after
        :func:`get_tiff_reader` accepted the path).
    """
    import tifffile

    from ..io import OWNER_KEY

    one = _one_path(path)
    record = _labels_record(one) if one is not None else None
    if one is None or record is None:
        raise ValueError(f"{path} is not a label TIFF written by napari-seamless")
    name = one.name[: -len(one.suffix)]
    kwargs: dict[str, Any] = {"name": name, "metadata": {OWNER_KEY: record}}
    tif = tifffile.TiffFile(one)
    try:
        series = tif.series[0]
        levels = series.levels
        first = levels[0]
        if max(first.shape[-2:]) <= PLAIN_MAX_SIDE and first.nbytes <= PLAIN_MAX_BYTES:
            kwargs["multiscale"] = False
            return [(series.asarray(level=0), kwargs, "labels")]
        import zarr

        if len(levels) == 1:
            data: Any = zarr.open(series.aszarr(level=0), mode="r")
        else:
            group = zarr.open(series.aszarr(), mode="r")
            data = [group[str(k)] for k in range(len(levels))]
        tif = None  # the zarr store now owns the open file, as long as the layer lives
        kwargs["multiscale"] = isinstance(data, list)
        return [(data, kwargs, "labels")]
    finally:
        if tif is not None:
            tif.close()
