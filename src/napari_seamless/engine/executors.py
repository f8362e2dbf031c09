"""How the tiles of one run are carried out: the executor seam of the engine.

A run is a list of tiles and three steps per tile::

    prepare(tile) -> window      read the window (reflection padding), check, normalise
    forward([windows]) -> probs  the model on a batch of equal-shape windows
    finish(tile, probs) -> None  crop the ZoR, turn scores into labels, write to the store

:class:`SerialExecutor` does them one after another. :class:`ThreadedExecutor` is a
pipeline: a pool of reader threads prepares windows ahead of the model, the calling thread
runs the model (so the device never waits for a file read when the readers keep up), and
one writer thread finishes tiles behind it. Queues are bounded, so at most
``prefetch + batch_size`` windows and ``write_queue`` results are in memory at once,
whatever the image size. Both yield a :class:`~napari_seamless.engine.TileEvent` only
after the tile's ZoR is in the store, so a record of finished tiles kept from the events
(resume) never claims a tile that was not written.

:class:`Schedule` holds the tiles still to start, and lets another thread move some to
the front while the run goes (the tiles in view after a pan in napari).

No torch, no Qt: the model call comes in as ``forward``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..grid import Tile

__all__ = [
    "Executor",
    "PipelineStats",
    "Schedule",
    "SerialExecutor",
    "ThreadedExecutor",
    "RunSteps",
]


@dataclass
class PipelineStats:
    """Where the time of a run went (seconds, wall clock), for the pipeline efficiency.

    Attributes
    ----------
    forward : float
        Time inside the model's forward pass (the device busy).
    read : float
        Time spent preparing windows (summed over reader threads: may exceed ``wall``).
    write : float
        Time spent finishing tiles (crop, labels, store writes).
    wait : float
        Time the model thread waited for a window (the device idle).
    wall : float
        Wall time from the first tile started to the last tile written.
    tiles : int
        Tiles finished.
    """

    forward: float = 0.0
    read: float = 0.0
    write: float = 0.0
    wait: float = 0.0
    wall: float = 0.0
    tiles: int = 0

    @property
    def efficiency(self) -> float:
        """``forward / wall``: 1.0 when the model never waits for input or output."""
        return self.forward / self.wall if self.wall > 0 else 0.0


@dataclass
class RunSteps:
    """The three steps of a run that an executor schedules (see the module docstring).

    Attributes
    ----------
    prepare : callable
        ``prepare(tile) -> numpy.ndarray`` of shape ``(C, *window_shape)``, the model
        input; may raise (a non-finite window), which ends the run.
    forward : callable
        ``forward(list of windows) -> numpy.ndarray`` of shape
        ``(batch, classes, *window_shape)``.
    finish : callable
        ``finish(tile, probs)`` with ``probs`` of shape ``(classes, *window_shape)``;
        writes the tile's ZoR.
    batch_size : int
        Windows of equal shape run together.
    stats : PipelineStats
        Filled as the run goes.
    recover : callable, optional
        ``recover(batch, error) -> list of numpy.ndarray``: when ``forward`` raises, the
        outputs of the batch of ``(tile, window)`` computed another way (e.g. in smaller
        windows after running out of memory, :mod:`napari_seamless.engine.backoff`), or
        the error raised again. None: the error ends the run.
    remote : callable, optional
        For executors that run tiles in other processes (``executor.remote`` is True, e.g.
        :class:`~napari_seamless.engine.cluster.DaskExecutor`): a picklable
        ``remote(indices) -> dict`` that computes and writes the tiles of those grid
        indices where it is called (loading the model and opening the image itself), and
        returns what it did (see :class:`~napari_seamless.engine.cluster.RemoteTiles`).
        Set by :meth:`~napari_seamless.engine.Predictor.run` for such executors only.
    settle : callable, optional
        ``settle(tiles)``: the caller's share of tiles that ``remote`` wrote (e.g. the
        coarse pyramid levels of an OME-Zarr output); called before they are yielded.
    """

    prepare: Callable[[Tile], np.ndarray]
    forward: Callable[[list[np.ndarray]], np.ndarray]
    finish: Callable[[Tile, np.ndarray], None]
    batch_size: int = 1
    stats: PipelineStats = field(default_factory=PipelineStats)
    recover: Callable[[list[tuple[Tile, np.ndarray]], BaseException], list[np.ndarray]] | None = (
        None
    )
    remote: Callable[[list[int]], Any] | None = None
    settle: Callable[[list[Tile]], None] | None = None


class Schedule:
    """The tiles of a run still to start, in order; thread-safe and re-orderable.

    Parameters
    ----------
    tiles : sequence of Tile
        The tiles to compute, in the order to start them.

    Notes
    -----
    :meth:`prioritize` may be called from any thread while an executor takes tiles with
    :meth:`take`; tiles already taken are not affected.
    """

    def __init__(self, tiles: Sequence[Tile]) -> None:
        self._pending: list[Tile] = list(tiles)
        self._lock = threading.Lock()
        self.total = len(self._pending)

    def take(self) -> Tile | None:
        """The next tile to start (removed from the schedule), or None when none is left."""
        with self._lock:
            return self._pending.pop(0) if self._pending else None

    def prioritize(self, indices: Iterable[int]) -> int:
        """Move the pending tiles with these grid indices to the front, in the given order.

        Parameters
        ----------
        indices : iterable of int
            :attr:`Tile.index` values, e.g. from
            :func:`~napari_seamless.grid.viewport_order` for the visible box.

        Returns
        -------
        int
            How many pending tiles moved (tiles already started are skipped).
        """
        rank = {int(i): r for r, i in enumerate(indices)}
        with self._lock:
            first = sorted(
                (t for t in self._pending if t.index in rank), key=lambda t: rank[t.index]
            )
            if not first:
                return 0
            rest = [t for t in self._pending if t.index not in rank]
            self._pending = first + rest
            return len(first)

    def pending(self) -> list[int]:
        """Indices of the tiles not started yet, in the order they will start."""
        with self._lock:
            return [t.index for t in self._pending]

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)


class Executor(Protocol):
    """Carries out the tiles of a :class:`Schedule` with the steps of a :class:`RunSteps`.

    ``execute`` is a generator of tiles, each yielded after its ZoR is written; closing
    it stops the run between tiles. An executor whose attribute ``remote`` is True runs
    ``steps.remote`` in other processes instead of the three local steps.
    """

    def execute(self, schedule: Schedule, steps: RunSteps) -> Iterator[Tile]:
        """Run every tile; yield each after it is written."""


def _batches(schedule: Schedule, batch_size: int, take: Callable[[], Any]) -> Iterator[list]:
    """Group what ``take`` returns into runs of at most ``batch_size`` equal-shape windows."""
    pending = None
    while True:
        batch = [pending] if pending is not None else []
        pending = None
        while len(batch) < batch_size:
            item = take()
            if item is None:
                break
            if batch and item[0].window_shape != batch[0][0].window_shape:
                pending = item
                break
            batch.append(item)
        if not batch:
            return
        yield batch


def _forward(steps: RunSteps, batch: list) -> Iterator[tuple[Tile, np.ndarray]]:
    """Run the model on a batch of ``(tile, window)``, timed; pair each tile with its output."""
    t0 = time.perf_counter()
    try:
        probs = steps.forward([w for _, w in batch])
    except Exception as err:  # out of memory, say: the steps may compute it another way
        if steps.recover is None:
            raise
        probs = steps.recover(batch, err)
    steps.stats.forward += time.perf_counter() - t0
    return zip((t for t, _ in batch), probs, strict=True)


class SerialExecutor:
    """Read, run and write each batch in turn, in the calling thread (the reference)."""

    def execute(self, schedule: Schedule, steps: RunSteps) -> Iterator[Tile]:
        """Run every tile of ``schedule``; yield each after its ZoR is written."""
        stats = steps.stats
        start = time.perf_counter()

        def take() -> Any:
            tile = schedule.take()
            if tile is None:
                return None
            t0 = time.perf_counter()
            window = steps.prepare(tile)
            stats.read += time.perf_counter() - t0
            return tile, window

        try:
            for batch in _batches(schedule, steps.batch_size, take):
                for tile, p in _forward(steps, batch):
                    t0 = time.perf_counter()
                    steps.finish(tile, p)
                    stats.write += time.perf_counter() - t0
                    stats.tiles += 1
                    stats.wall = time.perf_counter() - start
                    yield tile
        finally:
            stats.wall = time.perf_counter() - start


_DONE = object()


class ThreadedExecutor:
    """A pipeline that keeps the model busy: readers ahead, the model, a writer behind.

    Parameters
    ----------
    readers : int
        Threads preparing windows (read, reflection padding, normalisation). Decoding a
        compressed TIFF or zarr chunk releases the GIL, so two to four help.
    prefetch : int, optional
        Windows prepared ahead of the model; default ``2 * batch_size + readers``. Each
        is ``C x window`` float32 (4 MiB for a 1024 x 1024 single-channel window).
    write_queue : int
        Model outputs waiting for the writer (each ``classes x window`` float32).

    Notes
    -----
    The model runs in the thread that iterates :meth:`execute`, so a CUDA context or a
    torch module never crosses threads. Errors in a reader or the writer end the run
    and are raised in that thread, at the next tile.
    """

    def __init__(self, readers: int = 2, prefetch: int | None = None, write_queue: int = 2):
        if readers < 1 or write_queue < 1 or (prefetch is not None and prefetch < 1):
            raise ValueError("readers, prefetch and write_queue must be at least 1")
        self.readers = int(readers)
        self.prefetch = prefetch
        self.write_queue = int(write_queue)

    def execute(self, schedule: Schedule, steps: RunSteps) -> Iterator[Tile]:
        """Run every tile of ``schedule``; yield each after its ZoR is written."""
        stats = steps.stats
        prefetch = self.prefetch or 2 * steps.batch_size + self.readers
        stop = threading.Event()
        lock = threading.Lock()
        inflight: queue.Queue[tuple[Tile, Future] | None] = queue.Queue()
        to_write: queue.Queue[Any] = queue.Queue(maxsize=self.write_queue)
        written: queue.Queue[Any] = queue.Queue()
        pool = ThreadPoolExecutor(self.readers, thread_name_prefix="seamless-read")
        start = time.perf_counter()

        def prepare(tile: Tile) -> np.ndarray:
            t0 = time.perf_counter()
            try:
                return steps.prepare(tile)
            finally:
                with lock:
                    stats.read += time.perf_counter() - t0

        def submit() -> bool:
            """Start reading the next scheduled tile; False when none is left."""
            tile = None if stop.is_set() else schedule.take()
            if tile is None:
                return False
            inflight.put((tile, pool.submit(prepare, tile)))
            return True

        def writer() -> None:
            while True:
                item = to_write.get()
                if item is _DONE:
                    written.put(_DONE)
                    return
                tile, probs = item
                if stop.is_set():
                    continue  # drain: the run is being cancelled
                t0 = time.perf_counter()
                try:
                    steps.finish(tile, probs)
                except BaseException as err:  # noqa: BLE001 - handed to the model thread
                    stop.set()
                    written.put(err)
                    continue
                with lock:
                    stats.write += time.perf_counter() - t0
                    stats.tiles += 1
                written.put(tile)

        thread = threading.Thread(target=writer, name="seamless-write", daemon=True)
        thread.start()
        queued = sum(submit() for _ in range(prefetch))
        more = queued == prefetch

        def take() -> Any:
            nonlocal more
            try:
                item = inflight.get_nowait()
            except queue.Empty:
                return None
            if more:
                more = submit()
            tile, fut = item
            t0 = time.perf_counter()
            window = fut.result()  # a reader's error is raised here
            stats.wait += time.perf_counter() - t0
            return tile, window

        def finished(block: bool) -> Iterator[Tile]:
            while True:
                try:
                    item = written.get(block=block)
                except queue.Empty:
                    return
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                stats.wall = time.perf_counter() - start
                yield item

        try:
            for batch in _batches(schedule, steps.batch_size, take):
                for tile, p in _forward(steps, batch):
                    while True:  # bounded: wait for the writer, reporting what it finished
                        try:
                            to_write.put((tile, p), timeout=0.05)
                            break
                        except queue.Full:
                            yield from finished(block=False)
                yield from finished(block=False)
            to_write.put(_DONE)
            yield from finished(block=True)
            thread.join()
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            if thread.is_alive():
                while True:  # let the writer see the end and exit
                    try:
                        to_write.put_nowait(_DONE)
                        break
                    except queue.Full:
                        try:
                            to_write.get_nowait()
                        except queue.Empty:
                            pass
                thread.join(timeout=30)
            stats.wall = time.perf_counter() - start
