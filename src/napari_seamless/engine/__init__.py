"""The tiled predictor: read windows, run the model, crop ZoRs, write them, yield events.

Data flows one way: image -> :class:`~napari_seamless.grid.TileGrid` -> windows -> model ->
ZoR crops -> store. :meth:`Predictor.run` is a generator that yields one small
:class:`TileEvent` per finished tile, so a progress bar, a napari worker or a CLI can follow
it, and stopping the generator between tiles cancels the run.

``predictor``
    :class:`Predictor` (the model, its halo and F, its output convention), :func:`predict`
    and :func:`segment`; torch is imported there because that is where models run.
``executors``
    How the tiles of one run are carried out: one after another, or as a pipeline that
    reads and normalises windows in background threads ahead of the model and crops and
    writes behind it (bounded queues, so memory stays flat), in an order that can change
    while the run goes (the visible region first).

Nothing here imports Qt or napari.
"""

from .executors import Schedule, SerialExecutor, ThreadedExecutor
from .predictor import (
    ACTIVATIONS,
    MODES,
    ArgumentError,
    ArgumentTypeError,
    ChannelError,
    InexactHaloWarning,
    OutputConventionError,
    Predictor,
    TileEvent,
    _drain,
    labels_dtype,
    predict,
    read_window,
    segment,
    to_channel_first,
)

__all__ = [
    "Predictor",
    "TileEvent",
    "Schedule",
    "SerialExecutor",
    "ThreadedExecutor",
    "predict",
    "segment",
    "read_window",
    "to_channel_first",
    "labels_dtype",
    "ArgumentError",
    "ArgumentTypeError",
    "ChannelError",
    "InexactHaloWarning",
    "OutputConventionError",
    "ACTIVATIONS",
    "MODES",
    "_drain",
]
