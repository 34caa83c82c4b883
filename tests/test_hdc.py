"""HDC rules (Wang et al. 2018) on the seed's examples, and how the build acts on a verdict."""

from __future__ import annotations

import warnings

import pytest

from detector.config import ConfigError
from detector.models import HDCError, build_resnet, check_hdc
from detector.models.gridding import coverage
from detector.models.hdc import enforce_hdc, m_values, split_groups


def test_sawtooth_passes():
    v = check_hdc([1, 2, 5, 1, 2, 5])
    assert v.valid and v.rule1_ok and v.rule2_ok
    assert v.groups == [[1, 2, 5], [1, 2, 5]]
    assert "passed" in v.message


def test_124_8_fails_rule1():
    v = check_hdc([2, 4, 8])
    assert not v.valid
    assert not v.rule1_ok
    assert "rule 1" in v.message and "[2, 4, 8]" in v.message and "common factor 2" in v.message


def test_fails_only_rule2():
    v = check_hdc([1, 2, 9])
    assert v.rule1_ok and not v.rule2_ok and not v.valid
    assert v.m_values == [[3, 5, 9]]  # M_2 = max(9 - 4, 9 - 14, 2) = 5
    assert (
        "rule 2" in v.message
        and "rule 1" not in v.message
        and "M_2 = 5 > kernel size 3" in v.message
    )


def test_m_values_by_hand():
    # M_3 = 5; M_2 = max(5 - 4, 5 - 2*(5 - 2), 2) = 2; M_1 = max(2 - 2, 2 - 2*(2 - 1), 1) = 1
    assert m_values([1, 2, 5]) == [1, 2, 5]
    assert check_hdc([1, 2, 5]).valid
    assert split_groups([1, 2, 5, 9, 1, 2]) == [[1, 2, 5, 9], [1, 2]]


@pytest.mark.parametrize("rates", [[1, 2, 5], [1, 2, 5, 9], [1, 2, 5, 1, 2, 5], [1, 1, 2, 2]])
def test_valid_rates_leave_no_holes(rates):
    assert check_hdc(rates).valid
    assert coverage(3, rates).holes == 0


@pytest.mark.parametrize("rates", [[2, 2, 2], [2, 4, 8], [1, 2, 9]])
def test_invalid_rates_leave_holes(rates):
    assert not check_hdc(rates).valid
    assert coverage(3, rates).holes > 0


def test_bad_rates_and_mode():
    with pytest.raises(ConfigError, match="positive"):
        check_hdc([1, 0, 2])
    with pytest.raises(ConfigError, match="hdc_check"):
        enforce_hdc(check_hdc([2, 2]), "loud")


def test_build_modes():
    with pytest.raises(HDCError, match=r"rule 1 failed for rates \[2, 4, 8\]"):
        build_resnet(50, 16, {"layer4": [2, 4, 8]}, hdc_check="error")
    with pytest.warns(UserWarning, match="rule 1"):
        build_resnet(50, 16, {"layer4": [2, 4, 8]}, hdc_check="warn")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bb = build_resnet(50, 16, {"layer4": [2, 4, 8]}, hdc_check="off")
        assert not bb.hdc.valid  # the verdict is still recorded
        ok = build_resnet(18, 16, {"layer4": [1, 2, 5, 9]}, hdc_check="error")
    assert ok.hdc.valid and ok.rates["layer4"] == [1, 2, 5, 9]
