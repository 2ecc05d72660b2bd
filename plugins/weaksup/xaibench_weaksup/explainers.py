"""``cyclegan_diff``: the CycleGAN-difference mask of the weak-supervision pipeline, as an explainer.

A CycleGAN learns to turn landslide images (label 1) of the replicate's training split into
landslide-free ones (label 0); the map of an image ``x`` is ``|G(x) - x|`` in grayscale
(0.299 R + 0.587 G + 0.114 B), in [0, 1] on an absolute scale (:func:`cyclegan_difference`),
so the thesis's fixed threshold 0.08 means the same on every image. It explains no layer of the
classifier: it is a second, independent mask that the core's ``mask_and`` / ``mask_or`` combine
with a CAM. The generator is the explainer's own network (``fit``, see the core's
docs/plugins.md): trained per fold on that fold's training images only, cached by data and
settings, loaded once per worker.
"""

from __future__ import annotations

import torch

from xaibench.plugin import ExplainContext, FitContext, Pass, UserError, config_hash, weights_hash
from xaibench_weaksup.cyclegan import FORMAT, cyclegan_difference, train_cyclegan


class CycleGANDiff:
    """|G(x) - x| of a CycleGAN G: landslide -> landslide-free, trained on the training split."""

    name = "cyclegan_diff"
    needs = Pass.NONE
    normalize = False  # absolute [0, 1] scale: a fixed threshold must mean the same on every image
    version = f"1.{FORMAT}"

    def __init__(
        self, epochs: int = 8, batch_size: int = 4, ngf: int = 16, n_blocks: int = 4, ndf: int = 32, n_layers: int = 3,
        lr: float = 2e-4, lambda_cycle: float = 10.0, lambda_identity: float = 0.5, pool_size: int = 50,
    ):  # fmt: skip
        """The CycleGAN's settings (see cyclegan.train_cyclegan; checked when it trains)."""
        self.epochs, self.batch_size, self.ngf, self.n_blocks, self.ndf, self.n_layers = epochs, batch_size, ngf, n_blocks, ndf, n_layers
        self.lr, self.lambda_cycle, self.lambda_identity, self.pool_size = lr, lambda_cycle, lambda_identity, pool_size

    def fit(self, ctx: FitContext) -> str:
        train = ctx.dataset.split("train")
        labels = [s.label for s in train]
        if any(label is None for label in labels):
            raise UserError(f"explainer {self.name!r}: dataset {getattr(ctx.dataset, 'name', '?')!r} has images without an image-level label; the CycleGAN is trained from label-1 to label-0 images")
        domain_a = [s for s, label in zip(train, labels) if label]
        domain_b = [s for s, label in zip(train, labels) if not label]
        settings = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        key = config_hash(format=FORMAT, data=ctx.dataset_key, seed=ctx.seed, **settings)
        self._generator = train_cyclegan(
            domain_a, domain_b, cache_path=ctx.cache_dir / "explainers" / f"cyclegan-{key}.pt", seed=ctx.seed,
            device=ctx.device, show_progress=ctx.show_progress, title=ctx.title or self.name, **settings,
        )  # fmt: skip
        return weights_hash(self._generator)

    gallery_title = "G(x)"

    def gallery_image(self, images: torch.Tensor) -> torch.Tensor:
        """G(x): the landslide-free version of ``images`` [B, C, H, W] (the gallery shows it)."""
        with torch.inference_mode():
            return self._generator(images.to(next(self._generator.parameters()).device)).to(images.device)

    def explain(self, ctx: ExplainContext) -> torch.Tensor:
        return cyclegan_difference(self._generator, ctx.images)
