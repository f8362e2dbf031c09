import numpy as np
import pytest

from napari_seamless.grid import TileGrid, TileSizeError, pad_to_multiple, valid_tile_sizes


@pytest.mark.parametrize("border", ["clip", "shift"])
@pytest.mark.parametrize(
    "shape,tile,halo,factor",
    [
        ((333, 517), 256, 96, 16),
        ((1000, 1300), 512, 96, 16),
        ((512, 512), 512, 96, 16),
        ((40, 30), 512, 96, 16),  # image smaller than one tile
        ((31, 61, 57), 64, 24, 4),  # 3D
        ((100, 90), (64, 96), (16, 32), (16, 16)),  # anisotropic
    ],
)
def test_zors_partition_image_and_windows_are_f_aligned(shape, tile, halo, factor, border):
    grid = TileGrid(shape, tile, halo, factor, border=border)
    f = np.broadcast_to(factor, len(shape))
    h = np.broadcast_to(halo, len(shape))
    padded = pad_to_multiple(shape, f)
    cover = np.zeros(shape, dtype=int)
    tiles = list(grid)
    assert len(tiles) == len(grid) == np.prod(grid.grid_shape)
    for t in tiles:
        cover[t.zor] += 1
        for ax, (w, z, c) in enumerate(zip(t.window, t.zor, t.crop, strict=False)):
            assert w.start % f[ax] == 0 and (w.stop - w.start) % f[ax] == 0
            assert 0 <= w.start and w.stop <= padded[ax]
            assert w.start + c.start == z.start and w.start + c.stop == z.stop
            # the window holds the full halo wherever the padded image has it
            assert w.start <= max(z.start - h[ax], 0)
            zor_end = min(z.start + grid.zor_size[ax], padded[ax])
            assert w.stop >= min(zor_end + h[ax], padded[ax])
            assert z.start % grid.zor_size[ax] == 0  # stride = ZoR from the origin
    assert (cover == 1).all()
    if border == "shift":
        shapes = {t.window_shape for t in tiles}
        expected = tuple(min(t_, p) for t_, p in zip(grid.tile, padded, strict=False))
        assert shapes == {expected}


def test_grid_counts_and_description():
    grid = TileGrid((1000, 1300), 512, 96, 16)
    assert grid.zor_size == (320, 320)
    assert grid.grid_shape == (4, 5)
    assert grid.padded_shape == (1008, 1312)
    assert grid.overhead == pytest.approx((512 / 320) ** 2)
    assert grid.boundaries(0) == [0, 320, 640, 960, 1000]
    assert "ZoR 320" in grid.describe() and "20 tiles" in grid.describe()
    assert grid[19].grid_index == (3, 4) and grid[-1].index == 19


def test_tile_not_multiple_of_f_names_nearest_valid_sizes():
    with pytest.raises(TileSizeError, match=r"not a multiple of F=16.*nearest: 480, 496, 512, 528"):
        TileGrid((1000, 1000), 500, 96, 16)


def test_tile_not_larger_than_two_halos():
    with pytest.raises(TileSizeError, match=r"larger than 2 \* halo = 192.*nearest: 208, 224"):
        TileGrid((1000, 1000), 192, 96, 16)
    assert valid_tile_sizes(96, 16, 100) == [208, 224]


def test_halo_must_be_multiple_of_f():
    with pytest.raises(ValueError, match="use 96"):
        TileGrid((100, 100), 512, 92, 16)


def test_bad_shapes():
    with pytest.raises(ValueError, match="2 spatial axes"):
        TileGrid((100, 100), (512, 512, 512), 96, 16)
    with pytest.raises(IndexError):
        TileGrid((100, 100), 512, 96, 16).tile_at((1, 0))


def test_viewport_order_puts_the_visible_tiles_first_then_spreads_outward():
    from napari_seamless.grid import viewport_order

    grid = TileGrid((1000, 1300), 512, 96, 16)  # ZoR 320: 4 x 5 tiles
    box = (slice(700, 900), slice(1000, 1250))  # bottom-right corner
    order = viewport_order(grid, box)
    assert sorted(order) == list(range(len(grid)))
    visible = [
        t.index
        for t in grid
        if all(z.start < b.stop and b.start < z.stop for z, b in zip(t.zor, box, strict=True))
    ]
    assert set(order[: len(visible)]) == set(visible) and order[0] == grid.tile_at((2, 3)).index
    assert order[-1] == grid.tile_at((0, 0)).index  # the farthest tile comes last
    outside = viewport_order(grid, (slice(5000, 5100), slice(0, 10)))
    assert sorted(outside) == list(range(len(grid)))  # nothing visible: nearest first


def test_counts_are_said_in_words_people_read():
    from napari_seamless.grid import count

    one = TileGrid((100, 100), tile=304, halo=96, factor=16)  # ZoR 112 covers it
    assert len(one) == 1 and "; 1 tile (1 x 1);" in one.describe()
    many = TileGrid((512, 512), tile=256, halo=96, factor=16)
    assert "; 64 tiles (8 x 8);" in many.describe()
    assert (count(0, "tile"), count(1, "tile"), count(2, "tile")) == (
        "0 tiles",
        "1 tile",
        "2 tiles",
    )
