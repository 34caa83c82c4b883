"""Dilated ResNet backbones: strides, per-block rates, parameter parity, norms, freezing,
weight loading and the errors for bad input."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from detector.config import ConfigError, load_config
from detector.models import WeightsError, build_backbone, build_resnet, count_parameters
from detector.models.norm import convert_sync_batchnorm


def _map(backbone, size):
    with torch.no_grad():
        return backbone.eval()(torch.zeros(1, 3, size, size))["0"]


def test_stride_512():
    assert _map(build_resnet(18, 32), 512).shape[-2:] == (16, 16)
    assert _map(build_resnet(18, 16, hdc_check="off"), 512).shape[-2:] == (32, 32)


def test_stride_dc4_and_dilated_layers_keep_size():
    bb = build_resnet(18, 8, hdc_check="off")
    assert bb.output_stride == 8 and _map(bb, 128).shape[-2:] == (16, 16)
    assert bb.rates["layer3"] == [2] * 4 and bb.rates["layer4"] == [4] * 4
    # large rates still keep the map size: padding = rate
    bb = build_resnet(18, 16, {"layer4": [1, 2, 5, 9], "layer3": [3, 1]}, hdc_check="off")
    assert _map(bb, 96).shape[-2:] == (6, 6)


HDC = {18: [1, 2, 5, 9], 50: [1, 2, 5]}


@pytest.mark.parametrize("depth", [18, 50])
def test_dilation_adds_no_parameters(depth):
    counts = {
        count_parameters(build_resnet(depth, 32)),
        count_parameters(build_resnet(depth, 16, hdc_check="off")),
        count_parameters(build_resnet(depth, 8, hdc_check="off")),
        count_parameters(build_resnet(depth, 16, {"layer4": HDC[depth]}, hdc_check="error")),
    }
    assert len(counts) == 1


def test_per_block_rates_set_on_convs():
    r18 = build_resnet(18, 16, {"layer4": [1, 2, 5, 9]})
    convs = [c for b in r18.body.layer4 for c in (b.conv1, b.conv2)]
    assert [c.dilation[0] for c in convs] == [1, 2, 5, 9]
    assert [c.padding[0] for c in convs] == [1, 2, 5, 9]
    assert r18.body.layer4[0].conv1.stride == (1, 1)
    assert r18.body.layer4[0].downsample[0].stride == (1, 1)
    # one rate per BasicBlock applies to both of its convs
    r18b = build_resnet(18, 16, {"layer4": [1, 2]})
    assert r18b.rates["layer4"] == [1, 1, 2, 2]
    # Bottleneck: one 3x3 per block; HDC sawtooth over a long layer3 (6 blocks) of a c5 model
    r50 = build_resnet(
        50, 32, {"layer3": [1, 2, 5, 1, 2, 5], "layer4": [1, 2, 5]}, hdc_check="error"
    )
    assert [b.conv2.dilation[0] for b in r50.body.layer3] == [1, 2, 5, 1, 2, 5]
    assert r50.body.layer4[0].conv2.stride == (2, 2)  # c5 keeps the stride
    assert _map(r50, 64).shape[-2:] == (2, 2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            dict(depth=18, output_stride=16, dilations={"layer4": [1, 2, 5]}),
            r"3 rates.*2 BasicBlocks.*2 \(one per block\) or 4 \(one per 3x3 conv\)",
        ),
        (dict(depth=50, output_stride=16, dilations={"layer4": [1, 2]}), r"2 rates.*3 Bottlenecks"),
        (dict(depth=18, output_stride=16, dilations={"layer4": [1, 0]}), "positive ints"),
        (dict(depth=18, output_stride=16, dilations={"layer4": [-1, 2]}), "positive ints"),
        (dict(depth=18, output_stride=16, dilations={"layer4": [1.5, 2]}), "positive ints"),
        (dict(depth=18, output_stride=16, dilations={"layer5": [1, 2]}), "unknown stage.*layer5"),
        (dict(depth=18, output_stride=16, dilations={"layer4": 2}), "must be a list"),
        (dict(depth=18, output_stride=4), "cannot give output stride 4"),
        (dict(depth=34, output_stride=64), "ResNet-34 cannot give output stride 64"),
        (dict(depth=152, output_stride=32), "depth 152.*18, 34, 50, 101"),
        (dict(depth=18, norm="ln"), "unknown model.backbone.norm 'ln'"),
        (dict(depth=18, trainable_layers=6), "trainable_layers must be 0-5"),
        (
            dict(depth=18, norm="gn", gn_groups=32, reduce_channels=100),
            "100 channels are not divisible",
        ),
    ],
)
def test_bad_input_is_a_clear_error(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        build_resnet(**kwargs)


def test_unknown_variant():
    # the loader refuses it first; the backbone's own check guards configs built in code
    with pytest.raises(ConfigError, match="unknown model.variant 'dc3'; valid: c5, dc5, dc4, fpn"):
        load_config(None, ["model.variant=dc3"])
    cfg = load_config(None)
    cfg.model.variant = "dc3"
    with pytest.raises(ConfigError, match="unknown model.variant 'dc3'; valid: c5, dc5, dc4, fpn"):
        build_backbone(cfg)


def test_norms():
    def norms(bb):
        return {
            type(m)
            for m in bb.modules()
            if isinstance(m, nn.BatchNorm2d | nn.GroupNorm | FrozenBatchNorm2d)
        }

    assert norms(build_resnet(18, 32)) == {FrozenBatchNorm2d}
    assert norms(build_resnet(18, 32, norm="bn")) == {nn.BatchNorm2d}
    gn = build_resnet(18, 16, {"layer4": [1, 2, 5, 9]}, norm="gn", reduce_channels=128)
    assert norms(gn) == {nn.GroupNorm}
    gn.train()
    out = gn(torch.rand(2, 3, 64, 64))["0"]
    assert out.shape == (2, 128, 4, 4) and gn.out_channels == 128
    out.mean().backward()
    sync = build_resnet(18, 32, norm="syncbn")
    assert norms(sync) == {nn.BatchNorm2d}  # plain BN on one process
    assert any(
        isinstance(m, nn.SyncBatchNorm) for m in convert_sync_batchnorm(sync, "syncbn").modules()
    )
    assert convert_sync_batchnorm(gn, "gn") is gn


def test_reduce_channels():
    bb = build_resnet(50, 16, reduce_channels=512, hdc_check="off")
    assert bb.out_channels == 512 and _map(bb, 64).shape == (1, 512, 4, 4)
    plain = build_resnet(50, 16, hdc_check="off")
    assert count_parameters(bb) - count_parameters(plain) == 2048 * 512  # 1x1 conv, frozen BN


@pytest.mark.parametrize(
    "layers, trainable", [(0, set()), (1, {"layer4"}), (3, {"layer2", "layer3", "layer4"})]
)
def test_trainable_layers(layers, trainable):
    bb = build_resnet(18, 32, trainable_layers=layers)
    got = {n.split(".")[1] for n, p in bb.named_parameters() if p.requires_grad}
    assert got == trainable
    all_on = build_resnet(18, 32, norm="bn", trainable_layers=5)
    assert all(p.requires_grad for p in all_on.parameters())


@pytest.fixture(scope="module")
def r18_file(tmp_path_factory):
    torch.manual_seed(1)
    net = torchvision.models.resnet18()
    path = tmp_path_factory.mktemp("w") / "r18.pth"
    torch.save(net.state_dict(), path)
    return path, net.state_dict()


def test_load_weights(r18_file):
    path, state = r18_file
    bb = build_resnet(18, 16, weights=str(path), hdc_check="off")
    assert torch.equal(bb.body.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    assert torch.equal(bb.body.bn1.running_var, state["bn1.running_var"])
    # GN keeps BN's affine parameters, drops the running statistics
    gn = build_resnet(18, 32, weights=str(path), norm="gn")
    assert torch.equal(gn.body.layer1[0].bn1.weight, state["layer1.0.bn1.weight"])


def test_wrong_key_fails_clearly(r18_file, tmp_path):
    path, state = r18_file
    bad = dict(state)
    bad["layer1.0.conv9.weight"] = bad.pop("layer1.0.conv1.weight")
    bad_path = tmp_path / "bad.pth"
    torch.save(bad, bad_path)
    with pytest.raises(WeightsError) as err:
        build_resnet(18, 32, weights=str(bad_path))
    msg = str(err.value)
    assert str(bad_path) in msg
    assert "missing keys (1): layer1.0.conv1.weight" in msg
    assert "unexpected keys (1): layer1.0.conv9.weight" in msg


def test_other_weight_errors(r18_file, tmp_path):
    path, state = r18_file
    with pytest.raises(WeightsError, match="missing keys"):
        build_resnet(50, 32, weights=str(path))  # an R18 file for an R50
    shaped = dict(state)
    shaped["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    p = tmp_path / "shape.pth"
    torch.save(shaped, p)
    with pytest.raises(
        WeightsError, match=r"conv1.weight: file \(64, 3, 3, 3\) vs model \(64, 3, 7, 7\)"
    ):
        build_resnet(18, 32, weights=str(p))
    with pytest.raises(WeightsError, match="no such file"):
        build_resnet(18, 32, weights=str(tmp_path / "nope.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read weights file"):
        build_resnet(18, 32, weights=str(junk))
    with pytest.raises(WeightsError, match="unknown torchvision weights"):
        build_resnet(18, 32, weights="ResNet18_Weights.NOPE")


def test_weights_enum_offline(monkeypatch):
    from torchvision.models._api import WeightsEnum

    def offline(self, *args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    with pytest.raises(
        WeightsError, match="could not download ResNet18_Weights.IMAGENET1K_V1.*pass its path"
    ):
        build_resnet(18, 32, weights="ResNet18_Weights.IMAGENET1K_V1")


def test_matches_torchvision_dilated_resnet(tmp_path):
    """With torchvision's own DC5 rates ([1, 2, 2]: its first block keeps the previous rate),
    weights from a torchvision R50 give the same C5 features as its replace_stride_with_dilation."""
    torch.manual_seed(0)
    ref = torchvision.models.resnet50(replace_stride_with_dilation=[False, False, True]).eval()
    path = tmp_path / "r50.pth"
    torch.save(ref.state_dict(), path)
    ours = build_resnet(50, 16, {"layer4": [1, 2, 2]}, weights=str(path)).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = ref.layer4(
            ref.layer3(ref.layer2(ref.layer1(ref.maxpool(ref.relu(ref.bn1(ref.conv1(x)))))))
        )
        got = ours(x)["0"]
    assert got.shape == expected.shape == (1, 2048, 4, 4)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
