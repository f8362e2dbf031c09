"""The tile chosen for the user (a probe of the model within a memory budget) and the run
that backs off by F when it runs out of memory, losing no finished tile and staying exact."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_seamless.cli import main
from napari_seamless.engine import (
    Predictor,
    SerialExecutor,
    ThreadedExecutor,
    TileBudgetError,
    TileMemoryError,
    choose_tile,
    parse_bytes,
    predict,
)
from napari_seamless.models import UNet

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return UNet(width=4, depth=2, classes=3).eval()


@pytest.fixture(scope="module")
def pred(net):
    return Predictor(net, device="cpu")


# --- choose_tile -----------------------------------------------------------------------


def test_choice_is_an_f_aligned_tile_within_the_budget(pred):
    choice = choose_tile(pred, (600, 800), budget="1GB", probe_seconds=1.0)
    (halo, f), tile = (pred.halo[0], pred.factor[0]), choice.tile
    assert all(t % f == 0 and t > 2 * halo for t in tile)
    chosen = choice.chosen
    assert chosen.fits and chosen.peak_bytes <= choice.budget == 10**9
    assert chosen.estimate <= 1.05 * min(p.estimate for p in choice.probes if p.fits)
    # memory measured at the two smallest sizes (2 x halo + F first), time from the second
    assert [p.memory_measured for p in choice.probes[:2]] == [True, True]
    assert choice.probes[1].measured and not choice.probes[0].measured
    assert all(p.window[0] <= 600 and p.window[1] <= 800 for p in choice.probes)
    assert all(p.overhead >= 1.0 for p in choice.probes)
    line = choice.describe()
    shown = str(tile[0]) if len(set(tile)) == 1 else " x ".join(map(str, tile))
    assert "\n" not in line and line.startswith(f"tile {shown} px") and "budget" in line
    # the chosen tile runs, and is exact; one size for all axes gives the same grid
    img = np.random.default_rng(0).normal(100, 20, (600, 800)).astype(np.float32)
    tiled, whole = predict(pred, img, tile=choice.tile), predict(pred, img, tile=None)
    assert (tiled.argmax(0) == whole.argmax(0)).all() and np.abs(tiled - whole).max() < 1e-5
    same = [t.window for t in pred.grid((600, 800), choice.size)]
    assert same == [t.window for t in pred.grid((600, 800), choice.tile)]


def test_a_tiny_budget_picks_a_smaller_tile_than_a_big_one(pred):
    sizes = [64, 128, 256]
    big = choose_tile(pred, (1024, 1024), budget="8GB", candidates=sizes)
    assert big.tile == (256, 256)  # least halo overhead, and it fits
    small_peak = next(p.peak_bytes for p in big.probes if p.tile == (128, 128))
    small = choose_tile(pred, (1024, 1024), budget=small_peak, candidates=sizes)
    assert small.tile == (128, 128) and small.tile < big.tile
    assert [p.fits for p in small.probes] == [True, True, False]
    assert small.seconds < 1.0  # the model's measurements are kept: no second probe


def test_a_budget_below_the_smallest_window_is_one_clear_sentence(pred):
    with pytest.raises(TileBudgetError) as info:
        choose_tile(pred, (512, 512), budget=1000)
    message = str(info.value)
    assert "the smallest window, 52 px" in message and "memory budget is" in message
    assert "raise the budget" in message and "\n" not in message


def test_a_window_larger_than_the_image_is_capped_to_it(pred):
    choice = choose_tile(pred, (100, 60), budget="1GB")
    # one window over the F-padded image: no pixel computed twice
    assert choice.chosen.window == (100, 60) and choice.chosen.overhead == 1.0
    assert max(p.window for p in choice.probes) == (100, 60)


def test_parse_bytes():
    assert parse_bytes("4GB") == 4 * 10**9 and parse_bytes("4 GiB") == 4 * 2**30
    assert parse_bytes("512M") == 512 * 2**20 and parse_bytes(2e9) == 2 * 10**9
    for bad in ("lots", "-1GB", "0", "4 GQ"):
        with pytest.raises(TileBudgetError, match="memory budget"):
            parse_bytes(bad)


# --- out of memory in a run: back off by F ------------------------------------------------

W, H = 420, 300  # multiples of F: no padding, so a window's first pixel says where it is


class Tight(torch.nn.Module):
    """``net``, out of memory on windows over ``limit`` pixels once ``after`` passes ran.

    The image holds each pixel's position, so every pass records where its window lies.
    """

    def __init__(self, net, limit, after):
        super().__init__()
        self.net, self.limit, self.after = net, limit, after
        self.calls = []  # (y0, x0, height, width, ran)

    def forward(self, x):
        big = x.shape[0] * x.shape[2] * x.shape[3] > self.limit
        ran = not (big and len(self.calls) >= self.after)
        for b in range(x.shape[0]):
            y0, x0 = divmod(int(round(float(x[b, 0, 0, 0]) * W * H)), W)
            self.calls.append((y0, x0, x.shape[2], x.shape[3], ran))
        if not ran:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.net(x)


class CountingStore:
    def __init__(self, out):
        self.out, self.writes = out, []

    def write(self, zor, block):
        self.writes.append(tuple((s.start, s.stop) for s in zor))
        self.out[(slice(None), *zor)] = block


def _position_image():
    return (np.arange(H * W, dtype=np.float64).reshape(H, W) / (H * W)).astype(np.float32)


@pytest.mark.parametrize("executor", [SerialExecutor(), ThreadedExecutor(readers=2)])
def test_out_of_memory_backs_off_by_f_exactly_without_losing_finished_tiles(net, pred, executor):
    img = _position_image()
    # the reference, independently: the model itself on the whole image, one pass
    with torch.inference_mode():
        ref = torch.softmax(net(torch.from_numpy(img)[None, None]), 1)[0].numpy()
    tight = Tight(net, limit=6000, after=5).eval()
    run_pred = Predictor(tight, device="cpu", halo=pred.halo, factor=pred.factor)
    assert run_pred.model is tight
    out = np.zeros((3, H, W), np.float32)
    store = CountingStore(out)
    tight.calls.clear()
    run = run_pred.run(img, store, tile=96, normalization=None, executor=executor)
    events = [ev.tile for ev in run]
    # exact: the same as whole-image inference
    assert (out.argmax(0) == ref.argmax(0)).all()
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)
    # every tile once, in the grid's tile units
    assert len(events) == len(run.grid) == len(store.writes)
    assert sorted(t.index for t in events) == list(range(len(run.grid)))
    assert len(set(store.writes)) == len(store.writes)
    # the first back-off: by F below the window that failed (72 x 96, a tile of the top row)
    first = run.backoffs[0]
    assert first.failed == (72, 96) and first.window == (68, 92) and first.batch == 1
    assert run.window == (68, 92)
    # five tiles finished before memory ran short, and no pass after it touched them
    failed_at = next(i for i, c in enumerate(tight.calls) if not c[4])
    assert failed_at == 5 and [c[4] for c in tight.calls].count(False) == 1
    finished = events[:5]
    for y0, x0, h, w, _ in tight.calls[failed_at + 1 :]:
        assert h * w <= 68 * 92  # never the size that failed again
        cy, cx = y0 + h // 2, x0 + w // 2  # a part's centre lies in its own tile's ZoR
        assert not any(
            t.zor[0].start <= cy < t.zor[0].stop and t.zor[1].start <= cx < t.zor[1].stop
            for t in finished
        )


def test_a_batch_out_of_memory_runs_its_windows_one_by_one(net, pred):
    img = _position_image()
    tight = Tight(net, limit=2 * 96 * 96 - 1, after=0).eval()
    run_pred = Predictor(tight, device="cpu", halo=pred.halo, factor=pred.factor)
    whole = predict(pred, img, tile=None, normalization=None)
    out = predict(run_pred, img, tile=96, normalization=None, border="shift", batch_size=3)
    assert (out.argmax(0) == whole.argmax(0)).all() and np.abs(out - whole).max() < 1e-5
    passes = tight.calls[1:]  # after classes()'s small one
    assert all(c[2] == c[3] == 96 for c in passes)  # single windows, never split
    assert sum(c[4] for c in passes) == len(pred.grid((H, W), 96, border="shift"))


def test_out_of_memory_at_the_smallest_window_is_one_clear_sentence(net, pred):
    tight = Tight(net, limit=300, after=0).eval()  # 16 x 16 (classes()) runs
    run_pred = Predictor(tight, device="cpu", halo=pred.halo, factor=pred.factor)
    with pytest.raises(TileMemoryError) as info:
        predict(run_pred, _position_image(), tile=96, normalization=None)
    message = str(info.value)
    assert message.startswith("out of memory even in a window of ")
    assert "2 x halo + F = 52x52 px" in message
    assert "\n" not in message and isinstance(info.value.__cause__, torch.OutOfMemoryError)


def test_other_errors_are_not_taken_for_out_of_memory(net, pred):
    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("shape mismatch")

    run_pred = Predictor(Broken(), device="cpu", in_channels=1, halo=24, factor=4)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        predict(run_pred, _position_image(), tile=96, normalization=None)


# --- the command line -------------------------------------------------------------------

MODEL = (
    "import torch\n"
    "from napari_seamless.models import UNet\n"
    "def tiny():\n"
    "    torch.manual_seed(0)\n"
    "    return UNet(width=4, depth=2, classes=2)\n"
)


def _level0(path):
    import zarr

    return zarr.open_group(str(path), mode="r")["0"][:]


def test_cli_tile_auto_prints_the_choice_and_equals_an_explicit_tile(tmp_path, capsys):
    (tmp_path / "tiny.py").write_text(MODEL)
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, np.random.default_rng(3).normal(100, 20, (200, 300)).astype("float32"))
    model = ["--model", f"{tmp_path / 'tiny.py'}:tiny", "--probabilities"]
    auto, fixed = tmp_path / "auto.zarr", tmp_path / "fixed.zarr"
    assert main(["predict", str(src), "-o", str(auto), *model, "--memory-budget", "2GB"]) == 0
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("seamless: tile auto: tile "))
    assert "within the memory budget of 1.9 GiB" in line
    assert main(["predict", str(src), "-o", str(fixed), *model, "-q", "--tile", "96"]) == 0
    assert "tile auto" not in capsys.readouterr().err

    a, b = _level0(auto), _level0(fixed)
    assert (a.argmax(0) == b.argmax(0)).all() and np.abs(a - b).max() < 1e-5
    # the budget chooses the tile: with a tile of one's own it is refused in one line
    again = ["predict", str(src), "-o", str(tmp_path / "x.tif"), *model, "-q"]
    assert main([*again, "--tile", "96", "--memory-budget", "2GB"]) == 2
    assert "--memory-budget sets what --tile auto may use" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*again, "--memory-budget", "lots"])
    assert "is not a size" in capsys.readouterr().err


def test_cli_resume_with_tile_auto_takes_the_stopped_runs_tile(tmp_path, capsys, monkeypatch):
    from napari_seamless.stores import OmeZarrStore

    (tmp_path / "tiny.py").write_text(MODEL)
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, np.random.default_rng(4).normal(100, 20, (200, 300)).astype("float32"))
    model = ["--model", f"{tmp_path / 'tiny.py'}:tiny"]
    out, ref = tmp_path / "labels.zarr", tmp_path / "ref.zarr"
    real, marked = OmeZarrStore.mark_done, []

    def stop_at_the_third(self, index):
        real(self, index)
        marked.append(index)
        if len(marked) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(OmeZarrStore, "mark_done", stop_at_the_third)
    assert main(["predict", str(src), "-o", str(out), *model, "-q", "--tile", "96"]) == 130
    monkeypatch.undo()
    capsys.readouterr()
    # a probe would choose a larger tile here; the resume takes the stopped run's
    assert main(["predict", str(src), "-o", str(out), *model, "--resume"]) == 0
    assert "seamless: tile auto: 96, as in the stopped run" in capsys.readouterr().err
    assert main(["predict", str(src), "-o", str(ref), *model, "-q", "--tile", "96"]) == 0

    assert np.array_equal(_level0(out), _level0(ref))
