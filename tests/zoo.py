"""A zoo of third-party segmentation architectures, built as a user would build them.

Each :class:`Entry` builds one configuration of a model from ``segmentation_models_pytorch``
(smp) or MONAI with random weights (``encoder_weights=None`` / ``pretrained=False``: nothing
is ever downloaded), in eval mode, plus the EXPECTED verdict of the halo analysis written from
reading the architecture's code, not from running the analysis:

* :class:`Tileable`: every operation is local and size-independent at sizes that are
  multiples of F (convolutions, eval-mode norms with running statistics, channel LayerNorm,
  per-pixel gates, nearest / ``align_corners=False`` linear interpolation by 2); ``factor`` is
  the total stride of the deepest feature map.
* :class:`Refused`: something couples all of space (norm statistics over space, global or
  adaptive pooling, attention over tokens, ``align_corners=True`` resizing whose sampling
  positions depend on the image size); ``where`` is a regular expression that the module path
  of at least one refusal must match (a module that forward really runs).

``build(full=False)`` gives a configuration small enough for CPU tests (reduced widths or
depths where the library allows; the encoder geometry, F and the kind of every layer are the
library's own); ``build(full=True)`` the library's default / tutorial widths, for the
compatibility table (``scripts/compat_table.py``). Used by ``tests/test_zoo.py``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from _thirdparty import import_monai, import_smp, version


@dataclass(frozen=True)
class Tileable:
    """Expected: exact tiling at a finite halo, with total downsampling ``factor``."""

    factor: int
    why: str = ""


@dataclass(frozen=True)
class Refused:
    """Expected: refused at any halo; ``op`` what couples space, ``where`` a path regex."""

    op: str
    where: str
    why: str = ""

    def matches(self, path: str) -> bool:
        """Whether a refusal at module ``path`` is the expected one."""
        return re.search(self.where, path) is not None


@dataclass(frozen=True)
class Entry:
    """One architecture configuration of the zoo."""

    name: str
    library: str  # distribution name: "segmentation-models-pytorch" or "monai"
    constructor: str  # how a user writes it (full widths), for the table
    make: Callable[[bool], object]  # make(full) -> nn.Module (random weights, train mode)
    norm: str
    expect: Tileable | Refused
    ndim: int = 2
    in_channels: int = 1
    classes: int = 2
    heavy: bool = False  # slow at test widths: tests/test_zoo.py runs it with -m slow only
    small_note: str = ""  # what the test (full=False) configuration reduces
    tags: tuple[str, ...] = field(default=())

    def build(self, full: bool = False):
        """The model with random weights (seed 0), in eval mode, float32."""
        import torch

        torch.manual_seed(0)
        return self.make(full).eval()

    @property
    def tileable(self) -> bool:
        return isinstance(self.expect, Tileable)

    @property
    def version(self) -> str:
        return version(self.library)


# ----------------------------------------------------------------------------------- smp


def _smp(arch: str, encoder: str, small: dict | None = None, **kwargs):
    def make(full: bool):
        smp = import_smp()
        kw = dict(encoder_name=encoder, encoder_weights=None, in_channels=1, classes=2)
        kw.update(kwargs)
        if not full and small:
            kw.update(small)
        return getattr(smp, arch)(**kw)

    return make


def _smp_ctor(arch: str, encoder: str, **kwargs) -> str:
    extra = "".join(f", {k}={v!r}" for k, v in kwargs.items())
    return f"smp.{arch}({encoder!r}, encoder_weights=None, in_channels=1, classes=2{extra})"


SMP = "segmentation-models-pytorch"
_LOCAL = "convolutions, eval BatchNorm, ReLU, nearest x2 upsampling to the skip's size"
_TINY_DECODER = {"decoder_channels": (32, 16, 8, 8, 4)}


def _smp_entries() -> list[Entry]:
    e = []

    def add(name, arch, encoder, norm, expect, small=None, heavy=False, note="", **kw):
        e.append(
            Entry(
                name=name,
                library=SMP,
                constructor=_smp_ctor(arch, encoder, **kw),
                make=_smp(arch, encoder, small, **kw),
                norm=norm,
                expect=expect,
                heavy=heavy,
                small_note=note,
            )
        )

    # --- tileable
    add(
        "smp Unet resnet34",
        "Unet",
        "resnet34",
        "BatchNorm (eval)",
        Tileable(32, "ResNet-34: stride-2 7x7 stem, 3x3 max pool, 3 stride-2 stages; " + _LOCAL),
    )
    add(
        "smp Unet resnet18",
        "Unet",
        "resnet18",
        "BatchNorm (eval)",
        Tileable(32, _LOCAL),
        small=_TINY_DECODER,
        note="decoder_channels=(32, 16, 8, 8, 4)",
    )
    add(
        "smp Unet resnet18 depth 3",
        "Unet",
        "resnet18",
        "BatchNorm (eval)",
        Tileable(8, "encoder_depth=3: stem (stride 2), max pool + layer1 (stride 2), layer2 (2)"),
        encoder_depth=3,
        decoder_channels=(64, 32, 16),
    )
    add(
        "smp Unet resnet18 bilinear",
        "Unet",
        "resnet18",
        "BatchNorm (eval)",
        Tileable(32, "bilinear x2 with align_corners=False is local and size-independent"),
        small=_TINY_DECODER,
        note="decoder_channels=(32, 16, 8, 8, 4)",
        decoder_interpolation="bilinear",
    )
    add(
        "smp Unet mobilenet_v2",
        "Unet",
        "mobilenet_v2",
        "BatchNorm (eval)",
        Tileable(32, "torchvision MobileNetV2: depthwise convs, BN, ReLU6; no squeeze-excite"),
        small=_TINY_DECODER,
        note="decoder_channels=(32, 16, 8, 8, 4)",
    )
    add(
        "smp Unet tu-efficientnet_lite0",
        "Unet",
        "tu-efficientnet_lite0",
        "BatchNorm (eval)",
        Tileable(32, "timm EfficientNet-Lite: no squeeze-excite, ReLU6, symmetric padding"),
        small=_TINY_DECODER,
        note="decoder_channels=(32, 16, 8, 8, 4)",
    )
    add(
        "smp Unet tu-convnext_atto",
        "Unet",
        "tu-convnext_atto",
        "LayerNorm over channels (permute -> layer_norm -> permute)",
        Tileable(
            32,
            "ConvNeXt: 4x4/4 stem, depthwise 7x7, channel LayerNorm (per pixel), MLP on "
            "channels, layer scale, 2x2/2 downsampling",
        ),
        small=_TINY_DECODER,
        note="decoder_channels=(32, 16, 8, 8, 4)",
    )
    add(
        "smp UnetPlusPlus resnet18",
        "UnetPlusPlus",
        "resnet18",
        "BatchNorm (eval)",
        Tileable(32, "nested U-Net decoder: " + _LOCAL),
        small=_TINY_DECODER,
        heavy=True,
        note="decoder_channels=(32, 16, 8, 8, 4)",
    )
    add(
        "smp Linknet resnet18",
        "Linknet",
        "resnet18",
        "BatchNorm (eval)",
        Tileable(32, "4x4 stride-2 transposed convolutions, additive skips"),
    )
    # --- refused
    add(
        "smp Unet efficientnet-b0",
        "Unet",
        "efficientnet-b0",
        "BatchNorm (eval)",
        Refused(
            "global average pooling (squeeze-and-excitation)",
            r"^encoder\._blocks\.\d+",
            "every MBConv block calls F.adaptive_avg_pool2d(x, 1) for its SE gate",
        ),
        small=_TINY_DECODER,
        note="decoder_channels=(32, 16, 8, 8, 4)",
    )
    add(
        "smp Unet timm-efficientnet-b0",
        "Unet",
        "timm-efficientnet-b0",
        "BatchNorm (eval)",
        Refused(
            "global average pooling (squeeze-and-excitation)",
            r"^encoder\.blocks\.\d+\.\d+(\.se|$)",
            "timm SqueezeExcite: x.mean((2, 3), keepdim=True)",
        ),
        small=_TINY_DECODER,
        note="decoder_channels=(32, 16, 8, 8, 4)",
    )
    add(
        "smp Unet mit_b0",
        "Unet",
        "mit_b0",
        "LayerNorm over channels (tokens)",
        Refused(
            "attention",
            r"^encoder\.block\d\.\d+\.attn",
            "Mix Transformer: softmax(q @ k^T) over all (spatially reduced) tokens",
        ),
        small=_TINY_DECODER,
        note="decoder_channels=(32, 16, 8, 8, 4)",
    )
    add(
        "smp Unet resnet18 scse",
        "Unet",
        "resnet18",
        "BatchNorm (eval)",
        Refused(
            "global average pooling (scSE attention)",
            r"^decoder\.blocks\.\d+\.attention\d",
            "SCSEModule's channel gate is AdaptiveAvgPool2d(1)",
        ),
        small={"decoder_channels": (64, 32, 16, 16, 16)},
        note="decoder_channels=(64, 32, 16, 16, 16) (scSE reduces channels by 16)",
        decoder_attention_type="scse",
    )
    add(
        "smp Unet resnet18 instancenorm",
        "Unet",
        "resnet18",
        "InstanceNorm (decoder, affine, no running stats)",
        Refused(
            "InstanceNorm over space",
            r"^decoder\.blocks\.\d+\.conv\d",
            "per-image statistics over H x W",
        ),
        small={"decoder_channels": (32, 16, 8, 8, 4)},
        note="decoder_channels=(32, 16, 8, 8, 4)",
        decoder_use_norm={"type": "instancenorm", "affine": True},
    )
    add(
        "smp FPN resnet18",
        "FPN",
        "resnet18",
        "GroupNorm(32) (decoder)",
        Refused(
            "GroupNorm over space; align_corners=True upsampling",
            r"^decoder\.seg_blocks|^segmentation_head",
            "Conv3x3GNReLU: GroupNorm(32, C) and F.interpolate(..., align_corners=True); "
            "head: nn.Upsample(bilinear, x4, align_corners=True)",
        ),
        small={"decoder_pyramid_channels": 32, "decoder_segmentation_channels": 32},
        note="decoder_pyramid_channels=32, decoder_segmentation_channels=32",
    )
    add(
        "smp DeepLabV3Plus resnet18",
        "DeepLabV3Plus",
        "resnet18",
        "BatchNorm (eval)",
        Refused(
            "global average pooling (ASPP image pooling); align_corners=True upsampling",
            r"^decoder\.(aspp|up)|^segmentation_head",
            "ASPPPooling: AdaptiveAvgPool2d(1); UpsamplingBilinear2d (align_corners=True)",
        ),
        small={"decoder_channels": 32},
        note="decoder_channels=32",
    )
    add(
        "smp PSPNet resnet18",
        "PSPNet",
        "resnet18",
        "BatchNorm (eval)",
        Refused(
            "adaptive pooling (pyramid pooling); align_corners=True resize",
            r"^decoder\.psp|^segmentation_head",
            "PSPBlock: F.interpolate(size=(p, p), mode='area') then bilinear back, align_corners=True",
        ),
    )
    add(
        "smp MAnet resnet18",
        "MAnet",
        "resnet18",
        "BatchNorm (eval)",
        Refused(
            "attention (position attention block) and global pooling (MFAB squeeze-excite)",
            r"^decoder\.(center|blocks)",
            "PAB: softmax over all positions; MFAB: AdaptiveAvgPool2d(1)",
        ),
        small={"decoder_channels": (32, 16, 8, 8, 4), "decoder_pab_channels": 8},
        note="decoder_channels=(32, 16, 8, 8, 4), decoder_pab_channels=8",
    )
    add(
        "smp Segformer resnet18",
        "Segformer",
        "resnet18",
        "BatchNorm (eval)",
        Refused(
            "align_corners=True upsampling",
            r"^segmentation_head",
            "head: nn.Upsample(bilinear, x4, align_corners=True); sampling positions depend on "
            "the image size (the decoder itself is local)",
        ),
        small={"decoder_segmentation_channels": 32},
        note="decoder_segmentation_channels=32",
    )
    return e


# --------------------------------------------------------------------------------- MONAI

MONAI = "monai"


def _monai(cls: str, small: dict, full: dict, **kwargs):
    def make(is_full: bool):
        import importlib

        import_monai()
        nets = importlib.import_module("monai.networks.nets")
        kw = dict(kwargs)
        kw.update(full if is_full else small)
        return getattr(nets, cls)(**kw)

    return make


def _monai_ctor(cls: str, full: dict, **kwargs) -> str:
    args = {**kwargs, **full}
    return f"monai.networks.nets.{cls}(" + ", ".join(f"{k}={v!r}" for k, v in args.items()) + ")"


def _monai_entries() -> list[Entry]:
    e = []

    def add(name, cls, label, expect, small, full, heavy=False, ndim=2, note="", **kw):
        e.append(
            Entry(
                name=name,
                library=MONAI,
                constructor=_monai_ctor(cls, full, **kw),
                make=_monai(cls, small, full, **kw),
                norm=label,
                expect=expect,
                heavy=heavy,
                ndim=ndim,
                small_note=note,
            )
        )

    unet_small = dict(channels=(4, 8, 16, 32), strides=(2, 2, 2), num_res_units=2)
    unet_full = dict(channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2)
    unet_kw = dict(spatial_dims=2, in_channels=1, out_channels=2)
    add(
        "MONAI UNet batch",
        "UNet",
        "BatchNorm (eval)",
        Tileable(16, "strided 3x3 convolutions, 3x3 stride-2 transposed convolutions, PReLU"),
        dict(channels=(4, 8, 16, 32, 32), strides=(2, 2, 2, 2), num_res_units=2),
        unet_full,
        norm="batch",
        note="channels=(4, 8, 16, 32, 32)",
        **unet_kw,
    )
    add(
        "MONAI UNet instance (default)",
        "UNet",
        "InstanceNorm (default)",
        Refused("InstanceNorm over space", r"adn\.N$|adn$", "per-image statistics over space"),
        unet_small,
        unet_full,
        note="channels=(4, 8, 16, 32), strides=(2, 2, 2)",
        **unet_kw,
    )
    add(
        "MONAI UNet group",
        "UNet",
        "GroupNorm(2)",
        Refused("GroupNorm over space", r"adn\.N$|adn$", "statistics over space"),
        unet_small,
        unet_full,
        norm=("group", {"num_groups": 2}),
        note="channels=(4, 8, 16, 32), strides=(2, 2, 2)",
        **unet_kw,
    )
    add(
        "MONAI UNet 3D batch",
        "UNet",
        "BatchNorm (eval)",
        Tileable(8, "3D: strided convolutions, transposed convolutions"),
        dict(channels=(2, 4, 8, 8), strides=(2, 2, 2), num_res_units=1),
        dict(channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=2),
        ndim=3,
        norm="batch",
        spatial_dims=3,
        in_channels=1,
        out_channels=2,
        note="channels=(2, 4, 8, 8), num_res_units=1",
    )
    bu_kw = dict(spatial_dims=2, in_channels=1, out_channels=2)
    bu_small = dict(features=(4, 4, 8, 8, 16, 4))
    bu_full = dict(features=(32, 32, 64, 128, 256, 32))
    add(
        "MONAI BasicUNet batch",
        "BasicUNet",
        "BatchNorm (eval)",
        Tileable(16, "max pooling, 2x2 transposed convolutions, concatenation (UpCat)"),
        bu_small,
        bu_full,
        norm="batch",
        note="features=(4, 4, 8, 8, 16, 4)",
        **bu_kw,
    )
    add(
        "MONAI BasicUNet instance (default)",
        "BasicUNet",
        "InstanceNorm (default, affine)",
        Refused("InstanceNorm over space", r"adn\.N$|adn$", "per-image statistics over space"),
        bu_small,
        bu_full,
        note="features=(4, 4, 8, 8, 16, 4)",
        **bu_kw,
    )
    add(
        "MONAI BasicUNet instance running stats",
        "BasicUNet",
        "InstanceNorm(track_running_stats=True), eval",
        Tileable(16, "eval InstanceNorm with running statistics is a per-channel affine map"),
        bu_small,
        bu_full,
        norm=("instance", {"affine": True, "track_running_stats": True}),
        note="features=(4, 4, 8, 8, 16, 4)",
        **bu_kw,
    )
    add(
        "MONAI BasicUNet nontrainable upsampling",
        "BasicUNet",
        "BatchNorm (eval)",
        Refused(
            "align_corners=True upsampling",
            r"^upcat_\d\.upsample",
            "UpCat's UpSample(mode='nontrainable') defaults to bilinear with align_corners=True",
        ),
        bu_small,
        bu_full,
        norm="batch",
        upsample="nontrainable",
        note="features=(4, 4, 8, 8, 16, 4)",
        **bu_kw,
    )
    dyn_kw = dict(
        spatial_dims=2,
        in_channels=1,
        out_channels=2,
        kernel_size=[3, 3, 3, 3, 3],
        strides=[1, 2, 2, 2, 2],
        upsample_kernel_size=[2, 2, 2, 2],
    )
    dyn_small = dict(filters=[4, 8, 16, 16, 32])
    dyn_full = dict(filters=None)
    add(
        "MONAI DynUNet batch",
        "DynUNet",
        "BatchNorm (eval)",
        Tileable(16, "residual-free conv blocks, strided 3x3 convs, 2x2 transposed convs"),
        dyn_small,
        dyn_full,
        norm_name="batch",
        note="filters=[4, 8, 16, 16, 32]",
        **dyn_kw,
    )
    add(
        "MONAI DynUNet instance (default)",
        "DynUNet",
        "InstanceNorm (default, affine)",
        Refused("InstanceNorm over space", r"norm\d$", "per-image statistics over space"),
        dyn_small,
        dyn_full,
        note="filters=[4, 8, 16, 16, 32]",
        **dyn_kw,
    )
    seg_kw = dict(spatial_dims=2, in_channels=1, out_channels=2, blocks_down=(1, 2, 2, 4))
    add(
        "MONAI SegResNet batch",
        "SegResNet",
        "BatchNorm (eval)",
        Tileable(8, "strided 3x3 convs, bilinear x2 (align_corners=False), additive skips"),
        dict(init_filters=4),
        dict(init_filters=8),
        norm="batch",
        note="init_filters=4",
        **seg_kw,
    )
    add(
        "MONAI SegResNet group (default)",
        "SegResNet",
        "GroupNorm(8) (default)",
        Refused("GroupNorm over space", r"norm\d?$", "statistics over space"),
        dict(init_filters=8),
        dict(init_filters=8),
        **seg_kw,
    )
    att_kw = dict(spatial_dims=2, in_channels=1, out_channels=2)
    add(
        "MONAI AttentionUnet",
        "AttentionUnet",
        "BatchNorm (eval) + InstanceNorm (merge convolutions, MONAI's default)",
        Refused(
            "InstanceNorm over space",
            r"\.merge(\.|$)",
            "the attention GATES are per pixel (sigmoid(1x1 conv(relu(W_g g + W_x x))) * x), "
            "but AttentionLayer.merge is a MONAI Convolution with its default norm, "
            "InstanceNorm",
        ),
        dict(channels=(4, 8, 16, 16, 32), strides=(2, 2, 2, 2)),
        dict(channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2)),
        note="channels=(4, 8, 16, 16, 32)",
        **att_kw,
    )
    swin_kw = dict(in_channels=1, out_channels=2, spatial_dims=2)
    add(
        "MONAI SwinUNETR batch",
        "SwinUNETR",
        "BatchNorm (eval) + LayerNorm over channels",
        Refused(
            "attention (shifted windows)",
            r"^swinViT\.layers\d\.0\.blocks\.\d+",
            "WindowAttention: softmax(q @ k^T) in 7x7 windows whose grid starts at the image "
            "corner (and is padded to the size), with shifted-window masks",
        ),
        dict(feature_size=12, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2)),
        dict(feature_size=24),
        norm_name="batch",
        note="feature_size=12, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2)",
        **swin_kw,
    )
    add(
        "MONAI SwinUNETR instance (default)",
        "SwinUNETR",
        "InstanceNorm (default) + LayerNorm over channels",
        Refused(
            "attention (shifted windows); InstanceNorm over space",
            r"^swinViT\.layers\d\.0\.blocks\.\d+|^(encoder|decoder)\d+\.",
            "window attention; per-image statistics in the conv blocks",
        ),
        dict(feature_size=12, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2)),
        dict(feature_size=24),
        note="feature_size=12, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2)",
        **swin_kw,
    )
    flex_kw = dict(in_channels=1, out_channels=2, spatial_dims=2, pretrained=False)
    add(
        "MONAI FlexibleUNet resnet18",
        "FlexibleUNet",
        "BatchNorm (eval)",
        Tileable(32, "MONAI ResNet-18 (stride-2 7x7 stem, max pool), nearest x2 decoder"),
        dict(backbone="resnet18", decoder_channels=(32, 16, 8, 8, 4)),
        dict(backbone="resnet18"),
        note="decoder_channels=(32, 16, 8, 8, 4)",
        **flex_kw,
    )
    add(
        "MONAI FlexibleUNet resnet18 instance",
        "FlexibleUNet",
        "InstanceNorm (decoder)",
        Refused(
            "InstanceNorm over space", r"^decoder\.blocks\.\d+\.convs", "statistics over space"
        ),
        dict(backbone="resnet18", decoder_channels=(32, 16, 8, 8, 4)),
        dict(backbone="resnet18"),
        norm=("instance", {"affine": True}),
        note="decoder_channels=(32, 16, 8, 8, 4)",
        **flex_kw,
    )
    add(
        "MONAI FlexibleUNet efficientnet-b0",
        "FlexibleUNet",
        "BatchNorm (eval)",
        Refused(
            "global average pooling (squeeze-and-excitation)",
            r"^encoder\._blocks\.\d+",
            "MBConvBlock: adaptive average pooling to 1x1 for the SE gate",
        ),
        dict(backbone="efficientnet-b0", decoder_channels=(32, 16, 8, 8, 4)),
        dict(backbone="efficientnet-b0"),
        note="decoder_channels=(32, 16, 8, 8, 4)",
        **flex_kw,
    )
    add(
        "MONAI UNETR",
        "UNETR",
        "InstanceNorm (default) + LayerNorm over tokens",
        Refused(
            "attention (global self-attention over all patches)",
            r"^vit\b|^(encoder|decoder)\d+\.",
            "ViT: softmax over every 16x16 patch of a fixed-size image; learned position "
            "embedding for one image size",
        ),
        dict(img_size=(64, 64), feature_size=8, hidden_size=48, mlp_dim=96, num_heads=4),
        dict(img_size=(256, 256)),
        spatial_dims=2,
        in_channels=1,
        out_channels=2,
        note="img_size=(64, 64), feature_size=8, hidden_size=48, mlp_dim=96, num_heads=4",
    )
    return e


ENTRIES: list[Entry] = _smp_entries() + _monai_entries()
ZOO: dict[str, Entry] = {entry.name: entry for entry in ENTRIES}


def live_modules(model, ndim: int = 2, in_channels: int = 1, size: int = 64) -> set[str]:
    """Module paths whose ``forward`` runs in one forward pass at ``size`` (``""`` = root)."""
    import torch

    seen: set[str] = set()
    handles = []
    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(lambda m, a, n=name: seen.add(n)))
    try:
        with torch.inference_mode():
            model(torch.zeros((1, in_channels) + (size,) * ndim))
    finally:
        for h in handles:
            h.remove()
    return seen


# ------------------------------------------------------------------- analysis and checks


def analysis():
    """``(receptive_field, NotTileableError, name)`` of the halo analysis in this checkout.

    The ``napari_seamless.analysis`` package when it exists, else the older
    ``napari_seamless.receptive_field`` module (forced with ``SEAMLESS_ZOO_ANALYSIS=old``).
    """
    import os

    try:
        if os.environ.get("SEAMLESS_ZOO_ANALYSIS") == "old":
            raise ImportError("old analysis forced by SEAMLESS_ZOO_ANALYSIS=old")
        from napari_seamless.analysis import NotTileableError, receptive_field

        return receptive_field, NotTileableError, "napari_seamless.analysis"
    except ImportError:
        from napari_seamless.receptive_field import NotTileableError

        from napari_seamless import receptive_field

        return receptive_field, NotTileableError, "napari_seamless.receptive_field"


class HardLimitExceeded(Exception):
    """The analysis ran past the harness's hard limit (it never returned by itself)."""


@dataclass
class Outcome:
    """What the analysis said about one model, and how long it took."""

    rf: object | None
    error: BaseException | None
    seconds: float

    @property
    def refused(self) -> bool:
        _, not_tileable, _ = analysis()
        return isinstance(self.error, not_tileable)

    def refusal_paths(self) -> list[str]:
        """Module paths of the refusals (``.refusals[i].path``, else quoted in the message)."""
        refusals = getattr(self.error, "refusals", None)
        if refusals is not None:
            return [str(getattr(r, "path", "")) for r in refusals]
        return re.findall(r"'([^']*)'", str(self.error))


def analyse(model, ndim: int, in_channels: int, time_budget: float = 30.0, hard_limit: int = 180):
    """Run the analysis on ``model`` and time it; never raises (see :class:`Outcome`).

    ``time_budget`` is passed when the analysis takes one; ``hard_limit`` seconds (SIGALRM,
    main thread only) stop an analysis that has no budget of its own.
    """
    import inspect
    import signal
    import threading
    import time

    receptive_field, _, _ = analysis()
    kwargs = {"ndim": ndim, "in_channels": in_channels}
    if "time_budget" in inspect.signature(receptive_field).parameters:
        kwargs["time_budget"] = time_budget
    use_alarm = threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGALRM")

    def on_alarm(*_):
        raise HardLimitExceeded(f"no answer within the harness's hard limit of {hard_limit} s")

    previous = signal.signal(signal.SIGALRM, on_alarm) if use_alarm else None
    if use_alarm:
        signal.alarm(hard_limit)
    start = time.perf_counter()
    try:
        rf = receptive_field(model, **kwargs)
        return Outcome(rf, None, time.perf_counter() - start)
    except Exception as err:  # noqa: BLE001 - the outcome records it
        return Outcome(None, err, time.perf_counter() - start)
    finally:
        if use_alarm:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)


def _round_up(n: int, f: int) -> int:
    return -(-n // f) * f


def check_geometry(ndim: int, factor: tuple[int, ...], halo: tuple[int, ...]):
    """Image shape, ZoR and the window sizes at ``halo`` and one F-step below.

    The last axis is long enough for several tiles, one of them with its whole window inside
    the image (so inputs outside it exist on both sides); the other axes are short and odd.
    """
    f, h = factor[-1], halo[-1]
    zor = max(2 * f, _round_up(h, f))
    shape = tuple(2 * fa + 5 for fa in factor[:-1]) + (2 * h + 3 * zor + 11,)
    below = tuple(max(ha - fa, 0) for ha, fa in zip(halo, factor, strict=False))
    tile = tuple(2 * ha + zor for ha in halo)
    tile_below = tuple(2 * ha + zor for ha in below)
    return shape, zor, tile, below, tile_below


def tiled_check(model, ndim: int, in_channels: int, factor, halo, seed: int = 1) -> dict:
    """float64: tiled at ``halo`` vs whole image, and tiled one F-step below vs whole.

    Returns ``max_diff``, ``argmax_equal`` (at ``halo``), ``max_diff_below`` (one F-step
    below; ``None`` when the halo is 0), ``shape``, ``tile``, ``tiles``.
    """
    import numpy as np

    from napari_seamless.engine import predict

    factor, halo = tuple(factor), tuple(halo)
    shape, zor, tile, below, tile_below = check_geometry(ndim, factor, halo)
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(in_channels, *shape) if in_channels > 1 else shape)
    common = dict(ndim=ndim, in_channels=in_channels, factor=factor, dtype="float64")
    common["normalization"] = None
    ref = predict(model, image, tile=None, halo=halo, **common)
    tiled = predict(model, image, tile=tile, halo=halo, **common)
    out = {
        "shape": shape,
        "tile": tile,
        "zor": zor,
        "tiles": -(-shape[-1] // zor),
        "max_diff": float(np.abs(ref - tiled).max()),
        "argmax_equal": bool(np.array_equal(ref.argmax(0), tiled.argmax(0))),
        "max_diff_below": None,
    }
    if any(below[i] < halo[i] for i in range(ndim)):
        low = predict(model, image, tile=tile_below, halo=below, **common)
        out["max_diff_below"] = float(np.abs(ref - low).max())
    return out


def untileable_witness(model, ndim: int, in_channels: int, factor: int, seed: int = 1) -> str:
    """Evidence, independent of the analysis and the engine, that ``model`` cannot be tiled.

    float64, plain torch. A window (ZoR 2F plus a halo of 32F on each side of the last axis,
    2F on the others) is run alone and inside a wider image (8F more random context on each
    side of the last axis, so every start stays a multiple of F). A local, size-independent
    model gives the same ZoR both times whenever its receptive field is under 32F (all of the
    zoo's convolutional parts are). Returns a description when they differ by more than
    1e-10 (or the model does not run at both sizes), else ``""`` (no evidence).
    """
    import copy

    import torch

    f = factor
    model = copy.deepcopy(model).to(torch.float64).eval()
    gen = torch.Generator().manual_seed(seed)
    h, z, m = 32 * f, 2 * f, 8 * f
    lead = (1, in_channels) + (2 * f,) * (ndim - 1)
    window = torch.randn(lead + (2 * h + z,), generator=gen, dtype=torch.float64)
    context = torch.randn(lead + (m,), generator=gen, dtype=torch.float64)
    wide = torch.cat([context, window, context.flip(-1)], dim=-1)
    try:
        with torch.inference_mode():
            alone = model(window)[..., h : h + z]
            inside = model(wide)[..., m + h : m + h + z]
    except Exception as err:  # noqa: BLE001 - a model that only runs at one size
        return (
            f"does not run at both widths {2 * h + z} and {2 * (h + m) + z}: {type(err).__name__}"
        )
    diff = float((alone - inside).abs().max())
    if diff > 1e-10:
        return f"with a 32F halo, context beyond it changes the ZoR by {diff:.3g}"
    return ""
