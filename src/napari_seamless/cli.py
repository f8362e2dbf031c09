"""The ``seamless`` command line: ``predict``, ``halo`` and ``demo``.

Examples
--------
::

    seamless predict image.tif -o labels.tif                 # default model, tile chosen
    seamless predict image.tif -o labels.tif --tile 1024     # a tile of your own
    seamless predict image.tif -o scores.zarr --probabilities
    seamless predict image.tif -o nuclei.tif --instances watershed   # one integer per object
    seamless halo --model nuclei --json
    seamless demo --screenshot demo.png
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _fail(message: str) -> int:
    print(f"seamless: error: {message}", file=sys.stderr)
    return 2


def _open_input(args: argparse.Namespace) -> tuple[Any, Any, str | None]:
    """Read ``args.image`` as asked (``--series/--level/--array/--axes/--index``).

    Returns the :class:`~napari_seamless.io.InputImage` as read, the one to run (planes
    picked; what a cluster's workers open again) and its axes (None when neither the file
    nor ``--axes`` names them). Notes on the choices made are printed.

    Raises
    ------
    InputError
        For an unreadable input, or ``--index`` without known axes.
    """
    from .io import InputError, parse_index, read_image

    src = Path(args.image)
    index = parse_index(args.index)
    source = read_image(src, series=args.series, level=args.level, array=args.array)
    for note in source.notes:
        print(f"seamless: note: {note}", file=sys.stderr)
    image, axes = source, (args.axes.upper() if args.axes else source.axes)
    if index:
        if axes is None:
            raise InputError(
                f"--index needs the axes of {src.name} (shape {source.shape}), which the file "
                "does not name: pass them with --axes, e.g. --axes TZYX"
            )
        image = source.select(index, axes)
        axes = image.axes
    return source, image, axes


def _cluster_refusal(args: argparse.Namespace) -> str | None:
    """Why the cluster options cannot be used as given, or None."""
    if args.workers is not None and args.workers < 1:
        return f"--workers must be 1 or more, got {args.workers}"
    if args.batch_tiles < 1:
        return f"--batch-tiles must be 1 or more, got {args.batch_tiles}"
    try:
        import distributed  # noqa: F401
    except ImportError:
        return "--workers/--scheduler need dask.distributed: pip install 'napari-seamless[cluster]'"
    return None


class _dask_client:  # noqa: N801 (used as a context manager, like a function)
    """A client of ``--scheduler``, or of a LocalCluster of ``--workers`` processes."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cluster: Any = None
        self.client: Any = None

    def __enter__(self) -> Any:
        import logging

        from distributed import Client

        from .engine.cluster import local_cluster

        # dask's INFO lines (scheduler and workers starting, closing) are not for a person
        # running one command; its warnings and errors still show
        logging.getLogger("distributed").setLevel(logging.WARNING)
        # the worker processes inherit it (a user's own setting wins)
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
        # not dask's default scheduler: only the tile tasks go to the cluster
        if self.args.scheduler is not None:
            self.client = Client(self.args.scheduler, set_as_default=False)
        else:  # one worker per GPU when there are GPUs (CUDA_VISIBLE_DEVICES)
            self.cluster = local_cluster(self.args.workers)
            self.client = Client(self.cluster, set_as_default=False)
        where = self.args.scheduler or f"a local cluster of {self.args.workers} worker(s)"
        link = getattr(self.client, "dashboard_link", None)
        print(
            f"seamless: running on {where}" + (f"; dashboard: {link}" if link else ""),
            file=sys.stderr,
        )
        return self.client

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def _output_key(value: str | None) -> int | str | None:
    """``--output-index``: an integer index, or a key / output id."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return value


def _model_digest(module: Any) -> str:
    """SHA-256 of a model's parameters and buffers: the same weights, the same digest."""
    import hashlib

    h = hashlib.sha256()
    for name, t in list(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _input_identity(src: Path) -> dict[str, Any]:
    """Where the input is and when it last changed: a resumed run must read the same one."""
    stat = src.stat()
    return {"input": str(src.resolve()), "input_mtime_ns": stat.st_mtime_ns}


def _tile_arg(text: str) -> int | str:
    """``--tile``: ``auto`` or a window size in pixels."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a window size in pixels (e.g. 1024) nor 'auto'"
        ) from None


def _budget_arg(text: str) -> int:
    """``--memory-budget``: a size such as 4GB, in bytes."""
    from .engine.autotile import TileBudgetError, parse_bytes

    try:
        return parse_bytes(text)
    except TileBudgetError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _recorded_tile(out: Path) -> tuple[int, ...] | None:
    """The tile a stopped run of ``out`` used (what ``--resume`` must use again), or None."""
    from .io import stopped_runs
    from .stores import OmeZarrStore

    runs = stopped_runs(out)
    if not runs:
        return None
    try:  # the newest stopped run, the one --resume continues
        tile = OmeZarrStore.open(runs[-1], mode="r").settings.get("tile")
    except Exception:  # noqa: BLE001 - unreadable: the resume itself will say why
        return None
    if isinstance(tile, list) and tile and all(isinstance(t, int) for t in tile):
        return tuple(tile)
    return None


def _choose_tile(args: argparse.Namespace, pred: Any, spatial: tuple[int, ...], out: Path) -> Any:
    """The tile of this run: ``--tile N``, the stopped run's on ``--resume``, or a probe's."""
    from .engine import choose_tile

    if args.tile != "auto":
        return args.tile
    if args.resume and (tile := _recorded_tile(out)) is not None:
        if not args.quiet:
            shown = "x".join(map(str, tile)) if len(set(tile)) > 1 else str(tile[0])
            print(f"seamless: tile auto: {shown}, as in the stopped run", file=sys.stderr)
        return tile
    choice = choose_tile(
        pred, spatial, args.memory_budget, batch_size=args.batch_size, border=args.border
    )
    if not args.quiet:
        print(f"seamless: tile auto: {choice.describe()}", file=sys.stderr)
    return choice.tile


def _cmd_predict(args: argparse.Namespace) -> int:
    import time
    import warnings

    import numpy as np

    from .engine import InexactHaloWarning, SerialExecutor, ThreadedExecutor, to_channel_first
    from .grid import count
    from .io import (
        OutputError,
        check_output_location,
        check_replaceable,
        resumable_output,
        same_or_nested,
    )
    from .models import ConventionWarning, load_model
    from .stores import OmeZarrStore, write_tiff_pyramid

    out = Path(args.output)
    if out.suffix.lower() not in (".tif", ".tiff", ".zarr"):
        return _fail(f"output {out} must end in .tif, .tiff or .zarr")
    src = Path(args.image)
    if same_or_nested(src, out):
        return _fail(
            f"output {out} is the input {src} or lies inside or around it; the input is never "
            "written over: choose another output path"
        )
    check_replaceable(out, args.overwrite)  # told before any work, again under the lock
    if args.resume and args.fresh:
        return _fail("--resume continues a stopped run and --fresh discards it: choose one")
    if args.readers < 0:
        return _fail(f"--readers must be 0 (no pipeline) or more, got {args.readers}")
    if args.instances and args.probabilities:
        return _fail(
            "--instances labels the objects of the semantic labels, so it cannot write "
            "--probabilities: choose one"
        )
    if args.min_distance is not None and args.instances != "watershed":
        return _fail("--min-distance sets the watershed's seeds: add --instances watershed")
    if args.min_distance is not None and args.min_distance < 1:
        return _fail(f"--min-distance must be 1 pixel or more, got {args.min_distance}")
    if args.tile != "auto" and args.memory_budget is not None:
        return _fail(
            "--memory-budget sets what --tile auto may use; drop it, or pass --tile auto "
            "instead of a window size"
        )
    cluster = args.workers is not None or args.scheduler is not None
    if cluster:
        problem = _cluster_refusal(args)
        if problem:
            return _fail(problem)
    check_output_location(out)  # a missing or read-only folder is told before any work
    source, image, axes = _open_input(args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConventionWarning)  # printed below as notes
        loaded = load_model(
            args.model,
            allow_pickle=args.allow_pickle,
            output=_output_key(args.output_index),
            activation=args.activation,
            threshold=args.threshold,
        )
    for note in loaded.meta.get("notes", []):
        print(f"seamless: note: {note}", file=sys.stderr)
    # channels and axes first: a mismatch is told before any analysis or inference
    to_channel_first(image.data, loaded.ndim, loaded.in_channels, axes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InexactHaloWarning)  # printed below in one line
        pred = loaded.predictor(
            halo=args.halo,
            device=args.device,
            dtype="float64" if args.float64 else "float32",
            time_budget=args.time_budget if args.time_budget > 0 else None,
            fast=args.fast,
        )
    if pred.fast:
        print(
            "seamless: note: --fast runs in bfloat16: the result is NOT bit-exact (scores "
            "differ from whole-image inference by ~1e-2, labels at a few pixels)",
            file=sys.stderr,
        )
    if pred.rf is not None and (warning := loaded.declared_halo_warning(pred.rf)):
        print(f"seamless: warning: {warning}", file=sys.stderr)
    if args.halo is not None and pred.rf is not None and args.halo < pred.rf.halo[0]:
        print(
            f"seamless: warning: halo {args.halo} is below the exact halo {pred.rf.halo[0]}; "
            "the result will differ from whole-image inference",
            file=sys.stderr,
        )
    arr, axes = to_channel_first(image.data, pred.ndim, pred.in_channels, axes)
    spatial = tuple(int(n) for n in arr.shape[1:])
    tile = _choose_tile(args, pred, spatial, out)
    grid = pred.grid(spatial, tile, border=args.border)
    print(
        f"seamless: {src.name} ({source.source}) {spatial} | model {loaded.name} "
        f"({pred.convention}) | {grid.describe()}",
        file=sys.stderr,
    )
    classes = pred.classes()
    letters = "zyx"[-len(spatial) :]
    if args.probabilities:
        shape, dtype, output = (classes, *spatial), np.dtype(pred.np_dtype), "probabilities"
        kind, store_axes = "image", "c" + letters
    else:
        shape, dtype, output = spatial, np.dtype(pred.label_dtype(classes)), "labels"
        kind, store_axes = "labels", letters
    settings = {
        **_input_identity(src),
        "input_source": source.source,
        "input_shape": list(source.shape),
        "axes": axes,
        "index": args.index,
        "model": loaded.name,
        "model_digest": _model_digest(pred.model),
        "convention": pred.convention,
        "precision": "bfloat16 autocast (fast)" if pred.fast else pred.dtype,
        "output": output,
        "tile": list(grid.tile),
        "halo": list(grid.halo),
        "factor": list(grid.factor),
        "border": args.border,
        "grid_shape": list(grid.grid_shape),
    }
    tiff = out.suffix.lower() != ".zarr"
    nbytes = int(np.prod(shape)) * dtype.itemsize * 4 // 3 * (2 if tiff else 1)  # + pyramid
    executor = ThreadedExecutor(readers=args.readers) if args.readers else SerialExecutor()
    started = time.perf_counter()
    # Tiles go to a scratch OME-Zarr beside the output that records each finished tile; a
    # stopped run leaves it for --resume; the output appears, complete, in one atomic swap.
    with resumable_output(
        out, overwrite=args.overwrite, nbytes=nbytes, resume=args.resume, fresh=args.fresh
    ) as part:
        if part.resumed:
            part.keep = args.resumable = (
                True  # never lose a stopped run's tiles, even to a refusal here
            )
            store = OmeZarrStore.open(part.scratch)
            wrong = store.mismatch(settings, len(grid))
            if wrong:
                key, was, now = wrong
                raise OutputError(
                    f"the stopped run in {part.scratch.name} used {key} {was}, this run "
                    f"{now}; resume with the same input, model and settings, or pass --fresh "
                    "to start again"
                )
            print(
                f"seamless: resuming: {len(store.done)} of {store.tiles_total} tiles were "
                f"done; computing the {len(store.missing)} missing",
                file=sys.stderr,
            )
        else:
            if args.resume:
                print("seamless: note: no stopped run to resume; starting", file=sys.stderr)
            store = pred.create_output(
                part.scratch,
                grid,
                output,
                attrs=settings,
                name=out.name.split(".")[0],
                source_image=str(src.resolve()),
            )
        todo = store.missing
        with contextlib.ExitStack() as stack:
            if cluster:
                from .engine.cluster import DaskExecutor

                client = stack.enter_context(_dask_client(args))
                executor = DaskExecutor(client, batch_tiles=args.batch_tiles)
            run = pred.run(
                image,
                store,
                tile,
                output=output,
                axes=axes,
                normalization=loaded.normalization,
                border=args.border,
                batch_size=args.batch_size,
                order=todo,
                executor=executor,
            )
            bar = None
            if not args.quiet and todo:
                from tqdm.auto import tqdm

                bar = tqdm(
                    total=store.tiles_total, initial=len(store.done), unit="tile", desc="seamless"
                )
            try:
                for ev in run:
                    store.mark_done(ev.tile.index)
                    part.keep = args.resumable = True
                    if bar is not None:
                        bar.update(1)
            finally:
                run.close()
                store.flush()
                if bar is not None:
                    bar.close()
        if cluster:
            workers = ", ".join(f"{n} on {w}" for w, n in sorted(executor.workers.items()))
            print(f"seamless: cluster: {executor.tasks} tasks; tiles {workers}", file=sys.stderr)
        store.finish()
        if args.instances:  # the instance labels take the place of the semantic ones
            store = _instance_labels(args, store, grid, part, settings, src)
        if tiff:  # the record marks it as ours: label TIFFs open as labels in napari
            write_tiff_pyramid(
                store.levels if len(spatial) == 2 else store.levels[:1],  # a TIFF cannot halve Z
                part.path,
                axes=store_axes.upper(),
                kind=kind,
                settings=store.settings,
            )
    seconds = time.perf_counter() - started
    efficiency = "" if cluster else f", pipeline efficiency {run.stats.efficiency:.2f}"
    if run.backoffs:
        last = run.backoffs[-1]
        print(
            f"seamless: note: {run.backoffs[0].describe()}; ended with windows of at most "
            f"{'x'.join(map(str, last.window))} after {len(run.backoffs)} back-off(s), the "
            "result unchanged (every part with its full halo)",
            file=sys.stderr,
        )
    print(
        f"seamless: wrote {out} ({count(len(todo), 'tile')} computed"
        f"{f', {store.tiles_total - len(todo)} resumed' if part.resumed else ''}, "
        f"{seconds:.1f} s{efficiency})",
        file=sys.stderr,
    )
    return 0


def _instance_labels(
    args: argparse.Namespace, semantic: Any, grid: Any, part: Any, settings: dict, src: Path
) -> Any:
    """``--instances``: instance labels of a finished semantic run, in place of its labels.

    They are computed tile by tile on the run's ZoR grid
    (:func:`napari_seamless.instances.label_instances`) into an OME-Zarr beside the output
    (``.NAME.instances-PID``), which then replaces the semantic scratch, so the output's
    atomic swap is unchanged. Until that replacement the semantic tiles stay where a
    stopped run keeps them: ``--resume`` then only labels again. Returns the store of the
    instance labels (uint32, 0 = background, objects 1..N).

    Raises
    ------
    InstanceError
        If a component is too large for the watershed (``--instances components`` has no
        limit); the semantic tiles are kept for ``--resume``.
    """
    import time

    import numpy as np

    from .instances import MIN_DISTANCE, InstanceError, ObjectTooLargeError, label_instances
    from .stores import OmeZarrStore

    out, started = part.out, time.perf_counter()
    for stale in out.parent.glob(f".{out.name}.instances-*"):  # a killed run's (we hold the lock)
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink()
    tmp = out.with_name(f".{out.name}.instances-{os.getpid()}")
    min_distance = args.min_distance or MIN_DISTANCE
    spatial, zor = tuple(semantic.shape), tuple(grid.zor_size)
    tiles = int(np.prod([-(-n // z) for n, z in zip(spatial, zor, strict=True)]))
    record = {**settings, "output": "instances", "instances": args.instances}
    if args.instances == "watershed":
        record["min_distance"] = min_distance
    store = OmeZarrStore.create(
        tmp,
        spatial,
        np.uint32,
        chunks=zor,
        n_tiles=tiles,
        kind="labels",
        axes=semantic.axes,
        attrs=record,
        name=out.name.split(".")[0],
        source_image=str(src.resolve()),
    )

    class _Level0:
        """``store`` as the writable array label_instances expects (all levels written)."""

        shape, dtype = spatial, np.dtype(np.uint32)

        def __getitem__(self, key: Any) -> Any:
            return store.levels[0][key]

        def __setitem__(self, key: Any, value: Any) -> None:
            store.write(key, np.asarray(value))

    bar = None
    if not args.quiet:
        from tqdm.auto import tqdm

        steps = tiles * (2 if args.instances == "components" else 1)
        bar = tqdm(total=steps, desc="instances", unit="step")
    try:
        try:
            result = label_instances(
                semantic.levels[0],
                zor,
                method=args.instances,
                min_distance=min_distance,
                out=_Level0(),
                progress=None if bar is None else (lambda done, total: bar.update(1)),
            )
        except ObjectTooLargeError as err:
            raise InstanceError(
                f"{err}; with the CLI: --instances components (objects of any size), "
                "and --resume to reuse the finished semantic tiles"
            ) from None
        finally:
            if bar is not None:
                bar.close()
        for index in range(tiles):
            store.mark_done(index)
        store.finish()
        shutil.rmtree(part.scratch)  # the semantic tiles, now labelled
        os.rename(tmp, part.scratch)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(
        f"seamless: instances: {result.count} objects ({args.instances}"
        f"{f', min distance {min_distance} px' if args.instances == 'watershed' else ''}), "
        f"labelled on the ZoR grid in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    return OmeZarrStore.open(part.scratch)


def _overlap(text: str) -> int | float:
    """``--overlap``: pixels (``64``) or a fraction of the window (``0.25``)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither pixels (e.g. 64) nor a fraction of the window (e.g. 0.25)"
        ) from None


def _cmd_compare(args: argparse.Namespace) -> int:
    import time

    from .engine import predict, to_channel_first
    from .grid import TileGrid, parse_region
    from .models import load_model
    from .qa import reference, seam_report

    _, opened, axes = _open_input(args)
    image = opened.data
    loaded = load_model(args.model)
    arr, _ = to_channel_first(image, loaded.ndim, loaded.in_channels, axes)  # before analysis
    spatial = arr.shape[1:]
    if args.region is not None:
        parse_region(args.region, spatial)  # a bad region is told before the analysis
    pred = loaded.predictor(device=args.device, time_budget=args.time_budget or None)
    settings = dict(mode=args.mode, axes=axes)
    if args.halo is not None:
        settings["halo"] = args.halo
    if args.mode == "overlap-average":
        settings.update(weights=args.weights)
        if args.overlap is not None:
            settings["overlap"] = args.overlap
    plan = pred.plan(spatial, args.tile, **{k: v for k, v in settings.items() if k != "axes"})
    budget = None if args.budget is None else int(args.budget * 2**30)
    ref = reference(pred, image, args.region, budget=budget, axes=axes)
    t0 = time.perf_counter()
    scores = predict(pred, image, args.tile, **settings)
    seconds = time.perf_counter() - t0
    grid = plan if isinstance(plan, TileGrid) else None
    report = seam_report(ref, scores, pred.labels(scores), grid, seconds, spatial)
    c = report.comparison
    exact_halo = pred.halo[0]
    halo = grid.halo[0] if grid is not None else None
    region = ",".join(f"{s.start}:{s.stop}" for s in ref.region)
    if args.json:
        print(
            json.dumps(
                {
                    "image": str(args.image),
                    "model": loaded.name,
                    "mode": args.mode,
                    "tile": args.tile,
                    "halo": halo,
                    "exact_halo": exact_halo,
                    "factor": pred.factor[0],
                    "overlap": None if grid is not None else plan.overlap[0],
                    "weights": args.weights if args.mode == "overlap-average" else None,
                    "reference": "whole image" if ref.whole else "region",
                    "region": region,
                    "rmse": c.rmse,
                    "me": c.me,
                    "nme": c.nme,
                    "max_abs": c.max_abs,
                    "exact": c.exact,
                    "relative_runtime": report.relative_runtime,
                }
            )
        )
    else:
        how = (
            f"halo {halo} (exact halo {exact_halo})"
            if grid is not None
            else f"overlap {plan.overlap[0]} px, {args.weights} weights"
        )
        against = "the whole image" if ref.whole else f"the region reference {region}"
        print(
            f"{Path(args.image).name}: {args.mode}, tile {args.tile}, {how}: {c.describe()} "
            f"against {against}; runtime {report.relative_runtime:.2f}x whole-image inference"
            + ("" if ref.whole else " (estimated from the region by pixels)")
        )
    return 0


def _range(text: str, what: str) -> list[int]:
    """``"0:128:16"`` (start:stop:step, stop included) or ``"0,16,96"`` as integers."""
    from .qa.sweep import parse_range

    return parse_range(text, what)


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    """Write a table to ``path`` through a temporary sibling, swapped in when complete."""
    import csv

    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _cmd_sweep(args: argparse.Namespace) -> int:
    import warnings

    from .engine import InexactHaloWarning, to_channel_first
    from .models import load_model
    from .qa import halo_sweep

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        return _fail(f"{out} exists and is not a folder; choose a folder for the sweep")
    _, opened, axes = _open_input(args)
    image = opened.data
    loaded = load_model(args.model)
    to_channel_first(image.data, loaded.ndim, loaded.in_channels, axes)  # before the analysis
    pred = loaded.predictor(device=args.device, time_budget=args.time_budget or None)
    factor, exact = pred.factor[0], pred.halo[0]
    halos = (
        _range(args.halos, "--halos") if args.halos else list(range(0, exact + 2 * factor, factor))
    )
    with warnings.catch_warnings():  # halos below the exact one are the point here
        warnings.simplefilter("ignore", InexactHaloWarning)
        rows = halo_sweep(pred, image, args.tile, halos, axes=axes)
    out.mkdir(parents=True, exist_ok=True)
    table = out / "halo_sweep.csv"
    fields = ["halo", "exact_halo", "factor", "tile", "rmse", "me", "nme", "max_abs"]
    fields += ["tiles", "seconds", "relative_runtime"]
    _write_csv(
        table,
        fields,
        [
            [r.halo, exact, factor, args.tile, r.comparison.rmse, r.comparison.me,
             r.comparison.nme, r.comparison.max_abs, r.tiles, round(r.seconds, 4),
             round(r.relative_runtime, 3)]
            for r in rows
        ],
    )  # fmt: skip
    print(f"halo  RMSE       ME      max|diff|  runtime  (exact halo {exact}, F {factor})")
    for r in rows:
        c = r.comparison
        mark = "  <- exact" if r.halo == exact else ""
        print(
            f"{r.halo:<5} {c.rmse:<10.3g} {c.me:<7} {c.max_abs:<10.3g} "
            f"{r.relative_runtime:.2f}x{mark}"
        )
    print(f"seamless: wrote {table}", file=sys.stderr)
    _sweep_plots(rows, exact, f"{Path(args.image).name}: {loaded.name}, tile {args.tile}", out)
    if args.offsets:
        offsets = _range(args.offsets, "--offsets")
        _offset_table(loaded, pred, image, axes, offsets, out, args)
    return 0


def _sweep_plots(rows: list[Any], exact: int, title: str, out: Path) -> None:
    """``out/halo_sweep.png`` and ``out/error_profile.png`` (Agg, each swapped in whole)."""
    from .qa import profile_figure, save_png, sweep_figure

    for name, figure in (
        ("halo_sweep.png", sweep_figure(rows, exact, title=title)),
        ("error_profile.png", profile_figure(rows, exact_halo=exact, title=title)),
    ):
        print(f"seamless: wrote {save_png(figure, out / name)}", file=sys.stderr)


def _offset_table(
    loaded: Any,
    analysed: Any,
    image: Any,
    axes: str | None,
    offsets: list[int],
    out: Path,
    args: Any,
) -> None:
    """The stride-offset experiment (paper Fig. 4) in float64, to ``out/offsets.csv``/``.png``."""
    import numpy as np

    from .engine import to_channel_first
    from .preprocessing import PercentileNormalization
    from .qa import offset_experiment, offsets_figure, save_png

    # F and the halo of the analysis already done (``analysed``), not a second analysis
    pred = loaded.predictor(
        halo=analysed.halo, factor=analysed.factor, device=args.device, dtype="float64"
    )
    arr, _ = to_channel_first(image, pred.ndim, pred.in_channels, axes)
    arr = np.asarray(arr)
    normalised = PercentileNormalization.fit(arr)(arr, dtype=np.float64)  # one fixed map
    rows = offset_experiment(pred, normalised, offsets, axes="C" + "ZYX"[-pred.ndim :])
    table = out / "offsets.csv"
    _write_csv(
        table,
        ["offset", "factor", "aligned", "identical", "max_abs", "pixels"],
        [[r.offset, pred.factor[0], r.aligned, r.identical, r.max_abs, r.pixels] for r in rows],
    )
    print(f"offset  aligned  identical  max|diff|  (float64, F {pred.factor[0]})")
    for r in rows:
        print(f"{r.offset:<7} {str(r.aligned):<8} {str(r.identical):<10} {r.max_abs:.3g}")
    print(f"seamless: wrote {table}", file=sys.stderr)
    title = f"{Path(args.image).name}: {loaded.name}, float64"
    figure = offsets_figure(rows, pred.factor[0], title=title)
    print(f"seamless: wrote {save_png(figure, out / 'offsets.png')}", file=sys.stderr)


def _halo_row(name: str, verify: bool, time_budget: float | None = 30.0) -> dict[str, Any]:
    import time

    from .analysis import effective_receptive_field, receptive_field, verify_halo
    from .models import load_model

    loaded = load_model(name)
    t0 = time.perf_counter()
    rf = receptive_field(
        loaded.module, ndim=loaded.ndim, in_channels=loaded.in_channels, time_budget=time_budget
    )
    seconds = time.perf_counter() - t0
    erf = effective_receptive_field(
        loaded.module, ndim=loaded.ndim, in_channels=loaded.in_channels, factor=rf.factor[0]
    )
    row: dict[str, Any] = {
        "model": loaded.name,
        "factor": rf.factor,
        "halo": rf.halo,
        "left": rf.left,
        "right": rf.right,
        "eq1": rf.eq1,
        "erf": erf,
        "method": rf.method,
        "seconds": round(seconds, 3),
        "rf": rf,
    }
    from .models.architectures import PAPER_TABLE2

    row["paper_table2"] = PAPER_TABLE2.get(loaded.name)
    if verify:
        support = verify_halo(loaded.module, rf, ndim=loaded.ndim, in_channels=loaded.in_channels)
        row["support_test"] = {
            "leaks_at_halo": support.leaks_at_halo,
            "leaks_one_step_below": support.leaks_below,
            "confirmed": support.confirmed,
            "positive_copy": dict(
                zip(("leaks_at_halo", "leaks_below"), support.positive, strict=False)
            ),
            "perturbation": dict(
                zip(("leaks_at_halo", "leaks_below"), support.perturbation, strict=False)
            ),
            "perturbation_dtype": support.dtype,
        }
        row["support"] = support
    return row


def _cmd_halo(args: argparse.Namespace) -> int:
    from .models.architectures import ARCHITECTURES

    names = list(ARCHITECTURES) if args.model == "all" else [args.model]
    budget = args.time_budget if args.time_budget > 0 else None
    rows = [_halo_row(n, args.verify, budget) for n in names]
    ok = all(r.get("support_test", {"confirmed": True})["confirmed"] for r in rows)
    if args.json:
        for r in rows:
            print(json.dumps({k: v for k, v in r.items() if k not in ("rf", "support")}))
        return 0 if ok else 1
    if len(rows) == 1 and args.model != "all":
        r = rows[0]
        print(f"{r['model']}: {r['rf'].describe()} [{r['seconds']:.2f} s]")
        erf = r["erf"]
        print(
            "  effective receptive field estimate (Luo et al., 0.1% of peak gradient): "
            f"{erf[0] if len(set(erf)) == 1 else erf} px (tends to fall short of the exact halo)"
        )
        if "support" in r:
            for line in r["support"].describe().splitlines():
                print(f"  {line}")
        return 0 if ok else 1

    def one(v: Any) -> str:
        if v is None:
            return "-"
        v = tuple(v) if isinstance(v, (tuple, list)) else (v,)
        return str(v[0]) if len(set(v)) == 1 else "/".join(map(str, v))

    head = ["model", "F", "Eq. 1", "Table 2", "extents L/R", "exact halo", "ERF", "time (s)"]
    if args.verify:
        head.append("support test")
    table = [head]
    for r in rows:
        line = [
            r["model"],
            one(r["factor"]),
            one(r["eq1"]),
            one(r["paper_table2"]),
            f"{one(r['left'])}/{one(r['right'])}",
            one(r["halo"]),
            one(r["erf"]),
            f"{r['seconds']:.2f}",
        ]
        if args.verify:
            line.append("confirmed" if r["support_test"]["confirmed"] else "FAILED")
        table.append(line)
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for i, row in enumerate(table):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    return 0 if ok else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    if (
        not os.environ.get("DISPLAY")
        and sys.platform.startswith("linux")
        and not os.environ.get("SEAMLESS_NO_XVFB")
    ):
        xvfb = shutil.which("xvfb-run")
        if xvfb is None:
            return _fail(
                "no display and no xvfb-run: install xvfb (apt-get install xvfb) or set DISPLAY"
            )
        env = {**os.environ, "SEAMLESS_NO_XVFB": "1"}
        cmd = [
            xvfb,
            "-a",
            "-s",
            "-screen 0 1600x1000x24",
            sys.executable,
            "-m",
            "napari_seamless.cli",
            *sys.argv[1:],
        ]
        if args.screenshot is None:
            print(
                "seamless: no display; running under Xvfb. Pass --screenshot PNG to see the result.",
                file=sys.stderr,
            )
        return subprocess.call(cmd, env=env)
    from ._napari.demo import run_demo

    return run_demo(size=args.size, tile=args.tile, model=args.model, screenshot=args.screenshot)


def _add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """The input image and how to read it; what :func:`_open_input` reads back."""
    parser.add_argument("image", help="input TIFF, zarr array or group, or OME-Zarr image")
    parser.add_argument(
        "--axes",
        default=None,
        help="axes of the input, e.g. YX, CYX, YXC, TZYX (default: from the file's metadata, "
        "else guessed)",
    )
    parser.add_argument(
        "--index",
        default=None,
        metavar="AXIS=N[,...]",
        help="pick planes of N-D data before inference, e.g. --index T=3 or --index T=0,Z=12 "
        "(a Z-stack with a 2D model; a 3D model takes the whole stack)",
    )
    parser.add_argument(
        "--series", type=int, default=None, help="TIFF series to read (default 0; told if several)"
    )
    parser.add_argument(
        "--level",
        type=int,
        default=None,
        help="pyramid level to read, TIFF or OME-Zarr (default 0: full resolution)",
    )
    parser.add_argument(
        "--array", default=None, help="array inside a zarr group (when it holds several)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``seamless`` command."""
    from . import __version__

    p = argparse.ArgumentParser(
        prog="seamless", description="Exact tile-based segmentation inference (ZoR + halo)."
    )
    p.add_argument("--version", action="version", version=f"napari-seamless {__version__}")
    p.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    sub = p.add_subparsers(dest="command", required=True)

    pr = sub.add_parser("predict", help="segment an image by exact tiled inference")
    _add_input_arguments(pr)
    pr.add_argument("-o", "--output", required=True, help="output .tif/.tiff or .zarr")
    pr.add_argument(
        "--model",
        default="nuclei",
        help="built-in name, bioimage.io package (folder, rdf.yaml or .zip), module:function, "
        "file.py:function, or a TorchScript / state-dict file (default: nuclei)",
    )
    pr.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow a whole pickled module (torch.save(model)); unpickling runs code from the "
        "file, so only for files you trust",
    )
    pr.add_argument(
        "--output-index",
        default=None,
        metavar="INDEX_OR_KEY",
        help="which output of a model returning a tuple (index) or dict (key), or the output "
        "id of a bioimage.io package",
    )
    pr.add_argument(
        "--activation",
        choices=["softmax", "sigmoid", "identity"],
        default=None,
        help="output convention: softmax over channels (labels = argmax), sigmoid "
        "(labels = p > threshold), identity (already probabilities); default: what the model "
        "declares, else softmax, or sigmoid for one channel",
    )
    pr.add_argument(
        "--time-budget",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds the halo analysis may take (default 30; 0: no limit)",
    )
    pr.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="probability threshold of sigmoid / one-channel outputs (default 0.5)",
    )
    pr.add_argument(
        "--tile",
        type=_tile_arg,
        default="auto",
        metavar="N|auto",
        help="input window size in pixels, a multiple of F; 'auto' (default): the fastest "
        "that fits the memory budget, from a probe of the model of a few seconds",
    )
    pr.add_argument(
        "--memory-budget",
        type=_budget_arg,
        default=None,
        metavar="SIZE",
        help="memory one forward pass may take with --tile auto, e.g. 4GB or 512MiB "
        "(default: 80%% of the free GPU memory, or half the available RAM)",
    )
    pr.add_argument(
        "--halo", type=int, default=None, help="override the halo computed from the model (pixels)"
    )
    pr.add_argument(
        "--probabilities",
        action="store_true",
        help="write probabilities (C, Y, X) float32 (after the activation) instead of labels",
    )
    pr.add_argument(
        "--instances",
        choices=["components", "watershed"],
        default=None,
        help="write instance labels (uint32, one integer per object) instead of semantic "
        "labels, computed tile by tile on the run's ZoR grid after inference and equal to "
        "labelling the whole image: connected components (8-connected), or components split "
        "by a distance-transform watershed (touching nuclei)",
    )
    pr.add_argument(
        "--min-distance",
        type=int,
        default=None,
        metavar="PX",
        help="--instances watershed: a pixel seeds an object when its distance to the "
        "background is the largest within PX pixels (default 7); larger splits less",
    )
    pr.add_argument(
        "--border",
        choices=["clip", "shift"],
        default="clip",
        help="border windows clipped or shifted inward",
    )
    pr.add_argument("--batch-size", type=int, default=1, help="windows per forward pass")
    pr.add_argument(
        "--device", default=None, help="torch device (default: cuda if available, else cpu)"
    )
    pr.add_argument(
        "--float64",
        action="store_true",
        help="run in float64 (bit-identical to whole-image inference)",
    )
    pr.add_argument(
        "--fast",
        action="store_true",
        help="NOT bit-exact: bfloat16 autocast, channels-last, TF32 allowed; for GPUs with "
        "bfloat16 units (usually slower on CPUs without them)",
    )
    pr.add_argument("--overwrite", action="store_true", help="replace an existing output")
    pr.add_argument(
        "--resume",
        action="store_true",
        help="continue a run that stopped (killed, interrupted, out of disk): compute only "
        "the tiles its record lacks; the same input, model and settings are required",
    )
    pr.add_argument(
        "--fresh",
        action="store_true",
        help="discard what a stopped run left for this output and start again",
    )
    pr.add_argument(
        "--readers",
        type=int,
        default=2,
        metavar="N",
        help="threads reading and normalising windows ahead of the model, with one writing "
        "behind it (default 2; 0: one step after another)",
    )
    cl = pr.add_mutually_exclusive_group()
    cl.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="run the tiles on a local dask cluster of N worker processes, spread one per "
        "GPU when there are GPUs (needs the 'cluster' extra: pip install "
        "napari-seamless[cluster])",
    )
    cl.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="run the tiles on the dask.distributed cluster at ADDRESS (e.g. "
        "tcp://host:8786); its workers must see the input and output paths",
    )
    pr.add_argument(
        "--batch-tiles",
        type=int,
        default=8,
        metavar="K",
        help="tiles per cluster task with --workers/--scheduler (default 8)",
    )
    pr.add_argument(
        "--low-memory",
        action="store_true",
        help="keep peak memory flat on whole slides: glibc returns freed blocks at once, on "
        "huge pages (Linux, glibc 2.35+; about 1.4x slower on CPU; the command restarts "
        "itself once to apply it)",
    )
    pr.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    pr.set_defaults(func=_cmd_predict)

    co = sub.add_parser(
        "compare",
        help="tiled result against whole-image inference: RMSE, ME, NME (paper Eqs. 3-5)",
    )
    _add_input_arguments(co)
    co.add_argument("--model", default="nuclei", help="any model predict accepts (default nuclei)")
    co.add_argument("--tile", type=int, default=512, help="window size in pixels (default 512)")
    co.add_argument(
        "--halo", type=int, default=None, help="halo in pixels (default: the exact halo)"
    )
    co.add_argument(
        "--mode",
        choices=["exact", "naive", "overlap-average"],
        default="exact",
        help="exact (ZoR + halo, any --halo), naive (halo 0: hard tiles) or overlap-average "
        "(overlapping windows blended, the common practice); the last two for comparison",
    )
    co.add_argument(
        "--overlap",
        type=_overlap,
        default=None,
        help="overlap-average: pixels (64) or a fraction of the window (0.25); default two "
        "halos (the cost of the exact mode)",
    )
    co.add_argument(
        "--weights",
        choices=["gaussian", "constant"],
        default="gaussian",
        help="overlap-average blending weights (default gaussian, as MONAI's mode='gaussian')",
    )
    co.add_argument(
        "--region",
        default=None,
        metavar="Y0:Y1,X0:X1",
        help="compare on this region only, against an exact region reference (one window "
        "with the full halo); needed when the whole image does not fit the memory budget",
    )
    co.add_argument(
        "--budget",
        type=float,
        default=None,
        metavar="GiB",
        help="memory the reference may take (default: half the free memory)",
    )
    co.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    co.add_argument("--time-budget", type=float, default=30.0, metavar="S")
    co.add_argument("--json", action="store_true", help="print one JSON line")
    co.set_defaults(func=_cmd_compare)

    sw = sub.add_parser(
        "sweep",
        help="RMSE, ME and runtime at each halo against whole-image inference (CSV and PNG)",
    )
    _add_input_arguments(sw)
    sw.add_argument(
        "-o",
        "--output",
        required=True,
        help="folder for halo_sweep.csv, halo_sweep.png and error_profile.png",
    )
    sw.add_argument("--model", default="nuclei", help="any model predict accepts (default nuclei)")
    sw.add_argument("--tile", type=int, default=512, help="window size in pixels (default 512)")
    sw.add_argument(
        "--halos",
        default=None,
        help="halos START:STOP:STEP or a comma list (default 0 to one F past the exact halo)",
    )
    sw.add_argument(
        "--offsets",
        default=None,
        help="also the stride-offset experiment (paper Fig. 4) in float64 for these offsets, "
        "e.g. 0:32, to offsets.csv and offsets.png",
    )
    sw.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    sw.add_argument("--time-budget", type=float, default=30.0, metavar="S")
    sw.set_defaults(func=_cmd_sweep)

    ha = sub.add_parser("halo", help="F, exact halo and Eq. 1 of a model")
    ha.add_argument(
        "--model",
        default="nuclei",
        help="built-in name, paper architecture, model file, or 'all' for the paper's table",
    )
    ha.add_argument("--json", action="store_true", help="print JSON")
    ha.add_argument(
        "--verify",
        action="store_true",
        help=(
            "prove the halo with two support tests (a positive float64 copy, and random "
            "perturbations outside the window with the real weights); exit 1 if either fails"
        ),
    )
    ha.add_argument(
        "--time-budget",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds the analysis may take per model (default 30; 0: no limit)",
    )
    ha.set_defaults(func=_cmd_halo)

    de = sub.add_parser("demo", help="open napari on the mosaic with the widget running")
    de.add_argument(
        "--screenshot", default=None, help="save a screenshot to this PNG when done, then exit"
    )
    de.add_argument("--size", type=int, default=4096, help="mosaic side in pixels (default 4096)")
    de.add_argument("--tile", type=int, default=1024, help="tile size in pixels (default 1024)")
    de.add_argument("--model", default="nuclei", help="model name (default nuclei)")
    de.set_defaults(func=_cmd_demo)
    return p


def _terminate_as_interrupt() -> Any:
    """SIGTERM (a job scheduler, ``kill``) cleans up like Ctrl-C instead of dying mid-write.

    Returns the previous handler (None off the main thread, where none is installed).
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)


def _restart_with_small_heap(program: bool) -> None:
    """Run this command again, same PID and arguments, in an environment whose heap stays small.

    glibc reads its malloc settings once, at start (:mod:`napari_seamless.engine.heap`):
    ``--low-memory`` works only if the process starts with them. Returns (and the command
    goes on as it is, with a note) when they cannot help or the interpreter cannot be
    started again (called from Python, a frozen app); at once when they are in place.
    """
    from .engine.heap import MARKER, small_heap_environment

    if os.environ.get(MARKER) == "1":
        return
    env = small_heap_environment()
    argv = getattr(sys, "orig_argv", None)
    if (
        env is None
        or not program
        or not argv
        or not sys.executable
        or getattr(sys, "frozen", False)
    ):
        why = (
            "needs glibc 2.35+ and transparent huge pages"
            if env is None
            else "applies to the seamless program, not to main() called from Python"
        )
        print(f"seamless: note: --low-memory {why}; running as is", file=sys.stderr)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *argv[1:]], env)
    except OSError:
        return  # carry on with the heap as it is


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``seamless`` command; returns the exit status.

    With ``--low-memory`` a program run (``argv`` None) first restarts itself once with
    glibc settings that keep a long run's memory flat (:func:`_restart_with_small_heap`).
    """
    args = build_parser().parse_args(argv)
    if getattr(args, "low_memory", False):
        _restart_with_small_heap(program=argv is None)

    previous = _terminate_as_interrupt()
    try:
        return _run(args)
    finally:
        if previous is not None:
            import signal

            signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace) -> int:
    """Run the subcommand; every failure becomes one line (the traceback with --debug)."""
    from .errors import SeamlessError

    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(
            "seamless: interrupted; no output was written or replaced"
            + (
                " (the finished tiles are kept: run again with --resume to continue)"
                if getattr(args, "resumable", False)
                else " (partial files removed)"
            ),
            file=sys.stderr,
        )
        return 130
    except SeamlessError as err:
        if args.debug:
            raise
        return _fail(str(err))
    except OSError as err:  # disk full, permissions, a missing folder: one line
        if args.debug:
            raise
        what = err.strerror or str(err)
        where = f": {err.filename}" if err.filename else ""
        return _fail(f"{what}{where} (run with --debug for the traceback)")
    except Exception as err:  # noqa: BLE001 - a bug: say so in one line, offer the traceback
        if args.debug:
            raise
        return _fail(
            f"unexpected {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''} "
            "(a bug in napari-seamless; run with --debug for the traceback and report it)"
        )


if __name__ == "__main__":
    sys.exit(main())
