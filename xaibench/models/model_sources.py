"""Where ``torch_model`` gets its network: an smp architecture, a torchvision model, a TorchScript
file or a ``module:function`` factory, plus the layer aliases and tails known for each family.

A config that names a TorchScript file or a factory runs that code (:func:`code_of` says which);
smp and torchvision models run only those libraries' code.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from xaibench.config.hashing import content_hash
from xaibench.errors import UserError
from xaibench.models.base import Tail, logits_of
from xaibench.models.smp_unet import unet_tail

SOURCES = ("arch", "torchvision", "torchscript", "factory")
#: smp families whose decoder has a second natural layer besides its output (``decoder2``)
SMP_DECODER2 = {"FPN": "decoder.p2", "DeepLabV3": "decoder.aspp", "DeepLabV3Plus": "decoder.aspp", "PSPNet": "decoder.psp"}


class OutputOf(nn.Module):
    """A model whose output is a dict (torchvision's ``{"out": ..., "aux": ...}``) as one that
    returns ``out[key]``. The wrapped model's children are this module's children, so module
    paths and state-dict keys stay those of the wrapped model (``backbone.layer4``)."""

    def __init__(self, model: nn.Module, key: str):
        super().__init__()
        for name, child in model.named_children():
            self.add_module(name, child)
        self._wrapped = [model]  # a list: not registered twice as a submodule
        self.key = key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._wrapped[0](x)[self.key]

    def train(self, mode: bool = True) -> OutputOf:
        self._wrapped[0].training = mode
        return super().train(mode)


def build_smp(arch: str, encoder: str, options: dict, classes: int, in_channels: int) -> nn.Module:
    import segmentation_models_pytorch as smp

    archs = {a.lower(): a for a in smp_archs()}
    if arch.lower() not in archs:
        from xaibench.errors import did_you_mean

        raise UserError(f"model.arch: {did_you_mean(arch, sorted(archs.values()), 'segmentation-models-pytorch architecture')}")
    kwargs = {"encoder_weights": None, **options}  # nothing is downloaded unless options say so
    try:
        return smp.create_model(archs[arch.lower()], encoder_name=encoder, classes=classes, in_channels=in_channels, **kwargs)
    except (KeyError, ValueError, TypeError, AssertionError) as exc:
        raise UserError(f"model.arch = {arch!r}, encoder = {encoder!r}: segmentation-models-pytorch cannot build it: {_line(exc)}") from exc


def smp_archs() -> list[str]:
    import segmentation_models_pytorch as smp

    return [cls.__name__ for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()]


def build_torchvision(name: str, options: dict, classes: int) -> nn.Module:
    import torchvision.models
    from torchvision.models import segmentation

    builders = set(torchvision.models.list_models(module=segmentation))
    if name not in builders:
        from xaibench.errors import did_you_mean

        raise UserError(f"model.torchvision: {did_you_mean(name, sorted(builders), 'torchvision segmentation model')}")
    kwargs = {"weights": None, "weights_backbone": None, "num_classes": classes, **options}
    try:
        model = torchvision.models.get_model(name, **kwargs)
    except (KeyError, ValueError, TypeError) as exc:
        raise UserError(f"model.torchvision = {name!r}: torchvision cannot build it: {_line(exc)}") from exc
    return OutputOf(model, "out")


def load_torchscript(path: str) -> nn.Module:
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"model.torchscript: {str(file)!r} does not exist")
    try:
        return torch.jit.load(str(file), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError or ValueError for anything not a TorchScript archive
        raise UserError(f"model.torchscript: {str(file)!r} is not a TorchScript file (torch.jit.save): {_line(exc)}") from exc


def resolve_factory(spec: str):
    """The callable named by ``"package.module:function"`` (importing the module runs its code)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UserError(f"model.factory = {spec!r}: expected 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"model.factory = {spec!r}: cannot import {module_name!r} ({_line(exc)}); install it or put its folder on PYTHONPATH") from exc
    fn: Any = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
    if not callable(fn):
        raise UserError(f"model.factory = {spec!r}: {module_name!r} has no callable {attr!r}")
    return fn


def call_factory(spec: str, options: dict, classes: int, in_channels: int) -> nn.Module:
    """The module the factory returns; ``classes`` / ``in_channels`` are passed when it takes them
    and the config did not set them in ``options``."""
    fn = resolve_factory(spec)
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    kwargs = dict(options)
    for key, value in (("classes", classes), ("in_channels", in_channels)):
        if key in params and key not in kwargs:
            kwargs[key] = value
    try:
        model = fn(**kwargs)
    except TypeError as exc:
        raise UserError(f"model.factory = {spec!r} with options {sorted(kwargs)}: {_line(exc)}") from exc
    if not isinstance(model, nn.Module):
        raise UserError(f"model.factory = {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def code_of(spec: str) -> str:
    """The file a factory's module is imported from (without importing it), for ``validate``."""
    module_name = spec.partition(":")[0]
    try:
        found = importlib.util.find_spec(module_name) if module_name else None
    except (ImportError, ValueError):
        found = None
    origin = getattr(found, "origin", None)
    return origin or "(not found on the path)"


def factory_source_hash(spec: str) -> str:
    """Hash of the factory module's source file: a trained model's cache key changes with the code."""
    origin = Path(code_of(spec))
    return content_hash(origin.read_bytes())[:16] if origin.is_file() else ""


def smp_layers(module: nn.Module) -> dict[str, str]:
    """``decoder1`` (the decoder output, the head's input) and ``decoder2`` (the block before,
    where the family has one): for Unet-like decoders the last two blocks, as ``smp_unet``."""
    blocks = getattr(module.decoder, "blocks", None)
    if isinstance(blocks, (nn.ModuleList, nn.Sequential)) and len(blocks):
        n = len(blocks)
        return {"decoder1": f"decoder.blocks.{n - 1}", **({"decoder2": f"decoder.blocks.{n - 2}"} if n > 1 else {})}
    if isinstance(blocks, nn.ModuleDict):  # UnetPlusPlus: x_0_j, the top row, ends in the output
        top = sorted((k for k in blocks if k.startswith("x_0_")), key=lambda k: int(k.rsplit("_", 1)[1]))
        return {"decoder1": f"decoder.blocks.{top[-1]}", **({"decoder2": f"decoder.blocks.{top[-2]}"} if len(top) > 1 else {})}
    layers = {"decoder1": "decoder"}
    second = SMP_DECODER2.get(type(module).__name__)
    if second and second in dict(module.named_modules()):
        layers["decoder2"] = second
    return layers


def smp_tail(module: nn.Module, path: str) -> Tail | None:
    """The rest of an smp model after ``path``: a U-Net's decoder blocks (:func:`unet_tail`), or
    the segmentation head after the decoder's output (``decoder1`` of every family: the decoder
    itself, or its last block). Other layers: None, and the engine runs full forwards with the
    layer's output replaced (deriving more tails is the performance issue's)."""
    if type(module).__name__ == "Unet":
        return unet_tail(module, path)
    if path in ("decoder", smp_layers(module)["decoder1"]):
        head = module.segmentation_head
        return Tail(extra=(), fn=lambda act, extras, idx: head(act))
    return None


def is_smp(module: nn.Module) -> bool:
    """Whether ``module`` is a segmentation-models-pytorch model (its class is defined there)."""
    return type(module).__module__.startswith("segmentation_models_pytorch.") and hasattr(module, "decoder") and hasattr(module, "segmentation_head")


def torchvision_layers(module: nn.Module) -> dict[str, str]:
    """``decoder1``: the head's last activation before its classifier convolution;
    ``encoder``: the backbone's last stage (ResNet backbones)."""
    layers = {}
    head = getattr(module, "classifier", None)
    if isinstance(head, nn.Sequential):
        hidden = [i for i, m in enumerate(head) if isinstance(m, nn.ReLU)]
        if hidden:
            layers["decoder1"] = f"classifier.{hidden[-1]}"
    if "backbone.layer4" in dict(module.named_modules()):
        layers["encoder"] = "backbone.layer4"
    return layers


def torchvision_tail(module: nn.Module, path: str) -> Tail | None:
    """The rest of a torchvision FCN / DeepLabV3 after ``path`` (a ``classifier.i`` or
    ``backbone.layer4``, the backbone's output): the classifier's remaining layers, then the
    upsampling to the input's size (read from the captured logits' shape). Other layers: None."""
    head = getattr(module, "classifier", None)
    if not isinstance(head, nn.Sequential):
        return None
    if path == "backbone.layer4" and getattr(module, "backbone", None) is not None and list(getattr(module.backbone, "return_layers", {}).items())[-1:] == [("layer4", "out")]:
        rest: nn.Module = head
    elif path.startswith("classifier.") and path.count(".") == 1 and path.rsplit(".", 1)[1].isdigit() and int(path.rsplit(".", 1)[1]) < len(head):
        rest = nn.Sequential(*list(head)[int(path.rsplit(".", 1)[1]) + 1 :])  # subclasses (DeepLabHead) do not slice
    else:
        return None

    def fn(act: torch.Tensor, extras: dict[str, Any], idx: torch.Tensor) -> torch.Tensor:
        size = logits_of(extras[""]).shape[-2:]  # the model's own output: the input's size
        return F.interpolate(rest(act), size=size, mode="bilinear", align_corners=False)

    return Tail(extra=("",), fn=fn)


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
