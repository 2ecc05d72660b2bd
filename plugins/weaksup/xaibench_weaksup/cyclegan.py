"""CycleGAN of the weak-supervision pipeline: networks, seeded resumable training, |G(x) - x| masks.

After Zhu et al. 2017 ("Unpaired image-to-image translation using cycle-consistent adversarial
networks"), as used by the landslide pipeline (Zhou et al. 2022 and the thesis it seeds): a
generator ``G_A`` turns domain-A images (landslide) into domain-B ones (landslide-free), ``G_B``
the reverse; the difference ``|G_A(x) - x|`` marks what had to change, i.e. the landslide.

* :class:`ResnetGenerator`: c7s1-ngf, d2ngf, d4ngf, ``n_blocks`` x R4ngf, u2ngf, ungf, c7s1-C;
  instance norm, reflection padding, ConvTranspose upsampling; [0, 1] images are mapped to
  [-1, 1] inside and the tanh output back to [0, 1]. Sides: multiples of 4, at least 8.
* :class:`PatchDiscriminator`: the 70 x 70 PatchGAN for ``n_layers = 3`` (C64-C128-C256-C512
  with ``ndf = 64``), LeakyReLU 0.2, no norm on the first layer. Sides: ``>= 3 * 2**n_layers``.
* LSGAN losses (MSE to 1 / 0), cycle L1 x ``lambda_cycle = 10``, identity L1 x ``0.5 * 10``, a
  pool of 50 past fakes for the discriminators (:class:`ImagePool`), Adam (2e-4, betas 0.5,
  0.999), constant lr for half the epochs then linear decay towards 0, weights from N(0, 0.02).

:func:`train_cyclegan` caches the final ``G_A`` at ``cache_path`` and writes a checkpoint of
everything (four networks, optimisers, schedulers, pools, history) to
``cache_path.with_suffix(".partial.pt")`` after every epoch; all randomness of epoch ``e`` is
drawn from generators seeded by ``(seed, e)``, so a resumed run gives the same weights as an
uninterrupted one.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xaibench.plugin import Sample, UserError, progress_bar, save_atomic

#: ITU-R BT.601 luma weights used by :func:`cyclegan_difference`
GRAY_WEIGHTS = (0.299, 0.587, 0.114)
FORMAT = 1  #: bumped when the cached file layout changes

_image = lambda item: item.image if isinstance(item, Sample) else item
_why = lambda exc: (str(exc).strip().splitlines() or [type(exc).__name__])[0]  # one line for a warning
_cpu = lambda state: {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in state.items()}


class _ResidualBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """ResNet generator of CycleGAN mapping [B, C, H, W] images in [0, 1] to [0, 1]."""

    def __init__(self, in_channels: int = 3, out_channels: int | None = None, ngf: int = 16, n_blocks: int = 4) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7), nn.InstanceNorm2d(ngf), nn.ReLU(True)]
        for mult in (1, 2):  # two stride-2 downsamplings
            layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1), nn.InstanceNorm2d(ngf * mult * 2), nn.ReLU(True)]
        layers += [_ResidualBlock(ngf * 4) for _ in range(n_blocks)]
        for mult in (4, 2):  # two stride-2 upsamplings
            up = nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1)
            layers += [up, nn.InstanceNorm2d(ngf * mult // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        self.in_channels = in_channels
        #: per-epoch mean losses of the training that made these weights (set by train_cyclegan)
        self.history: list[dict[str, float]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_size(x, "ResnetGenerator", self.in_channels)
        return (self.model(x * 2 - 1) + 1) / 2


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator: one realness score per overlapping patch, [B, 1, h, w]."""

    def __init__(self, in_channels: int = 3, ndf: int = 32, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1), nn.InstanceNorm2d(ndf * mult), nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)
        self.in_channels = in_channels
        self.n_layers = n_layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_size(x, "PatchDiscriminator", self.in_channels, self.n_layers)
        return self.model(x * 2 - 1)


def check_image_size(x: torch.Tensor, who: str, channels: int, n_layers: int | None = None) -> None:
    """UserError unless ``x`` is [B, channels, H, W] with sides the network supports."""
    if x.dim() != 4 or x.shape[1] != channels:
        raise UserError(f"{who}: expected images [B, {channels}, H, W], got shape {list(x.shape)}")
    h, w = x.shape[-2:]
    if n_layers is None and (h % 4 or w % 4 or h < 8 or w < 8):
        raise UserError(f"{who}: image size {h}x{w} is not supported: height and width must be multiples of 4 and at least 8")
    if n_layers is not None and min(h, w) // 2**n_layers < 3:
        raise UserError(f"{who}: image size {h}x{w} is too small for {n_layers} discriminator layers: sides must be >= {3 * 2**n_layers}")


class ImagePool:
    """Buffer of past fakes (Shrivastava et al. 2017): the discriminator sees a mix of old and new.

    While the pool holds fewer than ``size`` images each fake is stored and returned as is; once
    full, each fake is returned with probability 1/2, otherwise a random stored one is returned
    and replaced by it. ``size = 0`` disables the pool. Coin flips use ``generator``.
    """

    def __init__(self, size: int = 50) -> None:
        self.size = size
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand((), generator=generator).item() > 0.5:
                i = int(torch.randint(len(self.images), (), generator=generator))
                out.append(self.images[i].clone())
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state(self) -> torch.Tensor:
        return torch.stack(self.images).cpu() if self.images else torch.empty(0)


def init_weights(module: nn.Module) -> None:
    """The paper code's initialisation: convolution weights N(0, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def lsgan_loss(pred: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN loss: mean squared distance of the patch scores to 1 (real) or 0 (fake)."""
    return F.mse_loss(pred, torch.full_like(pred, 1.0 if real else 0.0))


@dataclass
class _State:
    g_a: ResnetGenerator
    g_b: ResnetGenerator
    d_a: PatchDiscriminator  #: judges domain B (real B vs G_A's fakes), as in the paper's code
    d_b: PatchDiscriminator  #: judges domain A
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    sched_g: torch.optim.lr_scheduler.LambdaLR
    sched_d: torch.optim.lr_scheduler.LambdaLR
    pool_a: ImagePool  #: past fakes of domain A (from G_B)
    pool_b: ImagePool

    NETS = ("g_a", "g_b", "d_a", "d_b", "opt_g", "opt_d", "sched_g", "sched_d")


def _build(cfg: dict[str, Any], device: torch.device) -> _State:
    torch.manual_seed(cfg["seed"])
    c = cfg["in_channels"]
    g_a, g_b = (ResnetGenerator(c, c, cfg["ngf"], cfg["n_blocks"]) for _ in range(2))
    d_a, d_b = (PatchDiscriminator(c, cfg["ndf"], cfg["n_layers"]) for _ in range(2))
    for net in (g_a, g_b, d_a, d_b):
        init_weights(net)
        net.to(device).train()
    betas = (0.5, 0.999)
    opt_g = torch.optim.Adam([*g_a.parameters(), *g_b.parameters()], lr=cfg["lr"], betas=betas)
    opt_d = torch.optim.Adam([*d_a.parameters(), *d_b.parameters()], lr=cfg["lr"], betas=betas)
    keep = math.ceil(cfg["epochs"] / 2)  # constant for the first half, then linear decay
    factor = lambda e: 1.0 - max(0, e + 1 - keep) / (cfg["epochs"] - keep + 1)
    sched = [torch.optim.lr_scheduler.LambdaLR(o, factor) for o in (opt_g, opt_d)]
    pools = ImagePool(cfg["pool_size"]), ImagePool(cfg["pool_size"])
    return _State(g_a, g_b, d_a, d_b, opt_g, opt_d, *sched, *pools)


def _train_step(s: _State, real_a: torch.Tensor, real_b: torch.Tensor, gen: torch.Generator, cfg: dict[str, Any]) -> dict[str, float]:
    """One generator update (discriminators frozen) then one discriminator update."""
    fake_b, fake_a = s.g_a(real_a), s.g_b(real_b)
    rec_a, rec_b = s.g_b(fake_b), s.g_a(fake_a)
    for d in (s.d_a, s.d_b):
        d.requires_grad_(False)
    s.opt_g.zero_grad(set_to_none=True)
    adv = lsgan_loss(s.d_a(fake_b), True) + lsgan_loss(s.d_b(fake_a), True)
    lam, lam_idt = cfg["lambda_cycle"], cfg["lambda_identity"]
    cycle = (F.l1_loss(rec_a, real_a) + F.l1_loss(rec_b, real_b)) * lam
    identity = torch.zeros((), device=real_a.device)
    if lam_idt > 0:  # G_A should leave a B image alone, G_B an A image
        identity = (F.l1_loss(s.g_a(real_b), real_b) + F.l1_loss(s.g_b(real_a), real_a)) * lam * lam_idt
    (adv + cycle + identity).backward()
    s.opt_g.step()
    for d in (s.d_a, s.d_b):
        d.requires_grad_(True)
    s.opt_d.zero_grad(set_to_none=True)
    old_b, old_a = s.pool_b.query(fake_b, gen), s.pool_a.query(fake_a, gen)
    loss_d = 0.0
    for d, real, fake in ((s.d_a, real_b, old_b), (s.d_b, real_a, old_a)):
        loss = (lsgan_loss(d(real), True) + lsgan_loss(d(fake.detach()), False)) * 0.5
        loss.backward()
        loss_d += loss.item()
    s.opt_d.step()
    return {"G": adv.item(), "D": loss_d, "cycle": cycle.item(), "identity": identity.item()}


def _stack(domain: Sequence, indices: list[int], device: torch.device) -> torch.Tensor:
    images = [_image(domain[i]) for i in indices]
    if any(im.shape != images[0].shape for im in images):
        raise UserError(f"CycleGAN: the images of a domain must all have one shape, found {sorted({tuple(im.shape) for im in images})}")
    return torch.stack(images).to(device)


def _orders(n_a: int, n_b: int, gen: torch.Generator) -> tuple[list[int], list[int]]:
    """An epoch of max(n_a, n_b) pairs: each domain in a fresh random order, repeated as needed."""
    n = max(n_a, n_b)
    orders = [torch.cat([torch.randperm(k, generator=gen) for _ in range(math.ceil(n / k))])[:n].tolist() for k in (n_a, n_b)]
    return orders[0], orders[1]


def _run_epoch(s: _State, domains: tuple[Sequence, Sequence], epoch: int, cfg: dict, report: Callable[[dict], None]) -> dict[str, float]:
    gen = torch.Generator().manual_seed(cfg["seed"] * 100_003 + epoch)
    order_a, order_b = _orders(len(domains[0]), len(domains[1]), gen)
    device = next(s.g_a.parameters()).device
    sums: dict[str, float] = {}
    bs, n = cfg["batch_size"], 0
    for start in range(0, len(order_a), bs):
        batch = [_stack(dom, order[start : start + bs], device) for dom, order in zip(domains, (order_a, order_b))]
        losses = _train_step(s, batch[0], batch[1], gen, cfg)
        n += 1
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + v
        report({k: v / n for k, v in sums.items()})
    return {k: v / n for k, v in sums.items()}


def _check_domains(domain_a: Sequence, domain_b: Sequence, cfg: dict, title: str) -> tuple[int, int, int]:
    shapes = set()
    for name, dom in (("A", domain_a), ("B", domain_b)):
        if len(dom) == 0:
            raise UserError(f"{title}: CycleGAN domain {name} has no images; nothing to train on")
        shapes.add(tuple(_image(dom[0]).shape))
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise UserError(f"{title}: CycleGAN domains A and B need images of one shape [C, H, W], got {sorted(shapes)}")
    c, h, w = shapes.pop()
    check_image_size(probe := torch.zeros(1, c, h, w), f"{title}: CycleGAN generator", c)
    check_image_size(probe, f"{title}: CycleGAN discriminator", c, cfg["n_layers"])
    return c, h, w


def _check_config(cfg: dict[str, Any], title: str) -> None:
    for key, low in (("epochs", 1), ("batch_size", 1), ("ngf", 1), ("n_blocks", 0), ("ndf", 1), ("n_layers", 1), ("pool_size", 0), ("seed", 0)):
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise UserError(f"{title}: CycleGAN {key} must be an integer >= {low}, got {v!r}")
    for key in ("lr", "lambda_cycle", "lambda_identity"):
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, int | float) or not (v > 0 or (key != "lr" and v == 0)):
            raise UserError(f"{title}: CycleGAN {key} must be a number {'> 0' if key == 'lr' else '>= 0'}, got {v!r}")


def _read(path: Path, cfg: dict[str, Any]) -> dict:
    """The file at ``path`` (weights only), ValueError unless it was written with ``cfg``."""
    stored = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(stored, dict) or stored.get("format") != FORMAT or stored.get("config") != cfg:
        raise ValueError("it was trained with other settings")
    return stored


def _load_final(path: Path, cfg: dict[str, Any], device: torch.device) -> ResnetGenerator | None:
    """The cached generator at ``path``, or None (with a one-line warning when it is stale or torn)."""
    if not path.is_file():
        return None
    try:
        stored = _read(path, cfg)
        g = ResnetGenerator(cfg["in_channels"], cfg["in_channels"], cfg["ngf"], cfg["n_blocks"])
        g.load_state_dict(stored["g_a"])
        g.history = list(stored["history"])
    except Exception as exc:  # a stale or torn cache entry: train again
        warnings.warn(f"cached CycleGAN {str(path)!r} not used ({_why(exc)}); training it again", stacklevel=3)
        return None
    return g.to(device).eval()


def _load_partial(path: Path, s: _State, cfg: dict[str, Any], device: torch.device) -> tuple[int, list[dict]]:
    """Restore the checkpoint at ``path`` into ``s``; returns (epochs done, history), (0, []) if none."""
    if not path.is_file():
        return 0, []
    try:
        stored = _read(path, cfg)
        for name in _State.NETS:
            getattr(s, name).load_state_dict(stored[name])
        s.pool_a.images = [im.to(device) for im in stored["pool_a"]]
        s.pool_b.images = [im.to(device) for im in stored["pool_b"]]
        return int(stored["epoch"]), list(stored["history"])
    except Exception as exc:
        warnings.warn(f"CycleGAN checkpoint {str(path)!r} not resumed ({_why(exc)}); starting from epoch 1", stacklevel=3)
        s.__dict__.update(_build(cfg, device).__dict__)  # the failed load may have half-filled s
        return 0, []


def _save_partial(path: Path, s: _State, cfg: dict[str, Any], epoch: int, history: list[dict]) -> None:
    state = {name: getattr(s, name).state_dict() for name in _State.NETS}
    state = {k: _cpu(v) if k.startswith(("g_", "d_")) else v for k, v in state.items()}
    save_atomic({"format": FORMAT, "config": cfg, "epoch": epoch, "history": history, **state, "pool_a": s.pool_a.state(), "pool_b": s.pool_b.state()}, path)


def train_cyclegan(
    domain_a: Sequence[torch.Tensor | Sample],
    domain_b: Sequence[torch.Tensor | Sample],
    *,
    cache_path: Path,
    epochs: int = 20, batch_size: int = 4, ngf: int = 16, n_blocks: int = 4, ndf: int = 32, n_layers: int = 3,
    lr: float = 2e-4, lambda_cycle: float = 10.0, lambda_identity: float = 0.5, pool_size: int = 50, seed: int = 0,
    device: torch.device | str = "cpu", show_progress: bool = True, title: str = "cyclegan",
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> ResnetGenerator:
    """Train (or load from ``cache_path``) a CycleGAN A <-> B and return ``G_A`` (A -> B) in eval mode.

    Domain items are [C, H, W] tensors in [0, 1] or :class:`~xaibench.plugin.Sample` s, all of
    one shape, unpaired and of any lengths (an epoch is ``max(len(a), len(b))`` pairs). The
    result's ``history`` lists per-epoch means of the losses ``G`` (LSGAN loss of both
    generators), ``D`` (both discriminators), ``cycle`` and ``identity`` (weighted L1), with
    ``lr`` and ``seconds``. ``cache_path`` should be keyed by the data and these settings (e.g.
    :func:`~xaibench.plugin.config_hash`); its stored settings are checked too. An interrupted
    run resumes from ``cache_path.with_suffix(".partial.pt")`` at its last finished epoch.
    ``on_epoch(epoch, losses)`` is called after each epoch's checkpoint is written.
    """
    cfg: dict[str, Any] = dict(epochs=epochs, batch_size=batch_size, ngf=ngf, n_blocks=n_blocks, ndf=ndf, n_layers=n_layers, lr=lr,
                               lambda_cycle=lambda_cycle, lambda_identity=lambda_identity, pool_size=pool_size, seed=seed)  # fmt: skip
    _check_config(cfg, title)
    cfg["in_channels"], cfg["height"], cfg["width"] = _check_domains(domain_a, domain_b, cfg, title)
    device, cache_path = torch.device(device), Path(cache_path)
    if (cached := _load_final(cache_path, cfg, device)) is not None:
        return cached
    partial = cache_path.with_suffix(".partial.pt")
    s = _build(cfg, device)
    start, history = _load_partial(partial, s, cfg, device)
    steps = math.ceil(max(len(domain_a), len(domain_b)) / batch_size)
    with progress_bar(show_progress) as bar:
        task = bar.add_task(f"training CycleGAN {title}", total=epochs * steps, completed=start * steps)
        for epoch in range(start, epochs):
            head = f"training CycleGAN {title} epoch {epoch + 1}/{epochs}"
            report = lambda means, head=head: bar.update(task, advance=1, description=" ".join([head, *(f"{k}={v:.3f}" for k, v in means.items())]))
            t0 = time.perf_counter()
            means = _run_epoch(s, (domain_a, domain_b), epoch, cfg, report)  # the lr is constant within an epoch:
            history.append({"epoch": epoch + 1, **means, "lr": s.opt_g.param_groups[0]["lr"], "seconds": time.perf_counter() - t0})
            s.sched_g.step()
            s.sched_d.step()
            _save_partial(partial, s, cfg, epoch + 1, history)
            if on_epoch is not None:
                on_epoch(epoch + 1, means)
    save_atomic({"format": FORMAT, "config": cfg, "g_a": _cpu(s.g_a.state_dict()), "history": history}, cache_path)
    partial.unlink(missing_ok=True)
    s.g_a.history = history
    return s.g_a.eval()


def cyclegan_difference(generator: nn.Module, images: torch.Tensor, *, chunk: int = 16) -> torch.Tensor:
    """Grayscale change map ``0.299 |dR| + 0.587 |dG| + 0.114 |dB|`` of ``d = generator(x) - x``.

    ``images`` [B, C, H, W] in [0, 1] with C >= 3 (a 4th channel, e.g. a DEM, is fed to the
    generator but not compared). Returns [B, H, W] on ``images``' device. Scaling: absolute, by
    the largest possible change (1 per channel, and the weights sum to 1), so the map is in
    [0, 1] as it is (clamped there); no per-image min-max, which would blow up "no change" into
    a full-range mask. Runs under ``torch.inference_mode`` in chunks of ``chunk`` images.
    """
    if images.dim() != 4 or images.shape[1] < 3:
        raise UserError(f"cyclegan_difference: expected RGB images [B, C >= 3, H, W], got shape {list(images.shape)}")
    param = next(iter(generator.parameters()), None)
    device = param.device if param is not None else images.device
    weights = torch.tensor(GRAY_WEIGHTS, device=device).view(1, 3, 1, 1)
    out = []
    with torch.inference_mode():
        for part in images.split(max(1, chunk)):
            x = part.to(device)
            diff = (generator(x)[:, :3] - x[:, :3]).abs()
            out.append((diff * weights).sum(1).clamp(0, 1).to(images.device))
    return torch.cat(out) if out else images.new_zeros(0, *images.shape[-2:])
