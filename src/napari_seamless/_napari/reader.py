"""napari reader for OME-Zarr images and labels, such as the ones ``seamless predict`` writes.

An OME-Zarr image is a zarr group whose attributes hold ``multiscales`` (NGFF 0.4, zarr
v2 ``.zattrs``) or ``ome.multiscales`` (NGFF 0.5, zarr v3 ``zarr.json``). A group with
``image-label`` opens as a multiscale Labels layer, any other as an Image layer (one per
channel when the axes have ``c``). The levels are the zarr arrays themselves: nothing is
read until napari draws it, so a 20000 x 20000 result opens at once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["get_reader", "read_ome_zarr"]

LayerData = tuple[Any, dict[str, Any], str]


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
    data = levels if len(levels) > 1 else levels[0]
    return [(data, kwargs, "labels" if labels else "image")]
