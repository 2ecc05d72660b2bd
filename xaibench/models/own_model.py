"""Model plugin ``torch_model``: your own segmentation network, by configuration, no plugin code.

Exactly one of ``arch`` (any segmentation-models-pytorch architecture, with ``encoder``),
``torchvision`` (a ``torchvision.models.segmentation`` builder), ``torchscript`` (a file saved
with ``torch.jit.save``) or ``factory`` (``"package.module:function"``, called with ``options``)
names the network. Weights come from ``checkpoint`` (a state dict, loaded with
``weights_only=True``), or from training on the dataset's train split on first use when
``train = true`` (cached by config hash like ``smp_unet``); otherwise the network is explained as
given. A built architecture with neither is an error unless ``random_weights = true``.

A factory or a TorchScript file is code the config runs: ``xaibench validate`` names it first.
Layers are module paths (``xaibench layers CONFIG`` lists them), plus ``decoder1`` / ``decoder2``
where the family is known (:mod:`xaibench.models.model_sources`) and the config's ``aliases``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from xaibench.errors import UserError
from xaibench.models import model_sources as src
from xaibench.models.base import LoadedModel, Tail, infer_task, logits_of
from xaibench.models.smp_unet import image_channels, train_segmenter
from xaibench.models.training import LoadContext, load_checkpoint


class ScriptedModel(LoadedModel):
    """A TorchScript network: its layers run in compiled code, where no Python hook reaches, so
    only ``output`` and ``input`` (pixel attributions) can be explained."""

    def resolve_layer(self, layer: str | nn.Module) -> str:
        path = super().resolve_layer(layer)
        if path not in ("", "input"):
            raise UserError(
                f"layer {layer!r}: a TorchScript model runs its layers in compiled code that xaibench cannot hook; explain 'output' "
                "(model_output) or 'input' (pixel attributions), or give the network as model.factory or model.arch to explain inner layers"
            )
        return path


class TorchModel:
    """Your own segmentation network (smp architecture, torchvision model, TorchScript file or factory), explained as given or trained on first use."""

    name = "torch_model"
    #: small parameters for xaibench.testing.check_model (the registry-wide contract test)
    test_params = {
        "arch": "Linknet",
        "encoder": "resnet18",
        "options": {"encoder_depth": 3},
        "train": True,
        "epochs": 1,
        "batch_size": 4,
    }

    def __init__(
        self,
        arch: str = "",
        encoder: str = "resnet34",
        torchvision: str = "",
        torchscript: str = "",
        factory: str = "",
        options: dict = {},  # noqa: B006 (a config default, never mutated)
        checkpoint: str = "",
        train: bool = False,
        random_weights: bool = False,
        classes: int = 0,
        in_channels: int = 0,
        aliases: dict = {},  # noqa: B006
        output_key: str = "",
        epochs: int = 8,
        batch_size: int = 16,
        lr: float = 1e-3,
        seed: int = 0,
    ):
        given = {k: v for k, v in (("arch", arch), ("torchvision", torchvision), ("torchscript", torchscript), ("factory", factory)) if v}
        if len(given) != 1:
            which = ", ".join(f"{k} = {v!r}" for k, v in given.items()) or "none of them"
            raise UserError(f"model.{'/'.join(src.SOURCES)}: set exactly one to name the network (got {which}); docs/own-model.md shows each")
        self.source, self.spec = next(iter(given.items()))
        if train and checkpoint:
            raise UserError("model.train = true trains the network from scratch, and model.checkpoint loads trained weights: set one of them")
        if train and torchscript:
            raise UserError("model.train = true: a TorchScript file is explained as saved; give the network as model.arch or model.factory to train it")
        if not (train or checkpoint or random_weights) and self.source in ("arch", "torchvision"):
            raise UserError(
                f"model.{self.source} = {self.spec!r} is built with random weights: set model.checkpoint = PATH (a state dict), model.train = true "
                "(train it on the dataset's train split on first use), or model.random_weights = true (explain an untrained network)"
            )
        if epochs < 1 or batch_size < 1 or lr <= 0 or classes < 0 or in_channels < 0:
            raise UserError("model.epochs and model.batch_size must be >= 1, model.lr > 0, model.classes and model.in_channels >= 0 (0: from the dataset)")
        bad = [k for k, v in aliases.items() if not isinstance(v, str)]
        if bad:
            raise UserError(f"model.aliases: {bad[0]!r} must map to a module path (a string)")
        self.encoder = encoder if self.source == "arch" else ""
        self.options = dict(options)
        if self.source == "torchscript":
            self.spec = os.path.expandvars(torchscript)
        self.checkpoint, self.train, self.random_weights = os.path.expandvars(checkpoint), bool(train), bool(random_weights)
        self.classes, self.in_channels = classes, in_channels
        self.aliases, self.output_key = dict(aliases), output_key
        self.epochs, self.batch_size, self.lr, self.seed = epochs, batch_size, lr, seed

    def describe(self) -> str:
        """What the config names, for messages: ``smp FPN (resnet18)``, ``factory pkg.mod:fn``."""
        return {"arch": f"smp {self.spec} ({self.encoder})", "torchvision": f"torchvision {self.spec}"}.get(self.source, f"{self.source} {self.spec}")

    @property
    def runs_code(self) -> list[str]:
        """The code this config makes xaibench run besides installed libraries (``validate`` prints it)."""
        if self.source == "factory":
            return [f"model.factory {self.spec!r}: imports {src.code_of(self.spec)} and calls {self.spec.partition(':')[2]}(...)"]
        if self.source == "torchscript":
            return [f"model.torchscript {str(Path(self.spec).expanduser())!r}: the compiled code saved in that file runs on every forward"]
        return []

    def weight_files(self) -> list[str]:
        """The files the weights come from (a resumed run refuses when one changed,
        :mod:`xaibench.runs.model_files`): the checkpoint, the TorchScript file, the factory's source."""
        files = [self.checkpoint] if self.checkpoint else []
        if self.source == "torchscript":
            files.append(self.spec)
        if self.source == "factory":
            files.append(src.code_of(self.spec))
        return files

    def _classes(self, dataset) -> int:
        return self.classes or (1 if getattr(dataset, "num_classes", 2) <= 2 else dataset.num_classes)

    def network(self, dataset) -> nn.Module:
        """The network with the checkpoint's weights (if any), on the CPU, not trained."""
        classes, channels = self._classes(dataset), self.in_channels or image_channels(dataset)
        torch.manual_seed(self.seed)  # a built network's initial weights are the seed's
        if self.source == "arch":
            module = src.build_smp(self.spec, self.encoder, self.options, classes, channels)
        elif self.source == "torchvision":
            module = src.build_torchvision(self.spec, self.options, classes)
        elif self.source == "torchscript":
            module = src.load_torchscript(self.spec)
        else:
            module = src.call_factory(self.spec, self.options, classes, channels)
        if self.output_key and self.source != "torchvision":
            module = src.OutputOf(module, self.output_key)
        if self.checkpoint:
            load_checkpoint(module, self.checkpoint, what=f"model {self.describe()}")
        return module

    def _cache_params(self, dataset) -> dict:
        params = {k: v for k, v in vars(self).items() if k not in ("checkpoint", "random_weights", "aliases", "train")}
        params["classes"], params["in_channels"] = self._classes(dataset), self.in_channels or image_channels(dataset)
        params["recipe"] = "bce_dice+one_cycle+best_val_iou"
        if self.source == "factory":  # the factory's code is part of what the weights depend on
            params["factory_code"] = src.factory_source_hash(self.spec)
        return params

    def load(self, ctx: LoadContext) -> LoadedModel:
        module = self.network(ctx.dataset)
        if self.train:
            module = train_segmenter(  # smp_unet's recipe
                module, ctx, ctx.model_path(self.name, self._cache_params(ctx.dataset)), title=f"{self.name} ({self.describe()})",
                epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, seed=self.seed,
            )  # fmt: skip
        return self._loaded(module, ctx)

    def structure(self, ctx: LoadContext) -> LoadedModel:
        """The model as ``load`` returns it but without training (initial weights where it would
        train): what ``xaibench validate`` and ``xaibench layers`` inspect."""
        return self._loaded(self.network(ctx.dataset), ctx)

    def _loaded(self, module: nn.Module, ctx: LoadContext) -> LoadedModel:
        module = module.to(ctx.device).eval()
        if ctx.device.type == "cpu" and self.source in ("arch", "torchvision"):  # NHWC convolutions: ~1.4x faster on CPU
            module = module.to(memory_format=torch.channels_last)
        task = self._task(module, ctx)
        if self.source == "arch" or src.is_smp(module):  # a factory may return an smp model too
            layers, tail, randomizable = src.smp_layers(module), (lambda path: src.smp_tail(module, path)), ("decoder", "segmentation_head")
        elif self.source == "torchvision":
            layers, tail, randomizable = src.torchvision_layers(module), (lambda path: src.torchvision_tail(module, path)), ("classifier",)
        else:
            layers, tail, randomizable = {}, _no_tail, ()
        layers.update(self.aliases)
        cls = ScriptedModel if isinstance(module, torch.jit.ScriptModule) else LoadedModel
        return cls(module=module, task=task, layers=layers, tail=tail, randomizable=randomizable)

    def _task(self, module: nn.Module, ctx: LoadContext):
        """The task, from the output of one forward of the dataset's first image."""
        image = _first_image(ctx.dataset)
        try:
            with torch.no_grad():
                out = module(image[None].to(ctx.device))
        except (RuntimeError, ValueError, TypeError, AssertionError) as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"model {self.describe()} fails on an image of {tuple(image.shape)} (C x H x W): {text}") from exc
        if isinstance(out, dict):
            raise UserError(f"model {self.describe()} returns a dict (keys {sorted(map(str, out))}): set model.output_key to the logits' key")
        logits = logits_of(out)
        if not torch.is_tensor(logits):
            raise UserError(f"model {self.describe()} returns {type(logits).__name__}, not a tensor of logits")
        if logits.ndim == 4 and logits.shape[-2:] != image.shape[-2:]:
            raise UserError(
                f"model {self.describe()} gives logits of {logits.shape[-2]} x {logits.shape[-1]} for an image of {image.shape[-2]} x {image.shape[-1]}; "
                "a segmentation model's logits must have the image's size (check its options)"
            )
        return infer_task(logits)


def _no_tail(path: str) -> Tail | None:
    return None


def _first_image(dataset) -> torch.Tensor:
    for name in ("test", "val", "train"):
        try:
            split = dataset.split(name)
        except UserError:
            continue
        if len(split):
            return split[0].image
    raise UserError("the dataset has no images to run the model on")
