"""Out of memory in the middle of a run: back off by F and go on, losing no finished tile.

When the model runs out of memory on a window (``torch.OutOfMemoryError``, CPU
"DefaultCPUAllocator: can't allocate memory", a :class:`MemoryError`), the tiles already
written stay written, and the failed tile is computed again in smaller windows: its ZoR is
split into the fewest F-aligned parts whose windows (part + the full halo on each side,
clipped to the F-padded image as a border tile is) are at most the failed window minus F
per axis. Every part still has its full halo, so the result stays exact; the parts are
assembled into the tile's output, which is then written and reported as one tile, so the
done-tile record and resume stay in the grid's tile units::

    failed window 1024 (ZoR 832)          parts: ZoR 416 + 2 x halo 96 = window 608
    +--------------------------+          +-------------+-------------+
    |  halo                    |          | part 0      | part 1      |
    |   +------------------+   |   ->     |             |             |
    |   |  ZoR 832         |   |          +-------------+-------------+
    |   +------------------+   |          | part 2      | part 3      |
    +--------------------------+          +-------------+-------------+

The smaller window then holds for the rest of the run (later tiles go straight to their
parts, without trying the size that failed), and shrinks again, by F from the window that
failed, at each new failure, down to ``2 * halo + F``; out of memory there is a
:class:`TileMemoryError`. A batch that runs out of memory first runs its windows one by
one.

Nothing here imports Qt or napari; torch only to recognise its error and empty its cache.
"""

from __future__ import annotations

import math
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import product

import numpy as np

from ..errors import SeamlessError
from ..grid import Tile, region_tile

__all__ = ["Backoff", "TileMemoryError", "WindowBackoff", "is_out_of_memory"]

_MESSAGES = ("out of memory", "can't allocate memory", "cannot allocate memory")


class TileMemoryError(SeamlessError, MemoryError):
    """Out of memory even at the smallest window the model can tile with."""


class _Oversize(Exception):
    """A window larger than the run has backed off to: computed in parts, never tried."""


def is_out_of_memory(err: BaseException) -> bool:
    """True if ``err`` says the device or the host ran out of memory.

    ``torch.OutOfMemoryError`` (``torch.cuda.OutOfMemoryError``), a RuntimeError saying
    "out of memory" or "can't allocate memory" (torch's CPU allocator, MPS), or a plain
    :class:`MemoryError` (numpy); never a :class:`~napari_seamless.errors.SeamlessError`.
    """
    if isinstance(err, SeamlessError):
        return False
    if isinstance(err, (MemoryError, _Oversize)):
        return True
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(
        getattr(torch, "cuda", None), "OutOfMemoryError", None
    )
    if oom is not None and isinstance(err, oom):
        return True
    return isinstance(err, RuntimeError) and any(m in str(err).lower() for m in _MESSAGES)


@dataclass(frozen=True)
class Backoff:
    """One back-off of a run after an out-of-memory error.

    Attributes
    ----------
    tile : int
        Grid index of the tile whose window ran out of memory.
    failed : tuple of int
        The window shape that ran out of memory (pixels); with ``batch`` > 1, the batch
        did.
    window : tuple of int
        The largest window per axis the run uses from then on (pixels).
    batch : int
        Windows in the pass that failed.
    error : str
        The first line of the error.
    """

    tile: int
    failed: tuple[int, ...]
    window: tuple[int, ...]
    batch: int
    error: str

    def describe(self) -> str:
        """One line: what failed and the window the run went on with."""
        fmt = "x".join
        many = f" (a batch of {self.batch})" if self.batch > 1 else ""
        return (
            f"out of memory at window {fmt(map(str, self.failed))}{many} on tile {self.tile}; "
            f"going on with windows of at most {fmt(map(str, self.window))}"
        )


def _forget(err: BaseException) -> None:
    """Drop the frames an error holds (with them the tensors of the failed pass)."""
    for e in (err, err.__context__, err.__cause__):
        if e is not None and e.__traceback__ is not None:
            traceback.clear_frames(e.__traceback__)


class WindowBackoff:
    """The forward step of an exact run, backing off by F on out-of-memory errors.

    Parameters
    ----------
    forward : callable
        The model step: ``forward(list of windows) -> (batch, classes, *window)`` array.
    shape : sequence of int
        Spatial shape of the image (pixels).
    halo, factor : sequence of int
        The run's halo and F per axis (pixels).
    release : callable, optional
        Called after an out-of-memory error, before trying again (e.g.
        ``torch.cuda.empty_cache``).

    Attributes
    ----------
    window : tuple of int or None
        The largest window per axis the run computes now (pixels); None until a back-off.
    backoffs : list of Backoff
        Every back-off so far, in order.
    """

    def __init__(
        self,
        forward: Callable[[list[np.ndarray]], np.ndarray],
        shape: Sequence[int],
        halo: Sequence[int],
        factor: Sequence[int],
        release: Callable[[], None] | None = None,
    ) -> None:
        self._model = forward
        self.shape = tuple(int(s) for s in shape)
        self.halo = tuple(int(h) for h in halo)
        self.factor = tuple(int(f) for f in factor)
        self.smallest = tuple(2 * h + f for h, f in zip(self.halo, self.factor, strict=True))
        self.release = release
        self.window: tuple[int, ...] | None = None
        self.single = False  # a batch ran out of memory: windows go one by one
        self.backoffs: list[Backoff] = []

    def forward(self, windows: list[np.ndarray]) -> np.ndarray:
        """The model on a batch, or :class:`_Oversize` if it is larger than the run allows."""
        if (self.single and len(windows) > 1) or any(not self._fits(w.shape[1:]) for w in windows):
            raise _Oversize
        return self._model(windows)

    def recover(self, batch: list[tuple[Tile, np.ndarray]], err: BaseException) -> list[np.ndarray]:
        """Outputs of a batch whose forward pass raised ``err``, computed in smaller windows.

        Re-raises ``err`` unless it is an out-of-memory error.

        Raises
        ------
        TileMemoryError
            If a window of ``2 * halo + F`` pixels still runs out of memory.
        """
        if not is_out_of_memory(err):
            raise err
        if not isinstance(err, _Oversize):
            _forget(err)
            self._release()
            if len(batch) > 1:  # first try the windows one by one
                self.single = True
                shape = tuple(batch[0][1].shape[1:])
                self.backoffs.append(
                    Backoff(
                        batch[0][0].index, shape, self.window or shape, len(batch), _first_line(err)
                    )
                )
            else:  # this very window ran out of memory alone
                tile, window = batch[0]
                self._back_off(tile, tuple(window.shape[1:]), err)
        return [self._tile(tile, window) for tile, window in batch]

    def _fits(self, shape: Sequence[int]) -> bool:
        return self.window is None or all(s <= w for s, w in zip(shape, self.window, strict=True))

    def _release(self) -> None:
        if self.release is not None:
            self.release()

    def _tile(self, tile: Tile, window: np.ndarray) -> np.ndarray:
        """One tile's output ``(classes, *window)``, its ZoR computed within the window limit.

        Only the ZoR part of the output (``tile.crop``) is filled when computed in parts.
        """
        shape = tuple(window.shape[1:])
        while True:
            try:
                if self._fits(shape):
                    return self._model([window])[0]
                return self._parts(tile, window)
            except Exception as e:  # noqa: BLE001 - only out-of-memory errors go on
                failed = e.shape if isinstance(e, _PartFailed) else shape
                err = e.err if isinstance(e, _PartFailed) else e
                if not is_out_of_memory(err):
                    if err is e:
                        raise
                    raise err from None
                _forget(err)
                self._release()
                self._back_off(tile, failed, err)

    def _back_off(self, tile: Tile, failed: tuple[int, ...], err: BaseException) -> None:
        """Shrink :attr:`window` by F below ``failed`` (pixels), or raise at the smallest."""
        if all(s <= m for s, m in zip(failed, self.smallest, strict=True)):
            # a window of the least exact size is no smaller than the one that failed
            box = ", ".join(f"{z.start}:{z.stop}" for z in tile.zor)
            raise TileMemoryError(
                f"out of memory even in a window of {'x'.join(map(str, failed))} px, and no "
                f"exact tile is smaller than 2 x halo + F = {'x'.join(map(str, self.smallest))} "
                f"px (the tile whose ZoR is ({box})); free memory on the device, or run on "
                "another device"
            ) from err
        new = tuple(
            max(s - f, m) for s, f, m in zip(failed, self.factor, self.smallest, strict=True)
        )
        if self.window is not None:
            new = tuple(min(a, b) for a, b in zip(new, self.window, strict=True))
        self.window = new
        self.backoffs.append(Backoff(tile.index, failed, new, 1, _first_line(err)))

    def _split(self, tile: Tile) -> list[Tile]:
        """The tile's ZoR in the fewest F-aligned parts whose windows fit :attr:`window`."""
        axes = []
        for zor, h, f, limit in zip(tile.zor, self.halo, self.factor, self.window, strict=True):
            start = (zor.start // f) * f  # F-aligned (a grid ZoR already is)
            length = zor.stop - start
            part_max = limit - 2 * h  # a multiple of F, at least F
            n = math.ceil(length / part_max)
            part = math.ceil(length / (n * f)) * f
            bounds = [start + k * part for k in range(n)] + [zor.stop]
            axes.append(
                [
                    slice(max(a, zor.start), min(b, zor.stop))
                    for a, b in zip(bounds[:-1], bounds[1:], strict=True)
                    if min(b, zor.stop) > max(a, zor.start)
                ]
            )
        return [region_tile(self.shape, box, self.halo, self.factor) for box in product(*axes)]

    def _parts(self, tile: Tile, window: np.ndarray) -> np.ndarray:
        out: np.ndarray | None = None
        for part in self._split(tile):
            local = tuple(
                slice(p.start - w.start, p.stop - w.start)
                for p, w in zip(part.window, tile.window, strict=True)
            )
            if any(s.start < 0 or s.stop > n for s, n in zip(local, window.shape[1:], strict=True)):
                raise RuntimeError(  # cannot happen: a part's window lies in the tile's
                    f"a part's window {part.window} leaves the tile's window {tile.window}"
                )
            sub = np.ascontiguousarray(window[(slice(None), *local)])
            try:
                probs = self._model([sub])[0]
            except Exception as e:  # noqa: BLE001 - judged by the caller
                raise _PartFailed(tuple(sub.shape[1:]), e) from None
            if out is None:
                out = np.zeros((probs.shape[0], *window.shape[1:]), dtype=probs.dtype)
            dest = tuple(
                slice(z.start - w.start, z.stop - w.start)
                for z, w in zip(part.zor, tile.window, strict=True)
            )
            out[(slice(None), *dest)] = probs[(slice(None), *part.crop)]
        assert out is not None
        return out


class _PartFailed(Exception):
    def __init__(self, shape: tuple[int, ...], err: BaseException) -> None:
        super().__init__(shape)
        self.shape, self.err = shape, err


def _first_line(err: BaseException) -> str:
    if isinstance(err, _Oversize):
        return "window larger than the run's backed-off size"
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"
