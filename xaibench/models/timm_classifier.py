"""Model plugin ``timm_classifier``: a timm image classifier trained on image-level labels on first use.

Any timm architecture (``arch``), built with ``pretrained=False`` (nothing is downloaded): its
weights come from ``checkpoint`` or from training on the dataset's train split, cached under
``$XAIBENCH_CACHE/models/`` keyed by the parameters and the dataset (so each fold of a k-fold
run trains its own). Training reads ``Sample.label`` only, never the masks, as the weak
supervision pipeline does (a classifier with a new head trained on landslide / no-landslide
labels, SGD with learning rate 1e-3 and momentum 0.9, then explained with Grad-CAM and Score-CAM).

Output: one logit [B, 1] (sigmoid; BCE-with-logits in training) for binary data
(``dataset.num_classes <= 2``), else one logit per class [B, C] (softmax; cross-entropy), or
``classes`` logits where set. Task ``classifier``.

Two parameters apply to timm's ResNet family only: ``width`` (``channels = (w, 2w, 4w, 8w)``,
``stem_width = w``; 64 is the standard network) and ``output_stride`` (16: the last stage is
dilated instead of strided, so its map is 4 x 4 on 64 x 64 tiles rather than 2 x 2). The
default, ``resnet18`` at width 16 and output stride 16, has 0.7 M parameters and 128 channels
in its last stage, so Score-CAM there costs 128 masked forwards. Other archs ignore those two
defaults (and refuse other values): e.g. ``vgg16``, the thesis's network (134 M parameters; its
4096-wide head pools small feature maps up to 7 x 7, so 32 x 32 and 64 x 64 tiles work).

Layer aliases, from timm's ``feature_info`` (the stage outputs; pooling layers skipped):
``last_conv`` is the last convolutional stage (``layer4`` of a ResNet, ``features.29``, the
ReLU after conv5_3, of a VGG), ``prev_conv`` the stage before it. In-place activations are made
out of place, so any module path is a safe layer. ResNets and VGGs split at a stage / a
``features.i`` layer for ablation explainers (:func:`classifier_tail`).
"""

from __future__ import annotations

import difflib
import functools

import torch
import torch.nn.functional as F
from torch import nn

from xaibench.datasets.base import Sample
from xaibench.errors import UserError
from xaibench.models.base import LoadedModel, Tail
from xaibench.models.smp_unet import image_channels, validation_split
from xaibench.models.training import LoadContext, load_checkpoint, train_or_load

NAME = "timm_classifier"
#: the defaults of the ResNet-only parameters (other archs ignore these values, and only these)
RESNET_DEFAULTS = {"width": 16, "output_stride": 16}
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def check_arch(arch: str) -> None:
    """A UserError naming the closest timm models unless ``arch`` is one."""
    import timm

    if timm.is_model(arch):
        return
    names = timm.list_models()
    close = difflib.get_close_matches(arch, names, n=3, cutoff=0.6)
    hint = (" Did you mean " + " or ".join(repr(c) for c in close) + "?") if close else ""
    raise UserError(f"model.arch = {arch!r} is not a timm model.{hint} (timm.list_models() lists all {len(names)})")


def has_width(arch: str) -> bool:
    """Whether ``arch`` is of timm's ResNet family, whose width ``channels`` / ``stem_width`` set."""
    from timm.models import model_entrypoint, split_model_name_tag

    return model_entrypoint(split_model_name_tag(arch)[0]).__module__ == "timm.models.resnet"


def out_of_place(module: nn.Module) -> nn.Module:
    """Turn every in-place activation out of place: a hooked map is then the tensor the next
    layer reads, and ablation tails do not overwrite the activations they are given."""
    for m in module.modules():
        if isinstance(getattr(m, "inplace", None), bool):
            m.inplace = False
    return module


def stage_paths(module: nn.Module) -> list[str]:
    """Module paths of the convolutional stages (timm ``feature_info``; pooling layers skipped),
    else of the last two convolutions."""
    modules = dict(module.named_modules())
    info = getattr(module, "feature_info", None) or []
    paths = [f.get("module") for f in info if isinstance(f, dict)]
    paths = [p for p in paths if p in modules and p and not isinstance(modules[p], _POOLS)]
    if not paths:
        paths = [p for p, m in modules.items() if isinstance(m, nn.Conv2d)][-2:]
    return paths


def randomizable_paths(module: nn.Module, last: str) -> tuple[str, ...]:
    """``last`` and the modules with parameters registered after it (the head): what the
    model-randomisation sanity check re-initialises."""
    named = [(p, m) for p, m in module.named_modules() if p]
    start = next(i for i, (p, _) in enumerate(named) if p == last)
    out = [last]
    for p, m in named[start + 1 :]:
        if not any(p.startswith(q + ".") for q in out) and any(True for _ in m.parameters()):
            out.append(p)
    return tuple(out)


def classifier_tail(model: nn.Module, path: str) -> Tail | None:
    """The network after stage ``layerK`` of a timm ResNet or after ``features.i`` of a timm VGG, or None."""
    from timm.models.resnet import ResNet
    from timm.models.vgg import VGG

    head, _, index = path.rpartition(".") if "." in path else ("", "", "")
    if isinstance(model, ResNet) and path in ("layer1", "layer2", "layer3", "layer4"):
        rest = [getattr(model, f"layer{i}") for i in range(int(path[-1]) + 1, 5)]
    elif isinstance(model, VGG) and head == "features" and index.isdigit() and int(index) < len(model.features):
        rest = list(model.features)[int(index) + 1 :]
    else:
        return None

    def fn(act: torch.Tensor, extras: dict, idx: torch.Tensor) -> torch.Tensor:
        x = act
        for m in rest:
            x = m(x)
        return model.forward_head(x)

    return Tail(extra=(), fn=fn)


def image_labels(items: list[Sample], n_logits: int, device: torch.device) -> torch.Tensor:
    """The batch's image-level labels (float for one logit, long otherwise); UserError for none."""
    n_classes = max(n_logits, 2)
    out = []
    for s in items:
        if s.label is None:
            raise UserError(
                f"model {NAME!r} trains on image-level labels, but train sample {s.image_id!r} has label None; use a dataset whose samples carry a label"
            )
        if not 0 <= int(s.label) < n_classes:
            raise UserError(f"model {NAME!r}: train sample {s.image_id!r} has label {s.label}, outside 0..{n_classes - 1} for {n_classes} classes")
        out.append(int(s.label))
    labels = torch.tensor(out, device=device)
    return labels.float() if n_logits == 1 else labels


def augment(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image randomly flipped and (square images) rotated by a multiple of 90 degrees."""
    rows = []
    square = x.shape[-1] == x.shape[-2]
    for img in x:
        flip, k = torch.randint(2, (1,), generator=generator), torch.randint(4 if square else 1, (1,), generator=generator)
        img = img.flip(-1) if int(flip) else img
        rows.append(torch.rot90(img, int(k), (-2, -1)))
    return torch.stack(rows)


def accuracy(module: nn.Module, samples, n_logits: int, batch_size: int = 32) -> float:
    """Share of ``samples`` whose predicted image label (sigmoid > 0.5, or the arg-max) is theirs."""
    device = next(module.parameters()).device
    hits = 0
    for s in range(0, len(samples), batch_size):
        items = [samples[i] for i in range(s, min(len(samples), s + batch_size))]
        logits = module(torch.stack([i.image for i in items]).to(device))
        pred = (logits[:, 0] > 0).long() if n_logits == 1 else logits.argmax(1)
        hits += int((pred == image_labels(items, n_logits, device).long()).sum())
    return hits / max(len(samples), 1)


class ClassifierStep:
    """One optimisation step on image-level labels: BCE-with-logits (one logit) or cross-entropy."""

    def __init__(self, augment: bool = True):
        self.augment = augment

    def __call__(self, module: nn.Module, items: list[Sample], opt: torch.optim.Optimizer) -> dict[str, float]:
        device = next(module.parameters()).device
        x = torch.stack([s.image for s in items]).to(device)
        if self.augment:
            x = augment(x)
        logits = module(x)
        y = image_labels(items, logits.shape[1], device)
        loss = F.binary_cross_entropy_with_logits(logits[:, 0], y) if logits.shape[1] == 1 else F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": float(loss.detach())}


class TimmClassifier:
    """A timm image classifier (``arch``, no pretrained weights) trained on image-level labels on first use."""

    name = NAME
    #: small parameters for xaibench.testing.check_model (the registry-wide contract test)
    test_params = {"width": 4, "epochs": 1, "batch_size": 4}

    def __init__(
        self,
        arch: str = "resnet18",
        width: int = RESNET_DEFAULTS["width"],
        output_stride: int = RESNET_DEFAULTS["output_stride"],
        classes: int = 0,
        checkpoint: str = "",
        epochs: int = 30,
        batch_size: int = 16,
        lr: float = 1e-3,
        momentum: float = 0.9,
        augment: bool = True,
        seed: int = 0,
        in_channels: int = 0,
        lr_schedule: str = "one_cycle",
        select_on_val: bool = True,
    ):
        """
        arch: any timm model name (``timm.list_models()``); built with ``pretrained=False``.
        width: first-stage channels of a timm ResNet (64 = standard; 0 = the arch's own).
        output_stride: 32 (timm's), 16 or 8 for a timm ResNet: its last stages are dilated
            instead of strided, so ``last_conv`` is 4 x 4 on 64 x 64 tiles at 16, 2 x 2 at 32.
        classes: logits; 0 = 1 (sigmoid) for binary data, the dataset's number of classes otherwise.
        checkpoint: a state dict of the timm model to load instead of training.
        epochs, batch_size, lr, momentum, seed: training (SGD with momentum, the thesis's optimiser).
        augment: random flips and 90-degree rotations of the training images.
        in_channels: input channels; 0 = those of the dataset's images.
        lr_schedule: ``"one_cycle"`` (peak ``lr``) or ``"constant"``.
        select_on_val: keep the epoch with the best accuracy on the dataset's ``val`` split
            (when it has one), not the last.
        """
        if lr_schedule not in ("one_cycle", "constant"):
            raise UserError(f"model.lr_schedule = {lr_schedule!r} is not one of 'one_cycle', 'constant'")
        if epochs < 1 or batch_size < 1 or lr <= 0:
            raise UserError("model.epochs and model.batch_size must be >= 1 and model.lr > 0")
        if not 0 <= momentum < 1:
            raise UserError(f"model.momentum must be in [0, 1), got {momentum}")
        if in_channels < 0 or width < 0 or classes < 0:
            raise UserError("model.in_channels, model.width and model.classes must be >= 0 (0 = the default)")
        if output_stride not in (8, 16, 32):
            raise UserError(f"model.output_stride must be 8, 16 or 32, got {output_stride}")
        check_arch(arch)
        if not has_width(arch):  # the arch's own width and stride; the ResNet defaults do not apply
            for key, value in (("width", width), ("output_stride", output_stride)):
                if value not in (RESNET_DEFAULTS[key], 0 if key == "width" else 32):
                    raise UserError(f"model.{key} applies to timm's ResNet family only; arch {arch!r} has its own, so leave model.{key} out")
            width, output_stride = 0, 32
        self.arch = arch
        self.width = width
        self.output_stride = output_stride
        self.classes = classes
        self.checkpoint = checkpoint
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.momentum = momentum
        self.augment = augment
        self.seed = seed
        self.in_channels = in_channels
        self.lr_schedule = lr_schedule
        self.select_on_val = bool(select_on_val)

    def build(self, n_logits: int, in_channels: int = 3) -> nn.Module:
        """The untrained timm model (seeded), in-place activations out of place."""
        import timm

        kwargs: dict = {"pretrained": False, "num_classes": n_logits, "in_chans": in_channels}
        if self.width:
            w = self.width
            kwargs.update(channels=(w, 2 * w, 4 * w, 8 * w), stem_width=w)
        if self.output_stride != 32:
            kwargs["output_stride"] = self.output_stride
        torch.manual_seed(self.seed)
        try:
            module = timm.create_model(self.arch, **kwargs)
        except (TypeError, ValueError, AssertionError, RuntimeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(f"model.arch = {self.arch!r}: timm cannot build it with {sorted(k for k in kwargs if k != 'pretrained')}: {first}") from exc
        return out_of_place(module)

    def n_logits(self, dataset) -> int:
        return self.classes or (1 if dataset.num_classes <= 2 else dataset.num_classes)

    def params(self, channels: int) -> dict:
        """What determines the trained weights (the values used, not the TOML text)."""
        params = {k: v for k, v in vars(self).items() if k not in ("checkpoint", "in_channels")}
        if channels != 3:
            params["in_channels"] = channels
        return params

    def _probe(self, module: nn.Module, image: torch.Tensor, n_logits: int) -> None:
        """One eval forward of a training image, so an arch that cannot take it says so before training."""
        module.eval()
        try:
            with torch.no_grad():
                out = module(image[None])
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise UserError(f"model.arch = {self.arch!r} cannot classify images of shape {tuple(image.shape)}: {first}") from exc
        if out.ndim != 2 or out.shape[1] != n_logits:
            raise UserError(f"model.arch = {self.arch!r} returns shape {tuple(out.shape)}, not [B, {n_logits}]: it is not an image classifier")

    def _selector(self, dataset, n_logits: int):
        val = validation_split(dataset) if self.select_on_val else []
        return (lambda module: accuracy(module, val, n_logits)) if val else None

    def load(self, ctx: LoadContext) -> LoadedModel:
        channels = self.in_channels or image_channels(ctx.dataset)
        n_logits = self.n_logits(ctx.dataset)
        module = self.build(n_logits, channels)
        if ctx.device.type == "cpu":  # NHWC convolutions are faster on CPU (training ~25 %); this model is ours to lay out
            module = module.to(memory_format=torch.channels_last)
        if self.checkpoint:
            load_checkpoint(module, self.checkpoint)
            module = module.to(ctx.device).eval()
        else:
            path = ctx.model_path(self.name, self.params(channels))
            samples = ctx.dataset.split("train")
            if not path.is_file() and len(samples):
                self._probe(module, samples[0].image, n_logits)
            module = train_or_load(
                module,
                path,
                ClassifierStep(self.augment),
                samples,
                epochs=self.epochs,
                batch_size=self.batch_size,
                lr=self.lr,
                seed=self.seed,
                device=ctx.device,
                title=f"{self.name} ({self.arch})",
                show_progress=ctx.show_progress,
                optimizer=functools.partial(torch.optim.SGD, momentum=self.momentum),
                schedule=self.lr_schedule,
                select=self._selector(ctx.dataset, n_logits),
            )
        stages = stage_paths(module)
        layers = {"last_conv": stages[-1]} if stages else {}
        if len(stages) > 1:
            layers["prev_conv"] = stages[-2]
        return LoadedModel(
            module=module,
            task="classifier",
            layers=layers,
            tail=lambda path: classifier_tail(module, path),
            randomizable=randomizable_paths(module, stages[-1]) if stages else (),
        )
