"""Model plugin ``smp_unet``: a segmentation-models-pytorch U-Net, trained on first use.

Layer aliases: ``decoder1`` is the last decoder block, ``decoder2`` the one before it (the
WHU study's two layers); any module path (``decoder.blocks.3``) works too. The plugin splits
the network at a decoder block so ablation explainers run only the rest of the decoder.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xaibench.datasets.base import Sample
from xaibench.errors import UserError
from xaibench.models.base import LoadedModel, Tail
from xaibench.models.training import LoadContext, load_checkpoint, train_or_load


def _stack(items: list[Sample], device) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([s.image for s in items]).to(device), torch.stack([s.mask for s in items]).to(device)


def segmentation_loss(logits: torch.Tensor, y: torch.Tensor, dice: bool) -> torch.Tensor:
    """BCE (one logit channel) or cross-entropy (several), plus smp's soft Dice loss when
    ``dice``: the Dice term keeps a rare foreground class from being drowned by the background."""
    import segmentation_models_pytorch as smp

    binary = logits.shape[1] == 1
    loss = F.binary_cross_entropy_with_logits(logits[:, 0], (y > 0).float()) if binary else F.cross_entropy(logits, y)
    if dice:
        mode = "binary" if binary else "multiclass"
        loss = loss + smp.losses.DiceLoss(mode, from_logits=True)(logits, (y > 0).long()[:, None] if binary else y)
    return loss


def segmentation_step(module: nn.Module, items: list[Sample], opt: torch.optim.Optimizer, dice: bool = False) -> dict[str, float]:
    """One optimisation step on the masks (:func:`segmentation_loss`)."""
    device = next(module.parameters()).device
    x, y = _stack(items, device)
    loss = segmentation_loss(module(x), y, dice)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return {"loss": float(loss.detach())}


def pooled_iou(module: nn.Module, samples, batch_size: int = 16) -> float:
    """Mean over the foreground classes of the IoU pooled over all pixels of ``samples`` (binary:
    probability > 0.5; several classes: the arg-max), NaN when a class is in neither."""
    device = next(module.parameters()).device
    inter = union = None
    for s in range(0, len(samples), batch_size):
        x, y = _stack([samples[i] for i in range(s, min(len(samples), s + batch_size))], device)
        logits = module(x)
        k = max(logits.shape[1], 2)
        pred = (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)
        truth = (y > 0).long() if logits.shape[1] == 1 else y
        cls = torch.arange(1, k, device=device)[:, None, None, None]
        i, u = ((pred == cls) & (truth == cls)).sum((1, 2, 3)), ((pred == cls) | (truth == cls)).sum((1, 2, 3))
        inter, union = (i, u) if inter is None else (inter + i, union + u)
    if inter is None:
        return float("nan")
    return float((inter.double() / union.double()).nanmean())


def val_iou_selector(dataset):
    """``train_or_load``'s ``select``: the pooled IoU on the dataset's ``val`` split (None without one)."""
    val = validation_split(dataset)
    return (lambda module: pooled_iou(module, val)) if val else None


def train_segmenter(
    module: nn.Module, ctx: LoadContext, path, *, title: str, epochs: int, batch_size: int, lr: float, seed: int,
    dice: bool = True, schedule: str = "one_cycle", select_on_val: bool = True,
) -> nn.Module:  # fmt: skip
    """``train_or_load`` of a segmenter on the dataset's train split with the recipe measured to
    converge from any seed (docs/leaderboards.md): cross-entropy plus Dice, a one-cycle learning
    rate, the epoch with the best pooled IoU on the val split kept. Cached at ``path``."""
    return train_or_load(
        module, path, functools.partial(segmentation_step, dice=dice), ctx.dataset.split("train"), epochs=epochs, batch_size=batch_size,
        lr=lr, seed=seed, device=ctx.device, title=title, show_progress=ctx.show_progress, schedule=schedule,
        select=val_iou_selector(ctx.dataset) if select_on_val else None,
    )  # fmt: skip


def validation_split(dataset) -> list[Sample]:
    """The dataset's ``val`` split, or nothing when it has none."""
    try:
        return list(dataset.split("val"))
    except UserError:
        return []


def unet_tail(model: nn.Module, path: str) -> Tail | None:
    """The rest of an smp ``Unet`` after decoder block ``path`` (``decoder.blocks.i``), or None."""
    decoder = getattr(model, "decoder", None)
    blocks = getattr(decoder, "blocks", None)
    if blocks is None or not path.startswith("decoder.blocks."):
        return None
    try:
        start = int(path.rsplit(".", 1)[1])
    except ValueError:
        return None
    if not 0 <= start < len(blocks) or getattr(model, "classification_head", None) is not None:
        return None

    def fn(act: torch.Tensor, extras: dict[str, Any], idx: torch.Tensor) -> torch.Tensor:
        features = [f[idx] for f in extras["encoder"]]
        shapes = [f.shape[2:] for f in features][::-1]
        skips = features[1:][::-1][1:]
        x = act
        for i in range(start + 1, len(blocks)):
            h, w = shapes[i + 1]
            skip = skips[i] if i < len(skips) else None
            x = blocks[i](x, h, w, skip_connection=skip)
        return model.segmentation_head(x)

    return Tail(extra=("encoder",), fn=fn)


def image_channels(dataset) -> int:
    """Channels of the dataset's images: those of its first train (else test, else val) sample."""
    for name in ("train", "test", "val"):
        try:
            split = dataset.split(name)
        except UserError:
            continue
        if len(split):
            return int(split[0].image.shape[0])
    raise UserError("the dataset has no images; set model.in_channels")


class SmpUnet:
    """segmentation-models-pytorch ``Unet``; ``checkpoint`` loads weights, else it trains on first use."""

    name = "smp_unet"
    #: small parameters for xaibench.testing.check_model (the registry-wide contract test)
    test_params = {"encoder_depth": 3, "decoder_channels": [8, 4, 4], "epochs": 1, "batch_size": 4}

    def __init__(
        self,
        encoder: str = "resnet18",
        encoder_depth: int = 5,
        decoder_channels: list[int] = [256, 128, 64, 32, 16],  # noqa: B006 (a config default, never mutated)
        classes: int = 0,
        checkpoint: str = "",
        epochs: int = 12,
        batch_size: int = 16,
        lr: float = 1e-3,
        seed: int = 0,
        in_channels: int = 0,
        loss: str = "bce_dice",
        lr_schedule: str = "one_cycle",
        select_on_val: bool = True,
    ):
        """``loss``: ``"bce_dice"`` (cross-entropy plus soft Dice) or ``"bce"`` (cross-entropy
        alone); ``lr_schedule``: ``"one_cycle"`` or ``"constant"``; ``select_on_val``: keep the
        epoch with the best IoU on the dataset's ``val`` split (when it has one), not the last.
        The defaults are the recipe measured to converge from any seed (docs/config.md)."""
        if len(decoder_channels) != encoder_depth:
            raise UserError(
                f"model.decoder_channels has {len(decoder_channels)} entries but model.encoder_depth is {encoder_depth}; give one channel count per decoder block"
            )
        if epochs < 1 or batch_size < 1 or lr <= 0:
            raise UserError("model.epochs and model.batch_size must be >= 1 and model.lr > 0")
        if in_channels < 0:
            raise UserError("model.in_channels must be >= 1, or 0 (the default) for the dataset's image channels")
        if loss not in ("bce_dice", "bce"):
            raise UserError(f"model.loss = {loss!r} is not one of 'bce_dice', 'bce'")
        if lr_schedule not in ("one_cycle", "constant"):
            raise UserError(f"model.lr_schedule = {lr_schedule!r} is not one of 'one_cycle', 'constant'")
        self.in_channels = in_channels
        self.loss = loss
        self.lr_schedule = lr_schedule
        self.select_on_val = bool(select_on_val)
        self.encoder = encoder
        self.encoder_depth = encoder_depth
        self.decoder_channels = list(decoder_channels)
        self.classes = classes
        self.checkpoint = checkpoint
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed

    def build(self, num_classes: int, in_channels: int = 3) -> nn.Module:
        import segmentation_models_pytorch as smp

        classes = self.classes or (1 if num_classes <= 2 else num_classes)
        torch.manual_seed(self.seed)
        try:
            return smp.Unet(
                encoder_name=self.encoder,
                encoder_weights=None,  # nothing is downloaded: weights come from training or a checkpoint
                encoder_depth=self.encoder_depth,
                decoder_channels=self.decoder_channels,
                classes=classes,
                in_channels=in_channels,
            )
        except (KeyError, ValueError) as exc:
            raise UserError(f"model.encoder = {self.encoder!r} is not an encoder segmentation-models-pytorch knows: {exc}") from exc

    def structure(self, ctx: LoadContext) -> LoadedModel:
        """The model as ``load`` returns it, without training (initial weights where it would
        train; the checkpoint where one is given): what ``xaibench validate`` inspects."""
        module = self.build(ctx.dataset.num_classes, self.in_channels or image_channels(ctx.dataset))
        if self.checkpoint:
            load_checkpoint(module, self.checkpoint)
        return self._wrap(module.to(ctx.device).eval(), ctx)

    def load(self, ctx: LoadContext) -> LoadedModel:
        channels = self.in_channels or image_channels(ctx.dataset)
        module = self.build(ctx.dataset.num_classes, channels)
        if self.checkpoint:
            load_checkpoint(module, self.checkpoint)
            module = module.to(ctx.device).eval()
        else:
            # the values used, not the TOML text: an explicit default is the same model
            params = {k: v for k, v in vars(self).items() if k not in ("checkpoint", "in_channels")}
            if channels != 3:
                params["in_channels"] = channels
            module = train_segmenter(
                module, ctx, ctx.model_path(self.name, params), title=f"{self.name} ({self.encoder})", epochs=self.epochs, batch_size=self.batch_size,
                lr=self.lr, seed=self.seed, dice=self.loss == "bce_dice", schedule=self.lr_schedule, select_on_val=self.select_on_val,
            )  # fmt: skip
        return self._wrap(module, ctx)

    def _wrap(self, module: nn.Module, ctx: LoadContext) -> LoadedModel:
        if ctx.device.type == "cpu":  # NHWC convolutions are ~1.4x faster on CPU; this model is ours to lay out
            module = module.to(memory_format=torch.channels_last)
        n = len(module.decoder.blocks)
        layers = {"decoder1": f"decoder.blocks.{n - 1}"}
        if n > 1:
            layers["decoder2"] = f"decoder.blocks.{n - 2}"
        binary = module.segmentation_head[0].out_channels == 1
        return LoadedModel(
            module=module,
            task="binary" if binary else "multiclass",
            layers=layers,
            tail=lambda path: unet_tail(module, path),
            randomizable=("decoder", "segmentation_head"),
        )
