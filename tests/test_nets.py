"""Shape contracts of the plain nets: Ha's conv encoder/decoder, timm encoders, predictor."""

from __future__ import annotations

import pytest
import timm
import torch

from jepa_wm.io import UserError
from jepa_wm.nets import ConvDecoder, ConvEncoder, Predictor, TimmEncoder

torch.set_num_threads(1)  # other test processes share the 2 cores


def test_conv_encoder_is_the_papers():
    enc = ConvEncoder()
    convs = [m for m in enc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 256]
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) for c in convs)
    assert enc.out_dim == 2 * 2 * 256
    assert enc(torch.rand(5, 3, 64, 64)).shape == (5, 1024)
    assert ConvEncoder(image_size=96)(torch.rand(2, 3, 96, 96)).shape[1] == \
        ConvEncoder(image_size=96).out_dim


def test_conv_decoder_is_the_papers():
    dec = ConvDecoder(latent_dim=32)
    deconvs = [m for m in dec.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [d.out_channels for d in deconvs] == [128, 64, 32, 3]
    assert [d.kernel_size[0] for d in deconvs] == [5, 5, 6, 6]
    x = dec(torch.randn(4, 32))
    assert x.shape == (4, 3, 64, 64) and x.min() >= 0 and x.max() <= 1


def test_predictor_shapes_and_residual():
    p = Predictor(latent_dim=8, action_dim=3, hidden=16, depth=2)
    z, a = torch.randn(6, 8), torch.rand(6, 3)
    assert p(z, a).shape == (6, 8)
    torch.nn.init.zeros_(p.net[-1].weight)
    torch.nn.init.zeros_(p.net[-1].bias)
    assert torch.equal(p(z, a), z)  # a zero MLP predicts "nothing changes"


@pytest.mark.parametrize("name,kwargs", [
    ("resnet18", {}),
    ("vit_tiny_patch16_224", {"img_size": 64, "patch_size": 8}),
])
def test_timm_encoder_any_model_from_config(name, kwargs):
    enc = TimmEncoder(name, latent_dim=16, **kwargs)
    assert enc.out_dim == 16
    assert enc(torch.rand(2, 3, 64, 64)).shape == (2, 16)
    assert enc.spec["init_args"]["model_name"] == name
    bare = TimmEncoder(name, **kwargs)  # no projection: the backbone's own feature size
    assert bare.out_dim == bare.backbone.num_features


def test_timm_encoder_unknown_model_names_it():
    with pytest.raises(UserError, match="resnet181.*resnet18"):
        TimmEncoder("resnet181")


def test_timm_encoder_hub_weights_ask_for_a_local_file():
    with pytest.raises(UserError, match="pretrained_file=PATH"):
        TimmEncoder("resnet18", pretrained=True)
    with pytest.raises(UserError, match="does not exist"):
        TimmEncoder("resnet18", pretrained_file="/nonexistent/weights.pth")


def test_timm_encoder_loads_a_local_weights_file(tmp_path):
    src = timm.create_model("resnet18", pretrained=False, num_classes=0)
    path = tmp_path / "resnet18.pth"
    torch.save(src.state_dict(), path)
    enc = TimmEncoder("resnet18", pretrained_file=str(path))
    for key, value in src.state_dict().items():
        assert torch.equal(enc.backbone.state_dict()[key], value), key
