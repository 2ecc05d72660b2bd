"""Segmentation baselines of the ECSPLAIN paper, as model plugins trained on the same masks.

Each is a binary segmenter (task ``binary``: logits [B, 1, H, W]) trained on first use with
BCE on the masks (Adam, betas 0.5/0.999 as in the authors' scripts; by default on augmented
tiles, like ``ecsplain``) and cached by config hash.
No pretrained weights anywhere. Score them as segmenters with the core explainer
``model_output`` at layer ``output`` (the predicted probability map).

Small U-Nets, after the definitions in the authors' ``baselineNetworks`` (two poolings,
channels ``[12, 24, 48]`` by default, nearest-neighbour upsampling, skip connections by
concatenation; input side a multiple of 4):

* ``unet``    -- every stage is conv-ReLU-BN-conv-ReLU-conv-ReLU (3 x 3 convolutions);
* ``resunet`` -- every encoder stage is conv-ReLU-BN followed by a residual block (two
  conv-ReLU and an identity shortcut): a U-Net with a residual (ResNet-style) encoder;
* ``sepunet`` -- the encoder stages use depthwise-separable convolutions (a 3 x 3 depthwise
  convolution with 2 filters per channel and reflect padding, then a 1 x 1 pointwise one).

Dilated-backbone segmenters, after torchvision's FCN / DeepLabV3 (the authors use
``fcn_resnet50`` / ``deeplabv3_resnet50``): a timm ResNet-18 layout with channels ``(w, 2w,
4w, 8w)`` (``width``, default 16 so it trains in seconds on CPU) and output stride 8, then

* ``fcn``       -- torchvision's ``FCNHead`` (3 x 3 conv to 8w/4, BN, ReLU, dropout, 1 x 1 conv);
* ``deeplabv3`` -- torchvision's ``ASPP`` (rates ``atrous_rates``, default [2, 4, 6] for the
  8 x 8 feature maps of 64 x 64 tiles; ``aspp_channels`` channels) + 3 x 3 conv, BN, ReLU,
  1 x 1 conv;

upsampled bilinearly to the input size.
"""

from __future__ import annotations

import functools
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from xaibench.plugin import LoadContext, LoadedModel, Sample, UserError, load_checkpoint
from xaibench_ecsplain.encoding import augment as augment_batch
from xaibench_ecsplain.model import dataset_channels, train_cached

# --------------------------------------------------------------------------------------------
# small U-Nets
# --------------------------------------------------------------------------------------------


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


class SeparableConv(nn.Module):
    """Depthwise 3 x 3 convolution (``multiplier`` filters per channel, reflect padding) then a
    1 x 1 pointwise convolution."""

    def __init__(self, cin: int, cout: int, multiplier: int = 2):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, multiplier * cin, 3, padding=1, groups=cin, padding_mode="reflect")
        self.pointwise = nn.Conv2d(multiplier * cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class ResidualBlock(nn.Module):
    """Two 3 x 3 conv-ReLU layers plus the identity."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(_conv(channels, channels), nn.ReLU(), _conv(channels, channels), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


def encoder_stage(kind: str, cin: int, cout: int) -> nn.Sequential:
    """One encoder stage of the ``unet`` (plain), ``resunet`` (residual) or ``sepunet`` (separable) kind."""
    if kind == "plain":
        return nn.Sequential(_conv(cin, cout), nn.ReLU(), nn.BatchNorm2d(cout), _conv(cout, cout), nn.ReLU(), _conv(cout, cout), nn.ReLU())
    if kind == "residual":
        return nn.Sequential(_conv(cin, cout), nn.ReLU(), nn.BatchNorm2d(cout), ResidualBlock(cout))
    if kind == "separable":
        return nn.Sequential(
            SeparableConv(cin, cout), nn.ReLU(), nn.BatchNorm2d(cout),
            SeparableConv(cout, cout), nn.ReLU(),
            SeparableConv(cout, cout), nn.ReLU(),
        )  # fmt: skip
    raise ValueError(kind)


class SmallUNet(nn.Module):
    """Two-level U-Net: enc0 -> pool -> enc1 -> pool -> latent -> up + enc1 -> dec1 -> up + enc0 -> dec0 -> head."""

    def __init__(self, kind: str, in_chans: int, channels: tuple[int, int, int] = (12, 24, 48)):
        super().__init__()
        c0, c1, c2 = channels
        self.enc0 = encoder_stage(kind, in_chans, c0)
        self.enc1 = encoder_stage(kind, c0, c1)
        self.latent = nn.Sequential(encoder_stage(kind, c1, c2), _conv(c2, c1), nn.ReLU(), nn.BatchNorm2d(c1))
        self.dec1 = nn.Sequential(_conv(2 * c1, c1), nn.ReLU(), _conv(c1, c1), nn.ReLU(), _conv(c1, c0), nn.BatchNorm2d(c0), nn.ReLU())
        self.dec0 = nn.Sequential(_conv(2 * c0, c0), nn.ReLU(), _conv(c0, c0), nn.BatchNorm2d(c0))
        self.head = _conv(c0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e0 = self.enc0(x)
        e1 = self.enc1(F.max_pool2d(e0, 2))
        lat = self.latent(F.max_pool2d(e1, 2))
        d1 = self.dec1(torch.cat([e1, F.interpolate(lat, size=e1.shape[-2:], mode="nearest")], dim=1))
        d0 = self.dec0(torch.cat([e0, F.interpolate(d1, size=e0.shape[-2:], mode="nearest")], dim=1))
        return self.head(d0)


UNET_LAYERS = {"enc0": "enc0", "enc1": "enc1", "latent": "latent", "dec1": "dec1", "dec0": "dec0"}

# --------------------------------------------------------------------------------------------
# dilated-backbone segmenters
# --------------------------------------------------------------------------------------------


class DeepLabV3Head(nn.Sequential):
    def __init__(self, cin: int, channels: int, rates: list[int]):
        from torchvision.models.segmentation.deeplabv3 import ASPP

        super().__init__(
            ASPP(cin, list(rates), out_channels=channels),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, 1, 1),
        )


class DilatedSegmenter(nn.Module):
    """A dilated timm ResNet (last feature map at stride ``output_stride``) and a head, upsampled to the input."""

    def __init__(self, head: str, in_chans: int, width: int = 16, output_stride: int = 8, aspp_channels: int = 32, atrous_rates: list[int] = (2, 4, 6)):
        super().__init__()
        import timm
        from torchvision.models.segmentation.fcn import FCNHead

        self.backbone = timm.create_model(
            "resnet18",
            pretrained=False,
            features_only=True,
            out_indices=(4,),
            output_stride=output_stride,
            in_chans=in_chans,
            channels=(width, 2 * width, 4 * width, 8 * width),
            stem_width=width,
        )
        cin = 8 * width
        self.head = FCNHead(cin, 1) if head == "fcn" else DeepLabV3Head(cin, aspp_channels, list(atrous_rates))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)[-1]
        return F.interpolate(self.head(features), size=x.shape[-2:], mode="bilinear", align_corners=False)


DILATED_LAYERS = {"backbone": "backbone", "head": "head"}

# --------------------------------------------------------------------------------------------
# training and plugins
# --------------------------------------------------------------------------------------------


def segmentation_step(module: nn.Module, items: list[Sample], opt: torch.optim.Optimizer, augment: bool = False) -> dict[str, float]:
    """One step of BCE on the binary masks (a batch of one is doubled: BatchNorm needs two),
    optionally on augmented tiles (:func:`xaibench_ecsplain.encoding.augment`)."""
    device = next(module.parameters()).device
    if len(items) == 1:
        items = items * 2
    x = torch.stack([s.image for s in items]).to(device)
    y = (torch.stack([s.mask for s in items]) > 0).float().to(device)
    if augment:
        x, y = augment_batch(x, y)
    loss = F.binary_cross_entropy_with_logits(module(x)[:, 0], y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return {"loss": float(loss.detach())}


class _Baseline:
    """Common training / caching / loading of the baseline segmenters."""

    name: ClassVar[str]
    #: small parameters for xaibench.testing.check_model (the core's registry-wide contract test)
    test_params: ClassVar[dict] = {"nb_epochs": 1, "batch_size": 4}
    layers: ClassVar[dict[str, str]]

    def _common(self, nb_epochs: int, batch_size: int, lr: float, checkpoint: str, seed: int, augment: bool) -> None:
        if nb_epochs < 1 or batch_size < 1 or lr <= 0:
            raise UserError("nb_epochs and batch_size must be >= 1 and lr > 0")
        self.augment = augment
        self.nb_epochs = nb_epochs
        self.batch_size = batch_size
        self.lr = float(lr)
        self.checkpoint = checkpoint
        self.seed = seed

    def make(self, in_chans: int) -> nn.Module:
        raise NotImplementedError

    def build(self, in_chans: int) -> nn.Module:
        torch.manual_seed(self.seed)
        return self.make(in_chans)

    def load(self, ctx: LoadContext) -> LoadedModel:
        module = self.build(dataset_channels(ctx.dataset))
        if self.checkpoint:
            load_checkpoint(module, self.checkpoint)
            module = module.to(ctx.device).eval()
        else:
            params = {k: v for k, v in vars(self).items() if k != "checkpoint"}
            step = functools.partial(segmentation_step, augment=self.augment)
            module, _ = train_cached(self, module, ctx, step, params, self.name)
        return LoadedModel(module=module, task="binary", layers=dict(self.layers))


def _channels(value: list[int]) -> tuple[int, int, int]:
    if len(value) != 3 or any(int(c) < 1 for c in value):
        raise UserError(f"channels must be three positive channel counts [c0, c1, c2], got {value!r}")
    return tuple(int(c) for c in value)  # type: ignore[return-value]


class _SmallUNetPlugin(_Baseline):
    kind: ClassVar[str]
    layers = UNET_LAYERS

    def __init__(
        self,
        channels: list[int] = [12, 24, 48],  # noqa: B006 (a config default, never mutated)
        nb_epochs: int = 10,
        batch_size: int = 8,
        lr: float = 1e-3,
        checkpoint: str = "",
        seed: int = 0,
        augment: bool = True,
    ):
        """channels: encoder channels of the two stages and the latent stage; training: Adam;
        augment: random 90-degree rotations, flips and phase offsets of the training tiles."""
        self.channels = list(_channels(channels))
        self._common(nb_epochs, batch_size, lr, checkpoint, seed, augment)

    def make(self, in_chans: int) -> nn.Module:
        return SmallUNet(self.kind, in_chans, tuple(self.channels))


class UNet(_SmallUNetPlugin):
    """The authors' small U-Net (plain convolutions)."""

    name = "unet"
    kind = "plain"


class ResUNet(_SmallUNetPlugin):
    """The authors' ResUNet: a small U-Net whose encoder stages end in residual blocks."""

    name = "resunet"
    kind = "residual"


class SepUNet(_SmallUNetPlugin):
    """The authors' SepUNet: a small U-Net with depthwise-separable encoder convolutions."""

    name = "sepunet"
    kind = "separable"


class _DilatedPlugin(_Baseline):
    head: ClassVar[str]
    layers = DILATED_LAYERS

    def __init__(
        self,
        width: int = 16,
        output_stride: int = 8,
        nb_epochs: int = 10,
        batch_size: int = 8,
        lr: float = 1e-3,
        checkpoint: str = "",
        seed: int = 0,
        augment: bool = True,
    ):
        """width: channels of the first backbone stage (64 = ResNet-18); output_stride: 8, 16 or 32;
        augment: random 90-degree rotations, flips and phase offsets of the training tiles."""
        if width < 1:
            raise UserError(f"width must be >= 1, got {width}")
        if output_stride not in (8, 16, 32):
            raise UserError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        self.width = width
        self.output_stride = output_stride
        self._common(nb_epochs, batch_size, lr, checkpoint, seed, augment)

    def make(self, in_chans: int) -> nn.Module:
        return DilatedSegmenter(self.head, in_chans, self.width, self.output_stride)


class FCN(_DilatedPlugin):
    """FCN (torchvision FCNHead) on a small dilated ResNet-18 layout."""

    name = "fcn"
    head = "fcn"


class DeepLabV3(_DilatedPlugin):
    """DeepLabV3 (torchvision ASPP) on a small dilated ResNet-18 layout."""

    name = "deeplabv3"
    head = "deeplabv3"

    def __init__(
        self,
        width: int = 16,
        output_stride: int = 8,
        aspp_channels: int = 32,
        atrous_rates: list[int] = [2, 4, 6],  # noqa: B006 (a config default, never mutated)
        nb_epochs: int = 10,
        batch_size: int = 8,
        lr: float = 1e-3,
        checkpoint: str = "",
        seed: int = 0,
        augment: bool = True,
    ):
        """aspp_channels: channels of the ASPP branches; atrous_rates: their dilation rates."""
        super().__init__(width, output_stride, nb_epochs, batch_size, lr, checkpoint, seed, augment)
        if aspp_channels < 1 or not atrous_rates or any(r < 1 for r in atrous_rates):
            raise UserError("aspp_channels must be >= 1 and atrous_rates a non-empty list of rates >= 1")
        self.aspp_channels = aspp_channels
        self.atrous_rates = list(atrous_rates)

    def make(self, in_chans: int) -> nn.Module:
        return DilatedSegmenter("deeplabv3", in_chans, self.width, self.output_stride, self.aspp_channels, self.atrous_rates)


BASELINES = (UNet, ResUNet, SepUNet, FCN, DeepLabV3)
