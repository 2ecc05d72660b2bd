import pytest
import torch

from xaibench.datasets.rooftops import Rooftops
from xaibench.engine.capture import shared_pass
from xaibench.errors import UserError
from xaibench.models.smp_unet import SmpUnet, unet_tail
from xaibench.models.training import LoadContext


def _ctx(tmp_path, ds):
    return LoadContext(dataset=ds, dataset_key="k", cache_dir=tmp_path, show_progress=False)


def test_tail_from_each_decoder_block_reproduces_the_logits(tiny_unet, tiny_images):
    for i in range(3):
        path = f"decoder.blocks.{i}"
        tail = unet_tail(tiny_unet, path)
        cap = shared_pass(tiny_unet, tiny_images, [path], extra=list(tail.extra))
        idx = torch.tensor([2, 0])
        out = tail.fn(cap.activations[path][idx], cap.extras, idx)
        assert torch.allclose(out, cap.logits[idx], atol=1e-5)
    assert unet_tail(tiny_unet, "encoder.layer1") is None


def test_trains_on_first_use_then_loads_the_cached_weights(tmp_path):
    ds = Rooftops(size=64, n_train=4, n_val=0, n_test=2)
    plugin = SmpUnet(encoder_depth=3, decoder_channels=[16, 8, 4], epochs=1, batch_size=4)
    a = plugin.load(_ctx(tmp_path, ds))
    files = list((tmp_path / "models").glob("smp_unet-*.pt"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    b = plugin.load(_ctx(tmp_path, ds))
    assert files[0].stat().st_mtime_ns == stamp  # not trained again
    assert a.identity == b.identity and a.task == "binary"
    assert a.layers == {"decoder1": "decoder.blocks.2", "decoder2": "decoder.blocks.1"}
    assert not a.module.training
    other = SmpUnet(encoder_depth=3, decoder_channels=[16, 8, 4], epochs=2, batch_size=4).load(_ctx(tmp_path, ds))
    assert other.identity != a.identity and len(list((tmp_path / "models").glob("*.pt"))) == 2


def test_checkpoint_loads_with_weights_only_and_bad_ones_are_user_errors(tmp_path, tiny_unet):
    ds = Rooftops(size=64, n_train=2, n_val=0, n_test=2)
    good = tmp_path / "w.pt"
    torch.save({"state_dict": tiny_unet.state_dict()}, good)
    loaded = SmpUnet(encoder_depth=3, decoder_channels=[16, 8, 4], checkpoint=str(good)).load(_ctx(tmp_path, ds))
    assert all(torch.equal(v, tiny_unet.state_dict()[k]) for k, v in loaded.module.state_dict().items())
    with pytest.raises(UserError, match="does not exist"):
        SmpUnet(checkpoint=str(tmp_path / "none.pt")).load(_ctx(tmp_path, ds))
    with pytest.raises(UserError, match="does not fit this model"):
        SmpUnet(checkpoint=str(good)).load(_ctx(tmp_path, ds))  # depth 5 model, depth 3 weights
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not torch")
    with pytest.raises(UserError, match="cannot be read"):
        SmpUnet(encoder_depth=3, decoder_channels=[16, 8, 4], checkpoint=str(junk)).load(_ctx(tmp_path, ds))


def test_parameter_errors():
    with pytest.raises(UserError, match="decoder_channels"):
        SmpUnet(encoder_depth=3)
    with pytest.raises(UserError, match="encoder"):
        SmpUnet(encoder="resnet9000", encoder_depth=3, decoder_channels=[8, 8, 8]).build(2)


def test_resolve_layer_aliases_paths_and_output(tiny_unet):
    from xaibench.models.base import LoadedModel

    m = LoadedModel(tiny_unet, "binary", {"decoder1": "decoder.blocks.2"})
    assert m.resolve_layer("decoder1") == "decoder.blocks.2"
    assert m.resolve_layer("decoder.blocks.0") == "decoder.blocks.0"
    assert m.resolve_layer("output") == "" and m.layer_name("") == "output"
    with pytest.raises(UserError, match="Did you mean 'decoder1'"):
        m.resolve_layer("decoder_1")


def test_the_unet_takes_the_datasets_channels_and_an_explicit_default_is_the_same_model(tmp_path):
    from xaibench.datasets.base import Sample
    from xaibench.models.smp_unet import SmpUnet

    class FourChannels:
        name, num_classes = "four", 2

        def split(self, name):
            return [Sample(torch.rand(4, 32, 32), torch.zeros(32, 32, dtype=torch.long), f"{name}{i}") for i in range(2)]

    small = dict(encoder_depth=3, decoder_channels=[8, 4, 4], epochs=1, batch_size=2)
    ctx = LoadContext(dataset=FourChannels(), dataset_key="four", cache_dir=tmp_path, show_progress=False)
    model = SmpUnet(**small).load(ctx)
    assert model.module(torch.rand(1, 4, 32, 32)).shape == (1, 1, 32, 32)
    assert len(list((tmp_path / "models").glob("*.pt"))) == 1
    SmpUnet(**small, in_channels=4).load(ctx)  # written explicitly: the same cache entry, no retraining
    assert len(list((tmp_path / "models").glob("*.pt"))) == 1
