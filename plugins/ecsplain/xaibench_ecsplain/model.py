"""Model plugin ``ecsplain``: a timm ResNet classifier whose CAM is trained to be the segmentation.

The network is a timm ResNet (``resnet18`` or ``resnet50``, no pretrained weights) with one
logit (moving area or not). As in the authors' code it has no normalisation layers by default
(``batch_norm = false``) and takes the dataset's channels as input. It is trained with

    loss = wClass * BCE(logit, label) + wSegm * segLoss(CAM, mask)

where the CAM (:func:`xaibench_ecsplain.cams.multilayer_cam`) is computed differentiably in
every training step on the feature maps of ``cam_layers`` and averaged, and ``segLoss`` is
``BCE`` or ``MSE`` against the binary mask. Optimiser: Adam with betas (0.5, 0.999) as the
authors use (``train_or_load(optimizer=...)``). The weights are cached under
``$XAIBENCH_CACHE/models/`` keyed by a hash of the parameters and the dataset, so the model
trains once.

The loaded module is the timm ResNet itself (logits [B, 1], task ``classifier``). Its layer
aliases:

======  =====================  ==============================================================
alias   module                 authors' node (torchvision) it corresponds to
======  =====================  ==============================================================
c1      maxpool                ``maxpool``
conv2   layer2.0.act1          ``layer2.0.conv1`` -- in the authors' network (no norm layer)
                               the in-place ReLU that follows rewrites that tensor, so the map
                               their CAMs read is this ReLU's output
conv3   layer3.0.act1          ``layer3.0.conv1`` (same remark)
conv4   layer4.0.act1          ``layer4.0.conv1`` (same remark)
conv5   layer4.1.act2          ``layer4.1.conv2`` -- rewritten in place by the residual sum and
                               the ReLU, i.e. the output of block ``layer4.1``
layer1  layer1 ... layer4 = layer4: the stage outputs
======  =====================  ==============================================================

The ReLUs of this network are not in place, so every hooked map is exactly the tensor the next
layer reads. ``cam_layers`` defaults to the authors' five maps. The ECSPLAIN CAM of a trained
model is evaluated by the core explainers (``grad_cam``, ``layer_cam``, ``score_cam`` with
``fill = 0.5``) or this package's ``norm_cam`` at the fused layer
``mean(c1, conv2, conv3, conv4, conv5)`` (:func:`fused_layer`); ``README.md`` says how close
that is to the training-time CAM.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from xaibench.plugin import LoadContext, LoadedModel, Sample, UserError, load_checkpoint, train_or_load
from xaibench_ecsplain.cams import CAM_TYPES, multilayer_cam
from xaibench_ecsplain.encoding import augment as augment_batch

MODEL_TYPES = ("resnet18", "resnet50")
SEG_LOSSES = ("BCE", "MSE")
AUTHORS_LAYERS = ["c1", "conv2", "conv3", "conv4", "conv5"]

ALIASES = {
    "c1": "maxpool",
    "conv2": "layer2.0.act1",
    "conv3": "layer3.0.act1",
    "conv4": "layer4.0.act1",
    "conv5": "layer4.1.act2",
    "layer1": "layer1",
    "layer2": "layer2",
    "layer3": "layer3",
    "layer4": "layer4",
}

#: Adam betas of the authors' training scripts
BETAS = (0.5, 0.999)
#: the authors' optimiser, for ``train_or_load(optimizer=...)``
ADAM = functools.partial(torch.optim.Adam, betas=BETAS)


def fused_layer(layers: Sequence[str] = AUTHORS_LAYERS) -> str:
    """The grid layer whose map is the mean of the per-layer maps of ``layers``:
    ``"mean(c1, conv2, conv3, conv4, conv5)"`` for the authors' layers -- the ECSPLAIN CAM."""
    return "mean(" + ", ".join(layers) + ")"


class _ReLU(nn.ReLU):
    """A ReLU that is never in place (timm asks for ``inplace=True``)."""

    def __init__(self, inplace: bool = False):
        super().__init__(inplace=False)


class CenteredConv2d(nn.Conv2d):
    """The stem convolution, applied to ``2 x - 1``: the datasets' channels in [0, 1] become
    the authors' [gamma cos(phi), gamma sin(phi)] in [-1, 1] (0 = no information). Without
    normalisation layers the network does not learn from off-centre inputs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(2 * x - 1)


def build_resnet(model_type: str, in_chans: int, width: int = 64, batch_norm: bool = False) -> nn.Module:
    """A timm ResNet with one logit, no pretrained weights, channels (w, 2w, 4w, 8w), whose
    stem reads inputs in [0, 1] as 2 x - 1 (:class:`CenteredConv2d`)."""
    import timm

    if model_type not in MODEL_TYPES:
        raise UserError(f"model_type {model_type!r} is not one of {', '.join(MODEL_TYPES)}")
    if width < 1:
        raise UserError(f"width must be >= 1, got {width}")
    net = timm.create_model(
        model_type,
        pretrained=False,
        num_classes=1,
        in_chans=in_chans,
        channels=(width, 2 * width, 4 * width, 8 * width),
        stem_width=width,
        norm_layer=nn.BatchNorm2d if batch_norm else nn.Identity,
        act_layer=_ReLU,
    )
    old = net.conv1
    stem = CenteredConv2d(old.in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=old.bias is not None)
    stem.load_state_dict(old.state_dict())
    net.conv1 = stem
    return net


def _batch(items: list[Sample], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = torch.stack([s.image for s in items]).to(device)
    mask = (torch.stack([s.mask for s in items]) > 0).float().to(device)
    labels = torch.tensor(
        [float(s.label) if s.label is not None else float(bool((s.mask > 0).any())) for s in items],
        device=device,
    )
    return x, mask, labels


def segmentation_loss(cam: torch.Tensor, mask: torch.Tensor, kind: str) -> torch.Tensor:
    """``BCE`` or ``MSE`` between a CAM [B, H, W] in [0, 1] and a binary mask [B, H, W]."""
    if kind == "BCE":
        return F.binary_cross_entropy(cam.clamp(1e-6, 1 - 1e-6), mask)
    return F.mse_loss(cam, mask)


class EcsplainStep:
    """One ECSPLAIN optimisation step (a ``train_or_load`` train_step) on the ResNet."""

    def __init__(self, cam_type: str, cam_paths: list[str], wClass: float, wSegm: float, segLoss: str, fraction: float, augment: bool = False):
        self.augment = augment
        self.cam_type = cam_type
        self.cam_paths = cam_paths
        self.wClass = wClass
        self.wSegm = wSegm
        self.segLoss = segLoss
        self.fraction = fraction

    def __call__(self, net: nn.Module, items: list[Sample], opt: torch.optim.Optimizer) -> dict[str, float]:
        device = next(net.parameters()).device
        x, mask, labels = _batch(items, device)
        if self.augment:
            x, mask = augment_batch(x, mask)
        if self.wSegm:
            cam, logits = multilayer_cam(net, x, self.cam_paths, self.cam_type, create_graph=True, fraction=self.fraction)
            seg = segmentation_loss(cam[:, 0], mask, self.segLoss)
        else:  # a plain classifier: the CAM is not part of the loss
            logits, seg = net(x), None
        cls = F.binary_cross_entropy_with_logits(logits[:, 0], labels)
        loss = self.wClass * cls + (self.wSegm * seg if seg is not None else 0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        out = {"loss": float(loss.detach()), "cls": float(cls.detach())}
        if seg is not None:
            out["seg"] = float(seg.detach())
        return out


def dataset_channels(dataset) -> int:
    """Channels of the dataset's images (of its first train, test or val sample)."""
    for name in ("train", "test", "val"):
        try:
            split = dataset.split(name)
        except UserError:  # e.g. a folder dataset without that split
            continue
        if len(split):
            return int(split[0].image.shape[0])
    raise UserError("the dataset has no images; cannot tell the number of input channels")


def train_cached(
    plugin,
    module: nn.Module,
    ctx: LoadContext,
    train_step: Callable[[nn.Module, list, torch.optim.Optimizer], dict[str, float]],
    params: dict,
    title: str,
) -> tuple[nn.Module, float]:
    """``module`` trained on the train split on first use (Adam with the authors' betas,
    ``plugin.nb_epochs``, ``batch_size``, ``lr``, ``seed``), cached at
    ``ctx.model_path(plugin.name, params)`` (a hash of ``params`` and the dataset), in eval mode
    on ``ctx.device``; and the seconds spent training (0 when the weights came from the cache).
    Shared by ``ecsplain`` and the baselines."""
    path = ctx.model_path(plugin.name, params)
    cached = path.is_file()
    t0 = time.perf_counter()
    module = train_or_load(
        module,
        path,
        train_step,
        ctx.dataset.split("train"),
        epochs=plugin.nb_epochs,
        batch_size=plugin.batch_size,
        lr=plugin.lr,
        seed=plugin.seed,
        device=ctx.device,
        title=title,
        show_progress=ctx.show_progress,
        optimizer=ADAM,
    )
    return module, 0.0 if cached else time.perf_counter() - t0


class _Wrapped(nn.Module):
    """Holds the ResNet as ``net``: the layout of checkpoints saved by earlier versions."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net


class Ecsplain:
    """ECSPLAIN classifier (timm ResNet, one logit) trained with a CAM segmentation constraint."""

    name = "ecsplain"
    #: small parameters for xaibench.testing.check_model (the core's registry-wide contract test)
    test_params = {"width": 4, "nb_epochs": 1, "batch_size": 4}

    def __init__(
        self,
        cam_type: str = "grad_cam",
        model_type: str = "resnet18",
        wSegm: float = 1.0,
        wClass: float = 1.0,
        nb_epochs: int = 10,
        lr: float = 1e-3,
        batch_size: int = 8,
        checkpoint: str = "",
        segLoss: str = "BCE",
        seed: int = 0,
        width: int = 64,
        batch_norm: bool = False,
        cam_layers: list[str] = AUTHORS_LAYERS,  # noqa: B006 (a config default, never mutated)
        score_cam_fraction: float = 0.25,
        augment: bool = True,
    ):
        """
        cam_type: grad_cam, layer_cam, score_cam or norm_cam (the CAM constrained in training).
        model_type: resnet18 or resnet50 (timm, no pretrained weights).
        wSegm, wClass: weights of the segmentation (CAM) and classification losses.
        nb_epochs, lr, batch_size, seed: training (Adam, betas 0.5/0.999).
        checkpoint: weights to load instead of training (a state dict of the timm ResNet).
        segLoss: BCE or MSE between the CAM and the mask.
        width: channels of the first stage (64 = the standard ResNet; 16 trains fast on CPU).
        batch_norm: BatchNorm layers (the authors' networks have none).
        cam_layers: layer aliases (or module paths of the ResNet) whose CAMs are averaged.
        score_cam_fraction: share of each layer's channels Score-CAM uses in a training step.
        augment: random 90-degree rotations, flips and global phase offsets of the training tiles
            (:func:`xaibench_ecsplain.encoding.augment`; the authors use the phase offsets).
        """
        if cam_type not in CAM_TYPES:
            raise UserError(f"cam_type {cam_type!r} is not allowed; allowed: {', '.join(CAM_TYPES)}")
        if model_type not in MODEL_TYPES:
            raise UserError(f"model_type {model_type!r} is not allowed; allowed: {', '.join(MODEL_TYPES)}")
        if segLoss not in SEG_LOSSES:
            raise UserError(f"segLoss {segLoss!r} is not allowed; allowed: {', '.join(SEG_LOSSES)}")
        if nb_epochs < 1 or batch_size < 1 or lr <= 0:
            raise UserError("nb_epochs and batch_size must be >= 1 and lr > 0")
        if wSegm < 0 or wClass < 0 or not math.isfinite(wSegm + wClass):
            raise UserError("wSegm and wClass must be finite and >= 0")
        if not 0 < score_cam_fraction <= 1:
            raise UserError(f"score_cam_fraction must be in (0, 1], got {score_cam_fraction}")
        if width < 1:
            raise UserError(f"width must be >= 1, got {width}")
        if not cam_layers:
            raise UserError("cam_layers must name at least one feature map of the ResNet")
        self.cam_type = cam_type
        self.model_type = model_type
        self.wSegm = float(wSegm)
        self.wClass = float(wClass)
        self.nb_epochs = nb_epochs
        self.lr = float(lr)
        self.batch_size = batch_size
        self.checkpoint = checkpoint
        self.segLoss = segLoss
        self.seed = seed
        self.width = width
        self.batch_norm = batch_norm
        self.cam_layers = list(cam_layers)
        self.score_cam_fraction = float(score_cam_fraction)
        self.augment = augment
        #: seconds the last load() spent training (0 when the weights came from the cache)
        self.train_seconds = 0.0

    def cam_paths(self) -> list[str]:
        """Module paths (in the ResNet) of ``cam_layers``; a leading ``net.`` (the module paths
        of earlier versions of this package) is dropped."""
        out = []
        for layer in self.cam_layers:
            path = ALIASES.get(layer, layer)
            out.append(path[len("net.") :] if path.startswith("net.") else path)
        return out

    def build(self, in_chans: int) -> nn.Module:
        """The untrained ResNet (seeded)."""
        torch.manual_seed(self.seed)
        net = build_resnet(self.model_type, in_chans, self.width, self.batch_norm)
        modules = dict(net.named_modules())
        for layer, path in zip(self.cam_layers, self.cam_paths()):
            if path not in modules:
                raise UserError(
                    f"cam_layers: {layer!r} is not a layer of {self.model_type}; use one of "
                    f"{', '.join(ALIASES)} or a module path such as 'layer3.1.act2'"
                )
        return net

    def step(self) -> EcsplainStep:
        return EcsplainStep(self.cam_type, self.cam_paths(), self.wClass, self.wSegm, self.segLoss, self.score_cam_fraction, self.augment)

    def params(self) -> dict:
        return {k: v for k, v in vars(self).items() if k not in ("checkpoint", "train_seconds")}

    def load(self, ctx: LoadContext) -> LoadedModel:
        net = self.build(dataset_channels(ctx.dataset))
        self.train_seconds = 0.0
        if self.checkpoint:
            try:
                load_checkpoint(net, self.checkpoint)
            except UserError as error:  # maybe a checkpoint of the earlier wrapper (keys "net.*")
                try:
                    load_checkpoint(_Wrapped(net), self.checkpoint)
                except UserError:
                    raise error from None
            net = net.to(ctx.device).eval()
        else:
            title = f"{self.name} ({self.model_type}, {self.cam_type}, wSegm={self.wSegm:g})"
            net, self.train_seconds = train_cached(self, net, ctx, self.step(), self.params(), title)
        # "cam": the ECSPLAIN CAM's fused layer over this model's own cam_layers
        return LoadedModel(module=net, task="classifier", layers={**ALIASES, "cam": fused_layer(self.cam_layers)})
