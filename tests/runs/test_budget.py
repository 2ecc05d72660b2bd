"""What a grid will cost (:mod:`xaibench.runs.budget`): refused before it allocates, warned when huge."""

import textwrap
import types

import pytest
import torch

from tests.conftest import TINY_CONFIG
from xaibench.cli import main
from xaibench.config.parse import parse_config
from xaibench.errors import UserError
from xaibench.runs import budget


def _config(**run):
    import tomllib

    data = tomllib.loads(textwrap.dedent(TINY_CONFIG))
    data["run"].update(run)
    return parse_config(data, "tiny.toml")


def _sample(h=64, w=64):
    return types.SimpleNamespace(image=torch.zeros(3, h, w))


def test_a_batch_larger_than_the_machine_is_refused_with_the_numbers(monkeypatch):
    monkeypatch.setattr(budget, "physical_memory", lambda: 1 << 20)  # a 1 MiB machine
    with pytest.raises(UserError, match=r"tiny.toml: one batch of 4 images of 3x64x64 needs at least .* more than this machine's 1.0 MiB; lower \[run\] batch_size"):
        budget.check(_config(), _sample(), n_maps=4, n_cells=10, n_images=6, warn=print)
    budget.check(_config(batch_size=1, chunk_size=1), _sample(8, 8), n_maps=1, n_cells=10, n_images=6, warn=print)  # this fits


def test_a_grid_of_millions_of_rows_is_warned_about():
    said = []
    budget.check(_config(), _sample(8, 8), n_maps=1, n_cells=7_700_000, n_images=16, warn=said.append)
    assert len(said) == 1 and "7,700,000 cells x 16 images = 123,200,000 rows" in said[0]
    budget.check(_config(), _sample(8, 8), n_maps=1, n_cells=100, n_images=16, warn=said.append)
    assert len(said) == 1


def test_validate_refuses_images_too_large_to_allocate(tmp_path, capsys):
    cfg = tmp_path / "huge.toml"
    cfg.write_text(textwrap.dedent(TINY_CONFIG).replace("size = 64", "size = 1048576"))
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "one sample does not fit in memory" in err and "make the images smaller" in err
