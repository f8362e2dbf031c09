"""Segmentation architectures of Majurski & Bajcsy (2021), Table 2, with random weights.

Every builder returns a plain, fully convolutional :class:`torch.nn.Module` mapping
``(N, in_channels, *spatial)`` to logits ``(N, classes, *spatial)`` with the input's spatial
size whenever every spatial size is a multiple of the network's total downsampling factor
``F``. ``ndim`` selects 2D (``(Y, X)``) or 3D (``(Z, Y, X)``) layers. Modules are returned in
training mode (PyTorch's default); call ``.eval()`` before inference or analysis.

* ``unet``: U-Net with 2x2 stride-2 transposed convolutions (F 16);
* ``unet-nearest`` / ``unet-bilinear``: U-Net with nearest / (tri)linear upsampling followed
  by a 1x1 convolution (F 16);
* ``segnet``: SegNet, VGG16 encoder and max-unpooling decoder (F 32);
* ``fcn32s``: FCN-32s, VGG16 backbone with fc6/fc7 as convolutions (F 32);
* ``fc-densenet56`` / ``fc-densenet67`` / ``fc-densenet103``: FC-DenseNets, the "One
  Hundred Layers Tiramisu" (F 32).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from torch import nn

from .unet import UNet

__all__ = [
    "ARCHITECTURES",
    "PAPER_TABLE2",
    "FCDenseNet",
    "FCN32s",
    "SegNet",
    "UpsamplingUNet",
    "fc_densenet",
    "fcn32s",
    "segnet",
    "unet",
]

#: VGG16 convolutions per block and channels per block at width 64.
_VGG_CONVS = (2, 2, 3, 3, 3)
_VGG_CHANNELS = (64, 128, 256, 512, 512)


def _check_ndim(ndim: int) -> None:
    if ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3, got {ndim}")


def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        if value < 1:
            raise ValueError(f"{name} must be positive, got {value}")


def _conv(ndim: int) -> type[nn.Module]:
    return nn.Conv2d if ndim == 2 else nn.Conv3d


def _upconv(ndim: int) -> type[nn.Module]:
    return nn.ConvTranspose2d if ndim == 2 else nn.ConvTranspose3d


def _bn(ndim: int) -> type[nn.Module]:
    return nn.BatchNorm2d if ndim == 2 else nn.BatchNorm3d


def _maxpool(ndim: int) -> type[nn.Module]:
    return nn.MaxPool2d if ndim == 2 else nn.MaxPool3d


def _scaled(channels: int, width: int) -> int:
    """VGG channel count ``channels`` (defined at width 64) scaled to ``width``."""
    return max(1, channels * width // 64)


# --------------------------------------------------------------------------------- U-Net


class UpsamplingUNet(UNet):
    """U-Net whose transposed convolutions are replaced by interpolation + 1x1 convolution.

    Parameters
    ----------
    upsampling : {"nearest", "bilinear"}
        Interpolation of ``nn.Upsample(scale_factor=2, align_corners=False)``; "bilinear"
        becomes "trilinear" in 3D.
    **kwargs
        Fields of :class:`~napari_seamless.models.unet.UNetConfig` (``in_channels``,
        ``classes``, ``width``, ``depth``, ``ndim``, ``kernel_size``).

    Notes
    -----
    Input: ``(N, in_channels, *spatial)`` with every spatial size a multiple of
    ``F = 2 ** depth``. Output: logits ``(N, classes, *spatial)``, same spatial size. Each
    up-step is ``Upsample(x2)`` then a 1x1 convolution halving the channels, replacing the
    2x2 stride-2 transposed convolution of :class:`~napari_seamless.models.unet.UNet`.
    """

    def __init__(self, upsampling: str = "nearest", **kwargs: Any) -> None:
        if upsampling not in ("nearest", "bilinear"):
            raise ValueError(f"upsampling must be 'nearest' or 'bilinear', got {upsampling!r}")
        super().__init__(**kwargs)
        ndim = self.config.ndim
        mode = upsampling if upsampling == "nearest" or ndim == 2 else "trilinear"
        self.upsampling = upsampling
        conv = _conv(ndim)
        for up in self.up:
            cin, cout = up.conv.in_channels, up.conv.out_channels
            interp = (
                nn.Upsample(scale_factor=2, mode=mode)
                if mode == "nearest"
                else nn.Upsample(scale_factor=2, mode=mode, align_corners=False)
            )
            up.conv = nn.Sequential(interp, conv(cin, cout, 1))


def unet(
    in_channels: int = 1,
    classes: int = 2,
    ndim: int = 2,
    width: int = 64,
    depth: int = 4,
    upsampling: str = "transpose",
) -> nn.Module:
    """Build a U-Net (Ronneberger et al. 2015) with SAME convolutions, as in the paper.

    Parameters
    ----------
    in_channels : int
        Input channels.
    classes : int
        Output classes (channels of the logits).
    ndim : int
        Spatial axes, 2 or 3.
    width : int
        Channels at level 0 (paper: 64); level ``l`` has ``width * 2 ** l``.
    depth : int
        Pooling levels (paper: 4), so ``F = 2 ** depth``.
    upsampling : {"transpose", "nearest", "bilinear"}
        "transpose": 2x2 stride-2 transposed convolutions (the paper's
        :class:`~napari_seamless.models.unet.UNet`); "nearest" / "bilinear": interpolation
        followed by a 1x1 convolution (:class:`UpsamplingUNet`; trilinear in 3D).

    Returns
    -------
    torch.nn.Module
        Maps ``(N, in_channels, *spatial)`` to logits ``(N, classes, *spatial)``; every
        spatial size must be a multiple of ``2 ** depth``.
    """
    _check_ndim(ndim)
    kwargs = dict(in_channels=in_channels, classes=classes, ndim=ndim, width=width, depth=depth)
    if upsampling == "transpose":
        return UNet(**kwargs)
    return UpsamplingUNet(upsampling=upsampling, **kwargs)


# -------------------------------------------------------------------------------- SegNet


def _conv_bn_relu(cin: int, cout: int, ndim: int) -> list[nn.Module]:
    return [_conv(ndim)(cin, cout, 3, padding=1), _bn(ndim)(cout), nn.ReLU(inplace=True)]


class SegNet(nn.Module):
    """SegNet (Badrinarayanan et al. 2017): VGG16 encoder, max-unpooling decoder.

    Parameters
    ----------
    in_channels : int
        Input channels.
    classes : int
        Output classes.
    ndim : int
        Spatial axes, 2 or 3.
    width : int
        Channels of the first block (paper: 64); the blocks have the VGG16 channels
        64, 128, 256, 512, 512 scaled by ``width / 64``.

    Notes
    -----
    Encoder: 5 blocks of 2, 2, 3, 3, 3 SAME 3x3 convolutions, each followed by BatchNorm and
    ReLU, each block ended by a 2x2 max pooling that keeps its indices. Decoder: the mirror
    image, each block started by a max-unpooling with the indices of its encoder pooling;
    the last 3x3 convolution gives the class logits (no BatchNorm/ReLU). ``F = 32``.

    Input: ``(N, in_channels, *spatial)``, every spatial size a multiple of 32. Output:
    logits ``(N, classes, *spatial)``, same spatial size. (The unpooling is given the size
    of its encoder feature map, so other sizes of at least 32 also run and keep their size,
    but exact tiling still needs F = 32: the pooling windows must stay aligned.)
    """

    def __init__(
        self, in_channels: int = 1, classes: int = 2, ndim: int = 2, width: int = 64
    ) -> None:
        super().__init__()
        _check_ndim(ndim)
        _check_counts(in_channels=in_channels, classes=classes, width=width)
        self.ndim = ndim
        chans = [_scaled(c, width) for c in _VGG_CHANNELS]
        self.encoder = nn.ModuleList()
        cin = in_channels
        for n, c in zip(_VGG_CONVS, chans, strict=True):
            layers: list[nn.Module] = []
            for _ in range(n):
                layers += _conv_bn_relu(cin, c, ndim)
                cin = c
            self.encoder.append(nn.Sequential(*layers))
        # functional pooling with indices: one tensor pair per call, traceable by torch.fx
        self._pool_with_indices = (
            nn.functional.max_pool2d if ndim == 2 else nn.functional.max_pool3d
        )
        self.unpool = (nn.MaxUnpool2d if ndim == 2 else nn.MaxUnpool3d)(2, stride=2)
        # Decoder block i mirrors encoder block 4 - i: same number of convolutions, the last
        # one going to the channels of the block above (to ``classes`` for the last block).
        self.decoder = nn.ModuleList()
        for level in reversed(range(len(chans))):
            c = chans[level]
            n = _VGG_CONVS[level]
            layers = []
            for i in range(n):
                last = i == n - 1
                if last and level == 0:
                    layers.append(_conv(ndim)(c, classes, 3, padding=1))
                else:
                    cout = chans[level - 1] if last else c
                    layers += _conv_bn_relu(c, cout, ndim)
            self.decoder.append(nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(N, classes, *spatial)`` for input ``(N, in_channels, *spatial)``."""
        indices: list[torch.Tensor] = []
        sizes: list[Any] = []
        for block in self.encoder:
            x = block(x)
            sizes.append(x.size()[2:])
            pooled = self._pool_with_indices(x, 2, 2, return_indices=True)
            x = pooled[0]
            indices.append(pooled[1])
        for i, block in enumerate(self.decoder):
            j = len(indices) - 1 - i
            x = self.unpool(x, indices[j], output_size=sizes[j])
            x = block(x)
        return x


def segnet(in_channels: int = 1, classes: int = 2, ndim: int = 2, width: int = 64) -> SegNet:
    """Build a SegNet with random weights (see :class:`SegNet`).

    Parameters
    ----------
    in_channels : int
        Input channels.
    classes : int
        Output classes.
    ndim : int
        Spatial axes, 2 or 3.
    width : int
        Channels of the first block (paper: 64).

    Returns
    -------
    SegNet
        Maps ``(N, in_channels, *spatial)`` to logits ``(N, classes, *spatial)``; every
        spatial size must be a multiple of ``F = 32``.
    """
    return SegNet(in_channels=in_channels, classes=classes, ndim=ndim, width=width)


# ------------------------------------------------------------------------------- FCN-32s


class FCN32s(nn.Module):
    """FCN-32s (Long et al. 2015) on a VGG16 backbone with SAME padding.

    Parameters
    ----------
    in_channels : int
        Input channels.
    classes : int
        Output classes.
    ndim : int
        Spatial axes, 2 or 3.
    width : int
        Channels of the first block (paper: 64). The VGG16 channels 64..512 and the 4096
        channels of fc6/fc7 are scaled by ``width / 64``.

    Notes
    -----
    VGG16 convolutions (2, 2, 3, 3, 3 SAME 3x3 convolutions + ReLU per block, each block
    followed by a 2x2 max pooling, ``F = 32``), then fc6 as a SAME 7x7 convolution and fc7
    as a 1x1 convolution (each + ReLU + Dropout(0.5)), a 1x1 score convolution to
    ``classes`` and a 64x64 stride-32 transposed convolution with padding 16 (no bias):
    ``(n/32 - 1) * 32 - 2 * 16 + 64 = n``, so the output has exactly the input size. Unlike
    the original, which pads the input by 100 pixels and crops, the convolutions are SAME
    and the upsampling kernel is random rather than bilinear-initialised.

    Input: ``(N, in_channels, *spatial)``, every spatial size a multiple of 32. Output:
    logits ``(N, classes, *spatial)``, same spatial size.
    """

    def __init__(
        self, in_channels: int = 1, classes: int = 2, ndim: int = 2, width: int = 64
    ) -> None:
        super().__init__()
        _check_ndim(ndim)
        _check_counts(in_channels=in_channels, classes=classes, width=width)
        conv = _conv(ndim)
        layers: list[nn.Module] = []
        cin = in_channels
        for n, c0 in zip(_VGG_CONVS, _VGG_CHANNELS, strict=True):
            c = _scaled(c0, width)
            for _ in range(n):
                layers += [conv(cin, c, 3, padding=1), nn.ReLU(inplace=True)]
                cin = c
            layers.append(_maxpool(ndim)(2, stride=2))
        self.features = nn.Sequential(*layers)
        fc = _scaled(4096, width)
        self.classifier = nn.Sequential(
            conv(cin, fc, 7, padding=3),  # fc6
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            conv(fc, fc, 1),  # fc7
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
        )
        self.score = conv(fc, classes, 1)
        self.upscore = _upconv(ndim)(classes, classes, 64, stride=32, padding=16, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(N, classes, *spatial)`` for input ``(N, in_channels, *spatial)``."""
        return self.upscore(self.score(self.classifier(self.features(x))))


def fcn32s(in_channels: int = 1, classes: int = 2, ndim: int = 2, width: int = 64) -> FCN32s:
    """Build an FCN-32s with a VGG16 backbone and random weights (see :class:`FCN32s`).

    Parameters
    ----------
    in_channels : int
        Input channels.
    classes : int
        Output classes.
    ndim : int
        Spatial axes, 2 or 3.
    width : int
        Channels of the first block (paper: 64); fc6/fc7 get ``4096 * width / 64``.

    Returns
    -------
    FCN32s
        Maps ``(N, in_channels, *spatial)`` to logits ``(N, classes, *spatial)``; every
        spatial size must be a multiple of ``F = 32``.
    """
    return FCN32s(in_channels=in_channels, classes=classes, ndim=ndim, width=width)


# --------------------------------------------------------------------------- FC-DenseNet

#: Layers per dense block (5 down, bottleneck, 5 up) and growth rate of each variant.
_DENSENET_VARIANTS: dict[int, tuple[tuple[int, ...], int]] = {
    56: ((4,) * 11, 12),
    67: ((5,) * 11, 16),
    103: ((4, 5, 7, 10, 12, 15, 12, 10, 7, 5, 4), 16),
}


class _DenseLayer(nn.Sequential):
    """BN - ReLU - SAME 3x3 convolution to ``growth`` channels - Dropout."""

    def __init__(self, cin: int, growth: int, ndim: int, dropout: float) -> None:
        super().__init__(
            _bn(ndim)(cin),
            nn.ReLU(inplace=True),
            _conv(ndim)(cin, growth, 3, padding=1),
            nn.Dropout(dropout),
        )


class _DenseBlock(nn.Module):
    """Dense block: each layer sees the concatenation of the input and all earlier layers.

    The output is that whole stack, ``(N, cin + layers * growth, *spatial)``; its channels
    from ``in_channels = cin`` on (``new_channels = layers * growth`` of them) are the
    block's new feature maps.
    """

    def __init__(self, cin: int, growth: int, layers: int, ndim: int, dropout: float) -> None:
        super().__init__()
        self.in_channels = cin
        self.new_channels = layers * growth
        self.out_channels = cin + self.new_channels
        self.layers = nn.ModuleList(
            _DenseLayer(cin + i * growth, growth, ndim, dropout) for i in range(layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``cat([x, f_1, ..., f_L])`` for input ``x`` of shape ``(N, cin, *spatial)``."""
        for layer in self.layers:
            x = torch.cat([x, layer(x)], dim=1)
        return x


class _TransitionDown(nn.Sequential):
    """BN - ReLU - 1x1 convolution - Dropout - 2x2 max pooling."""

    def __init__(self, channels: int, ndim: int, dropout: float) -> None:
        super().__init__(
            _bn(ndim)(channels),
            nn.ReLU(inplace=True),
            _conv(ndim)(channels, channels, 1),
            nn.Dropout(dropout),
            _maxpool(ndim)(2, stride=2),
        )


class FCDenseNet(nn.Module):
    """FC-DenseNet, "The One Hundred Layers Tiramisu" (Jegou et al. 2017).

    Parameters
    ----------
    layers : sequence of int
        Layers per dense block: ``pools`` down blocks, the bottleneck, ``pools`` up blocks
        (``2 * pools + 1`` entries).
    growth_rate : int
        Channels added by each dense layer.
    in_channels : int
        Input channels.
    classes : int
        Output classes.
    ndim : int
        Spatial axes, 2 or 3.
    stem_channels : int
        Channels of the first 3x3 convolution (paper: 48).
    dropout : float
        Dropout probability in dense layers and transitions down (paper: 0.2).

    Notes
    -----
    First a SAME 3x3 convolution to ``stem_channels``. Down path: dense block, its whole
    stack (input and new maps) kept as the skip, transition down (BN-ReLU-1x1 conv-Dropout-
    2x2 max pooling). Bottleneck: a dense block. Up path: only the *new* feature maps of the
    previous dense block go through a transition up (3x3 stride-2 transposed convolution,
    padding 1, output padding 1, as many channels as it receives), are concatenated with the
    skip and enter the next dense block. The whole stack of the last dense block goes
    through a final 1x1 convolution to ``classes``. With ``pools`` transitions down,
    ``F = 2 ** pools`` (32 for the paper's networks).

    Input: ``(N, in_channels, *spatial)``, every spatial size a multiple of F. Output:
    logits ``(N, classes, *spatial)``, same spatial size.
    """

    def __init__(
        self,
        layers: Sequence[int],
        growth_rate: int,
        in_channels: int = 1,
        classes: int = 2,
        ndim: int = 2,
        stem_channels: int = 48,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        _check_ndim(ndim)
        _check_counts(
            in_channels=in_channels,
            classes=classes,
            growth_rate=growth_rate,
            stem_channels=stem_channels,
        )
        layers = tuple(layers)
        if len(layers) % 2 == 0 or any(n < 1 for n in layers):
            raise ValueError(f"layers must be 2 * pools + 1 positive counts, got {layers}")
        pools = len(layers) // 2
        self.layers_per_block = layers
        self.growth_rate = growth_rate
        self.ndim = ndim
        conv = _conv(ndim)
        self.stem = conv(in_channels, stem_channels, 3, padding=1)
        c = stem_channels
        self.down = nn.ModuleList()
        self.transitions_down = nn.ModuleList()
        skip_channels = []
        for n in layers[:pools]:
            block = _DenseBlock(c, growth_rate, n, ndim, dropout)
            c = block.out_channels
            skip_channels.append(c)
            self.down.append(block)
            self.transitions_down.append(_TransitionDown(c, ndim, dropout))
        self.bottleneck = _DenseBlock(c, growth_rate, layers[pools], ndim, dropout)
        new = self.bottleneck.new_channels
        self.transitions_up = nn.ModuleList()
        self.up = nn.ModuleList()
        for i, n in enumerate(layers[pools + 1 :]):
            self.transitions_up.append(
                _upconv(ndim)(new, new, 3, stride=2, padding=1, output_padding=1)
            )
            block = _DenseBlock(new + skip_channels[-1 - i], growth_rate, n, ndim, dropout)
            self.up.append(block)
            new = block.new_channels
            c = block.out_channels
        self.head = conv(c, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(N, classes, *spatial)`` for input ``(N, in_channels, *spatial)``."""
        x = self.stem(x)
        skips: list[torch.Tensor] = []
        for block, down in zip(self.down, self.transitions_down, strict=True):
            x = block(x)
            skips.append(x)
            x = down(x)
        x = self.bottleneck(x)
        new = x[:, self.bottleneck.in_channels :]  # only the block's new feature maps
        for i, (tu, block) in enumerate(zip(self.transitions_up, self.up, strict=True)):
            x = block(torch.cat([tu(new), skips[len(skips) - 1 - i]], dim=1))
            new = x[:, block.in_channels :]
        return self.head(x)


def fc_densenet(
    variant: int = 103,
    in_channels: int = 1,
    classes: int = 2,
    ndim: int = 2,
    growth_rate: int | None = None,
    stem_channels: int = 48,
    dropout: float = 0.2,
) -> FCDenseNet:
    """Build FC-DenseNet56, 67 or 103 (Jegou et al. 2017) with random weights.

    Parameters
    ----------
    variant : {56, 67, 103}
        56: 4 layers per block, growth 12; 67: 5 layers per block, growth 16; 103: 4, 5, 7,
        10, 12 layers down, 15 in the bottleneck, mirrored up, growth 16.
    in_channels : int
        Input channels.
    classes : int
        Output classes.
    ndim : int
        Spatial axes, 2 or 3.
    growth_rate : int, optional
        Override the variant's growth rate (e.g. small for tests).
    stem_channels : int
        Channels of the first convolution (paper: 48).
    dropout : float
        Dropout probability (paper: 0.2).

    Returns
    -------
    FCDenseNet
        Maps ``(N, in_channels, *spatial)`` to logits ``(N, classes, *spatial)``; every
        spatial size must be a multiple of ``F = 32``.
    """
    if variant not in _DENSENET_VARIANTS:
        raise ValueError(f"variant must be one of {sorted(_DENSENET_VARIANTS)}, got {variant!r}")
    layers, growth = _DENSENET_VARIANTS[variant]
    return FCDenseNet(
        layers,
        growth if growth_rate is None else growth_rate,
        in_channels=in_channels,
        classes=classes,
        ndim=ndim,
        stem_channels=stem_channels,
        dropout=dropout,
    )


# ------------------------------------------------------------------------------ registry

#: Builders by name, each callable as ``ARCHITECTURES[name](in_channels=1, classes=2,
#: ndim=2)`` with the paper's default widths (extra keyword arguments: ``width`` for the
#: U-Nets, SegNet and FCN-32s; ``growth_rate`` / ``stem_channels`` for FC-DenseNets).
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "unet": partial(unet, upsampling="transpose"),
    "unet-nearest": partial(unet, upsampling="nearest"),
    "unet-bilinear": partial(unet, upsampling="bilinear"),
    "segnet": segnet,
    "fcn32s": fcn32s,
    "fc-densenet56": partial(fc_densenet, 56),
    "fc-densenet67": partial(fc_densenet, 67),
    "fc-densenet103": partial(fc_densenet, 103),
}

#: Majurski & Bajcsy (2021), Table 2 ("Theoretical Radii for Common Segmentation
#: Architectures"): halo in pixels from Eq. 1 as printed, by registry name. The paper's
#: rows are U-Net, SegNet, FCN-VGG16, FC-DenseNet-56, FC-DenseNet-67 and FC-DenseNet-103.
PAPER_TABLE2: dict[str, int] = {
    "unet": 96,
    "segnet": 192,
    "fcn32s": 202,
    "fc-densenet56": 384,
    "fc-densenet67": 480,
    "fc-densenet103": 1120,
}
