"""OME-Zarr output written tile by tile, with a record of the tiles that are done.

An :class:`OmeZarrStore` is a :class:`~napari_seamless.stores.Store` over an OME-Zarr
multiscale image (NGFF 0.4, zarr format 2, the layout most readers accept): arrays
``"0"``, ``"1"``, ... hold the pyramid of :func:`~napari_seamless.stores.pyramid_shapes`,
and every level is updated as each tile lands (nearest decimation, as
:class:`~napari_seamless.stores.PyramidStore`). Chunks follow the ZoR, so at the fine levels
each tile owns whole chunks. The group's attributes hold, besides ``multiscales`` (and
``image-label`` for labels), the package's own record under ``io.OWNER_KEY``::

    {"record_version": 1, "kind": "labels", "complete": false,
     "settings": {...the run's settings...},
     "tiles_total": 625, "tiles_done": {"count": 311, "bits": "<base64 of packbits>"}}

zarr's local store writes every key (chunks and metadata) to a temporary file and renames
it, so a process killed at any moment leaves the old or the new record and whole chunks;
since a tile is marked done only after all its levels are written, every tile the record
calls done is on disk. :meth:`OmeZarrStore.open` reads it back to resume a run.

No torch, no Qt.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import ArgumentError, SeamlessError
from ..io import OWNER_KEY
from .pyramid import PyramidStore, pyramid_shapes

__all__ = ["Level0Writer", "OmeZarrError", "OmeZarrStore", "level_chunks"]

RECORD_VERSION = 1
NGFF_VERSION = "0.4"
#: chunk size (pixels per spatial axis) of the levels where a ZoR no longer halves evenly
COARSE_CHUNK = 256
#: the finest chunk a ZoR is halved down to before :data:`COARSE_CHUNK` takes over
MIN_ALIGNED_CHUNK = 64

Kind = Literal["labels", "image"]


class OmeZarrError(SeamlessError, ValueError):
    """The path is not an OME-Zarr output of napari-seamless, or its record is unreadable."""


def level_chunks(
    zor: Sequence[int], k: int, level_shape: Sequence[int], coarse: int = COARSE_CHUNK
) -> tuple[int, ...]:
    """Spatial chunk shape of pyramid level ``k`` for a ZoR of ``zor`` pixels.

    Per axis: ``zor // 2**k`` while that divides evenly and is at least
    :data:`MIN_ALIGNED_CHUNK` (64) pixels, so a tile's share of the level is whole chunks;
    otherwise ``coarse``. Never larger than the level itself.

    Parameters
    ----------
    zor : sequence of int
        ZoR size per spatial axis in level-0 pixels.
    k : int
        Pyramid level.
    level_shape : sequence of int
        Spatial shape of level ``k`` in pixels.
    coarse : int
        Chunk size for axes where the ZoR does not halve evenly down to level ``k``.

    Returns
    -------
    tuple of int
        Chunk shape, one entry per spatial axis.

    Examples
    --------
    >>> level_chunks((512, 512), 2, (2500, 2500))
    (128, 128)
    >>> level_chunks((512, 320), 3, (1250, 1250))
    (64, 256)
    """
    step = 2**k
    out = []
    for z, n in zip(zor, level_shape, strict=True):
        c = z // step if z % step == 0 and z // step >= MIN_ALIGNED_CHUNK else coarse
        out.append(max(1, min(int(c), int(n))))
    return tuple(out)


def _jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists, numpy scalars numbers)."""

    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, Path):
            return str(o)
        raise TypeError(f"{type(o).__name__} is not JSON serialisable")

    try:
        return json.loads(json.dumps(value, default=default))
    except (TypeError, ValueError) as exc:
        raise ArgumentError(f"the settings to record must be JSON-like: {exc}") from None


def _encode_done(done: np.ndarray) -> dict[str, Any]:
    bits = np.packbits(done.astype(bool))
    return {"count": int(done.sum()), "bits": base64.b64encode(bits.tobytes()).decode("ascii")}


def _decode_done(record: Any, n: int, where: Path) -> np.ndarray:
    bad = OmeZarrError(
        f"the done-tile record of {where} cannot be read; compute it again without resume"
    )
    if not isinstance(record, Mapping):
        raise bad
    try:
        raw = base64.b64decode(record["bits"], validate=True)
        count = int(record["count"])
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise bad from None
    if len(raw) != math.ceil(n / 8):
        raise bad
    done = np.unpackbits(np.frombuffer(raw, np.uint8), count=n).astype(bool)
    if int(done.sum()) != count:
        raise bad
    return done


def _parse_axes(axes: str | None, shape: tuple[int, ...], kind: str) -> str:
    if axes is None:
        if len(shape) not in (2, 3):
            raise ArgumentError(
                f"cannot guess the axes of shape {shape}; pass axes='yx', 'zyx', 'cyx' or 'czyx'"
            )
        axes = "yx" if len(shape) == 2 else "zyx"
    axes = axes.lower()
    spatial = axes[1:] if axes.startswith("c") else axes
    if spatial not in ("yx", "zyx") or len(axes) != len(shape):
        raise ArgumentError(
            f"axes {axes!r} do not fit shape {shape}: use 'yx' or 'zyx', with a leading 'c' "
            "for an image with channels, one letter per axis"
        )
    if kind == "labels" and axes.startswith("c"):
        raise ArgumentError("labels have no channel axis; use axes 'yx' or 'zyx'")
    return axes


class OmeZarrStore:
    """Write a result tile by tile into an OME-Zarr multiscale image on disk.

    Make one with :meth:`create` (a new output) or :meth:`open` (an existing one, to
    resume); do not call the constructor directly. Write each ZoR with :meth:`write`, then
    :meth:`mark_done` its tile index; :meth:`finish` at the end. A ``with`` block flushes
    the record on exit (it does not finish).

    Attributes
    ----------
    path : Path
        The OME-Zarr folder.
    levels : list of zarr.Array
        The pyramid, level 0 first; shape ``(*lead, *spatial_k)`` with ``lead`` ``(C,)``
        for an image with channels, else ``()``. Usable as a napari multiscale layer.
    kind : {"labels", "image"}
        Labels carry ``image-label`` metadata.
    axes : str
        Axis letters of the arrays, e.g. ``"yx"``, ``"zyx"``, ``"cyx"``.
    settings : dict
        The run settings recorded at creation, as JSON reads them back (lists, not tuples),
        for a resuming caller to compare with its own (see :meth:`differences`).
    tiles_total : int
        Number of tiles of the run.

    Notes
    -----
    Coarse levels share chunks between tiles, and chunk writes read, modify and replace
    whole chunks: one process (or thread) should write a given store at a time.
    """

    def __init__(
        self,
        group: Any,
        path: Path,
        *,
        levels: list[Any],
        kind: Kind,
        axes: str,
        settings: dict[str, Any],
        done: np.ndarray,
        complete: bool,
        throttle: float,
    ) -> None:
        self.group, self.path = group, path
        self.levels = levels
        self.kind, self.axes = kind, axes
        self.settings = settings
        self.tiles_total = int(done.size)
        self.throttle = float(throttle)
        self._done = done
        self._complete = complete
        self._pyramid = PyramidStore(levels)
        self._dirty = False
        self._last_flush = time.monotonic()

    # -- making one ------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | Path,
        shape: Sequence[int],
        dtype: Any,
        *,
        chunks: int | Sequence[int],
        n_tiles: int,
        kind: Kind = "labels",
        axes: str | None = None,
        min_size: int = 256,
        attrs: Mapping[str, Any] | None = None,
        name: str | None = None,
        source_image: str | None = None,
        throttle: float = 0.5,
    ) -> OmeZarrStore:
        """Create a new, empty (zero-filled) OME-Zarr output at ``path``.

        Anything already at ``path`` is replaced; write to a fresh path (e.g. the one
        :func:`napari_seamless.io.output_transaction` yields) and swap it in.

        Parameters
        ----------
        path : str or Path
            The OME-Zarr folder to write (zarr format 2, NGFF 0.4).
        shape : sequence of int
            Shape of level 0, one entry per letter of ``axes`` (pixels; channels first).
        dtype : numpy dtype
            Element type, e.g. ``uint8``/``uint32`` labels or ``float32`` probabilities.
        chunks : int or sequence of int
            The ZoR size per spatial axis in pixels (see :func:`level_chunks`).
        n_tiles : int
            Number of tiles of the run (length of the done-tile record).
        kind : {"labels", "image"}
            ``"labels"`` adds ``image-label`` metadata; ``"image"`` (e.g. probabilities)
            may have a leading channel axis.
        axes : str, optional
            ``"yx"`` or ``"zyx"``, with a leading ``"c"`` for an image with channels;
            by default ``"yx"`` or ``"zyx"`` from ``len(shape)``.
        min_size : int
            The pyramid stops once its largest spatial axis is at most this many pixels
            (:func:`~napari_seamless.stores.pyramid_shapes`).
        attrs : mapping, optional
            Run settings to record (model, tile, halo, F, mode, input path, shape and dtype,
            grid shape, ...); JSON-like values (tuples, numpy scalars and paths are
            converted).
        name : str, optional
            Name of the multiscale image in the metadata.
        source_image : str, optional
            Relative path of the image these labels belong to (``image-label.source``).
        throttle : float
            :meth:`mark_done` rewrites the record at most once per this many seconds;
            :meth:`flush` writes it at once.

        Returns
        -------
        OmeZarrStore
            With no tile done.

        Raises
        ------
        ArgumentError
            If axes and shape disagree, labels get a channel axis, ``chunks`` or
            ``n_tiles`` are not positive, or ``attrs`` is not JSON-like (a
            :class:`ValueError` too).
        """
        import zarr

        path = Path(path)
        shape_t = tuple(int(s) for s in shape)
        if kind not in ("labels", "image"):
            raise ArgumentError(f"kind must be 'labels' or 'image', got {kind!r}")
        axes = _parse_axes(axes, shape_t, kind)
        lead = shape_t[:1] if axes.startswith("c") else ()
        spatial = shape_t[len(lead) :]
        if any(s < 1 for s in shape_t):
            raise ArgumentError(f"shape must have positive sizes, got {shape_t}")
        zor = (chunks,) * len(spatial) if isinstance(chunks, int) else tuple(chunks)
        zor = tuple(int(c) for c in zor)
        if len(zor) != len(spatial) or any(c < 1 for c in zor):
            raise ArgumentError(
                f"chunks must be one positive ZoR size per spatial axis ({len(spatial)}), "
                f"got {chunks!r}"
            )
        if int(n_tiles) < 1:
            raise ArgumentError(f"n_tiles must be at least 1, got {n_tiles}")
        settings = _jsonable(dict(attrs or {}))
        dtype = np.dtype(dtype)

        group = zarr.open_group(str(path), mode="w", zarr_format=2)
        levels = []
        for k, s in enumerate(pyramid_shapes(spatial, min_size)):
            levels.append(
                group.create_array(
                    str(k),
                    shape=lead + s,
                    chunks=(1,) * len(lead) + level_chunks(zor, k, s),
                    dtype=dtype,
                    fill_value=0,
                    chunk_key_encoding={"name": "v2", "separator": "/"},
                )
            )
        multiscale: dict[str, Any] = {
            "version": NGFF_VERSION,
            "axes": [{"name": a, "type": "channel" if a == "c" else "space"} for a in axes],
            "datasets": [
                {
                    "path": str(k),
                    "coordinateTransformations": [
                        {"type": "scale", "scale": [1.0] * len(lead) + [2.0**k] * len(spatial)}
                    ],
                }
                for k in range(len(levels))
            ],
            "type": "decimation",
            "metadata": {
                "description": "level k holds pixel j * 2**k of level 0 (nearest "
                "decimation, no smoothing), written tile by tile by napari-seamless"
            },
        }
        if name:
            multiscale["name"] = name
        meta: dict[str, Any] = {"multiscales": [multiscale]}
        if kind == "labels":
            label: dict[str, Any] = {"version": NGFF_VERSION}
            if source_image:
                label["source"] = {"image": source_image}
            meta["image-label"] = label
        store = cls(
            group,
            path,
            levels=levels,
            kind=kind,
            axes=axes,
            settings=settings,
            done=np.zeros(int(n_tiles), bool),
            complete=False,
            throttle=throttle,
        )
        meta[OWNER_KEY] = store._record()
        group.attrs.update(meta)
        return store

    @classmethod
    def open(
        cls, path: str | Path, mode: Literal["r+", "r"] = "r+", throttle: float = 0.5
    ) -> OmeZarrStore:
        """Open an OME-Zarr output that :meth:`create` made, e.g. to resume a run.

        Parameters
        ----------
        path : str or Path
            The OME-Zarr folder.
        mode : {"r+", "r"}
            ``"r+"`` to write more tiles, ``"r"`` to inspect only.
        throttle : float
            As in :meth:`create`.

        Returns
        -------
        OmeZarrStore
            With :attr:`done`, :attr:`settings` and :attr:`complete` as recorded.

        Raises
        ------
        OmeZarrError
            If ``path`` is not an OME-Zarr output of napari-seamless, or its levels or its
            done-tile record cannot be read (a :class:`ValueError` too).
        """
        import zarr

        path = Path(path)
        not_ours = OmeZarrError(
            f"{path} is not an OME-Zarr output written by napari-seamless, so it cannot be "
            "resumed; choose another output or start without resume"
        )
        if not path.is_dir():
            raise not_ours
        try:
            group = zarr.open_group(str(path), mode=mode)
            attrs = dict(group.attrs)
        except Exception:  # any failure to read the group means: not ours
            raise not_ours from None
        own = attrs.get(OWNER_KEY)
        multiscales = attrs.get("multiscales")
        if not isinstance(own, Mapping) or not isinstance(multiscales, list) or not multiscales:
            raise not_ours
        unreadable = OmeZarrError(
            f"the metadata of {path} cannot be read; compute it again without resume"
        )
        try:
            ms = multiscales[0]
            axes = "".join(a["name"] for a in ms["axes"])
            levels = [group[d["path"]] for d in ms["datasets"]]
            n = int(own["tiles_total"])
            kind = own["kind"]
            settings = own.get("settings", {})
            complete = bool(own.get("complete", False))
        except (KeyError, TypeError, ValueError, IndexError):
            raise unreadable from None
        if kind not in ("labels", "image") or n < 1 or not isinstance(settings, Mapping):
            raise unreadable
        done = _decode_done(own.get("tiles_done"), n, path)
        return cls(
            group,
            path,
            levels=levels,
            kind=kind,
            axes=axes,
            settings=dict(settings),
            done=done,
            complete=complete,
            throttle=throttle,
        )

    # -- writing ---------------------------------------------------------------------------

    def write(self, zor: tuple[slice, ...], block: np.ndarray) -> None:
        """Store ``block`` at ``zor`` in every pyramid level.

        Parameters
        ----------
        zor : tuple of slice
            Spatial slices in level-0 pixels.
        block : numpy.ndarray
            Shape ``(*lead, *zor_shape)``: ``(C, ...)`` for an image with channels; cast
            to the store's dtype.
        """
        self._pyramid.write(zor, block)

    def fill_coarse(self, zors: Sequence[tuple[slice, ...]]) -> None:
        """Fill the coarse levels of ZoRs written into level 0 elsewhere.

        See :meth:`~napari_seamless.stores.PyramidStore.fill_coarse`; used with
        :meth:`level0_writer`.
        """
        self._pyramid.fill_coarse(zors)

    def level0_writer(self, zors: Sequence[tuple[slice, ...]]) -> Level0Writer:
        """A picklable writer of level 0 for other processes (a cluster's workers).

        Each ZoR must cover whole level-0 chunks, so that two processes writing two ZoRs
        never rewrite the same chunk; :meth:`create` makes chunks of the ZoR size.

        Parameters
        ----------
        zors : sequence of tuple of slice
            Every ZoR the other processes will write (spatial, level-0 pixels).

        Returns
        -------
        Level0Writer
            Its ``write(zor, block)`` writes level 0 only; fill the coarse levels with
            :meth:`fill_coarse` in this process once a ZoR is written.

        Raises
        ------
        ArgumentError
            If a ZoR does not cover whole chunks (a :class:`ValueError` too).
        """
        level0 = self.levels[0]
        lead = level0.ndim - len(zors[0]) if zors else 0
        chunks, shape = tuple(level0.chunks[lead:]), tuple(level0.shape[lead:])
        for zor in zors:
            for sl, c, n in zip(zor, chunks, shape, strict=True):
                if sl.start % c or (sl.stop % c and sl.stop != n):
                    raise ArgumentError(
                        f"the ZoR {zor} does not cover whole chunks {chunks} of {self.path}; "
                        "processes writing it could overwrite each other's pixels. Write into "
                        "an output made for this grid (chunks = the ZoR size)"
                    )
        return Level0Writer(str(Path(self.path).resolve() / self.levels[0].basename))

    def mark_done(self, index: int) -> None:
        """Record that tile ``index`` is written at every level.

        Call it only after the tile's :meth:`write`. The record on disk is rewritten at
        most once per :attr:`throttle` seconds; :meth:`flush` writes it now.

        Parameters
        ----------
        index : int
            The tile's index in the grid (``Tile.index``), ``0 <= index < tiles_total``.

        Raises
        ------
        ArgumentError
            If ``index`` is out of range (a :class:`ValueError` too).
        """
        i = int(index)
        if not 0 <= i < self.tiles_total:
            raise ArgumentError(f"tile index {index} is outside 0..{self.tiles_total - 1}")
        if not self._done[i]:
            self._done[i] = True
            self._dirty = True
        if self._dirty and time.monotonic() - self._last_flush >= self.throttle:
            self.flush()

    def flush(self) -> None:
        """Write the done-tile record to disk now (atomically: old or new, never half)."""
        self.group.attrs.update({OWNER_KEY: self._record()})
        self._dirty = False
        self._last_flush = time.monotonic()

    def finish(self) -> None:
        """Mark the output complete and write the record."""
        self._complete = True
        self.flush()

    def __enter__(self) -> OmeZarrStore:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._dirty:
            self.flush()

    # -- reading the record ----------------------------------------------------------------

    @property
    def done(self) -> set[int]:
        """Indices of the tiles recorded (or marked, not yet flushed) as done."""
        return {int(i) for i in np.flatnonzero(self._done)}

    @property
    def missing(self) -> list[int]:
        """Indices of the tiles still to compute, ascending."""
        return [int(i) for i in np.flatnonzero(~self._done)]

    @property
    def complete(self) -> bool:
        """Whether :meth:`finish` was called (the run ended normally)."""
        return self._complete

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of level 0 (``(*lead, *spatial)``)."""
        return tuple(self.levels[0].shape)

    @property
    def dtype(self) -> np.dtype:
        """Element type of every level."""
        return np.dtype(self.levels[0].dtype)

    def differences(self, settings: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
        """Recorded settings that differ from ``settings``, for a resume check.

        Parameters
        ----------
        settings : mapping
            The settings of the run about to resume, as passed to :meth:`create`'s
            ``attrs`` (converted the same way).

        Returns
        -------
        dict
            ``{key: (recorded, given)}`` for every key either side has with unequal
            values (``None`` for a missing one); empty when they agree.
        """
        given = _jsonable(dict(settings))
        keys = sorted(set(given) | set(self.settings))
        return {
            k: (self.settings.get(k), given.get(k))
            for k in keys
            if self.settings.get(k) != given.get(k)
        }

    def mismatch(self, settings: Mapping[str, Any], n_tiles: int) -> tuple[str, Any, Any] | None:
        """The first reason this output cannot be resumed by a run of these settings.

        Parameters
        ----------
        settings : mapping
            The settings of the run about to resume (as :meth:`differences` takes them).
        n_tiles : int
            Its number of tiles.

        Returns
        -------
        tuple of (str, recorded, given) or None
            The first differing setting (``"tiles"`` for the tile count) with the two
            values; None when the run may resume here.
        """
        differ = self.differences(settings)
        if differ:
            key, (was, now) = next(iter(differ.items()))
            return key, was, now
        if self.tiles_total != int(n_tiles):
            return "tiles", self.tiles_total, int(n_tiles)
        return None

    def _record(self) -> dict[str, Any]:
        return {
            "record_version": RECORD_VERSION,
            "kind": self.kind,
            "complete": self._complete,
            "settings": self.settings,
            "tiles_total": self.tiles_total,
            "tiles_done": _encode_done(self._done),
        }


class Level0Writer:
    """Writes ZoRs into level 0 of an OME-Zarr output from any process.

    Made by :meth:`OmeZarrStore.level0_writer`; pickles as its path and opens the array on
    first use.

    Parameters
    ----------
    path : str
        The level-0 zarr array (absolute; on storage every writer sees).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._array: Any = None

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (Level0Writer, (self.path,))

    def write(self, zor: tuple[slice, ...], block: np.ndarray) -> None:
        """Store ``block`` (shape ``(*lead, *zor_shape)``) at ``zor`` in level 0."""
        if self._array is None:
            import zarr

            self._array = zarr.open_array(self.path, mode="r+")
        self._array[(Ellipsis, *zor)] = block
