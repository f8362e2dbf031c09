"""Time from Run to the first visible tile in napari; writes section "first-tile".

    xvfb-run -a python benchmarks/first_tile.py [--repeats 3] [--tiles 512 1024]

A real viewer (under Xvfb here) with the dock widget and the 4096 x 4096 nuclei mosaic,
zoomed into its top-left corner. For each tile size, Run is pressed ``--repeats`` times;
measured on the GUI thread: the seconds from Run to the first tile's event (the moment
the widget refreshes the labels layer with it), whether that tile is in view, and the
seconds until every tile in view is done. A screenshot of a run in progress at full view
(the tile status overlay over the mosaic) is saved to ``docs/images/visible_first.png``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

from napari_seamless._napari import layers as ov
from napari_seamless._napari.widget import SeamlessWidget
from napari_seamless.grid import viewport_order

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, replace_section, save_json  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def wait(predicate, timeout: float) -> None:
    """Run the Qt event loop until ``predicate()`` is true (or raise after ``timeout`` s)."""
    end = time.perf_counter() + timeout
    app = QApplication.instance()
    while not predicate():
        if time.perf_counter() > end:
            raise TimeoutError("timed out")
        app.processEvents()
        time.sleep(0.002)


def one_run(widget: SeamlessWidget, visible: set[int]) -> dict:
    """Press Run; time the first event and the last visible tile; cancel; clean up."""
    seen: list[tuple[float, int]] = []
    handle = type(widget)._on_tile

    def on_tile(ev):  # the widget's own slot: the tile is in the layer when it returns
        handle(widget, ev)
        seen.append((time.perf_counter(), ev.tile.index))

    widget._on_tile = on_tile  # run() connects it before the engine starts
    t0 = time.perf_counter()
    widget.run()
    wait(lambda: visible <= {i for _, i in seen}, 600)
    widget.cancel()
    wait(lambda: widget.worker is None, 120)
    first_t, first_i = seen[0]
    order = [i for _, i in seen]
    last_visible = max(t for t, i in seen if i in visible)
    widget.viewer.layers.remove(widget.result_layer)
    return {
        "first_tile_s": first_t - t0,
        "first_is_visible": first_i in visible,
        "all_visible_s": last_visible - t0,
        "visible_before_others": set(order[: len(visible)]) == visible,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tiles", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--shot", type=Path, default=ROOT / "docs" / "images" / "visible_first.png")
    args = ap.parse_args()

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 900)
    widget = SeamlessWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Exact tiled segmentation", area="right")
    wait(lambda: widget.predictor is not None, 120)
    viewer.open_sample("napari-seamless", "mosaic")
    image = viewer.layers["nuclei mosaic"]
    camera = ov.camera_of(viewer)
    rows = []
    for tile in args.tiles:
        widget.tile.value = tile
        camera.zoom = 1.5
        h, w = viewer.canvas.size
        camera.center = (h / 3.0, w / 3.0)  # the top-left corner of the mosaic
        wait(lambda: True, 0)
        grid = widget._grid
        box = ov.visible_slices(viewer, image, image.data.shape)
        order = viewport_order(grid, box)
        meets = {
            t.index
            for t in grid
            if all(z.start < b.stop and b.start < z.stop for z, b in zip(t.zor, box, strict=True))
        }
        assert set(order[: len(meets)]) == meets
        runs = [one_run(widget, meets) for _ in range(args.repeats)]
        rows.append(
            {
                "tile": tile,
                "tiles": len(grid),
                "visible": len(meets),
                "box": [(s.start, s.stop) for s in box],
                "runs": runs,
            }
        )
        print(rows[-1], flush=True)

    # a screenshot of a run in progress, at full view: the status overlay at work
    widget.tile.value = 512
    viewer.reset_view()
    widget.run()
    wait(lambda: widget.progress.value >= 40, 600)
    widget._show_progress()
    wait(lambda: True, 0)
    args.shot.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(args.shot), canvas_only=False, flash=False)
    widget.cancel()
    wait(lambda: widget.worker is None, 120)

    save_json("first_tile", {"machine": machine(), "rows": rows})
    lines = [
        "## Run to the first visible tile in napari",
        "",
        f"Made by `xvfb-run -a python benchmarks/first_tile.py --repeats {args.repeats}` on "
        f"{machine()}. The 4096 x 4096 nuclei mosaic, the bundled `nuclei` model, a "
        "1400 x 900 viewer zoomed (1.5x) into the top-left corner; Run pressed "
        f"{args.repeats} times per tile size (median, worst). Timed on the GUI thread from "
        "Run to the widget's handling of the tile's event (which refreshes the layer).",
        "",
        "| tile | tiles | in view | first tile (s) | first tile in view | all in view done (s) "
        "| in view before any other |",
        "| ---: | ---: | ---: | ---: | :---: | ---: | :---: |",
    ]
    for r in rows:
        first = [x["first_tile_s"] for x in r["runs"]]
        done = [x["all_visible_s"] for x in r["runs"]]
        lines.append(
            f"| {r['tile']} | {r['tiles']} | {r['visible']} | "
            f"{statistics.median(first):.2f} ({max(first):.2f}) | "
            f"{'yes' if all(x['first_is_visible'] for x in r['runs']) else 'NO'} | "
            f"{statistics.median(done):.1f} ({max(done):.1f}) | "
            f"{'yes' if all(x['visible_before_others'] for x in r['runs']) else 'NO'} |"
        )
    lines += [
        "",
        "The first tile includes fitting the normalisation statistics from a bounded sample "
        "of the image and the first forward pass. While a run goes, pending tiles are grey, "
        "the tile in the model yellow, done tiles clear (`docs/images/visible_first.png`).",
    ]
    replace_section("first-tile", "\n".join(lines))
    print("\n".join(lines))
    viewer.close()


if __name__ == "__main__":
    main()
