"""Files in and out; the rule here is that a user's files are never lost.

:func:`read_image` is how every input is opened: TIFF (every series and pyramid level),
zarr arrays, zarr groups and OME-Zarr multiscales. Nothing is read whole: an uncompressed,
contiguous TIFF is memory-mapped; any other TIFF (tiled, compressed, in strips, pyramidal)
is opened through tifffile's zarr interface, so a read decodes only the strips or tiles it
touches and a whole-slide image never has to fit in memory; zarr is lazy by nature.
It says which series / level / array it chose when there was a choice, reads the axes
from the metadata, and turns every reader failure into one :class:`InputError` sentence
naming the file and the reason. :func:`select_planes` picks planes of N-D data
(``--axes TZYX --index T=3``).

:func:`output_transaction` is how every output is written:

1. an exclusive lock (``.NAME.lock`` beside the output, holding the writer's pid) so a
   second run on the same output refuses to start instead of deleting the first one's work;
2. the result is written to a temporary sibling (``.NAME.partial-PID``), never to the
   output itself, so an interrupted run never leaves something that looks complete (a
   partial left by a killed run is removed by the next run on that output);
3. at the end the temporary is swapped in: a file by one atomic ``os.replace``; a folder
   (zarr) by one atomic exchange (Linux ``renameat2(RENAME_EXCHANGE)``), then the old one
   is deleted. Where that is not available, the old one is renamed aside
   (``.NAME.old-PID``) and the new one in; a run killed between the two renames leaves the
   old output whole under its aside name, and the next run on that output puts it back;
4. ``--overwrite`` replaces only what napari-seamless wrote: a TIFF file, or a zarr folder
   marked as its own (attribute ``napari_seamless``); any other folder is refused.

:func:`export_labels` saves a label image, plain or multiscale (napari cannot save a
multiscale Labels layer), as OME-Zarr or TIFF through the same transaction, reading level 0
block by block; both formats carry the package's record, so they reopen as labels.

No Qt, no napari, no torch.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import SeamlessError

__all__ = [
    "InputError",
    "InputImage",
    "check_output_location",
    "check_replaceable",
    "EXPORT_SUFFIXES",
    "export_labels",
    "lazy",
    "OutputError",
    "OutputBusyError",
    "output_transaction",
    "Partial",
    "resumable_output",
    "stopped_runs",
    "OWNER_KEY",
    "parse_index",
    "read_image",
    "same_or_nested",
    "select_planes",
]

OWNER_KEY = "napari_seamless"


class OutputError(SeamlessError, ValueError):
    """The output path cannot be written safely; the message says why and what to do."""


class OutputBusyError(OutputError):
    """Another run holds the lock of this output."""


def same_or_nested(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are the same path, or one holds the other (a zarr folder)."""
    ra, rb = Path(a).expanduser().resolve(), Path(b).expanduser().resolve()
    return ra == rb or ra in rb.parents or rb in ra.parents


def _sibling(out: Path, tag: str) -> Path:
    return out.with_name(f".{out.name}.{tag}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lock(out: Path) -> int:
    lock = _sibling(out, "lock")
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or "0")
            except (OSError, ValueError):
                pid = 0
            if pid and _alive(pid):
                raise OutputBusyError(
                    f"another seamless run (pid {pid}) is writing {out}; wait for it to finish, "
                    f"or remove {lock} if that process is gone"
                ) from None
            lock.unlink(missing_ok=True)  # stale: its writer is gone
            continue
        os.write(fd, str(os.getpid()).encode())
        return fd
    raise OutputBusyError(f"cannot lock {out} (remove {lock} if no seamless run is writing it)")


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Hold the exclusive lock of ``out`` (:func:`_lock`) for the block."""
    fd = _lock(out)
    try:
        yield
    finally:
        os.close(fd)
        _sibling(out, "lock").unlink(missing_ok=True)


def _recover(out: Path, keep: Path | None = None) -> None:
    """Undo what a killed run left: its partial output, or an old output left aside.

    Called with the lock held, so no other run is writing any of these. ``keep`` is a
    partial taken over to resume.
    """
    for stale in out.parent.glob(f".{out.name}.partial-*"):
        if keep is None or stale != keep:
            _remove(stale)
    if out.exists():
        for old in out.parent.glob(f".{out.name}.old-*"):
            _remove(old)  # the swap finished; only the clean-up was cut short
        return
    olds = sorted(out.parent.glob(f".{out.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds:
        os.rename(olds[-1], out)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns False where the system or the file system cannot (then nothing changed).
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
    renameat2.argtypes += [ctypes.c_uint]
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return rc == 0


def _swap_folder(new: Path, out: Path) -> None:
    """Put folder ``new`` in place of folder ``out``; the old one is deleted after.

    One atomic exchange where Linux allows it, so a kill at any moment leaves the old or
    the new folder at ``out``. Elsewhere: rename the old aside, the new in, and if that
    second step is interrupted (Ctrl-C, SIGTERM) the old is put back; after a SIGKILL
    between the two renames the next run on ``out`` puts it back (:func:`_recover`).
    """
    if _exchange(new, out):
        _remove(new)  # now the old output
        return
    aside = _sibling(out, f"old-{os.getpid()}")
    os.rename(out, aside)  # from here until the next rename, the old one is aside
    try:
        os.rename(new, out)
    except BaseException:
        os.rename(aside, out)
        raise
    _remove(aside)


def _replace_file(new: Path, out: Path) -> None:
    """Put file ``new`` in place of ``out`` in one atomic step (``os.replace``)."""
    os.replace(new, out)


def _swap_in(new: Path, out: Path) -> None:
    """Put the finished ``new`` in place of ``out``: a folder by exchange, a file by replace."""
    if not new.exists():
        raise OutputError(f"nothing was written for {out}")
    if out.exists() and out.is_dir():
        _swap_folder(new, out)
    else:
        _replace_file(new, out)


def check_replaceable(out: Path, overwrite: bool) -> None:
    """Refuse an existing ``out`` unless ``overwrite`` is given and napari-seamless wrote it.

    Raises
    ------
    OutputError
        If ``out`` exists and ``overwrite`` is False, or it is not napari-seamless's own
        output (:func:`is_ours`), which is never replaced.
    """
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise OutputError(f"output {out} exists; pass --overwrite to replace it")
        if not is_ours(out):
            raise OutputError(
                f"{out} exists and was not written by napari-seamless (not a TIFF, nor a "
                "zarr it marked as its own); it is never replaced: choose another output"
            )


def is_ours(path: Path) -> bool:
    """Whether ``path`` is something napari-seamless wrote (a TIFF, or a marked zarr)."""
    if path.is_file():
        return path.suffix.lower() in (".tif", ".tiff")
    if not path.is_dir():
        return False
    for meta in (".zattrs", "zarr.json"):
        f = path / meta
        if f.is_file():
            try:
                attrs = json.loads(f.read_text())
            except (OSError, ValueError):
                return False
            attrs = attrs.get("attributes", attrs)
            return OWNER_KEY in attrs
    return False


def check_output_location(out: Path, nbytes: int | None = None) -> None:
    """Refuse early an output whose folder is missing, not writable, or too full.

    Parameters
    ----------
    out : Path
        The output file or folder.
    nbytes : int, optional
        Estimated size of the output in bytes (uncompressed: an upper bound). The old
        output stays until the new one is complete, so this much must be free on top.

    Raises
    ------
    OutputError
        If the folder does not exist, cannot be written, or has less than ``nbytes`` free.
    """
    out = Path(out)
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"the folder of the output, {parent}, does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(
            f"the folder of the output, {parent}, is not writable; choose another output path"
        )
    if nbytes is not None:
        free = shutil.disk_usage(parent).free
        if free < nbytes:
            raise OutputError(
                f"the output needs up to {_gib(nbytes)} (uncompressed) but {parent} has "
                f"{_gib(free)} free; free some space or write the output elsewhere"
            )


@contextlib.contextmanager
def output_transaction(
    out: Path, overwrite: bool = False, nbytes: int | None = None
) -> Iterator[Path]:
    """Lock ``out``, yield a temporary sibling to write, and swap it in when the block ends.

    Parameters
    ----------
    out : Path
        The output file (TIFF) or folder (zarr).
    overwrite : bool
        Replace an existing output, if napari-seamless wrote it.
    nbytes : int, optional
        Estimated size of the output; refused up front if the disk has less free
        (:func:`check_output_location`).

    Yields
    ------
    Path
        Where to write (does not exist yet). On an exception (Ctrl-C included) it is
        deleted and ``out`` is left as it was.

    Raises
    ------
    OutputBusyError
        If another run is writing ``out``.
    OutputError
        If ``out`` exists and ``overwrite`` is False, or it is not napari-seamless's own
        output, or its folder does not exist, is not writable or lacks ``nbytes`` free.
    """
    out = Path(out)
    check_output_location(out, nbytes)
    tmp = _sibling(out, f"partial-{os.getpid()}")
    with _locked(out):
        _recover(out)
        check_replaceable(out, overwrite)
        _remove(tmp)
        try:
            yield tmp
            _swap_in(tmp, out)
        except BaseException:
            _remove(tmp)  # the new, unfinished output (or, after an exchange, the old one)
            raise


@dataclass
class Partial:
    """The temporary output of a resumable run (see :func:`resumable_output`).

    Attributes
    ----------
    out : Path
        The output asked for.
    scratch : Path
        The zarr folder the tiles are written to, with its record of finished tiles. For a
        zarr output it becomes the output; for a TIFF output the TIFF is made from it.
    path : Path
        What is swapped in at the end: ``scratch`` for a zarr output, else a temporary
        file the caller writes (the TIFF).
    resumed : bool
        Whether ``scratch`` is a stopped run's, taken over to continue it.
    keep : bool
        Set it when the scratch holds finished tiles worth keeping: then an interrupt
        (Ctrl-C, SIGTERM) leaves it for ``--resume`` instead of deleting it.
    """

    out: Path
    scratch: Path
    path: Path
    resumed: bool = False
    keep: bool = False


def stopped_runs(out: Path) -> list[Path]:
    """Scratch folders that stopped runs left for ``out`` (newest last)."""
    out = Path(out)
    found = [p for p in out.parent.glob(f".{out.name}.partial-*") if p.is_dir() and is_ours(p)]
    return sorted(found, key=lambda p: p.stat().st_mtime)


@contextlib.contextmanager
def resumable_output(
    out: Path,
    overwrite: bool = False,
    nbytes: int | None = None,
    *,
    resume: bool = False,
    fresh: bool = False,
) -> Iterator[Partial]:
    """Like :func:`output_transaction`, for a run whose finished tiles survive a stop.

    The tiles go to a scratch zarr beside the output (``.NAME.partial-PID``, or
    ``.NAME.partial-PID.zarr`` for a TIFF output), which records the finished tiles. A run
    killed (SIGKILL, power loss) or interrupted (Ctrl-C, SIGTERM; when
    :attr:`Partial.keep` is set) leaves it there, never at the output path; the next run
    on the same output continues it with ``resume=True``, or discards it with
    ``fresh=True``, and refuses to guess otherwise.

    Parameters
    ----------
    out : Path
        The output: a ``.zarr`` folder or a TIFF file.
    overwrite : bool
        Replace an existing output, if napari-seamless wrote it.
    nbytes : int, optional
        Estimated size of the output, checked against the free disk space.
    resume : bool
        Take over the newest scratch a stopped run left (:attr:`Partial.resumed`); the
        caller checks that its settings are this run's. Without one, start afresh.
    fresh : bool
        Delete what stopped runs left and start afresh.

    Yields
    ------
    Partial
        Where to write. On success the output is swapped in atomically (a zarr folder by
        an atomic exchange, a TIFF by ``os.replace``) and the scratch deleted.

    Raises
    ------
    OutputBusyError
        If another run is writing ``out``.
    OutputError
        If a stopped run left finished tiles and neither ``resume`` nor ``fresh`` is
        given, both are given, or as :func:`output_transaction`.
    """
    out = Path(out)
    if resume and fresh:
        raise OutputError("--resume continues a stopped run and --fresh discards it: choose one")
    check_output_location(out, nbytes)
    folder = out.suffix.lower() == ".zarr"
    tmp = _sibling(out, f"partial-{os.getpid()}")
    scratch = tmp if folder else tmp.with_name(tmp.name + ".zarr")
    partial = Partial(out, scratch, tmp)
    with _locked(out):
        stopped = stopped_runs(out)
        if stopped and not (resume or fresh):
            raise OutputError(
                f"a stopped run left its finished tiles in {stopped[-1]}; pass --resume to "
                "continue it, or --fresh to discard it and start again"
            )
        if stopped and resume:
            os.rename(stopped[-1], scratch)  # ours now: the lock says no one else writes it
            partial.resumed = True
        _recover(out, keep=scratch if partial.resumed else None)
        check_replaceable(out, overwrite)
        try:
            yield partial
            _swap_in(partial.path, out)
            if not folder:
                _remove(scratch)
        except BaseException:  # keep finished tiles (Ctrl-C, SIGTERM, disk full) for --resume
            if not folder:
                _remove(tmp)
            if not partial.keep:
                _remove(scratch)
            raise


# --------------------------------------------------------------------------- input

TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".tf2")
_AXES = "TZCYX"


class InputError(SeamlessError, ValueError):
    """An input image cannot be read, or not as asked; the message names the file and why."""


@dataclass(frozen=True)
class InputImage:
    """An opened input image (see :func:`read_image`).

    Attributes
    ----------
    data : array-like
        The pixels, never read whole: a read-only memory map (uncompressed contiguous
        TIFF) or a read-only zarr array (any other TIFF, through tifffile's zarr store,
        which keeps the file open while the array lives; zarr inputs). Indexing with a
        tuple of slices returns numpy and decodes only the chunks it touches; it has
        ``shape``, ``dtype`` and ``ndim`` and :func:`lazy` turns it into dask.
    axes : str or None
        Axes from the file's metadata in ``"TZCYX"`` letters (TIFF samples ``S`` become
        ``C``), or None when the file does not name them.
    path : Path
        The file or folder read.
    source : str
        What was opened, e.g. ``"TIFF series 0, level 0"`` or ``"zarr array 'raw'"``.
    notes : tuple of str
        Choices made on the user's behalf (a series, a pyramid level, an array) and
        reader warnings, one sentence each; show them.
    read : tuple of (str, value)
        The options :func:`read_image` was given (``series``, ``level``, ``array``).
    planes : tuple of (str, tuple)
        The selections of :meth:`select` made since, oldest first: the axes and the
        ``(axis, position)`` pairs of each.

    Notes
    -----
    Pickling an InputImage (to send it to a cluster's workers) sends the path and the
    choices above, never the pixels or the open file: it is opened again where it is
    unpickled, once per process.
    """

    data: Any
    axes: str | None
    path: Path
    source: str
    notes: tuple[str, ...] = field(default=())
    read: tuple[tuple[str, Any], ...] = field(default=())
    planes: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = field(default=())

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of :attr:`data`."""
        return tuple(int(s) for s in self.data.shape)

    def select(self, index: Mapping[str, int], axes: str | None = None) -> InputImage:
        """The image at one position along some axes (e.g. a time point), still lazy.

        Parameters
        ----------
        index : mapping of str to int
            Position per axis, e.g. ``{"T": 3}`` (see :func:`select_planes`).
        axes : str, optional
            Axes of :attr:`data` when the file does not name them (or names them wrongly).

        Returns
        -------
        InputImage
            With the selected axes dropped from ``data`` and ``axes``.

        Raises
        ------
        InputError
            If the axes are unknown or do not fit, or a position is outside its axis.
        """
        axes = (axes or self.axes or "").upper()
        if not axes:
            raise InputError(
                f"selecting planes of {self.path.name} (shape {self.shape}) needs its axes, "
                "which the file does not name: pass them, e.g. --axes TZYX"
            )
        data, kept = select_planes(self.data, axes, index)
        chosen = tuple((str(a).upper(), int(k)) for a, k in index.items())
        return replace(self, data=data, axes=kept, planes=(*self.planes, (axes, chosen)))

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (_reopen, (str(self.path.resolve()), self.read, self.planes))


@functools.lru_cache(maxsize=8)
def _reopen(path: str, read: tuple, planes: tuple) -> InputImage:
    """An unpickled :class:`InputImage`: the file opened again (once per process)."""
    image = read_image(path, **dict(read))
    for axes, index in planes:
        image = image.select(dict(index), axes)
    return image


def read_image(
    path: str | os.PathLike,
    *,
    series: int | None = None,
    level: int | None = None,
    array: str | None = None,
) -> InputImage:
    """Open a TIFF file or a zarr array / group / OME-Zarr image for inference.

    Parameters
    ----------
    path : str or PathLike
        A TIFF file (``.tif``, ``.tiff``, ``.btf``; OME-TIFF and ImageJ hyperstacks
        included) or a zarr folder (an array, a group, or an OME-Zarr image).
    series : int, optional
        TIFF series. Default 0; a note says so when the file has several.
    level : int, optional
        Pyramid level (TIFF sub-resolutions, OME-Zarr ``multiscales`` datasets); 0 is the
        full resolution. Default 0; a note says so when there are several.
    array : str, optional
        Path of the array inside a zarr group. Needed when the group holds several arrays
        and is not an OME-Zarr image.

    Returns
    -------
    InputImage
        The data (memory-mapped or lazy: only the chunks a window touches are ever
        decoded), its axes if the file names them, and notes on the choices made.

    Raises
    ------
    InputError
        If the path does not exist, is not TIFF or zarr, cannot be decoded (empty,
        truncated, corrupt, another format under a ``.tif`` name), its header declares
        more strips / tiles than it holds or data past its end, has a zero-size axis or a
        non-numeric dtype, or the series / level / array asked for is not there. One
        sentence naming the file and the reason.

    Notes
    -----
    A TIFF is checked when opened without reading it whole: its layout against the file
    size, then its first and last chunks are decoded (every chunk when the image is at
    most 64 MiB). A corrupt chunk in the middle of a larger image is found only when a
    window reads it; the decoder's error is raised then.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"input image {path} does not exist")
    if path.is_dir():
        if series is not None:
            raise InputError(f"--series applies to TIFF files; {path} is a zarr folder")
        image = _read_zarr(path, level, array)
    elif path.suffix.lower() in TIFF_SUFFIXES:
        if array is not None:
            raise InputError(f"--array applies to zarr groups; {path} is a TIFF file")
        image = _read_tiff(path, series, level)
    else:
        what = _sniff(path)
        raise InputError(
            f"{path} is not a TIFF file or a zarr folder{f' ({what})' if what else ''}; "
            "convert it to TIFF or zarr first (e.g. open it in napari and save as .tif)"
        )
    _check_usable(image)
    given = (("series", series), ("level", level), ("array", array))
    return replace(image, read=tuple((k, v) for k, v in given if v is not None))


def _check_usable(image: InputImage) -> None:
    shape, dtype = image.shape, image.data.dtype
    if len(shape) == 0 or 0 in shape:
        raise InputError(f"{image.path} ({image.source}) has no pixels: shape {shape}")
    if dtype.kind not in "uif":
        hint = " (convert it to uint8 first)" if dtype.kind == "b" else ""
        raise InputError(
            f"{image.path} ({image.source}) has dtype {dtype}, not an integer or float image{hint}"
        )


def _sniff(path: Path) -> str:
    """A few words on what a file that failed to read really is (empty, PNG, text...)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as err:
        return err.strerror or "unreadable"
    if size == 0:
        return "the file is empty (0 bytes)"
    magic = {
        b"\x89PNG": "a PNG file",
        b"\xff\xd8\xff": "a JPEG file",
        b"GIF8": "a GIF file",
        b"BM": "a BMP file",
        b"PK\x03\x04": "a zip archive",
        b"\x93NUMPY": "a numpy .npy file",
        b"\x89HDF": "an HDF5 file",
    }
    for sig, name in magic.items():
        if head.startswith(sig):
            return f"it is {name}"
    if head and all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return "it is a text file"
    return ""


def _available_memory() -> int | None:
    """Bytes of RAM available now: psutil, else Linux ``MemAvailable``, else None."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - psutil missing or failing: try the kernel
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**28 else f"{nbytes / 2**20:.1f} MiB"


def _tiff_axes(axes: str) -> str | None:
    """The axes tifffile reports, in our letters (``S`` samples -> ``C``), or None if not all known."""
    axes = axes.upper().replace("S", "C")
    if any(a not in _AXES for a in axes) or len(set(axes)) != len(axes):
        return None
    return axes


@contextlib.contextmanager
def _tifffile_notes() -> Iterator[list[str]]:
    """Collect what tifffile logs (warnings on odd files) as notes instead of printing it."""
    logger = logging.getLogger("tifffile")
    notes: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            notes.append(f"tifffile: {record.getMessage().splitlines()[0]}")

    handler = _Collect(logging.WARNING)
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield notes
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _read_tiff(path: Path, series: int | None, level: int | None) -> InputImage:
    """Open one series / level of a TIFF: a memory map, or a lazy zarr view of its chunks.

    The file stays open as long as the returned data lives (the zarr store holds it).
    """
    import tifffile

    with _tifffile_notes() as logged:
        tif = None
        try:
            tif = tifffile.TiffFile(path)
            all_series = tif.series
            if not all_series:
                raise InputError(f"{path} is a TIFF file without images")
            n = len(all_series)
            si = 0 if series is None else int(series)
            if not 0 <= si < n:
                raise InputError(
                    f"{path} has {n} series (0 to {n - 1}); --series {si} is not one of them"
                )
            levels = all_series[si].levels
            li = 0 if level is None else int(level)
            if not 0 <= li < len(levels):
                raise InputError(
                    f"series {si} of {path} has {len(levels)} level(s) (0 to "
                    f"{len(levels) - 1}); --level {li} is not one of them"
                )
            chosen = levels[li]
            notes = []
            if series is None and n > 1:
                listing = "; ".join(
                    f"{i}: {tuple(s.shape)} {s.axes}" for i, s in enumerate(all_series[:6])
                )
                notes.append(
                    f"{path.name} holds {n} series ({listing}{'; ...' if n > 6 else ''}); "
                    "using series 0: choose another with --series N"
                )
            if level is None and len(levels) > 1:
                notes.append(
                    f"series {si} of {path.name} has {len(levels)} pyramid levels; using "
                    f"level 0 (full resolution, {tuple(chosen.shape)}): choose another "
                    "with --level N"
                )
            axes = _tiff_axes(chosen.axes)
            try:
                data = tifffile.memmap(path, series=si, level=li, mode="r")
            except (ValueError, OSError):  # compressed, tiled or truncated: chunk by chunk
                data = _tiff_chunks(tif, path, si, li)
                tif = None  # the zarr store now owns the open file
        except InputError:
            raise
        except MemoryError:
            raise InputError(f"{path} does not fit in memory; convert it to zarr") from None
        except Exception as err:  # noqa: BLE001 - any decoder failure: the file is unreadable
            reason = _sniff(path) or _first_line(err)
            raise InputError(f"cannot read {path} as a TIFF: {reason}") from err
        finally:
            if tif is not None:
                tif.close()
    source = f"TIFF series {si}, level {li}"
    return InputImage(data, axes, path, source, tuple(notes + logged))


#: Images up to this many decoded bytes have every chunk decoded once when opened, so a
#: corrupt chunk anywhere is refused up front; larger ones decode their first and last.
_VALIDATE_ALL_BYTES = 2**26


def _tiff_chunks(tif: Any, path: Path, si: int, li: int) -> Any:
    """A read-only zarr array over the strips / tiles of one series level, checked.

    Only the chunks a read touches are ever decoded. Before anything is returned the
    layout is checked against the file (every strip or tile the header declares is
    there, and inside the file), then the first and last chunks are decoded (every
    chunk for images up to :data:`_VALIDATE_ALL_BYTES`), so a truncated or corrupt file
    is refused when opened rather than half way through a run.
    """
    import zarr

    chosen = tif.series[si].levels[li]
    size = tif.filehandle.size
    kind = "tiles" if chosen.keyframe.is_tiled else "strips"
    for page in chosen.pages:
        if page is None:
            continue
        offsets, counts = page.dataoffsets, page.databytecounts
        expected = int(np.prod(page.chunked))
        if len(offsets) < expected:
            raise InputError(
                f"{path} (series {si}, level {li}) declares {tuple(chosen.shape)} "
                f"{chosen.dtype} pixels in {expected} {kind}, more than the {len(offsets)} "
                "the file holds; it is truncated or corrupt"
            )
        ends = [o + c for o, c in zip(offsets, counts, strict=False) if c > 0]
        if ends and max(ends) > size:
            raise InputError(
                f"cannot read {path} as a TIFF: its pixel data runs to byte {max(ends)} but "
                f"the file has {size} bytes (truncated)"
            )
    data = zarr.open(tif.series[si].aszarr(level=li), mode="r")
    if tuple(data.shape) != tuple(chosen.shape):
        raise InputError(
            f"{path} (series {si}, level {li}) reads as {tuple(data.shape)}, not the "
            f"{tuple(chosen.shape)} it declares; it is corrupt"
        )
    if chosen.nbytes <= _VALIDATE_ALL_BYTES:
        data[...]
    else:
        data[tuple(slice(0, c) for c in data.chunks)]
        data[tuple(slice(s - 1, s) for s in data.shape)]
    return data


def _zarr_names(names: Any) -> str | None:
    """Axis names (OME-Zarr ``axes``, xarray ``_ARRAY_DIMENSIONS``) as our letters."""
    if not names:
        return None
    letters = []
    for a in names:
        name = a.get("name") if isinstance(a, dict) else a
        letters.append(str(name).upper() if name is not None else "?")
    axes = "".join(letters)
    if (
        len(axes) != len(letters)
        or any(a not in _AXES for a in axes)
        or len(set(axes)) != len(axes)
    ):
        return None
    return axes


def _array_axes(arr: Any) -> str | None:
    names = getattr(getattr(arr, "metadata", None), "dimension_names", None)
    if names and all(n is not None for n in names):
        return _zarr_names(list(names))
    return _zarr_names(dict(arr.attrs).get("_ARRAY_DIMENSIONS"))


def _zarr_arrays(group: Any, prefix: str = "") -> list[str]:
    """Paths of every array in a zarr group, nested groups included."""
    found = [f"{prefix}{k}" for k in sorted(group.array_keys())]
    for k in sorted(group.group_keys()):
        found += _zarr_arrays(group[k], f"{prefix}{k}/")
    return found


def _read_zarr(path: Path, level: int | None, array: str | None) -> InputImage:
    import zarr

    try:
        node = zarr.open(store=str(path), mode="r")
    except Exception as err:  # noqa: BLE001 - zarr's errors vary by version: not a zarr
        raise InputError(
            f"{path} is a folder but not a zarr array or group (no readable .zarray, "
            ".zgroup or zarr.json in it)"
        ) from err
    if isinstance(node, zarr.Array):
        if array is not None:
            raise InputError(f"{path} is a zarr array, not a group: drop --array")
        if level not in (None, 0):
            raise InputError(f"{path} is a single zarr array with no pyramid levels: drop --level")
        return InputImage(node, _array_axes(node), path, "zarr array")
    attrs = dict(node.attrs)
    multiscales = attrs.get("ome", attrs).get("multiscales")
    arrays = _zarr_arrays(node)
    if array is not None:
        if array not in arrays:
            raise InputError(
                f"{path} has no array {array!r}; it holds {', '.join(arrays[:10]) or 'none'}"
            )
        arr = node[array]
        axes = _array_axes(arr)
        if axes is None and multiscales:
            paths = [d.get("path") for d in multiscales[0].get("datasets", [])]
            if array in paths:
                axes = _zarr_names(multiscales[0].get("axes"))
        return InputImage(arr, axes, path, f"zarr array {array!r}")
    if multiscales:
        image = multiscales[0]
        datasets = image.get("datasets", [])
        li = 0 if level is None else int(level)
        if not 0 <= li < len(datasets):
            raise InputError(
                f"{path} is an OME-Zarr image with {len(datasets)} level(s) (0 to "
                f"{len(datasets) - 1}); --level {li} is not one of them"
            )
        key = datasets[li].get("path")
        if key not in arrays:
            raise InputError(f"{path}: level {li} names array {key!r}, which is not in the group")
        arr = node[key]
        notes = []
        if level is None and len(datasets) > 1:
            notes.append(
                f"{path.name} is an OME-Zarr image with {len(datasets)} levels; using level 0 "
                f"(full resolution, {tuple(arr.shape)}): choose another with --level N"
            )
        if len(multiscales) > 1:
            notes.append(f"{path.name} holds {len(multiscales)} multiscale images; using the first")
        axes = _zarr_names(image.get("axes")) or _array_axes(arr)
        return InputImage(arr, axes, path, f"OME-Zarr level {li}", tuple(notes))
    if level is not None:
        raise InputError(
            f"{path} is a zarr group without OME-Zarr levels: use --array, not --level"
        )
    if not arrays:
        raise InputError(f"{path} is a zarr group without arrays")
    if len(arrays) > 1:
        shown = ", ".join(f"{a} {tuple(node[a].shape)}" for a in arrays[:8])
        raise InputError(
            f"{path} is a zarr group holding {len(arrays)} arrays ({shown}"
            f"{', ...' if len(arrays) > 8 else ''}); choose one with --array NAME"
        )
    arr = node[arrays[0]]
    note = f"{path.name} is a zarr group with one array; using {arrays[0]!r}"
    return InputImage(arr, _array_axes(arr), path, f"zarr array {arrays[0]!r}", (note,))


def lazy(data: Any) -> Any:
    """``data`` itself if numpy, else a dask view of it (zarr, h5py...) read only where asked.

    Axes can then be indexed, added and moved without reading the image.
    """
    if isinstance(data, np.ndarray):
        return data
    import dask.array as da

    if isinstance(data, da.Array):
        return data
    chunks = getattr(data, "chunks", None)
    return da.from_array(data, chunks=chunks if isinstance(chunks, tuple) else "auto")


def _first_line(err: BaseException) -> str:
    text = str(err)
    return text.splitlines()[0] if text else type(err).__name__


def parse_index(text: str | None) -> dict[str, int]:
    """Parse ``"T=3,Z=15"`` (``--index``) into ``{"T": 3, "Z": 15}``.

    Raises
    ------
    InputError
        If a part is not ``AXIS=INTEGER`` with an axis letter among ``T``, ``Z``, ``C``,
        or an axis is named twice.
    """
    if not text:
        return {}
    out: dict[str, int] = {}
    for part in text.replace(" ", "").split(","):
        name, sep, value = part.partition("=")
        name = name.upper()
        try:
            number = int(value)
        except ValueError:
            number = None
        if not sep or len(name) != 1 or name not in _AXES or number is None:
            raise InputError(f"--index part {part!r} is not AXIS=NUMBER (e.g. --index T=3,Z=15)")
        if name in out:
            raise InputError(f"--index names axis {name} twice")
        out[name] = number
    return out


def select_planes(data: Any, axes: str, index: Mapping[str, int]) -> tuple[Any, str]:
    """Pick one position along some axes of N-D data, e.g. a time point and a Z plane.

    Parameters
    ----------
    data : array-like
        The image, numpy or zarr or dask; zarr and dask stay lazy (nothing is read).
    axes : str
        Axes of ``data``, one letter each from ``"TZCYX"`` (e.g. ``"TZYX"``).
    index : mapping of str to int
        Position per axis to select, e.g. ``{"T": 3}``; negative counts from the end.

    Returns
    -------
    data : array-like
        ``data`` without the selected axes.
    axes : str
        The remaining axes.

    Raises
    ------
    InputError
        If ``axes`` does not fit ``data``, names an axis ``data`` lacks, or a position is
        outside its axis.
    """
    axes = axes.upper()
    if len(axes) != len(data.shape) or len(set(axes)) != len(axes):
        raise InputError(
            f"axes {axes!r} do not fit an image of shape {tuple(data.shape)}: give one "
            "letter per axis, each once (e.g. --axes TZYX)"
        )
    missing = [a for a in index if a not in axes]
    if missing:
        raise InputError(f"--index names axis {missing[0]}, but the image axes are {axes}")
    if not index:
        return data, axes
    data = lazy(data)
    key: list[Any] = []
    kept = ""
    for a, n in zip(axes, data.shape, strict=True):
        if a not in index:
            key.append(slice(None))
            kept += a
            continue
        k = index[a]
        if not -n <= k < n:
            raise InputError(f"--index {a}={k} is outside axis {a} of length {n} (0 to {n - 1})")
        key.append(k % n)
    return data[tuple(key)], kept


# --------------------------------------------------------------------------- export

#: output suffixes :func:`export_labels` writes: OME-Zarr folders and TIFF files
EXPORT_SUFFIXES = (".ome.zarr", ".zarr", ".tif", ".tiff")
#: level-0 block :func:`export_labels` reads at a time when the data has no chunks of its own
EXPORT_BLOCK = {2: (1024, 1024), 3: (64, 256, 256)}
#: TIFF tile shape (rows, columns) of exported label TIFFs
_TIFF_TILE = (256, 256)
#: most bytes of level 0 a TIFF export reads in one band (rows x full width)
_BAND_BYTES = 2**27


def export_labels(
    data: Any,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    axes: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    name: str | None = None,
    min_size: int = 256,
    compression: str | None = "zlib",
) -> Path:
    """Save a label image, plain or multiscale, as OME-Zarr or TIFF that reopens as labels.

    Made for a result a viewer cannot save itself (napari refuses to save a multiscale
    Labels layer): pass the layer's data as it is. Level 0 is read block by block (the
    data's own chunks where it has them), so a zarr-backed 20000 x 20000 result is never
    in memory at once; the lower levels are made again from level 0 by nearest
    decimation (level ``k`` keeps pixel ``j * 2**k``, which never invents a label), as
    :class:`~napari_seamless.stores.PyramidStore` makes them. The output is written to a
    temporary sibling and swapped in atomically when complete (see
    :func:`output_transaction`): a failure at any point leaves no half-written output and
    whatever was at ``path`` as it was.

    - ``.ome.zarr`` / ``.zarr``: an OME-Zarr labels multiscale image (NGFF 0.4, zarr
      format 2, ``image-label`` metadata, levels ``"0"``, ``"1"``, ...) with the record of
      :class:`~napari_seamless.stores.OmeZarrStore` (``settings`` = ``metadata``).
    - ``.tif`` / ``.tiff``: a tiled (256 x 256), zlib-compressed BigTIFF; a 2D image
      larger than ``min_size`` gets its lower levels as SubIFDs (a pyramid), a 3D one is
      written as level 0 only (a TIFF pyramid cannot halve Z), one page per plane. Level
      0's description carries the labels record
      (:func:`~napari_seamless.stores.write_tiff_pyramid`), so the napari-seamless reader
      opens it as a Labels layer.

    Parameters
    ----------
    data : array-like or sequence of array-like
        Integer (or boolean) labels of shape ``(Y, X)`` or ``(Z, Y, X)``: a numpy, zarr
        or dask array, or a list of pyramid levels, level 0 (full resolution) first, as
        napari keeps multiscale layer data (a ``MultiScaleData`` is accepted too; only
        level 0 is read). Booleans are written as ``uint8``; other dtypes as they are.
    path : str or PathLike
        Where to write; must end in ``.ome.zarr``, ``.zarr``, ``.tif`` or ``.tiff``.
    overwrite : bool
        Replace ``path`` if it exists and napari-seamless wrote it (a TIFF, or a zarr
        folder it marked as its own); anything else is never replaced.
    axes : str, optional
        ``"yx"`` or ``"zyx"``; by default from the number of axes.
    metadata : mapping, optional
        Settings to record with the labels (e.g. the run's model, tile and halo); any
        values (numbers, strings, paths, numpy scalars; others as their ``str``).
    name : str, optional
        Name of the image in the OME-Zarr metadata (what napari names the layer); by
        default the file name up to its first dot.
    min_size : int
        The pyramid stops once its largest axis is at most this many pixels
        (:func:`~napari_seamless.stores.pyramid_shapes`); a larger value gives fewer
        levels.
    compression : str or None
        TIFF compression (``"zlib"``, ``"zstd"``, ``"lzw"``, ...) or None; OME-Zarr
        chunks use zarr's default compressor.

    Returns
    -------
    Path
        ``path``, complete.

    Raises
    ------
    OutputError
        If ``path`` has another suffix, exists and ``overwrite`` is False, exists but was
        not written by napari-seamless, is where ``data`` is read from, its folder is
        missing or read-only or lacks the space, or another run is writing it
        (:class:`OutputBusyError`).
    ArgumentError
        If ``data`` is empty, not 2D or 3D, not integers or booleans, or ``axes`` does
        not fit it (a :class:`ValueError` too).
    ArgumentTypeError
        If ``data`` is not an array nor a sequence of arrays (a :class:`TypeError` too).

    Examples
    --------
    >>> export_labels(labels, "cells.ome.zarr")                     # doctest: +SKIP
    >>> export_labels(layer.data, "cells.tif", overwrite=True)      # doctest: +SKIP
    """
    from .errors import ArgumentError

    out = Path(path).expanduser()
    lower = out.name.lower()
    if not lower.endswith(EXPORT_SUFFIXES) or lower in EXPORT_SUFFIXES:
        raise OutputError(
            f"cannot export labels to {out}: the name must end in .ome.zarr, .zarr, .tif "
            "or .tiff, which says the format"
        )
    levels = _export_levels(data)
    level0 = levels[0]
    shape = tuple(int(s) for s in level0.shape)
    if len(shape) not in (2, 3) or 0 in shape:
        raise ArgumentError(
            f"labels to export must be 2D (Y, X) or 3D (Z, Y, X) with pixels, got shape {shape}"
        )
    letters = (axes or "zyx"[-len(shape) :]).lower()
    if letters not in ("yx", "zyx") or len(letters) != len(shape):
        raise ArgumentError(
            f"axes {axes!r} do not fit labels of shape {shape}: use 'yx' for 2D or 'zyx' for 3D"
        )
    source = np.dtype(level0.dtype)
    if source.kind not in "biu":
        raise ArgumentError(
            f"labels must be integers or booleans, got {source}; round or threshold them "
            "before exporting"
        )
    dtype = np.dtype(np.uint8) if source.kind == "b" else source
    if int(min_size) < 1:
        raise ArgumentError(f"min_size must be at least 1 pixel, got {min_size}")
    for level in levels:
        for src in _data_paths(level):
            if same_or_nested(src, out):
                raise OutputError(
                    f"the labels are read from {src}, which exporting to {out} would replace; "
                    "export to another path"
                )
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise OutputError(
            f"{out} exists; pass overwrite=True to replace it, or export to another path"
        )
    from .stores.tiff import plain_json

    settings = plain_json(dict(metadata or {}))
    tiff = lower.endswith((".tif", ".tiff"))
    nbytes = int(np.prod(shape)) * dtype.itemsize * 4 // 3
    if tiff and not isinstance(level0, np.ndarray):
        nbytes += nbytes // 4  # the scratch of the lower levels
    with output_transaction(out, overwrite=overwrite, nbytes=nbytes) as tmp:
        if tiff:
            _export_tiff(level0, tmp, dtype, letters, settings, min_size, compression)
        else:
            name = name or out.name.split(".")[0]
            _export_ome_zarr(level0, tmp, dtype, letters, settings, min_size, name)
    return out


def _export_levels(data: Any) -> list[Any]:
    """``data`` as a list of levels (one array, or the sequence napari keeps for multiscale)."""
    from collections.abc import Sequence

    from .errors import ArgumentError, ArgumentTypeError

    if isinstance(data, Sequence) and not isinstance(data, str | bytes):
        levels = list(data)
        if not levels:
            raise ArgumentError("there are no labels to export: the list of levels is empty")
    else:
        levels = [data]
    for level in levels:
        if not all(hasattr(level, a) for a in ("shape", "dtype", "__getitem__")):
            hint = " (for a napari layer, pass layer.data)" if hasattr(level, "data") else ""
            raise ArgumentTypeError(
                f"labels to export must be an array (numpy, zarr, dask) or a list of pyramid "
                f"levels, level 0 first; got {type(level).__name__}{hint}"
            )
    return levels


def _data_paths(array: Any) -> list[Path]:
    """Files or folders an array reads from, where it says (a memory map, a local zarr)."""
    found = []
    for owner, attr in ((array, "filename"), (getattr(array, "store", None), "root")):
        value = getattr(owner, attr, None)
        if isinstance(value, str | os.PathLike) and os.fspath(value):
            found.append(Path(value))
    return found


def _blocks(shape: tuple[int, ...], block: tuple[int, ...]) -> list[tuple[slice, ...]]:
    """Slices of ``shape`` in blocks of ``block``, row-major (the last ones clipped)."""
    import itertools

    starts = [range(0, n, b) for n, b in zip(shape, block, strict=True)]
    return [
        tuple(slice(s, min(s + b, n)) for s, b, n in zip(corner, block, shape, strict=True))
        for corner in itertools.product(*starts)
    ]


def _export_block(level0: Any) -> tuple[int, ...]:
    """The block to read level 0 in: its own chunks when sensible, else :data:`EXPORT_BLOCK`."""
    chunks = getattr(level0, "chunks", None)
    ndim = len(level0.shape)
    if (
        isinstance(chunks, tuple)
        and len(chunks) == ndim
        and all(isinstance(c, int) and c >= 16 for c in chunks)
        and int(np.prod(chunks)) <= 2**24
    ):
        return tuple(min(int(c), int(n)) for c, n in zip(chunks, level0.shape, strict=True))
    return tuple(min(b, int(n)) for b, n in zip(EXPORT_BLOCK[ndim], level0.shape, strict=True))


def _read(level: Any, key: tuple[Any, ...], dtype: np.dtype) -> np.ndarray:
    return np.asarray(level[key]).astype(dtype, copy=False)


def _export_ome_zarr(
    level0: Any,
    tmp: Path,
    dtype: np.dtype,
    axes: str,
    settings: dict[str, Any],
    min_size: int,
    name: str,
) -> None:
    """Write ``level0`` and its decimated levels block by block as an OME-Zarr at ``tmp``."""
    from .stores import OmeZarrStore

    shape = tuple(int(s) for s in level0.shape)
    block = _export_block(level0)
    blocks = _blocks(shape, block)
    store = OmeZarrStore.create(
        tmp,
        shape,
        dtype,
        chunks=block,
        n_tiles=len(blocks),
        kind="labels",
        axes=axes,
        min_size=min_size,
        attrs=settings,
        name=name,
    )
    with store:
        for i, where in enumerate(blocks):
            store.write(where, _read(level0, where, dtype))
            store.mark_done(i)
        store.finish()


class _Bands:
    """A read-only view of ``source`` as ``dtype`` that reads it in aligned bands.

    Every axis but the last is cut into bands of ``band`` (the last read whole); a read
    inside one band is served from the one band kept, so a writer asking for 256 rows at
    a time decodes each chunk of a zarr source once, not once per request.
    """

    def __init__(self, source: Any, dtype: np.dtype, band: tuple[int, ...]) -> None:
        self.source, self.dtype, self.band = source, dtype, band
        self.shape = tuple(int(s) for s in source.shape)
        self.ndim = len(self.shape)
        self._at: tuple[int, ...] | None = None
        self._data: np.ndarray | None = None

    def load(self, corner: tuple[int, ...]) -> np.ndarray:
        """The band whose first index per cut axis is ``corner`` (read once, then kept)."""
        if corner != self._at:
            cuts = zip(corner, self.band, self.shape, strict=False)
            key = (*(slice(c, min(c + b, n)) for c, b, n in cuts), slice(None))
            self._data, self._at = None, None  # free the old band before reading the next
            self._data, self._at = _read(self.source, key, self.dtype), corner
        assert self._data is not None
        return self._data

    def __getitem__(self, key: tuple[Any, ...]) -> np.ndarray:
        key = tuple(key) + (slice(None),) * (self.ndim - len(tuple(key)))
        corner, local = [], []
        for k, b, n in zip(key[:-1], self.band, self.shape, strict=False):
            lo, hi = (k, k + 1) if isinstance(k, int | np.integer) else k.indices(n)[:2]
            c = lo // b * b
            if (not isinstance(k, int | np.integer) and k.indices(n)[2] != 1) or hi > c + b:
                return _read(self.source, key, self.dtype)  # not inside one band: direct
            corner.append(c)
            local.append(k - c if isinstance(k, int | np.integer) else slice(lo - c, hi - c))
        return self.load(tuple(corner))[(*local, key[-1])]


def _tiff_bands(level0: Any, itemsize: int) -> tuple[int, ...]:
    """Bands for :class:`_Bands` over ``level0`` for a TIFF writer reading tile rows.

    Rows: the source's chunk rows rounded up to whole TIFF tile rows (so a tile row never
    straddles two bands), fewer while a band exceeds :data:`_BAND_BYTES`; planes (3D):
    the source's chunk depth, fewer likewise.
    """
    shape = tuple(int(s) for s in level0.shape)
    chunks = getattr(level0, "chunks", None)
    own = (
        tuple(int(c) for c in chunks)
        if isinstance(chunks, tuple) and all(isinstance(c, int) for c in chunks)
        else (1,) * len(shape)
    )
    tile = _TIFF_TILE[0]
    rows = min(max(tile, -(-own[-2] // tile) * tile), 8 * tile)
    planes = own[0] if len(shape) == 3 else 1
    while planes > 1 and planes * rows * shape[-1] * itemsize > _BAND_BYTES:
        planes = -(-planes // 2)
    while rows > tile and planes * rows * shape[-1] * itemsize > _BAND_BYTES:
        rows -= tile
    return (planes, rows) if len(shape) == 3 else (rows,)


def _export_tiff(
    level0: Any,
    tmp: Path,
    dtype: np.dtype,
    axes: str,
    settings: dict[str, Any],
    min_size: int,
    compression: str | None,
) -> None:
    """Write ``level0`` (and, 2D, its decimated levels) as a tiled labels TIFF at ``tmp``.

    A numpy source is handed over as strided views. Any other is read in bands
    (:class:`_Bands`); the lower levels are filled from the same bands into a scratch
    zarr beside ``tmp`` first (a quarter of level 0's size), deleted at the end.
    """
    import zarr

    from .stores import level_slices, pyramid_shapes, write_tiff_pyramid

    shape = tuple(int(s) for s in level0.shape)
    shapes = pyramid_shapes(shape, min_size) if len(shape) == 2 else [shape]
    kwargs = {
        "axes": axes.upper(),
        "compression": compression,
        "tile": _TIFF_TILE,
        "kind": "labels",
        "settings": settings,
    }
    if isinstance(level0, np.ndarray):
        views = [level0[:: 2**k, :: 2**k] if k else level0 for k in range(len(shapes))]
        if level0.dtype != dtype:
            band = (1,) * (level0.ndim - 2) + (_TIFF_TILE[0],)  # one tile row of one plane
            views = [_Bands(v, dtype, band) for v in views]
        write_tiff_pyramid(views, tmp, **kwargs)
        return
    bands = _Bands(level0, dtype, _tiff_bands(level0, dtype.itemsize))
    scratch = tmp.with_name(tmp.name + ".levels.zarr")  # a partial: removed if left behind
    try:
        levels: list[Any] = [bands]
        if len(shapes) > 1:
            group = zarr.open_group(str(scratch), mode="w", zarr_format=2)
            for k, s in enumerate(shapes[1:], start=1):
                levels.append(
                    group.create_array(
                        str(k), shape=s, dtype=dtype, chunks=_TIFF_TILE, fill_value=0
                    )
                )
            rows = bands.band[-1]
            for y0 in range(0, shape[0], rows):
                band = bands.load((y0,))
                where = (slice(y0, y0 + band.shape[0]), slice(0, shape[1]))
                for k in range(1, len(shapes)):
                    share = level_slices(where, k)
                    if share is not None:
                        dst, src = share
                        levels[k][dst] = band[src]
        write_tiff_pyramid(levels, tmp, **kwargs)
    finally:
        _remove(scratch)
