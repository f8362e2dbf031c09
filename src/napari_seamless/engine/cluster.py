"""The exact tile grid run on a dask.distributed cluster, written into one OME-Zarr output.

:func:`run_on_cluster` plans the grid and fits the normalisation once on the client, creates
the OME-Zarr output (level-0 chunks equal to the ZoR), and submits one task per batch of
tiles. Each worker process rebuilds the model once from its *spec* (a built-in name, a file
or ``module:function``: whatever :func:`~napari_seamless.models.load_model` takes), reads its
windows from the input path itself and writes each ZoR into level 0 of the output. A ZoR is
exactly a set of whole level-0 chunks, so workers never share a chunk and their writes
cannot race.

The coarser pyramid levels do share chunks between ZoRs (a chunk of level 1 may hold pixels
of several tiles), so the workers leave them alone: the client writes a batch's share of
every coarser level (read back from level 0) as the batch completes, then marks its tiles
done in the output's record. The client is the only writer of the coarse levels and of the
record, and a tile the record calls done is on disk at every level, as for a local run:
a stopped cluster run resumes on the cluster or locally.

No Qt, no napari; torch is imported by the model loading only (client and workers).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArgumentError
from ..preprocessing import FittedPreprocessing, PercentileNormalization, Preprocessing

__all__ = ["ClusterRun", "run_on_cluster"]

#: ``(LoadedModel, Predictor)`` keyed by ``(spec, settings)``: one model per worker process
_PREDICTORS: dict[tuple[str, str], tuple[Any, Any]] = {}


@dataclass
class ClusterRun:
    """What :func:`run_on_cluster` did.

    Attributes
    ----------
    output : Path
        The OME-Zarr output (complete: every tile recorded done, ``complete`` set).
    tiles : int
        Number of tiles of the grid.
    computed : int
        Tiles computed by this run (fewer than ``tiles`` when it resumed).
    tasks : int
        Tasks submitted (batches of at most ``batch_tiles`` tiles).
    seconds : float
        Wall time of the whole call, planning included.
    plan_seconds : float
        Part of ``seconds`` spent on the client before the first task was submitted (model
        analysis, normalisation fit, output creation).
    grid : Any
        The :class:`~napari_seamless.grid.TileGrid`.
    workers : dict
        Tiles computed per worker address.
    """

    output: Path
    tiles: int
    computed: int
    tasks: int
    seconds: float
    plan_seconds: float
    grid: Any
    workers: dict[str, int] = field(default_factory=dict)


def _local_dask(function: Callable[..., Any]) -> Callable[..., Any]:
    """Compute lazy (dask) image reads with the local threaded scheduler inside ``function``.

    With a distributed Client alive, dask sends every ``compute`` to the cluster by
    default: a lazily read TIFF (its open file handle inside the graph) would then be
    pickled to the workers, and fail. Windows, normalisation samples and coarse levels are
    small local reads; only the tile tasks go to the cluster, through the client.
    """

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import dask

        with dask.config.set(scheduler="threads"):
            return function(*args, **kwargs)

    return wrapper


def _key(spec: Any, predictor_kwargs: Mapping[str, Any]) -> tuple[str, str]:
    return (repr(spec), repr(sorted(predictor_kwargs.items())))


def _predictor(spec: Any, predictor_kwargs: Mapping[str, Any]) -> tuple[Any, Any]:
    """The loaded model of ``spec`` and its Predictor, built once per process."""
    key = _key(spec, predictor_kwargs)
    built = _PREDICTORS.get(key)
    if built is None:
        from ..models import load_model

        loaded = load_model(spec)
        built = _PREDICTORS[key] = (loaded, loaded.predictor(**dict(predictor_kwargs)))
    return built


@_local_dask
def _run_tiles(
    spec: Any,
    image_path: str,
    read_kwargs: Mapping[str, Any],
    output_path: str,
    tile: Any,
    indices: Sequence[int],
    normalization: Any,
    run_kwargs: Mapping[str, Any],
    predictor_kwargs: Mapping[str, Any],
) -> tuple[list[int], str]:
    """Task body on a worker: compute tiles ``indices`` into level 0 of the output.

    Returns
    -------
    tuple of (list of int, str)
        The tile indices written, and the worker's address (for the summary).
    """
    import zarr

    from ..io import read_image
    from ..stores import ArrayStore

    _, pred = _predictor(spec, predictor_kwargs)
    image = read_image(image_path, **dict(read_kwargs))
    level0 = zarr.open_array(str(Path(output_path) / "0"), mode="r+")
    run = pred.run(
        image.data,
        ArrayStore(level0),
        tile,
        order=list(indices),
        normalization=normalization,
        **dict(run_kwargs),
    )
    try:
        written = [int(ev.tile.index) for ev in run]
    finally:
        run.close()
    try:
        from distributed import get_worker

        where = str(get_worker().address)
    except (ImportError, ValueError):
        where = "local"
    return written, where


def _fit(normalization: Any, arr: Any) -> Any:
    """The normalisation fitted once on the whole image, to ship to every worker."""
    if normalization is None or (
        callable(normalization) and not isinstance(normalization, Preprocessing)
    ):
        return normalization  # None, a fitted map, or a user callable: shipped as it is
    if isinstance(normalization, str):
        if normalization != "percentile":
            raise ArgumentError(
                f"normalization must be 'percentile', a Preprocessing, a callable or None, "
                f"got {normalization!r}"
            )
        return PercentileNormalization.fit(arr)
    if isinstance(normalization, Preprocessing):
        return normalization.fit(arr)
    if isinstance(normalization, (PercentileNormalization, FittedPreprocessing)):
        return normalization
    raise ArgumentError(f"cannot use {type(normalization).__name__} as a normalization")


def _check_aligned(grid: Any, level0: Any, lead: int) -> None:
    """Refuse a grid whose ZoRs do not cover whole level-0 chunks (their writes could race)."""
    chunks = tuple(level0.chunks[lead:])
    shape = tuple(level0.shape[lead:])
    for t in grid:
        for sl, c, n in zip(t.zor, chunks, shape, strict=True):
            if sl.start % c or (sl.stop % c and sl.stop != n):
                raise ArgumentError(
                    f"the ZoR {t.zor} does not cover whole output chunks {chunks}; workers "
                    "writing it could overwrite each other's pixels. Choose a tile whose ZoR "
                    "is at least 64 pixels"
                )


def _write_coarse(levels: Sequence[Any], zors: Sequence[tuple[slice, ...]]) -> None:
    """Write the share of every level above 0 of the ZoRs ``zors``, read from level 0."""
    from ..stores import level_slices

    level0 = levels[0]
    for zor in zors:
        block = None
        for k in range(1, len(levels)):
            where = level_slices(zor, k)
            if where is None:
                continue
            if block is None:
                block = np.asarray(level0[(Ellipsis, *zor)])
            dst, src = where
            levels[k][(Ellipsis, *dst)] = block[(Ellipsis, *src)]


@_local_dask
def run_on_cluster(
    client: Any,
    model_spec: Any,
    image_path: str | Path,
    output_path: str | Path,
    tile: int | Sequence[int],
    *,
    read_kwargs: Mapping[str, Any] | None = None,
    batch_tiles: int = 8,
    output: str = "labels",
    axes: str | None = None,
    normalization: Any = "default",
    predictor_kwargs: Mapping[str, Any] | None = None,
    resume: bool = False,
    retries: int = 2,
    callback: Callable[[int, int], None] | None = None,
    **run_kwargs: Any,
) -> ClusterRun:
    """Exact tiled inference of an image file on a dask.distributed cluster, into OME-Zarr.

    The output equals the single-process run with the same settings (labels identical,
    scores bit-identical): every tile is the same computation, only where it runs differs.

    Parameters
    ----------
    client : distributed.Client
        A client of the cluster. Workers must see ``image_path`` and ``output_path`` (a
        shared file system) and be able to import napari-seamless and torch.
    model_spec : str or Path
        What :func:`~napari_seamless.models.load_model` takes: a built-in name such as
        ``"nuclei"``, a model file, a bioimage.io package or ``module:function``. Each
        worker process loads it once, not a pickled live module.
    image_path : str or Path
        The input (TIFF, zarr, OME-Zarr), read by the client (shape, normalisation) and by
        the workers (their windows) with :func:`~napari_seamless.io.read_image`.
    output_path : str or Path
        The OME-Zarr output to create (anything there is replaced), or with ``resume`` an
        output of an earlier run to complete.
    tile : int or sequence of int
        Window size in pixels, as for :meth:`~napari_seamless.engine.Predictor.run`.
    read_kwargs : mapping, optional
        Passed to ``read_image`` (``series``, ``level``, ``array``).
    batch_tiles : int
        Tiles per task: fewer, larger tasks keep the scheduler's load low.
    output : {"labels", "probabilities"}
        What is written: integer labels ``(*spatial)`` or class scores
        ``(classes, *spatial)`` in the predictor's float dtype.
    axes : str, optional
        Axes of the input such as ``"YX"`` or ``"CYX"``.
    normalization : str, Preprocessing, PercentileNormalization, callable or None
        ``"default"``: the model's declared preprocessing, else ``"percentile"``; fitted
        once on the client over the whole image, and the fitted map shipped to every
        worker, so each normalises identically.
    predictor_kwargs : mapping, optional
        Passed to ``LoadedModel.predictor`` on the client and on every worker (``halo``,
        ``dtype``, ``device``, ...).
    resume : bool
        Open ``output_path`` and compute only the tiles its record lacks.
    retries : int
        Times a task that raises is retried. A task whose worker dies is given to another
        worker by the scheduler (up to ``distributed.scheduler.allowed-failures`` deaths,
        default 3, then it fails with ``KilledWorker``).
    callback : callable, optional
        Called as ``callback(done, total)`` after each completed batch.
    **run_kwargs
        Further settings of :meth:`~napari_seamless.engine.Predictor.run` that the tiles
        share, e.g. ``border``, ``batch_size`` (not ``order``, ``mode`` or ``region``).

    Returns
    -------
    ClusterRun
        The output path, tile and task counts, and times.

    Raises
    ------
    ArgumentError
        For ``batch_tiles < 1``, run settings that do not belong here, a ZoR that does
        not cover whole output chunks, or a resumed output of another grid.
    """
    from distributed import as_completed

    from ..io import read_image
    from ..stores import OmeZarrStore
    from .predictor import to_channel_first

    started = time.perf_counter()
    if int(batch_tiles) < 1:
        raise ArgumentError(f"batch_tiles must be 1 or more, got {batch_tiles}")
    bad = sorted(set(run_kwargs) & {"order", "mode", "region", "overlap", "weights", "output"})
    if bad:
        raise ArgumentError(
            f"{', '.join(bad)} cannot be set for a cluster run: it computes the exact grid"
        )
    if output not in ("labels", "probabilities"):
        raise ArgumentError(f"output must be 'labels' or 'probabilities', got {output!r}")
    read_kwargs = dict(read_kwargs or {})
    predictor_kwargs = dict(predictor_kwargs or {})
    image_path, output_path = str(Path(image_path).resolve()), Path(output_path).resolve()

    loaded, pred = _predictor(model_spec, predictor_kwargs)
    image = read_image(image_path, **read_kwargs)
    arr, axes = to_channel_first(image.data, pred.ndim, pred.in_channels, axes)
    spatial = tuple(int(n) for n in arr.shape[1:])
    grid = pred.grid(spatial, tile, border=run_kwargs.get("border", "clip"))
    if isinstance(normalization, str) and normalization == "default":
        normalization = loaded.normalization
    fitted = _fit(normalization, arr)
    classes = pred.classes()
    letters = "zyx"[-len(spatial) :]
    if output == "labels":
        shape, dtype, kind, store_axes = spatial, pred.label_dtype(classes), "labels", letters
    else:
        shape, dtype, kind = (classes, *spatial), pred.np_dtype, "image"
        store_axes = "c" + letters
    settings = {
        "input": image_path,
        "read": read_kwargs,
        "axes": axes,
        "model": str(model_spec),
        "output": output,
        "tile": list(grid.tile),
        "halo": list(grid.halo),
        "factor": list(grid.factor),
        "border": run_kwargs.get("border", "clip"),
        "grid_shape": list(grid.grid_shape),
    }
    if resume:
        store = OmeZarrStore.open(output_path)
        if store.tiles_total != len(grid) or store.shape != tuple(shape):
            raise ArgumentError(
                f"{output_path} holds a run of {store.tiles_total} tiles of shape "
                f"{store.shape}, this one {len(grid)} of {tuple(shape)}: not resumable"
            )
    else:
        store = OmeZarrStore.create(
            output_path,
            shape,
            dtype,
            chunks=grid.zor_size,
            n_tiles=len(grid),
            kind=kind,
            axes=store_axes,
            attrs=settings,
            name=output_path.name.split(".")[0],
        )
    _check_aligned(grid, store.levels[0], len(shape) - len(spatial))
    todo = store.missing
    batches = [todo[i : i + int(batch_tiles)] for i in range(0, len(todo), int(batch_tiles))]
    run_args = {"output": output, "axes": axes, **run_kwargs}
    plan_seconds = time.perf_counter() - started

    pending = {}
    for batch in batches:
        future = client.submit(
            _run_tiles,
            model_spec,
            image_path,
            read_kwargs,
            str(output_path),
            tile,
            batch,
            fitted,
            run_args,
            predictor_kwargs,
            pure=False,
            retries=int(retries),
        )
        pending[future.key] = future
    n_tasks = len(pending)
    workers: dict[str, int] = {}
    done = len(store.done)
    try:
        # a finished task is let go at once: a worker that dies later does not take
        # results the client already has with it (the scheduler would compute them again)
        for future in as_completed(list(pending.values())):
            indices, where = future.result()
            pending.pop(future.key, None)
            del future
            _write_coarse(store.levels, [grid[i].zor for i in indices])
            for i in indices:
                store.mark_done(i)
            workers[where] = workers.get(where, 0) + len(indices)
            done += len(indices)
            if callback is not None:
                callback(done, len(grid))
    finally:
        for future in pending.values():  # stopped early: nothing left running
            future.cancel()
        pending.clear()
        store.flush()
    store.finish()
    return ClusterRun(
        output=output_path,
        tiles=len(grid),
        computed=sum(workers.values()),
        tasks=n_tasks,
        seconds=time.perf_counter() - started,
        plan_seconds=plan_seconds,
        grid=grid,
        workers=workers,
    )
