"""The executor seam: the threaded pipeline gives the serial result, in the asked order,
re-orders pending tiles while running, reports its errors and stops cleanly."""

import threading
import time

import numpy as np
import pytest

from napari_seamless.engine import (
    Predictor,
    Schedule,
    SerialExecutor,
    ThreadedExecutor,
    predict,
    segment,
)
from napari_seamless.grid import TileGrid
from napari_seamless.models import UNet
from napari_seamless.preprocessing import NonFiniteInputError
from napari_seamless.stores import ArrayStore


@pytest.fixture(scope="module")
def pred():
    import torch

    torch.manual_seed(0)
    return Predictor(UNet(width=4, depth=2, classes=3), device="cpu")


def _image(shape=(300, 420), seed=1):
    return np.random.default_rng(seed).normal(100, 20, shape).astype(np.float32)


def _threads():
    return {t.name for t in threading.enumerate() if t.name.startswith("seamless-")}


@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("border", ["clip", "shift"])
def test_threaded_equals_serial_and_whole(pred, batch_size, border):
    img = _image()
    whole = predict(pred, img, tile=None)
    serial = predict(pred, img, tile=96, border=border, batch_size=batch_size)
    threaded = predict(
        pred,
        img,
        tile=96,
        border=border,
        batch_size=batch_size,
        executor=ThreadedExecutor(readers=3, prefetch=2),
    )
    np.testing.assert_array_equal(threaded, serial)  # same windows, same batches, same math
    assert np.abs(threaded - whole).max() < 1e-5
    assert (threaded.argmax(0) == whole.argmax(0)).all()
    assert not _threads()  # every reader and the writer are gone


def test_events_follow_writes_in_the_asked_order(pred):
    img = _image()
    grid = pred.grid(img.shape, 96)
    order = list(range(len(grid)))[::-1]
    written = []

    class Recorder:
        def write(self, zor, block):
            time.sleep(0.002)  # a slow store: events must still wait for the write
            written.append(zor)

    run = pred.run(img, Recorder(), 96, order=order, executor=ThreadedExecutor())
    seen = []
    for ev in run:
        assert len(written) >= ev.done  # the event comes after its ZoR is in the store
        seen.append(ev.tile.index)
    assert seen == order
    assert written == [grid[i].zor for i in order]
    assert 0 < run.stats.forward <= run.stats.wall
    assert run.stats.tiles == len(grid)


def test_prioritize_moves_pending_tiles_while_running(pred):
    img = _image((400, 400))
    out = np.zeros(img.shape, np.uint8)
    run = pred.run(
        img,
        ArrayStore(out),
        96,
        output="labels",
        executor=ThreadedExecutor(readers=1, prefetch=1),
    )
    first = next(run)
    total = first.total
    late = [total - 1, total - 2]
    moved = run.prioritize(late)
    assert moved == 2
    pending = run.pending()
    assert pending[:2] == late
    rest = [ev.tile.index for ev in run]
    # only tiles already started (read ahead, in the model, being written) may come before
    # the moved ones; every tile still pending at the call comes after them, in order
    started = [i for i in rest if i not in pending]
    assert rest == started + pending
    np.testing.assert_array_equal(out, segment(pred, img, tile=96))


def test_prioritize_before_start_is_kept(pred):
    img = _image()
    run = pred.run(img, ArrayStore(np.zeros((3, *img.shape), np.float32)), 96)
    assert run.prioritize([5, 4]) == 0
    assert [ev.tile.index for ev in run][:2] == [5, 4]


def test_reader_error_is_raised_and_threads_stop(pred):
    img = _image()
    img[250, 400] = np.nan
    run = pred.run(
        img,
        ArrayStore(np.zeros((3, *img.shape), np.float32)),
        96,
        normalization=None,  # so the reader's check meets the NaN, not the statistics fit
        executor=ThreadedExecutor(),
    )
    with pytest.raises(NonFiniteInputError, match="ZoR"):
        list(run)
    assert not _threads()


def test_writer_error_is_raised(pred):
    img = _image()

    class Full:
        def write(self, zor, block):
            raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space"):
        list(pred.run(img, Full(), 96, executor=ThreadedExecutor()))
    assert not _threads()


def test_close_mid_run_stops_between_tiles(pred):
    img = _image((600, 600))
    out = np.zeros((3, *img.shape), np.float32)
    run = pred.run(img, ArrayStore(out), 96, executor=ThreadedExecutor())
    for ev in run:
        if ev.done == 3:
            break
    run.close()
    assert not _threads()
    assert len(run.pending()) > 0


def test_schedule_is_thread_safe_under_concurrent_prioritize():
    grid = TileGrid((2000, 2000), 96, 16, 16)
    schedule = Schedule(list(grid))
    taken = []

    def shuffle():
        rng = np.random.default_rng(0)
        for _ in range(200):
            schedule.prioritize(rng.permutation(len(grid))[:20].tolist())

    t = threading.Thread(target=shuffle)
    t.start()
    while (tile := schedule.take()) is not None:
        taken.append(tile.index)
    t.join()
    assert sorted(taken) == list(range(len(grid)))  # every tile once, none lost


def test_serial_executor_is_the_default(pred):
    img = _image()
    a = predict(pred, img, tile=96)
    b = predict(pred, img, tile=96, executor=SerialExecutor())
    np.testing.assert_array_equal(a, b)


def test_executor_argument_is_checked(pred):
    from napari_seamless.errors import ArgumentTypeError

    with pytest.raises(ArgumentTypeError, match="executor"):
        pred.run(_image(), ArrayStore(np.zeros((3, 300, 420))), 96, executor="threads")
