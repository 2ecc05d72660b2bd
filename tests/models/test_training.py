"""train_or_load: trains once, caches, and builds the optimiser the plugin asks for."""

import functools

import torch
from torch import nn

from xaibench.models.training import train_or_load


def _step(module, items, opt):
    x = torch.stack(items)
    loss = (module(x) - 1).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return {"loss": loss.item()}


def test_optimizer_factory_is_used_and_the_result_is_cached(tmp_path):
    built = []

    def factory(params, lr):
        opt = torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999))
        built.append(opt)
        return opt

    samples = [torch.randn(3) for _ in range(8)]
    path = tmp_path / "m.pt"
    kw = dict(epochs=2, batch_size=4, lr=0.1, seed=0, device=torch.device("cpu"), title="t", show_progress=False)
    trained = train_or_load(nn.Linear(3, 1), path, _step, samples, optimizer=factory, **kw)
    assert len(built) == 1 and built[0].param_groups[0]["betas"] == (0.5, 0.999)
    assert path.is_file()
    again = train_or_load(nn.Linear(3, 1), path, _step, samples, optimizer=factory, **kw)
    assert len(built) == 1  # loaded from the cache, not trained again
    assert torch.equal(again.weight, trained.weight)


def test_an_optimizer_partial_is_accepted(tmp_path):
    samples = [torch.randn(3) for _ in range(4)]
    m = nn.Linear(3, 1)
    before = m.weight.detach().clone()
    kw = dict(epochs=1, batch_size=4, lr=0.1, seed=0, device=torch.device("cpu"), title="t", show_progress=False)
    train_or_load(m, tmp_path / "m.pt", _step, samples, optimizer=functools.partial(torch.optim.SGD, momentum=0.0), **kw)
    assert not torch.equal(m.weight, before)


def test_a_corrupt_cached_model_is_trained_again_and_says_why(tmp_path, capsys):
    samples = [torch.randn(3) for _ in range(4)]
    path = tmp_path / "m.pt"
    path.write_bytes(b"PK\x03\x04 not a checkpoint")
    kw = dict(epochs=1, batch_size=4, lr=0.1, seed=0, device=torch.device("cpu"), title="t", show_progress=False)
    train_or_load(nn.Linear(3, 1), path, _step, samples, **kw)
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert f"warning: cached model {path} cannot be loaded (" in text and "training it again" in text
    assert "weights_only=False" not in text  # one line, never advice to load unsafely
    assert torch.load(path, weights_only=True)  # rewritten with the new training


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_checkpoint_with_pickled_code_is_refused_in_one_line_without_unsafe_advice(tmp_path):
    import pytest

    from xaibench.errors import UserError
    from xaibench.models.training import load_checkpoint

    path = tmp_path / "evil.pt"
    torch.save({"weight": _Evil()}, path)
    with pytest.raises(UserError) as err:
        load_checkpoint(nn.Linear(3, 1), path)
    text = str(err.value)
    assert len(text.splitlines()) == 1 and "weights_only" not in text and "does not load anything else" in text and str(path) in text


def test_select_keeps_the_best_epoch_not_the_last(tmp_path):
    """The score says epoch 2 (of 4) was best: its weights are the ones returned and cached."""
    samples = [torch.randn(3) for _ in range(4)]
    seen, scores = [], iter([0.1, 0.9, 0.5, 0.2])

    def select(module):
        assert not module.training  # scored in eval mode
        seen.append(module.weight.detach().clone())
        return next(scores)

    kw = dict(epochs=4, batch_size=4, lr=0.1, seed=0, device=torch.device("cpu"), title="t", show_progress=False)
    m = train_or_load(nn.Linear(3, 1), tmp_path / "m.pt", _step, samples, select=select, **kw)
    assert len(seen) == 4 and not torch.equal(seen[1], seen[3])
    assert torch.equal(m.weight, seen[1])
    assert torch.equal(torch.load(tmp_path / "m.pt", weights_only=True)["weight"], seen[1])


def test_one_cycle_warms_up_then_anneals_to_near_zero(tmp_path):
    rates = []

    def step(module, items, opt):
        rates.append(opt.param_groups[0]["lr"])
        return _step(module, items, opt)

    samples = [torch.randn(3) for _ in range(40)]
    kw = dict(epochs=5, batch_size=4, lr=0.1, seed=0, device=torch.device("cpu"), title="t", show_progress=False)
    train_or_load(nn.Linear(3, 1), tmp_path / "m.pt", step, samples, optimizer=torch.optim.SGD, schedule="one_cycle", **kw)
    assert len(rates) == 50
    peak = max(range(50), key=rates.__getitem__)
    assert 5 <= peak <= 15 and abs(rates[peak] - 0.1) < 1e-3  # warm-up over the first 20 %
    assert rates[0] < 0.01 and rates[-1] < 1e-3


def test_an_unknown_schedule_is_one_user_error(tmp_path):
    import pytest

    from xaibench.errors import UserError

    kw = dict(epochs=1, batch_size=4, lr=0.1, seed=0, device=torch.device("cpu"), title="t", show_progress=False)
    with pytest.raises(UserError, match="'cosine' is not one of"):
        train_or_load(nn.Linear(3, 1), tmp_path / "m.pt", _step, [torch.randn(3)], schedule="cosine", **kw)
