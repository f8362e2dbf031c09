"""Stacks and time series: how a layer's axes are read, and a run over its planes.

A 2D model on a Z-stack or a time series runs plane by plane; a 3D model runs on each
volume of a (T, Z, Y, X) series. Which axis is which is never guessed silently:
:func:`interpretations` lists every reading of an array's shape that fits the model,
the likeliest first, each with a sentence a person can check (:meth:`AxesChoice.describe`),
and :class:`StackRun` runs the exact tiled engine on the planes of one of them, one
plane after another, as one stream of :class:`~napari_seamless.engine.TileEvent`.

Axis letters: ``T`` time, ``Z`` depth, ``C`` channels, ``Y`` and ``X`` the image plane
(the field's OME convention). Nothing here imports Qt or napari.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any

import numpy as np

from ..grid import count
from .predictor import EventStream, TileEvent


@dataclass(frozen=True)
class AxesChoice:
    """One reading of an array's axes for a model: which are spatial, channel, stack.

    Attributes
    ----------
    axes : str
        One letter per axis of the data, e.g. ``"ZYX"``, ``"TCYX"``, ``"YXC"`` (RGB).
    shape : tuple of int
        The data's shape, in pixels (and planes, channels).
    ndim : int
        Spatial axes of the model (2: ``YX``; 3: ``ZYX``), the last ``ndim`` non-channel
        axes of ``axes``.
    """

    axes: str
    shape: tuple[int, ...]
    ndim: int

    @property
    def spatial(self) -> str:
        """The model's axes, ``"YX"`` or ``"ZYX"``."""
        return "ZYX"[-self.ndim :]

    @property
    def stack(self) -> str:
        """The axes run one position at a time (e.g. ``"Z"`` for a 2D model on a Z-stack)."""
        spatial = [i for i, a in enumerate(self.axes) if a != "C"][-self.ndim :]
        return "".join(a for i, a in enumerate(self.axes) if a != "C" and i not in spatial)

    @property
    def stack_shape(self) -> tuple[int, ...]:
        """Length of each stack axis (empty for a single image)."""
        return tuple(self.shape[self.axes.index(a)] for a in self.stack)

    @property
    def planes(self) -> int:
        """How many separate model inputs (planes or volumes) the data holds."""
        return int(np.prod(self.stack_shape, dtype=np.int64))

    @property
    def labels_shape(self) -> tuple[int, ...]:
        """Shape of the labels of all planes: the data's shape without its channel axis."""
        return tuple(n for a, n in zip(self.axes, self.shape, strict=True) if a != "C")

    @property
    def channels(self) -> int:
        """Input channels the data gives the model (1 without a ``C`` axis)."""
        return self.shape[self.axes.index("C")] if "C" in self.axes else 1

    def plane_axes(self) -> str:
        """Axes of one plane as the model reads it (``axes`` without the stack axes)."""
        return "".join(a for a in self.axes if a not in self.stack)

    def positions(self) -> list[dict[str, int]]:
        """Every position along the stack axes, in C order: ``[{"Z": 0}, {"Z": 1}, ...]``."""
        return [
            dict(zip(self.stack, p, strict=True))
            for p in product(*(range(n) for n in self.stack_shape))
        ]

    def labels_index(self, position: dict[str, int]) -> tuple[int, ...]:
        """Index of one plane's labels in the :attr:`labels_shape` array."""
        return tuple(position[a] for a in self.axes if a in self.stack)

    def describe(self) -> str:
        """The reading in words, e.g. ``"ZYX: 31 Z planes, each run by the 2D model"``."""
        model = f"{self.ndim}D model"
        chans = f", {self.channels} channels" if "C" in self.axes else ""
        if not self.stack:
            what = "one volume" if self.ndim == 3 else "one image"
            return f"{self.axes}: {what}{chans}, {model}"
        parts = " x ".join(
            f"{n} {'time points' if a == 'T' else a + ' planes'}"
            for a, n in zip(self.stack, self.stack_shape, strict=True)
        )
        each = "volume" if self.ndim == 3 else "plane"
        return f"{self.axes}: {parts}{chans}, {model} per {each}"


def interpretations(
    shape: Sequence[int], ndim: int, in_channels: int, rgb: bool = False
) -> list[AxesChoice]:
    """Every reading of an array of ``shape`` that a model can run, likeliest first.

    The last ``ndim`` non-channel axes are spatial (napari and OME order). Axes before
    them are stack axes, named from the right ``Z`` (for a 2D model) then ``T``, or
    the channel axis ``C`` where its length is the model's ``in_channels``; an RGB(A)
    layer's last axis is ``C``. A 2D model on a 3-axis array is offered both as a
    Z-stack and as a time series (the same run, said differently), so the user picks
    the words that are true.

    Parameters
    ----------
    shape : sequence of int
        The data's shape (napari layer data, level 0).
    ndim : int
        Spatial axes of the model (2 or 3).
    in_channels : int
        Input channels of the model.
    rgb : bool
        Whether the layer is RGB(A): then its last axis holds the channels.

    Returns
    -------
    list of AxesChoice
        Empty when no reading fits (too few axes, or no axis with ``in_channels``
        entries): the caller says why (:func:`no_reading`).
    """
    shape = tuple(int(n) for n in shape)
    spatial = "ZYX"[-ndim:]
    choices: list[AxesChoice] = []
    if rgb:
        lead = len(shape) - 1 - ndim
        if lead < 0 or shape[-1] != in_channels:
            return []
        for names in _stack_names(lead, ndim):
            choices.append(AxesChoice(names + spatial + "C", shape, ndim))
        return choices
    lead = len(shape) - ndim
    if lead < 0:
        return []
    if in_channels == 1:
        return [AxesChoice(names + spatial, shape, ndim) for names in _stack_names(lead, ndim)]
    for c in range(lead):  # each leading axis of the right length may be the channels
        if shape[c] != in_channels:
            continue
        for names in _stack_names(lead - 1, ndim):
            choices.append(AxesChoice(names[:c] + "C" + names[c:] + spatial, shape, ndim))
    return choices


def _stack_names(n: int, ndim: int) -> list[str]:
    """Letters for ``n`` stack axes, named from the plane outward: ``Z`` (2D models) then ``T``.

    Empty when there are more stack axes than names (5-D data with a 2D model).
    """
    if n == 0:
        return [""]
    letters = "ZT" if ndim == 2 else "T"  # nearest the plane first
    if n > len(letters):
        return []
    if ndim == 2 and n == 1:
        return ["Z", "T"]  # a Z-stack or a time series: the same run; the user says which
    return ["".join(reversed(letters[:n]))]


def no_reading(shape: Sequence[int], ndim: int, in_channels: int, rgb: bool = False) -> str:
    """Why no reading of ``shape`` fits the model: one sentence with what to do."""
    shape = tuple(int(n) for n in shape)
    spatial = "ZYX"[-ndim:]
    if rgb and shape[-1] != in_channels:
        return (
            f"the model expects {in_channels} input channel(s) but the RGB image has "
            f"{shape[-1]}: choose a model trained for {shape[-1]} channels, or convert the "
            "image (e.g. Image > Convert to grayscale) first"
        )
    need = ndim + (in_channels > 1 and not rgb)  # a multichannel model needs its C axis too
    if len(shape) - int(rgb) < need:
        chans = f" with {in_channels} channels (C{spatial})" if need > ndim else f" ({spatial})"
        n = len(shape) - int(rgb)
        return (
            f"the model is {ndim}D{chans} and needs {need} axes, but the image (shape "
            f"{shape}) has {n}, fewer axes: choose a {max(n - (need > ndim), 1)}D model"
        )
    lead = len(shape) - int(rgb) - ndim - (in_channels > 1 and not rgb)
    names = 2 if ndim == 2 else 1
    if lead > names:
        return (
            f"the image (shape {shape}) has {lead} axes besides the {spatial} the {ndim}D "
            f"model sees{' and its channels' if in_channels > 1 else ''}; at most {names} "
            f"({'T and Z' if names == 2 else 'T'}) can be run one after another: select a "
            "sub-stack first (seamless predict --index picks planes)"
        )
    return (
        f"the model expects {in_channels} input channel(s) but no axis of the image (shape "
        f"{shape}) before {spatial} has {in_channels} entries: choose a model trained for "
        "the image's channels, or split or merge its channels first"
    )


class StackRun(EventStream):
    """The exact tiled run on the planes of a stack, one plane after another.

    One :meth:`Predictor.run <napari_seamless.engine.Predictor.run>` per position (the
    plane's own normalisation statistics, as ``seamless predict --index`` gives), chained
    into one stream of events: ``done`` and ``total`` count tiles over all the planes,
    ``tile`` is the tile of the plane in flight (:attr:`position`). Each plane's result
    equals whole-image inference on that plane alone.

    Parameters
    ----------
    predictor : Predictor
        The model and its halo and F.
    data : array-like
        The image, shape ``choice.shape`` (numpy, zarr or dask; read lazily per plane).
    choice : AxesChoice
        How its axes are read.
    store : callable
        ``store(position) -> Store``: where the plane at ``position`` is written (its
        ``write(zor, scores)`` receives ``(classes, *zor_shape)`` blocks).
    tile : int
        Window size in pixels.
    tiles_per_plane : int
        Tiles of one plane's grid (the same for every plane).
    positions : sequence of dict, optional
        The planes to run (default: all, in C order), e.g. ``[{"Z": 12}]``.
    **run_kwargs
        Passed on to ``Predictor.run`` (mode, halo, output, normalization...).
    """

    def __init__(
        self,
        predictor: Any,
        data: Any,
        choice: AxesChoice,
        store: Callable[[dict[str, int]], Any],
        tile: int,
        tiles_per_plane: int,
        positions: Sequence[dict[str, int]] | None = None,
        **run_kwargs: Any,
    ) -> None:
        self.predictor, self.data, self.choice = predictor, data, choice
        self.tile, self.store, self.run_kwargs = tile, store, run_kwargs
        self.positions = list(positions) if positions is not None else choice.positions()
        self.tiles_per_plane = int(tiles_per_plane)
        self.total = self.tiles_per_plane * len(self.positions)
        self.position: dict[str, int] | None = None  # the plane in flight
        self.current: Any = None  # its TileRun
        self._first: list[int] | None = None
        self._lock = threading.Lock()
        self._events = self._run()

    def describe(self) -> str:
        """What runs, e.g. ``"31 Z planes x 4 tiles"``, ``"5 volumes x 8 tiles"``, ``"4 tiles"``."""
        tiles = count(self.tiles_per_plane, "tile")
        stack = self.choice.stack
        if not stack:
            return tiles
        if self.choice.ndim == 3:
            noun = "volume"
        elif len(stack) == 1:
            noun = "time point" if stack == "T" else f"{stack} plane"
        else:
            noun = "plane"
        return f"{count(len(self.positions), noun)} x {tiles}"

    def _run(self) -> Iterator[TileEvent]:
        from ..io import select_planes

        done = 0
        try:
            for position in self.positions:
                plane, axes = select_planes(self.data, self.choice.axes, position)
                run = self.predictor.run(
                    plane, self.store(position), self.tile, axes=axes, **self.run_kwargs
                )
                with self._lock:  # a prioritize() from the GUI lands on this plane's run
                    if self._first is not None:
                        run.prioritize(self._first)
                    self.position, self.current = position, run
                try:
                    for event in run:
                        yield dataclasses.replace(event, done=done + event.done, total=self.total)
                finally:
                    run.close()
                done += self.tiles_per_plane
        finally:
            self.current = None

    def prioritize(self, indices: Sequence[int]) -> int:
        """Start these tiles of the plane in flight next, and of each later plane first."""
        with self._lock:
            self._first = [int(i) for i in indices]
            run = self.current
            return 0 if run is None else run.prioritize(self._first)

    def pending(self) -> list[int]:
        """Tiles of the plane in flight not started yet, in the order they will start."""
        run = self.current
        return [] if run is None else run.pending()
