"""Tests of xaibench_weaksup.cyclegan: network shapes, losses, difference maps, cache, resume, image pool."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from xaibench_weaksup import cyclegan as cg

from xaibench.plugin import Sample, UserError

#: tiny networks; lr 1e-3 (5 x the paper's) so that 8 steps move the losses clearly
TINY = dict(epochs=4, batch_size=2, ngf=4, n_blocks=1, ndf=4, n_layers=2, lr=1e-3, seed=3, show_progress=False)
LOSSES = ("G", "D", "cycle", "identity", "lr")


def _domain(n: int, square: bool, seed: int, size: int = 16, channels: int = 3) -> list[torch.Tensor]:
    """Dim noisy tiles; with ``square`` a bright 6 x 6 square at a random place."""
    gen = torch.Generator().manual_seed(seed)
    images = 0.25 + 0.1 * torch.rand(n, channels, size, size, generator=gen)
    if square:
        for img in images:
            r, c = torch.randint(0, size - 6, (2,), generator=gen).tolist()
            img[:3, r : r + 6, c : c + 6] = 0.9
    return list(images)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny networks: one thread is as fast and does not spin-wait on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def domains() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    return _domain(4, True, 1), _domain(4, False, 2)


@pytest.fixture(scope="module")
def uninterrupted(domains, tmp_path_factory) -> cg.ResnetGenerator:
    return cg.train_cyclegan(*domains, cache_path=tmp_path_factory.mktemp("full") / "g.pt", **TINY)


class _Counter:
    """Wraps cg._train_step and counts the steps."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.steps = 0
        self._step = cg._train_step
        monkeypatch.setattr(cg, "_train_step", self)

    def __call__(self, *args, **kwargs):
        self.steps += 1
        return self._step(*args, **kwargs)


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("size", [(16, 16), (16, 24), (32, 20)])
def test_network_shapes(channels, size):
    x = torch.rand(2, channels, *size)
    g = cg.ResnetGenerator(channels, ngf=4, n_blocks=1)
    y = g(x)
    assert y.shape == x.shape
    assert 0 <= y.min() and y.max() <= 1
    d = cg.PatchDiscriminator(channels, ndf=4, n_layers=2)
    assert d(x).shape == (2, 1, size[0] // 4 - 2, size[1] // 4 - 2)


def test_paper_discriminator_is_70x70_patchgan():
    d = cg.PatchDiscriminator(3, ndf=64, n_layers=3)
    widths = [m.out_channels for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert widths == [64, 128, 256, 512, 1]
    # one score per 70 x 70 receptive field: a 70 x 70 input gives 6 x 6 (stride 8, 4 x 4 kernels at the end)
    assert d(torch.rand(1, 3, 70, 70)).shape == (1, 1, 6, 6)
    norms = [type(m) for m in d.model[:3]]
    assert nn.InstanceNorm2d not in norms  # no norm on the first layer


def test_unsupported_sizes_are_user_errors(domains, tmp_path):
    with pytest.raises(UserError, match="multiples of 4"):
        cg.ResnetGenerator(3, ngf=4, n_blocks=1)(torch.rand(1, 3, 18, 16))
    with pytest.raises(UserError, match=r"expected images \[B, 3, H, W\]"):
        cg.ResnetGenerator(3, ngf=4, n_blocks=1)(torch.rand(1, 4, 16, 16))
    with pytest.raises(UserError, match="too small for 3 discriminator layers: sides must be >= 24"):
        cg.PatchDiscriminator(3, ndf=4, n_layers=3)(torch.rand(1, 3, 16, 16))
    a, b = domains
    with pytest.raises(UserError, match="too small"):
        cg.train_cyclegan(a, b, cache_path=tmp_path / "g.pt", **{**TINY, "n_layers": 3})
    with pytest.raises(UserError, match="one shape"):
        cg.train_cyclegan(a, _domain(2, False, 0, size=32), cache_path=tmp_path / "g.pt", **TINY)
    with pytest.raises(UserError, match="must all have one shape"):
        cg.train_cyclegan(a, [*b[:1], torch.rand(3, 16, 20)], cache_path=tmp_path / "g.pt", **TINY)
    with pytest.raises(UserError, match="domain B has no images"):
        cg.train_cyclegan(a, [], cache_path=tmp_path / "g.pt", **TINY)
    with pytest.raises(UserError, match="epochs must be an integer >= 1, got 0"):
        cg.train_cyclegan(a, b, cache_path=tmp_path / "g.pt", **{**TINY, "epochs": 0})
    with pytest.raises(UserError, match="lr must be a number > 0"):
        cg.train_cyclegan(a, b, cache_path=tmp_path / "g.pt", **{**TINY, "lr": 0})


def test_losses_fall_and_lr_schedule(uninterrupted):
    h = uninterrupted.history
    assert [e["epoch"] for e in h] == [1, 2, 3, 4]
    assert h[-1]["cycle"] < 0.75 * h[0]["cycle"]
    assert h[-1]["identity"] < 0.75 * h[0]["identity"]
    assert h[-1]["G"] < 0.8 * h[0]["G"]
    # constant for the first half, then linear decay towards 0 (the paper code's rule)
    assert [e["lr"] for e in h] == pytest.approx([1e-3, 1e-3, 1e-3 * 2 / 3, 1e-3 / 3])
    assert not uninterrupted.training


def test_difference_maps():
    x = torch.rand(5, 3, 16, 16)
    assert torch.equal(cg.cyclegan_difference(nn.Identity(), x), torch.zeros(5, 16, 16))

    class AddRed(nn.Module):
        def forward(self, t):
            out = t.clone()
            out[:, 0] += 0.5
            return out

    d = cg.cyclegan_difference(AddRed(), x, chunk=2)
    assert d.shape == (5, 16, 16)
    assert torch.allclose(d, torch.full_like(d, 0.299 * 0.5))
    # with RGB + DEM only the RGB channels are compared
    x4 = torch.rand(3, 4, 16, 16)

    class DemOnly(nn.Module):
        def forward(self, t):
            return torch.cat([t[:, :3], 1 - t[:, 3:]], 1)

    assert torch.equal(cg.cyclegan_difference(DemOnly(), x4), torch.zeros(3, 16, 16))
    with pytest.raises(UserError, match="C >= 3"):
        cg.cyclegan_difference(nn.Identity(), torch.rand(2, 2, 16, 16))


def test_difference_of_a_trained_generator_is_chunked_and_in_range(uninterrupted, domains):
    x = torch.stack(domains[0] + domains[1])
    d = cg.cyclegan_difference(uninterrupted, x, chunk=3)
    assert d.shape == (8, 16, 16) and 0 <= d.min() and d.max() <= 1
    assert torch.allclose(d, cg.cyclegan_difference(uninterrupted, x, chunk=100))


def test_cache_second_call_trains_nothing(domains, tmp_path, monkeypatch):
    path = tmp_path / "g.pt"
    samples = [Sample(image=im, mask=torch.zeros(16, 16, dtype=torch.long), image_id=str(i)) for i, im in enumerate(domains[0])]
    count = _Counter(monkeypatch)
    first = cg.train_cyclegan(samples, domains[1], cache_path=path, **{**TINY, "epochs": 1})
    assert count.steps == 2 and path.is_file() and not path.with_suffix(".partial.pt").exists()
    second = cg.train_cyclegan(samples, domains[1], cache_path=path, **{**TINY, "epochs": 1})
    assert count.steps == 2
    assert _same_weights(first, second) and second.history == first.history and not second.training


def test_stale_or_torn_cache_is_retrained_with_a_warning(domains, tmp_path, monkeypatch):
    path = tmp_path / "g.pt"
    path.write_bytes(b"not a torch file")
    count = _Counter(monkeypatch)
    with pytest.warns(UserWarning, match="not used .*training it again"):
        cg.train_cyclegan(*domains, cache_path=path, **{**TINY, "epochs": 1})
    assert count.steps == 2
    with pytest.warns(UserWarning, match="trained with other settings"):
        cg.train_cyclegan(*domains, cache_path=path, **{**TINY, "epochs": 1, "ngf": 8})
    assert count.steps == 4


def test_interrupted_training_resumes_to_the_same_weights(domains, tmp_path, monkeypatch, uninterrupted):
    path = tmp_path / "g.pt"

    def stop_after_two(epoch, losses):
        if epoch == 2:
            raise KeyboardInterrupt

    count = _Counter(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        cg.train_cyclegan(*domains, cache_path=path, on_epoch=stop_after_two, **TINY)
    assert count.steps == 4 and path.with_suffix(".partial.pt").is_file() and not path.exists()
    resumed = cg.train_cyclegan(*domains, cache_path=path, **TINY)
    assert count.steps == 8  # epochs 3 and 4 only
    assert _same_weights(resumed, uninterrupted)
    strip = lambda h: [{k: e[k] for k in LOSSES} for e in h]
    assert strip(resumed.history) == strip(uninterrupted.history)
    assert not path.with_suffix(".partial.pt").exists()


def test_torn_checkpoint_starts_over_with_a_warning(domains, tmp_path, monkeypatch):
    path = tmp_path / "g.pt"
    path.with_suffix(".partial.pt").write_bytes(b"torn")
    with pytest.warns(UserWarning, match="not resumed"):
        cg.train_cyclegan(*domains, cache_path=path, **{**TINY, "epochs": 1})
    assert path.is_file()


def test_image_pool_mixes_current_and_past_fakes():
    gen = torch.Generator().manual_seed(0)
    pool = cg.ImagePool(5)
    first = torch.arange(5.0).view(5, 1, 1, 1)
    assert torch.equal(pool.query(first, gen), first)  # filling: returned as they come
    current = past = 0
    seen = set(range(5))
    for value in range(5, 405):
        out = pool.query(torch.full((1, 1, 1, 1), float(value)), gen).item()
        if out == value:
            current += 1
        else:
            assert out in seen  # a past fake, handed out once and replaced by the new one
            seen.discard(out)
            seen.add(value)
            past += 1
        assert len(pool.images) == 5
    assert 150 < past < 250 and current + past == 400  # the 50 % rule
    assert {t.item() for t in pool.images} == seen
    assert torch.equal(cg.ImagePool(0).query(first, gen), first)


def test_rgb_plus_dem_domains_train(tmp_path):
    a, b = _domain(2, True, 5, channels=4), _domain(3, False, 6, channels=4)  # unequal lengths: 3 pairs an epoch
    g = cg.train_cyclegan(a, b, cache_path=tmp_path / "g.pt", **{**TINY, "epochs": 1})
    assert g(torch.stack(a)).shape == (2, 4, 16, 16)
    assert cg.cyclegan_difference(g, torch.stack(a)).shape == (2, 16, 16)
