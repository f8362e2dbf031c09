"""Tile geometry for exact tiled inference: zones of responsibility (ZoR), halos, windows.

Pure numpy; no torch, no Qt. Implements the partitioning of Majurski & Bajcsy (2021),
section 4: the output image is cut into non-overlapping ZoRs laid out from the top-left
corner with stride = ZoR; each ZoR is computed from an input *window* (the tile) that adds a
halo on every side. ZoR and halo are multiples of F, the network's total downsampling
factor (paper Eq. 2), and the image is reflection-padded once to a multiple of F.

One axis, padded image of length ``P`` (a multiple of F)::

    0        a-halo     a            a+zor      a+zor+halo         P
    |----------[=========|############|==========]-----------------|
               ^ window start                    ^ window stop
                         ^ ZoR: the only part of the model output kept

    window = [max(a - halo, 0), min(a + zor + halo, P))     (border="clip")
    crop   = ZoR expressed in window coordinates

All sizes are in pixels, per spatial axis, in the order of the image's spatial axes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import product
from typing import Literal

import numpy as np

from .errors import ArgumentError, SeamlessError

__all__ = [
    "Tile",
    "TileGrid",
    "TileSizeError",
    "RegionError",
    "valid_tile_sizes",
    "pad_to_multiple",
    "parse_region",
    "region_tile",
    "viewport_order",
]

Border = Literal["clip", "shift"]


class TileSizeError(SeamlessError, ValueError):
    """A tile (window) size that cannot give exact tiling, with the nearest valid sizes."""


class RegionError(SeamlessError, ValueError):
    """A region that is empty, malformed or not inside the image."""


def _per_axis(value: int | Sequence[int], ndim: int, name: str) -> tuple[int, ...]:
    if np.isscalar(value):
        out = (int(value),) * ndim  # type: ignore[arg-type]
    else:
        out = tuple(int(v) for v in value)  # type: ignore[union-attr]
    if len(out) != ndim:
        raise ArgumentError(f"{name} has {len(out)} values but the image has {ndim} spatial axes")
    return out


def _tile(index: int, grid_index: tuple[int, ...], parts: Sequence[tuple[slice, ...]]) -> Tile:
    """A :class:`Tile` from per-axis ``(window, zor, crop)`` slices."""
    return Tile(
        index=index,
        grid_index=tuple(grid_index),
        window=tuple(p[0] for p in parts),
        zor=tuple(p[1] for p in parts),
        crop=tuple(p[2] for p in parts),
    )


def _fmt(values: tuple[int, ...]) -> str:
    """Per-axis sizes for people: ``"96"`` when all axes agree, else ``"96 x 64"``."""
    return str(values[0]) if len(set(values)) == 1 else " x ".join(map(str, values))


def valid_tile_sizes(halo: int, factor: int, around: int, count: int = 2) -> list[int]:
    """Return valid tile sizes near ``around`` for one axis.

    A valid tile (window) size is a multiple of ``factor`` (F) and larger than ``2 * halo``,
    so that the ZoR ``tile - 2 * halo`` is a positive multiple of F (paper Eq. 2).

    Parameters
    ----------
    halo : int
        Halo in pixels (a multiple of ``factor``).
    factor : int
        F, the network's total downsampling factor, in pixels.
    around : int
        The requested tile size in pixels.
    count : int
        How many sizes to return on each side of ``around``.

    Returns
    -------
    list of int
        Sorted valid tile sizes in pixels, closest to ``around`` first on each side.
    """
    smallest = 2 * halo + factor
    candidates = range(smallest, max(around, smallest) + (count + 1) * factor, factor)
    below = [s for s in candidates if s < around][-count:]
    above = [s for s in candidates if s > around][:count]
    return below + above


def pad_to_multiple(shape: Sequence[int], factor: Sequence[int]) -> tuple[int, ...]:
    """Return ``shape`` rounded up per axis to a multiple of ``factor`` (pixels)."""
    return tuple(int(math.ceil(s / f) * f) for s, f in zip(shape, factor, strict=True))


@dataclass(frozen=True)
class Tile:
    """One tile of a :class:`TileGrid`: a ZoR and the input window that computes it.

    All slices are in pixels along the spatial axes of the image, in axis order.

    Attributes
    ----------
    index : int
        Position of the tile in the grid's C-order (row-major) enumeration.
    grid_index : tuple of int
        Tile coordinates in the grid, one per spatial axis.
    window : tuple of slice
        Input window in the coordinates of the F-padded image. May extend past the image
        (into the reflection padding) but never past the padded shape.
    zor : tuple of slice
        Zone of responsibility in image coordinates, clipped to the (unpadded) image.
        The ZoRs of a grid partition the image exactly.
    crop : tuple of slice
        The part of the model output for ``window`` that belongs to ``zor``, in window
        coordinates: ``output[(..., *crop)]`` is written to ``result[(..., *zor)]``.
    """

    index: int
    grid_index: tuple[int, ...]
    window: tuple[slice, ...]
    zor: tuple[slice, ...]
    crop: tuple[slice, ...]

    @property
    def window_shape(self) -> tuple[int, ...]:
        """Shape of the input window in pixels."""
        return tuple(s.stop - s.start for s in self.window)

    @property
    def zor_shape(self) -> tuple[int, ...]:
        """Shape of the (clipped) ZoR in pixels."""
        return tuple(s.stop - s.start for s in self.zor)


@dataclass(frozen=True)
class TileGrid:
    """The exact tiling of an image: ZoRs with stride = ZoR from the origin, plus halos.

    Parameters
    ----------
    shape : tuple of int
        Spatial shape of the image in pixels (2D ``(Y, X)`` or 3D ``(Z, Y, X)``, any ndim).
    tile : int or tuple of int
        Input window (tile) size per axis in pixels, ``tile = ZoR + 2 * halo`` (paper
        section 4.1). Must be a multiple of ``factor`` and larger than ``2 * halo``.
    halo : int or tuple of int
        Halo per axis in pixels; must be a multiple of ``factor`` (paper Eq. 2).
    factor : int or tuple of int
        F per axis: the network's total downsampling factor in pixels.
    border : {"clip", "shift"}
        What to do with windows that reach past the F-padded image. ``"clip"`` cuts them
        at the padded image's edge (window shapes vary at the border); ``"shift"`` moves
        them inward, keeping every start a multiple of F, so that all windows share one
        shape (needed for batching). Both give exact results.

    Raises
    ------
    TileSizeError
        If a tile size is not a multiple of F or not larger than ``2 * halo``; the message
        names the nearest valid sizes.
    ArgumentError
        If the halo is not a non-negative multiple of F, or shapes and axes disagree (a
        :class:`ValueError` too).

    Examples
    --------
    >>> grid = TileGrid((1000, 1300), tile=512, halo=96, factor=16)
    >>> grid.zor_size, grid.grid_shape, len(grid)
    ((320, 320), (4, 5), 20)
    """

    shape: tuple[int, ...]
    tile: tuple[int, ...]
    halo: tuple[int, ...]
    factor: tuple[int, ...]
    border: Border = "clip"

    def __init__(
        self,
        shape: Sequence[int],
        tile: int | Sequence[int],
        halo: int | Sequence[int],
        factor: int | Sequence[int] = 1,
        border: Border = "clip",
    ) -> None:
        shape_t = tuple(int(s) for s in shape)
        ndim = len(shape_t)
        if ndim == 0 or any(s < 1 for s in shape_t):
            raise ArgumentError(f"image shape must have positive sizes, got {shape_t}")
        factor_t = _per_axis(factor, ndim, "factor")
        halo_t = _per_axis(halo, ndim, "halo")
        tile_t = _per_axis(tile, ndim, "tile")
        if border not in ("clip", "shift"):
            raise ArgumentError(f"border must be 'clip' or 'shift', got {border!r}")
        for ax, (h, f) in enumerate(zip(halo_t, factor_t, strict=True)):
            if f < 1:
                raise ArgumentError(f"F must be >= 1, got {f} on axis {ax}")
            if h < 0 or h % f:
                raise ArgumentError(
                    f"halo {h} on axis {ax} is not a non-negative multiple of F={f}; "
                    f"use {math.ceil(max(h, 0) / f) * f} (paper Eq. 2: round the halo up to F)"
                )
        for ax, (t, h, f) in enumerate(zip(tile_t, halo_t, factor_t, strict=True)):
            if t % f or t <= 2 * h:
                why = (
                    f"is not a multiple of F={f}"
                    if t % f
                    else f"leaves no ZoR: it must be larger than 2 * halo = {2 * h}"
                )
                sizes = ", ".join(str(s) for s in valid_tile_sizes(h, f, t))
                raise TileSizeError(
                    f"tile size {t} on axis {ax} {why}. Valid tile sizes are multiples of "
                    f"F={f} from {2 * h + f} up; nearest: {sizes}."
                )
        object.__setattr__(self, "shape", shape_t)
        object.__setattr__(self, "tile", tile_t)
        object.__setattr__(self, "halo", halo_t)
        object.__setattr__(self, "factor", factor_t)
        object.__setattr__(self, "border", border)

    @property
    def ndim(self) -> int:
        """Number of spatial axes."""
        return len(self.shape)

    @property
    def padded_shape(self) -> tuple[int, ...]:
        """Image shape reflection-padded up to a multiple of F, in pixels."""
        return pad_to_multiple(self.shape, self.factor)

    @property
    def zor_size(self) -> tuple[int, ...]:
        """ZoR size (= stride) per axis in pixels: ``tile - 2 * halo``."""
        return tuple(t - 2 * h for t, h in zip(self.tile, self.halo, strict=True))

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """Number of tiles along each axis."""
        return tuple(
            math.ceil(p / z) for p, z in zip(self.padded_shape, self.zor_size, strict=True)
        )

    def __len__(self) -> int:
        return int(np.prod(self.grid_shape))

    @property
    def overhead(self) -> float:
        """Compute overhead: window volume / ZoR volume, ``(tile / ZoR) ** ndim``.

        This is the factor of extra pixels each tile computes for its useful output
        (before border tiles, which are clipped, are taken into account).
        """
        return float(np.prod([t / z for t, z in zip(self.tile, self.zor_size, strict=True)]))

    @property
    def computed_pixels(self) -> int:
        """Pixels the model computes over all windows (border windows clipped), one pass."""
        total = 1
        for axis in range(self.ndim):
            w = self._axis_tile
            total *= sum(
                w(axis, k)[0].stop - w(axis, k)[0].start for k in range(self.grid_shape[axis])
            )
        return int(total)

    @property
    def image_overhead(self) -> float:
        """Compute overhead for this image: :attr:`computed_pixels` / image pixels.

        Unlike :attr:`overhead` (one full tile), it counts clipped border windows and
        the F-padding: 1.0 would be whole-image inference; large images approach
        :attr:`overhead` from below or above.
        """
        return self.computed_pixels / float(np.prod(self.shape, dtype=np.float64))

    def boundaries(self, axis: int) -> list[int]:
        """ZoR boundaries along ``axis`` in image pixels, including 0 and the image size."""
        z = self.zor_size[axis]
        n = self.shape[axis]
        return sorted({min(k * z, n) for k in range(self.grid_shape[axis])} | {n})

    def _axis_tile(self, axis: int, k: int) -> tuple[slice, slice, slice]:
        z, h, p, t = self.zor_size[axis], self.halo[axis], self.padded_shape[axis], self.tile[axis]
        n = self.shape[axis]
        a = k * z
        b = min(a + z, p)
        w0, w1 = max(a - h, 0), min(b + h, p)
        if self.border == "shift" and w1 - w0 < t:
            if p <= t:
                w0, w1 = 0, p
            elif w0 == 0:
                w1 = t
            else:
                w0 = p - t
                w1 = p
        zor = slice(a, min(b, n))
        crop = slice(a - w0, min(b, n) - w0)
        return slice(w0, w1), zor, crop

    def tile_at(self, grid_index: Sequence[int]) -> Tile:
        """Return the tile at grid coordinates ``grid_index`` (one integer per axis).

        Raises
        ------
        IndexError
            If ``grid_index`` is outside :attr:`grid_shape`.
        """
        gi = tuple(int(k) for k in grid_index)
        if len(gi) != self.ndim or any(
            not 0 <= k < n for k, n in zip(gi, self.grid_shape, strict=False)
        ):
            raise IndexError(f"tile {gi} outside grid of shape {self.grid_shape}")
        parts = [self._axis_tile(ax, k) for ax, k in enumerate(gi)]
        return _tile(int(np.ravel_multi_index(gi, self.grid_shape)), gi, parts)

    def __iter__(self) -> Iterator[Tile]:
        for gi in product(*(range(n) for n in self.grid_shape)):
            yield self.tile_at(gi)

    def __getitem__(self, index: int) -> Tile:
        if not -len(self) <= index < len(self):
            raise IndexError(f"tile index {index} out of range for {len(self)} tiles")
        return self.tile_at(np.unravel_index(index % len(self), self.grid_shape))

    def describe(self) -> str:
        """One line for people: ZoR, halo, F, tile count and overhead."""
        fmt = _fmt
        return (
            f"tile {fmt(self.tile)} px = ZoR {fmt(self.zor_size)} + 2 x halo {fmt(self.halo)}; "
            f"F {fmt(self.factor)}; {count(len(self), 'tile')} ({' x '.join(map(str, self.grid_shape))}); "
            f"overhead {self.overhead:.2f}x"
        )


def parse_region(
    region: str | Sequence[slice] | Sequence[Sequence[int]], shape: Sequence[int]
) -> tuple[slice, ...]:
    """A region of an image as one ``slice`` per spatial axis, checked against ``shape``.

    Parameters
    ----------
    region : str, sequence of slice or sequence of (start, stop)
        ``"Y0:Y1,X0:X1"`` (pixels, stop excluded; an empty side means the image edge, as
        in ``"512:,:1024"``), or one ``slice`` or ``(start, stop)`` pair per axis.
    shape : sequence of int
        Spatial shape of the image in pixels.

    Returns
    -------
    tuple of slice
        Non-empty ``[start, stop)`` per axis, inside the image, steps of 1.

    Raises
    ------
    RegionError
        If the region is malformed, has the wrong number of axes, is empty, or reaches
        outside the image; the message gives the image's extent.
    """
    shape = tuple(int(s) for s in shape)
    extent = ",".join(f"0:{n}" for n in shape)
    text = region if isinstance(region, str) else None
    parts: list = []
    if isinstance(region, str):
        for part in region.replace(" ", "").split(","):
            bounds = part.split(":")
            if len(bounds) != 2:
                raise RegionError(
                    f"region {region!r} is not START:STOP per axis; write e.g. {extent} "
                    f"(the whole image)"
                )
            try:
                parts.append(tuple(int(b) if b else None for b in bounds))
            except ValueError:
                raise RegionError(
                    f"region {region!r} has a bound that is not an integer; write e.g. {extent}"
                ) from None
    else:
        for item in region:
            if isinstance(item, slice):
                if item.step not in (None, 1):
                    raise RegionError(f"region slices must have step 1, got {item}")
                parts.append((item.start, item.stop))
            else:
                start, stop = item
                parts.append((start, stop))
    if len(parts) != len(shape):
        raise RegionError(
            f"region {text or region!r} has {len(parts)} axes but the image has {len(shape)} "
            f"(shape {shape}); give one START:STOP per axis, e.g. {extent}"
        )
    out = []
    for (start, stop), n in zip(parts, shape, strict=True):
        a = 0 if start is None else int(start)
        b = n if stop is None else int(stop)
        if not 0 <= a < b <= n:
            raise RegionError(
                f"region {text or region!r} is empty or outside the image, whose extent is "
                f"{extent} (pixels, stop excluded); choose a region inside it"
            )
        out.append(slice(a, b))
    return tuple(out)


def region_tile(
    shape: Sequence[int],
    region: Sequence[slice],
    halo: int | Sequence[int],
    factor: int | Sequence[int],
) -> Tile:
    """One window that computes ``region`` exactly: the region's F-aligned box plus the halo.

    The box is widened outward to multiples of F (window starts must be multiples of F,
    paper section 4.1), then the halo is added on each side and the window is clipped to
    the F-padded image, as a border tile of a :class:`TileGrid` is. With the exact halo,
    ``output[(..., *tile.crop)]`` equals whole-image inference on ``region``: the
    *region reference* of a big image, at the cost of one window.

    Parameters
    ----------
    shape : sequence of int
        Spatial shape of the image (pixels).
    region : sequence of slice
        ``[start, stop)`` per axis inside the image (see :func:`parse_region`).
    halo, factor : int or sequence of int
        Halo and F per axis in pixels; the halo a multiple of F.

    Returns
    -------
    Tile
        ``index`` 0, ``grid_index`` all 0; ``zor`` is ``region``.

    Raises
    ------
    ArgumentError
        If the halo is not a non-negative multiple of F.
    RegionError
        If the region is not inside the image.
    """
    shape_t = tuple(int(s) for s in shape)
    region_t = parse_region(region, shape_t)
    ndim = len(shape_t)
    halo_t, factor_t = _per_axis(halo, ndim, "halo"), _per_axis(factor, ndim, "factor")
    padded = pad_to_multiple(shape_t, factor_t)
    window, crop = [], []
    for r, h, f, p in zip(region_t, halo_t, factor_t, padded, strict=True):
        if f < 1 or h < 0 or h % f:
            raise ArgumentError(
                f"halo {h} is not a non-negative multiple of F={f}; use "
                f"{math.ceil(max(h, 0) / f) * f} (paper Eq. 2)"
            )
        a, b = (r.start // f) * f, min(math.ceil(r.stop / f) * f, p)
        w0, w1 = max(a - h, 0), min(b + h, p)
        window.append(slice(w0, w1))
        crop.append(slice(r.start - w0, r.stop - w0))
    return Tile(0, (0,) * ndim, tuple(window), region_t, tuple(crop))


def viewport_order(grid: TileGrid, box: Sequence[slice]) -> list[int]:
    """Tile indices with the tiles whose ZoR meets ``box`` first, nearest the box centre first.

    For streaming into a viewer: what the user looks at is computed first, then the rest,
    spreading outward from the view (the order is a permutation of ``range(len(grid))``,
    ready for :meth:`Predictor.run(order=...) <napari_seamless.engine.Predictor.run>`).

    Parameters
    ----------
    grid : TileGrid
        The grid of the run.
    box : sequence of slice
        The visible region in image pixels, one ``[start, stop)`` per axis (clipped to the
        image; it may lie partly or wholly outside).

    Returns
    -------
    list of int
        Every tile index once: first those whose ZoR intersects ``box``, then the others,
        each group sorted by the distance (pixels) from the ZoR centre to the box centre,
        ties in row-major order.
    """
    if len(box) != grid.ndim:
        raise ArgumentError(f"box has {len(box)} axes but the grid has {grid.ndim}")
    centre = np.array([(b.start + b.stop) / 2.0 for b in box])
    keyed = []
    for t in grid:
        meets = all(z.start < b.stop and b.start < z.stop for z, b in zip(t.zor, box, strict=True))
        mid = np.array([(z.start + z.stop) / 2.0 for z in t.zor])
        keyed.append((not meets, float(np.linalg.norm(mid - centre)), t.index))
    return [index for *_, index in sorted(keyed)]


def count(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless ``n`` is 1: ``count(1, "tile") == "1 tile"``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
