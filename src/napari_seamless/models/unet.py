"""U-Net as used by Majurski & Bajcsy (2021), section 4.1, configurable in 2D and 3D.

Each level has two ``k x k`` SAME convolutions, each followed by ReLU and then BatchNorm
("BatchNorm after the activation", paper section 4.1); levels are joined by 2x2 max pooling
on the way down and 2x2 stride-2 transposed convolutions on the way up, with skip
connections concatenated. With ``depth`` pooling levels the total downsampling is
``F = 2 ** depth`` (16 for the paper's depth 4), and input sizes must be multiples of F.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["UNet", "UNetConfig", "he_init"]


@dataclass(frozen=True)
class UNetConfig:
    """Hyper-parameters of :class:`UNet`.

    Attributes
    ----------
    in_channels : int
        Number of input channels.
    classes : int
        Number of output classes (channels of the logits).
    width : int
        Feature channels at level 0; level ``l`` has ``width * 2 ** l`` (paper: 64).
    depth : int
        Number of pooling levels (paper: 4, giving F = 16).
    ndim : int
        Number of spatial axes, 2 or 3.
    kernel_size : int
        Odd convolution kernel size (paper: 3).
    """

    in_channels: int = 1
    classes: int = 2
    width: int = 64
    depth: int = 4
    ndim: int = 2
    kernel_size: int = 3

    def __post_init__(self) -> None:
        if self.ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {self.ndim}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {self.kernel_size}")
        if self.depth < 0 or self.width < 1 or self.in_channels < 1 or self.classes < 1:
            raise ValueError(f"invalid U-Net configuration {self}")

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as a plain dict (for checkpoints)."""
        return asdict(self)


def _layers(ndim: int) -> tuple[type[nn.Module], type[nn.Module], type[nn.Module], type[nn.Module]]:
    if ndim == 2:
        return nn.Conv2d, nn.ConvTranspose2d, nn.MaxPool2d, nn.BatchNorm2d
    return nn.Conv3d, nn.ConvTranspose3d, nn.MaxPool3d, nn.BatchNorm3d


class _Block(nn.Sequential):
    """Two SAME convolutions, each followed by ReLU then BatchNorm."""

    def __init__(self, cin: int, cout: int, cfg: UNetConfig) -> None:
        conv, _, _, bn = _layers(cfg.ndim)
        pad = cfg.kernel_size // 2
        super().__init__(
            conv(cin, cout, cfg.kernel_size, padding=pad),
            nn.ReLU(inplace=True),
            bn(cout),
            conv(cout, cout, cfg.kernel_size, padding=pad),
            nn.ReLU(inplace=True),
            bn(cout),
        )


class _Up(nn.Module):
    """2x2 stride-2 transposed convolution, concatenation with the skip, then a block."""

    def __init__(self, cin: int, cout: int, cfg: UNetConfig) -> None:
        super().__init__()
        _, upconv, _, _ = _layers(cfg.ndim)
        self.conv = upconv(cin, cout, 2, stride=2)
        self.block = _Block(2 * cout, cout, cfg)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Upsample ``x`` and merge it with ``skip`` (same spatial size)."""
        return self.block(torch.cat([skip, self.conv(x)], dim=1))


class UNet(nn.Module):
    """U-Net (Ronneberger et al. 2015) with SAME convolutions, as in the paper.

    Parameters
    ----------
    config : UNetConfig, optional
        Architecture; keyword arguments override its fields.
    **kwargs
        Fields of :class:`UNetConfig` (``in_channels``, ``classes``, ``width``, ``depth``,
        ``ndim``, ``kernel_size``).

    Notes
    -----
    Input: float tensor ``(N, in_channels, *spatial)`` with every spatial size a multiple of
    ``2 ** depth``. Output: logits ``(N, classes, *spatial)``, same spatial size.
    """

    def __init__(self, config: UNetConfig | None = None, **kwargs: Any) -> None:
        super().__init__()
        cfg = UNetConfig(**{**(config.to_dict() if config else {}), **kwargs})
        self.config = cfg
        conv, upconv, pool, _ = _layers(cfg.ndim)
        w = [cfg.width * 2**level for level in range(cfg.depth + 1)]
        self.down = nn.ModuleList()
        cin = cfg.in_channels
        for level in range(cfg.depth):
            self.down.append(_Block(cin, w[level], cfg))
            cin = w[level]
        self.pool = pool(2)
        self.bottleneck = _Block(
            w[cfg.depth - 1] if cfg.depth else cfg.in_channels, w[cfg.depth], cfg
        )
        self.up = nn.ModuleList(
            _Up(w[level + 1], w[level], cfg) for level in reversed(range(cfg.depth))
        )
        self.head = conv(w[0], cfg.classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(N, classes, *spatial)`` for input ``(N, in_channels, *spatial)``."""
        skips: list[torch.Tensor] = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for i, up in enumerate(self.up):
            x = up(x, skips[len(skips) - 1 - i])
        return self.head(x)


def he_init(module: nn.Module, seed: int = 0) -> nn.Module:
    """Re-draw every convolution weight from He's normal (fan-in, ReLU gain); biases to 0.

    He et al. (2015) initialisation keeps the activations' variance from layer to layer in
    a ReLU network, so a random network depends on its whole receptive field about as a
    trained one does. PyTorch's default (``kaiming_uniform_`` with ``a=sqrt(5)``) shrinks
    the variance about threefold per layer, and through the ~20 layers of a depth-4 U-Net
    the far edge of the receptive field fades below float32 rounding: halo studies on
    such a network see almost no seam. BatchNorm layers keep their identity statistics.

    Parameters
    ----------
    module : torch.nn.Module
        Changed in place (Conv1d/2d/3d and their transposed forms).
    seed : int
        Seed of the draw (``torch.manual_seed``).

    Returns
    -------
    torch.nn.Module
        ``module`` itself.
    """
    torch.manual_seed(seed)
    convs = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d)
    for m in module.modules():
        if isinstance(m, (*convs, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module
