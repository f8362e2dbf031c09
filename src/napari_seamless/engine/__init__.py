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
``autotile``
    :func:`choose_tile`: the fastest F-aligned tile within a memory budget, from a short
    probe of the model (peak memory and time of a forward pass at a few window sizes).
``backoff``
    Out of memory in a run: the failed tile and the rest in windows smaller by F (each
    ZoR in parts with the full halo, still exact), no finished tile lost.
``cluster``
    :class:`DaskExecutor`: the tiles as dask.distributed tasks, batches of tiles each,
    workers loading the model and the image themselves and writing ZoRs straight into
    an OME-Zarr output; :func:`run_on_cluster` and :func:`local_cluster` (one worker per
    GPU). dask.distributed is imported only when a cluster is used.

Nothing here imports Qt or napari.
"""

from .autotile import (
    TileBudgetError,
    TileChoice,
    TileProbe,
    choose_tile,
    memory_budget,
    parse_bytes,
)
from .backoff import Backoff, TileMemoryError, is_out_of_memory
from .cluster import DaskExecutor, local_cluster, run_on_cluster
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
    "DaskExecutor",
    "local_cluster",
    "run_on_cluster",
    "choose_tile",
    "TileChoice",
    "TileProbe",
    "TileBudgetError",
    "memory_budget",
    "parse_bytes",
    "Backoff",
    "TileMemoryError",
    "is_out_of_memory",
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
