"""Build a bioimage.io model package of the default nuclei model, offline, for the tests.

The package declares ``scale_range`` with the 1 / 99.8 percentiles per sample and channel,
which is what the built-in :class:`~napari_seamless.preprocessing.PercentileNormalization`
does, so its labels must equal the built-in model's.
"""

from __future__ import annotations

import gc
import warnings
from pathlib import Path

import numpy as np
import torch


def build_package(
    out: Path,
    *,
    halo: int = 96,
    weights: tuple[str, ...] = ("torchscript", "pytorch_state_dict"),
    as_zip: bool = True,
    channel_last: bool = False,
) -> Path:
    """Write a package of the nuclei model under ``out``; return the .zip or the folder."""
    from bioimageio.spec import (
        ValidationContext,
        save_bioimageio_package,
        save_bioimageio_package_as_folder,
    )
    from bioimageio.spec.common import FileDescr
    from bioimageio.spec.model import v0_5 as m

    from napari_seamless.data import nuclei
    from napari_seamless.models import load_model

    src = out / "src"
    src.mkdir(parents=True, exist_ok=True)
    net = load_model("nuclei").module
    model = ChannelLast(net).eval() if channel_last else net
    img = nuclei().astype(np.float64)
    lo, hi = np.percentile(img, [1, 99.8])
    x = ((img[:256, :256] - lo) / (hi - lo + 1e-6)).astype(np.float32)[None, None]
    if channel_last:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    with torch.inference_mode():
        y = model(torch.from_numpy(x)).numpy()
    np.save(src / "input.npy", x)
    np.save(src / "output.npy", y)
    (src / "README.md").write_text("# nuclei (napari-seamless tests)\n\n## Validation\n\nNone.\n")
    space = [m.AxisId("y"), m.AxisId("x")]
    in_axes = [
        m.BatchAxis(),
        m.ChannelAxis(channel_names=[m.Identifier("raw")]),
        *[m.SpaceInputAxis(id=a, size=m.ParameterizedSize(min=256, step=16)) for a in space],
    ]
    ref = m.TensorId("raw")
    out_axes = [
        m.BatchAxis(),
        m.ChannelAxis(channel_names=[m.Identifier("background"), m.Identifier("nucleus")]),
        *[
            m.SpaceOutputAxisWithHalo(
                id=a, halo=halo, size=m.SizeReference(tensor_id=ref, axis_id=a)
            )
            for a in space
        ],
    ]
    if channel_last:
        in_axes = [in_axes[0], *in_axes[2:], in_axes[1]]
        out_axes = [out_axes[0], *out_axes[2:], out_axes[1]]
    entries = {}
    version = m.Version(torch.__version__.split("+")[0])
    if "torchscript" in weights:
        torch.jit.script(model).save(str(src / "weights.ts"))
        entries["torchscript"] = m.TorchscriptWeightsDescr(
            source=src / "weights.ts", pytorch_version=version
        )
    if "pytorch_state_dict" in weights:
        torch.save(net.state_dict(), src / "state_dict.pt")
        cfg = net.config.to_dict()
        entries["pytorch_state_dict"] = m.PytorchStateDictWeightsDescr(
            source=src / "state_dict.pt",
            pytorch_version=version,
            architecture=m.ArchitectureFromLibraryDescr(
                import_from="napari_seamless.models.unet",
                callable=m.Identifier("UNet"),
                kwargs={k: cfg[k] for k in ("in_channels", "classes", "width", "depth")},
            ),
        )
    with ValidationContext(perform_io_checks=False):
        descr = m.ModelDescr(
            name="nuclei U-Net (napari-seamless test package)",
            description="The default nuclei model of napari-seamless, packaged offline.",
            authors=[m.Author(name="napari-seamless developers")],
            cite=[m.CiteEntry(text="Majurski and Bajcsy 2021", doi=m.Doi("10.6028/jres.126.009"))],
            license=m.LicenseId("BSD-3-Clause"),
            documentation=FileDescr(source=src / "README.md"),
            inputs=[
                m.InputTensorDescr(
                    id=ref,
                    axes=in_axes,
                    test_tensor=FileDescr(source=src / "input.npy"),
                    preprocessing=[
                        m.ScaleRangeDescr(
                            kwargs=m.ScaleRangeKwargs(
                                axes=space, min_percentile=1.0, max_percentile=99.8
                            )
                        )
                    ],
                )
            ],
            outputs=[
                m.OutputTensorDescr(
                    id=m.TensorId("logits"),
                    axes=out_axes,
                    test_tensor=FileDescr(source=src / "output.npy"),
                    postprocessing=[
                        m.SoftmaxDescr(kwargs=m.SoftmaxKwargs(axis=m.AxisId("channel")))
                    ],
                )
            ],
            weights=m.WeightsDescr(**entries),
        )
        # bioimageio.spec (0.5.x) leaves the source files it copies open; close them here,
        # in the test's own set-up, so `-W error::ResourceWarning` sees only our leaks
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            if as_zip:
                built = Path(save_bioimageio_package(descr, output_path=out / "nuclei.zip"))
            else:
                built = Path(save_bioimageio_package_as_folder(descr, output_path=out / "nuclei"))
            del descr
            gc.collect()
        return built


class ChannelLast(torch.nn.Module):
    """The nuclei model with channel-last input and output ``(N, Y, X, C)``."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def block_network(monkeypatch) -> None:
    """Make every socket connection fail, so a test proves it runs offline."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
