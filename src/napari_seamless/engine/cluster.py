"""The exact tile grid on a dask.distributed cluster: an executor of the engine.

:class:`DaskExecutor` is an executor like :class:`~napari_seamless.engine.SerialExecutor`:
pass it to :meth:`~napari_seamless.engine.Predictor.run` and the same tiles run as tasks
on the cluster, a batch of tiles per task. The run then sends each task a
:class:`RemoteTiles`: what a worker needs to compute tiles by index without any live
object from the client. Each worker process loads the model once from its *source* (a
built-in name, a file, a bioimage.io package or ``module:function``, with the loading
options; never a pickled module), opens the image once from its path (an
:class:`~napari_seamless.io.InputImage` pickles as its path and choices), and writes each
ZoR straight into level 0 of the OME-Zarr output. A ZoR covers whole level-0 chunks, so
workers never share a chunk and their writes cannot race.

The coarser pyramid levels do share chunks between ZoRs, so the workers leave them alone:
the client fills a batch's share of every coarser level (read back from level 0) when the
batch completes (``RunSteps.settle``), and only then yields its tiles. A caller that marks
yielded tiles done in the output's record (:func:`run_on_cluster`, ``seamless predict``)
thus never records a tile that is not on disk at every level, as for a local run: a
stopped cluster run resumes on the cluster or locally.

:func:`run_on_cluster` does the whole job from paths; :func:`local_cluster` starts a
LocalCluster with one worker per GPU when there are GPUs.

No Qt, no napari; torch is imported by the model loading only (client and workers), and
dask.distributed only when a cluster is used.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ArgumentError
from ..grid import Tile
from .executors import RunSteps, Schedule

__all__ = ["ClusterRun", "DaskExecutor", "RemoteTiles", "local_cluster", "run_on_cluster"]

#: ``(LoadedModel, Predictor)`` keyed by ``(source, settings)``: one model per worker process
_PREDICTORS: dict[tuple[str, str], tuple[Any, Any]] = {}


def _predictor(source: Any, settings: Mapping[str, Any]) -> Any:
    """The Predictor of ``source`` with ``settings``, built once per process."""
    key = (repr(source), repr(sorted(settings.items())))
    built = _PREDICTORS.get(key)
    if built is None:
        loaded = source.load()
        built = _PREDICTORS[key] = (loaded, loaded.predictor(**dict(settings)))
    return built[1]


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"process {os.getpid()}"


@dataclass(frozen=True)
class RemoteTiles:
    """Computes tiles of one run by grid index, in whatever process calls it.

    Made by :meth:`~napari_seamless.engine.Predictor.run` for an executor with
    ``remote = True``; picklable and small (no model, no pixels).

    Attributes
    ----------
    model : ModelSource
        How the worker loads the model (:attr:`LoadedModel.source
        <napari_seamless.models.LoadedModel>`).
    settings : dict
        :class:`~napari_seamless.engine.Predictor` arguments (:meth:`Predictor.settings
        <napari_seamless.engine.Predictor.settings>`): the client's halo and F, so every
        process tiles alike and none repeats the halo analysis.
    image : InputImage
        The input; unpickled, it opens the file again (once per process).
    writer : Level0Writer
        Level 0 of the OME-Zarr output.
    tile : int or tuple of int
        Window size in pixels.
    run : dict
        The rest of :meth:`~napari_seamless.engine.Predictor.run`'s settings (``output``,
        ``axes``, ``border``, ``batch_size``, ``halo``) and the ``normalization`` fitted
        once on the client, so every window is normalised by the same map.
    """

    model: Any
    settings: dict[str, Any]
    image: Any
    writer: Any
    tile: Any
    run: dict[str, Any]

    def __call__(self, indices: Sequence[int]) -> dict[str, Any]:
        """Compute and write the tiles ``indices`` (grid indices) into level 0.

        Returns
        -------
        dict
            ``indices`` (list of int, the tiles written), ``worker`` (its address),
            ``forward``, ``read``, ``write`` (seconds spent, as in
            :class:`~napari_seamless.engine.PipelineStats`).
        """
        pred = _predictor(self.model, self.settings)
        run = pred.run(self.image.data, self.writer, self.tile, order=list(indices), **self.run)
        try:
            written = [int(ev.tile.index) for ev in run]
        finally:
            run.close()
        s = run.stats
        return {
            "indices": written,
            "worker": _worker_name(),
            "forward": s.forward,
            "read": s.read,
            "write": s.write,
        }


class DaskExecutor:
    """Run the tiles of :meth:`~napari_seamless.engine.Predictor.run` as dask.distributed tasks.

    Parameters
    ----------
    client : distributed.Client
        A client of the cluster. Workers must see the image and the output (a shared
        file system) and import napari-seamless and torch.
    batch_tiles : int
        Tiles per task. A task costs the scheduler ~5-10 ms whatever it does
        (``docs/cluster.md``): batches keep that small next to the model's time, and
        keep a 10^5-tile slide to a graph of 10^3-10^4 tasks.
    retries : int
        Times a task that raises is run again. A task whose worker dies is given to
        another worker by the scheduler (up to ``distributed.scheduler.allowed-failures``
        deaths, default 3, then it fails with ``KilledWorker``).
    max_tasks : int, optional
        Tasks submitted at once; more are submitted as these finish, in the order of the
        schedule (so ``TileRun.prioritize`` still moves tiles forward). Default: all.

    Attributes
    ----------
    remote : bool
        True: :meth:`~napari_seamless.engine.Predictor.run` gives :meth:`execute` a
        :class:`RemoteTiles` in ``steps.remote``.
    workers : dict
        Tiles computed per worker address, filled as the run goes.
    tasks : int
        Tasks submitted so far.

    Notes
    -----
    Results are fetched a batch of finished tasks at a time
    (``as_completed(...).batches()`` and one ``gather``), and each finished task is let
    go at once: a worker that dies later does not make the scheduler compute again what
    the client already has. Closing the run cancels the tasks not finished.
    """

    remote = True

    def __init__(
        self,
        client: Any,
        *,
        batch_tiles: int = 8,
        retries: int = 2,
        max_tasks: int | None = None,
    ) -> None:
        if int(batch_tiles) < 1:
            raise ArgumentError(f"batch_tiles must be 1 or more, got {batch_tiles}")
        if max_tasks is not None and int(max_tasks) < 1:
            raise ArgumentError(f"max_tasks must be 1 or more (or None: all), got {max_tasks}")
        if not callable(getattr(client, "submit", None)):
            raise ArgumentError(f"client must be a distributed.Client, got {type(client).__name__}")
        self.client = client
        self.batch_tiles = int(batch_tiles)
        self.retries = int(retries)
        self.max_tasks = None if max_tasks is None else int(max_tasks)
        self.workers: dict[str, int] = {}
        self.tasks = 0

    def execute(self, schedule: Schedule, steps: RunSteps) -> Iterator[Tile]:
        """Run every tile of ``schedule`` on the cluster; yield each once it is settled.

        Raises
        ------
        ArgumentError
            If ``steps.remote`` is missing (the run was not prepared for other processes).
        Exception
            The first task's error that its retries did not cure, as raised on the worker.
        """
        from distributed import as_completed

        if steps.remote is None:
            raise ArgumentError(
                "DaskExecutor runs the tiles in other processes: use it through "
                "Predictor.run, which tells the workers how to load the model and the image"
            )
        stats, start = steps.stats, time.perf_counter()
        run_id = uuid.uuid4().hex[:8]
        counter = itertools.count()
        batches_of: dict[str, list[Tile]] = {}
        futures: dict[str, Any] = {}
        finished = as_completed(loop=self.client.loop)  # the client need not be the default

        def submit(most: int | None) -> int:
            """Submit up to ``most`` (None: all) batches taken from the schedule, in one call."""
            batches = []
            while most is None or len(batches) < most:
                batch = []
                while len(batch) < self.batch_tiles and (t := schedule.take()) is not None:
                    batch.append(t)
                if not batch:
                    break
                batches.append(batch)
            if not batches:
                return 0
            keys = [f"seamless-tiles-{run_id}-{next(counter)}" for _ in batches]
            # one client.map: submitting 10^4 tasks one by one takes seconds before the first
            # result, a map a fraction of a second
            submitted = self.client.map(
                steps.remote,
                [[t.index for t in b] for b in batches],
                key=keys,
                pure=False,
                retries=self.retries,
            )
            for future, batch in zip(submitted, batches, strict=True):
                batches_of[future.key], futures[future.key] = batch, future
            finished.update(submitted)
            self.tasks += len(batches)
            return len(batches)

        submit(self.max_tasks)
        try:
            for done in finished.batches():
                results = self.client.gather(done)  # one round trip for the whole batch
                for future, result in zip(done, results, strict=True):
                    batch = batches_of.pop(future.key)
                    futures.pop(future.key, None)
                    if sorted(result["indices"]) != sorted(t.index for t in batch):
                        raise RuntimeError(
                            f"a worker wrote tiles {result['indices']} for the batch "
                            f"{[t.index for t in batch]}"
                        )
                    where = result["worker"]
                    self.workers[where] = self.workers.get(where, 0) + len(batch)
                    stats.forward += result["forward"]
                    stats.read += result["read"]
                    stats.write += result["write"]
                    if steps.settle is not None:
                        steps.settle(batch)
                    for t in batch:
                        stats.tiles += 1
                        stats.wall = time.perf_counter() - start
                        yield t
                    if self.max_tasks is not None:
                        submit(1)  # keep max_tasks in flight, the next in schedule order
                del done, results  # let the finished tasks go
        finally:
            if futures:  # stopped early: nothing left running
                self.client.cancel(list(futures.values()))
            futures.clear()
            stats.wall = time.perf_counter() - start


def local_cluster(
    workers: int | None = None,
    gpus: int | None = None,
    *,
    env: Mapping[str, str] | None = None,
    dashboard_address: str | None = ":0",
) -> Any:
    """A cluster of worker processes on this machine, one per GPU when there are GPUs.

    Parameters
    ----------
    workers : int, optional
        Worker processes; default one per GPU, or 1 without GPUs.
    gpus : int, optional
        GPUs to spread the workers over; default ``torch.cuda.device_count()``. Worker
        ``i`` sees only GPU ``i % gpus`` (``CUDA_VISIBLE_DEVICES``), so its model runs on
        its own device, as ``cuda:0`` of its process.
    env : mapping, optional
        More environment variables of every worker process (e.g. ``OMP_NUM_THREADS``).
    dashboard_address : str or None
        Where the scheduler's dashboard listens (``":0"``: a free port; None: no
        dashboard).

    Returns
    -------
    distributed.SpecCluster
        One thread per worker (the model uses the process's cores, or its GPU); use it
        with ``distributed.Client(cluster)`` and close it after.

    Raises
    ------
    ArgumentError
        For ``workers < 1`` or ``gpus < 0``.
    """
    from distributed import Nanny, Scheduler, SpecCluster

    if gpus is None:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus < 0:
        raise ArgumentError(f"gpus must be 0 or more, got {gpus}")
    workers = (gpus or 1) if workers is None else int(workers)
    if workers < 1:
        raise ArgumentError(f"workers must be 1 or more, got {workers}")
    specs = {
        f"seamless-{i}": {
            "cls": Nanny,
            "options": {
                "nthreads": 1,
                "host": "127.0.0.1",
                "env": {
                    **dict(env or {}),
                    **({"CUDA_VISIBLE_DEVICES": str(i % gpus)} if gpus else {}),
                },
            },
        }
        for i in range(workers)
    }
    scheduler = {
        "cls": Scheduler,
        "options": {"host": "127.0.0.1", "dashboard_address": dashboard_address},
    }
    return SpecCluster(workers=specs, scheduler=scheduler, name="napari-seamless")


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
        Part of ``seconds`` spent on the client before the run started (model loading and
        halo analysis, grid, output creation); the normalisation is fitted, and the tasks
        submitted, after it.
    grid : TileGrid
        The grid.
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


def run_on_cluster(
    client: Any,
    model: Any,
    image: Any,
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
    It is :meth:`~napari_seamless.engine.Predictor.run` with a :class:`DaskExecutor`,
    plus the output's creation and its done-tile record.

    Parameters
    ----------
    client : distributed.Client
        A client of the cluster. Workers must see the image and ``output_path`` (a shared
        file system) and be able to import napari-seamless and torch.
    model : str, Path, LoadedModel or Predictor
        A built-in name such as ``"nuclei"``, a model file, a bioimage.io package or
        ``module:function``, what :func:`~napari_seamless.models.load_model` returned for
        one, or a Predictor built from either. Each worker process loads it once, never a
        pickled live module.
    image : str, Path or InputImage
        The input (TIFF, zarr, OME-Zarr) path, read with
        :func:`~napari_seamless.io.read_image` (and ``read_kwargs``), or what that
        returned (planes selected with ``InputImage.select`` included).
    output_path : str or Path
        The OME-Zarr output to create (anything there is replaced), or with ``resume`` an
        output of an earlier run to complete.
    tile : int or sequence of int
        Window size in pixels, as for :meth:`~napari_seamless.engine.Predictor.run`.
    read_kwargs : mapping, optional
        Passed to ``read_image`` for a path (``series``, ``level``, ``array``).
    batch_tiles : int
        Tiles per task (see :class:`DaskExecutor`).
    output : {"labels", "probabilities"}
        What is written: integer labels ``(*spatial)`` or class scores
        ``(classes, *spatial)`` in the predictor's float dtype.
    axes : str, optional
        Axes of the input such as ``"YX"`` or ``"CYX"``.
    normalization : str, Preprocessing, PercentileNormalization, callable or None
        As for :meth:`~napari_seamless.engine.Predictor.run`: fitted once on the client
        over the whole image; the fitted map goes to every worker.
    predictor_kwargs : mapping, optional
        Passed to :class:`~napari_seamless.engine.Predictor` (``halo``, ``dtype``,
        ``device``, ...); the workers get the same predictor, with the client's halo.
    resume : bool
        Open ``output_path`` and compute only the tiles its record lacks.
    retries : int
        See :class:`DaskExecutor`.
    callback : callable, optional
        Called as ``callback(done, total)`` after each tile is recorded done.
    **run_kwargs
        ``border`` and ``batch_size`` of :meth:`~napari_seamless.engine.Predictor.run`.

    Returns
    -------
    ClusterRun
        The output path, tile and task counts, and times.

    Raises
    ------
    ArgumentError
        For ``batch_tiles < 1``, run settings that do not belong here, or a resumed
        output of another input, model, grid or setting (named in the message).
    """
    from ..io import InputImage, read_image
    from ..models import LoadedModel, load_model
    from ..stores import OmeZarrStore
    from .predictor import Predictor, to_channel_first

    started = time.perf_counter()
    executor = DaskExecutor(client, batch_tiles=batch_tiles, retries=retries)
    bad = sorted(set(run_kwargs) - {"border", "batch_size"})
    if bad:
        raise ArgumentError(
            f"{', '.join(bad)} cannot be set for a cluster run (it computes the exact grid); "
            "it takes border and batch_size"
        )
    if output not in ("labels", "probabilities"):
        raise ArgumentError(f"output must be 'labels' or 'probabilities', got {output!r}")
    if isinstance(model, Predictor):
        if predictor_kwargs:
            raise ArgumentError(
                "predictor_kwargs cannot change a Predictor that is built already; pass the "
                "model instead"
            )
        pred = model
    else:
        loaded = model if isinstance(model, LoadedModel) else load_model(model)
        pred = loaded.predictor(**dict(predictor_kwargs or {}))
    if not isinstance(image, InputImage):
        image = read_image(image, **dict(read_kwargs or {}))
    output_path = Path(output_path).resolve()
    arr, axes = to_channel_first(image.data, pred.ndim, pred.in_channels, axes)
    border = run_kwargs.get("border", "clip")
    grid = pred.grid(arr.shape[1:], tile, border=border)
    settings = {
        "input": str(image.path.resolve()),
        "read": dict(image.read),
        "planes": [[a, dict(i)] for a, i in image.planes],
        "axes": axes,
        "model": pred.source.spec if pred.source is not None else None,
        "precision": pred.dtype,
        "output": output,
        "tile": list(grid.tile),
        "halo": list(grid.halo),
        "factor": list(grid.factor),
        "border": border,
        "grid_shape": list(grid.grid_shape),
    }
    if resume:
        store = OmeZarrStore.open(output_path)
        wrong = store.mismatch(settings, len(grid))
        if wrong:
            key, was, now = wrong
            raise ArgumentError(
                f"{output_path} holds a run with {key} {was}, this one {now}: resume with the "
                "same input, model and settings, or write a new output"
            )
    else:
        store = pred.create_output(output_path, grid, output, attrs=settings)
    todo = store.missing
    run = pred.run(
        image,
        store,
        tile,
        output=output,
        axes=axes,
        normalization=normalization,
        order=todo,
        executor=executor,
        **run_kwargs,
    )
    plan_seconds = time.perf_counter() - started
    try:
        for ev in run:
            store.mark_done(ev.tile.index)
            if callback is not None:
                callback(len(store.done), store.tiles_total)
    finally:
        run.close()
        store.flush()
    store.finish()
    return ClusterRun(
        output=output_path,
        tiles=len(grid),
        computed=len(todo),
        tasks=executor.tasks,
        seconds=time.perf_counter() - started,
        plan_seconds=plan_seconds,
        grid=grid,
        workers=dict(executor.workers),
    )
