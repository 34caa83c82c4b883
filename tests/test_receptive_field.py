"""Receptive field walk, gridding coverage, ERF and tools/analyze_dilation.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from detector.cli import analyze_dilation
from detector.models import (
    build_resnet,
    coverage,
    dilated_stack,
    effective_receptive_field,
    plot_coverage,
    plot_erf,
    receptive_field,
    stage_receptive_fields,
)
from detector.models.erf import erf_radius
from detector.models.receptive_field import effective_kernel


@pytest.mark.parametrize("rates, rf", [([1, 2, 5], 17), ([2, 2, 2], 13), ([2, 4, 8], 29)])
def test_stack_rf(rates, rf):
    layers = receptive_field(dilated_stack(3, rates), (1, 1, 32, 32))
    assert [layer.dilation for layer in layers] == rates
    assert [layer.k_eff for layer in layers] == [effective_kernel(3, d) for d in rates]
    assert layers[-1].rf == rf and layers[-1].jump == 1


def test_effective_kernel():
    assert effective_kernel(3, 1) == 3
    assert effective_kernel(3, 2) == 5
    assert effective_kernel(3, 5) == 11
    assert effective_kernel(7, 2) == 13


def test_walk_follows_execution_order_not_definition_order():
    class Swapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.late = nn.Conv2d(1, 1, 3, padding=1)  # defined first, runs second
            self.early = nn.Conv2d(1, 1, 2, stride=2)

        def forward(self, x):
            return self.late(self.early(x))

    layers = receptive_field(Swapped(), (1, 1, 16, 16))
    assert [layer.name for layer in layers] == ["early", "late"]
    # early: rf 2, jump 2; late: 2 + (3 - 1) * 2 = 6
    assert [(layer.rf, layer.jump) for layer in layers] == [(2, 2), (6, 4 // 2)]


# Worked out by hand (torchvision ResNet v1.5, stride on the 3x3 conv):
# stem: conv 7x7/2 -> 7 (jump 2); maxpool 3x3/2 -> 7 + 2*2 = 11 (jump 4).
# R18: every stage has 4 3x3 convs; the first one of layer2-4 has stride 2.
#   layer1 11 + 4*2*4 = 43; layer2 43 + 2*4 + 3*2*8 = 99; layer3 99 + 2*8 + 3*2*16 = 211;
#   layer4 211 + 2*16 + 3*2*32 = 435.  DC5 (4 convs at rate 2, jump 16): 211 + 4*4*16 = 467.
# R50: 3/4/6/3 bottlenecks, one 3x3 each.
#   layer1 11 + 3*2*4 = 35; layer2 35 + 2*4 + 3*2*8 = 91; layer3 91 + 2*8 + 5*2*16 = 267;
#   layer4 267 + 2*16 + 2*2*32 = 427.  DC5 (3 convs at rate 2): 267 + 3*4*16 = 459.
R18 = {"stem": 11, "layer1": 43, "layer2": 99, "layer3": 211, "layer4": 435}
R50 = {"stem": 11, "layer1": 35, "layer2": 91, "layer3": 267, "layer4": 427}


def _rfs(stats):
    return {k: v["rf"] for k, v in stats.items()}


def test_resnet_rf_by_hand():
    assert _rfs(stage_receptive_fields(torchvision.models.resnet18())) == R18
    assert _rfs(stage_receptive_fields(build_resnet(18, 32))) == R18
    assert _rfs(stage_receptive_fields(build_resnet(50, 32))) == R50
    dc5 = stage_receptive_fields(build_resnet(18, 16, hdc_check="off"))
    assert dc5["layer4"] == {"rf": 467, "jump": 16}
    r50_dc5 = stage_receptive_fields(build_resnet(50, 16, hdc_check="off"))
    assert r50_dc5["layer4"] == {"rf": 459, "jump": 16}
    # HDC rates [1, 2, 5, 9] on R18's four layer4 convs: 211 + (2 + 4 + 10 + 18) * 16 = 755
    hdc = stage_receptive_fields(build_resnet(18, 16, {"layer4": [1, 2, 5, 9]}))
    assert hdc["layer4"] == {"rf": 755, "jump": 16}


def test_skip_path_is_not_walked():
    names = [layer.name for layer in receptive_field(build_resnet(18, 32), (1, 3, 64, 64))]
    assert not any("downsample" in n for n in names)
    assert len(names) == 2 + 16  # stem conv + maxpool, 16 main-path 3x3 convs


def test_coverage_holes():
    assert coverage(3, [1, 2, 5]).holes == 0
    c = coverage(3, [2, 2, 2])
    # only even offsets in -6..6 are reached: 7 of 13 per axis
    assert c.receptive_field == 13 and c.holes_1d == 6 and c.holes == 13 * 13 - 7 * 7
    assert c.map2d.shape == (13, 13) and c.map2d[6, 6] == c.map2d.max()
    assert coverage(3, [2, 4, 8]).receptive_field == 29
    with pytest.raises(ValueError, match="positive"):
        coverage(3, [1, -2])


def test_coverage_plot(tmp_path):
    out = plot_coverage(coverage(3, [2, 2, 2]), tmp_path / "cov.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_erf(tmp_path):
    torch.manual_seed(0)
    erf = effective_receptive_field(build_resnet(18, 16, norm="bn", hdc_check="off"), 64, 2)
    assert erf.shape == (64, 64) and np.isclose(erf.max(), 1.0)
    # the mass is centred: the centre quarter holds more than a corner quarter
    assert erf[16:48, 16:48].sum() > erf[:32, :32].sum() * 0.9
    assert 0 < erf_radius(erf) <= 32
    out = plot_erf(erf, tmp_path / "erf.png")
    assert out.stat().st_size > 0


def test_analyze_dilation_json(capsys, tmp_path):
    png = tmp_path / "c.png"
    assert (
        analyze_dilation.main(
            ["--kernel", "3", "--dilations", "1,2,5", "--plot", str(png), "--json"]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["receptive_field"] == 17 and out["holes"] == 0 and out["hdc_valid"] is True
    assert png.is_file()
    assert analyze_dilation.main(["--dilations", "2,2,2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["receptive_field"] == 13 and out["holes"] == 120 and out["hdc_valid"] is False


def test_analyze_dilation_text_and_errors(capsys):
    assert analyze_dilation.main(["--kernel", "3", "--dilations", "2,4,8"]) == 0
    text = capsys.readouterr().out
    assert "receptive field: 29" in text and "rule 1" in text
    with pytest.raises(SystemExit) as exc:
        analyze_dilation.main(["--dilations", "1,0,2"])
    assert exc.value.code == 2
    assert "positive" in capsys.readouterr().err
