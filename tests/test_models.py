import numpy as np
import pytest
import torch

from napari_seamless.models import ModelLoadError, UNet, load_model


def test_default_model_loads_offline_and_is_small(nuclei_model):
    from napari_seamless.models.registry import WEIGHTS

    assert (WEIGHTS / "nuclei_unet.pt").stat().st_size < 10 * 2**20
    assert nuclei_model.ndim == 2 and nuclei_model.in_channels == 1
    assert nuclei_model.module.config.depth == 4
    assert not nuclei_model.module.training
    assert nuclei_model.meta["dice_heldout"] >= 0.85


def test_torchscript_and_state_dict_files_round_trip(tmp_path):
    torch.manual_seed(1)
    model = UNet(width=4, classes=3).eval()
    x = torch.randn(1, 1, 64, 64)
    ts = tmp_path / "model.ts"
    torch.jit.script(model).save(str(ts))
    sd = tmp_path / "weights.pth"
    torch.save(model.state_dict(), sd)
    for path in (ts, sd):
        loaded = load_model(str(path))
        assert loaded.in_channels == 1 and loaded.ndim == 2
        with torch.inference_mode():
            assert torch.allclose(loaded.module(x), model(x), atol=1e-6)


def test_bad_model_files_give_clear_errors(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a model")
    with pytest.raises(ModelLoadError, match="cannot load model file .*junk.pt"):
        load_model(str(junk))
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "missing.pt"))
    other = tmp_path / "other.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(ModelLoadError, match="not of the built-in U-Net"):
        load_model(str(other))
    with pytest.raises(ModelLoadError, match="unknown model 'nope'"):
        load_model("nope")


def test_random_unet_is_deterministic():
    a, b = load_model("unet-random"), load_model("unet-random")
    for pa, pb in zip(a.module.parameters(), b.module.parameters(), strict=False):
        assert torch.equal(pa, pb)


def test_package_import_is_light():
    import subprocess
    import sys

    code = "import sys, napari_seamless as n; n.TileGrid; print('torch' in sys.modules, 'qtpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_mosaic_is_made_from_the_real_image():
    from napari_seamless.data import mosaic, nuclei

    img = nuclei()
    m = mosaic(4096)
    assert m.shape == (4096, 4096) and m.dtype == img.dtype
    blocks = {
        m[i : i + 512, j : j + 512].tobytes()
        for i in range(0, 4096, 512)
        for j in range(0, 4096, 512)
    }
    variants = {
        np.ascontiguousarray(np.rot90(v, k)).tobytes()
        for v in (img, img[:, ::-1])
        for k in range(4)
    }
    assert blocks <= variants and len(blocks) == 8
