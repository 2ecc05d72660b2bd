import pytest
from torch import nn

from xaibench.errors import UserError
from xaibench.models.base import LoadedModel


def _model():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 1, 3))
    return LoadedModel(module=net, task="binary", layers={"first": "0", "last": "2", "both": "mean(first, 2)", "twice": "mean(both, last)"})


def test_an_alias_can_name_a_fused_layer_of_aliases_and_paths():
    m = _model()
    assert m.resolve_layer("both") == "mean(0,2)" == m.resolve_layer("mean(first, last)")
    assert m.layer_name("mean(0,2)") == "both"  # the alias, not the spelled-out mean
    assert m.layer_name("mean(2,0)") == "mean(last,first)"  # another order: no alias, parts by their aliases
    assert m.layer_name("0") == "first" and m.layer_name("1") == "1"


def test_fused_layers_do_not_nest_through_aliases():
    m = _model()
    with pytest.raises(UserError, match="'both' is itself a fused layer"):
        m.resolve_layer("twice")
    with pytest.raises(UserError, match="do not nest"):
        m.resolve_layer("mean(both, 0)")
