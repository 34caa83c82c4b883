"""Hybrid Dilated Convolution (HDC) rules of Wang et al. 2018 ("Understanding Convolution for
Semantic Segmentation"), checked on the 3x3 conv rates of the dilated stage(s).

Rule 1: the rates of a stack share no common factor above 1 (else whole rows of the input are
never seen: gridding). Rule 2: ``M_2 <= K`` where ``M_n = r_n`` and
``M_i = max(M_{i+1} - 2 r_i, M_{i+1} - 2 (M_{i+1} - r_i), r_i)``; ``M_i`` is the largest gap
between two used inputs of layer ``i``.

A sawtooth such as ``[1, 2, 5, 1, 2, 5]`` is a repeat of HDC groups: the paper checks each
group, not the whole sequence (applied literally to all six rates rule 2 gives ``M_2 = 5``). So
the sequence is split into groups wherever the rate drops (``[1,2,5] [1,2,5]``) and both rules
are checked on every group. This is sound: a group that passes covers a contiguous block, and
chaining contiguous blocks stays contiguous.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from functools import reduce

from detector.config.loader import ConfigError

HDC_MODES = ("error", "warn", "off")


class HDCError(ConfigError):
    """The dilation rates fail the HDC check and ``hdc_check`` is ``error``."""


@dataclass
class HDCVerdict:
    rates: list[int]
    kernel: int
    rule1_ok: bool
    rule2_ok: bool
    message: str
    groups: list[list[int]] = field(default_factory=list)
    m_values: list[list[int]] = field(default_factory=list)  # M_1..M_n per group

    @property
    def valid(self) -> bool:
        return self.rule1_ok and self.rule2_ok

    def to_dict(self) -> dict:
        return {**asdict(self), "valid": self.valid}


def m_values(rates: list[int]) -> list[int]:
    """``[M_1, ..., M_n]`` of one group (rule 2 uses ``M_2``)."""
    m = [0] * len(rates)
    m[-1] = rates[-1]
    for i in range(len(rates) - 2, -1, -1):
        nxt, r = m[i + 1], rates[i]
        m[i] = max(nxt - 2 * r, nxt - 2 * (nxt - r), r)
    return m


def split_groups(rates: list[int]) -> list[list[int]]:
    """Split a sawtooth into its groups: a new group starts where the rate drops."""
    groups: list[list[int]] = []
    for r in rates:
        if groups and r >= groups[-1][-1]:
            groups[-1].append(r)
        else:
            groups.append([r])
    return groups


def check_hdc(rates: list[int], kernel: int = 3) -> HDCVerdict:
    """Check both HDC rules on ``rates`` (a sequence of dilation rates of ``kernel`` convs)."""
    rates = [int(r) for r in rates]
    if not rates:
        return HDCVerdict([], kernel, True, True, "HDC: no dilated convs to check")
    if any(r <= 0 for r in rates):
        raise ConfigError(f"dilation rates must be positive ints, got {rates}")
    groups = split_groups(rates)
    problems, ms = [], []
    rule1_ok = rule2_ok = True
    for g in groups:
        m = m_values(g)
        ms.append(m)
        if len(g) < 2:
            continue  # a single conv cannot grid by itself
        common = reduce(math.gcd, g)
        if common > 1:
            rule1_ok = False
            problems.append(f"rule 1 failed for rates {g}: common factor {common}")
        if m[1] > kernel:
            rule2_ok = False
            problems.append(f"rule 2 failed for rates {g}: M_2 = {m[1]} > kernel size {kernel}")
    if problems:
        msg = "HDC check failed: " + "; ".join(problems)
    else:
        msg = f"HDC check passed for rates {rates} (groups {groups})"
    return HDCVerdict(rates, kernel, rule1_ok, rule2_ok, msg, groups, ms)


def enforce_hdc(verdict: HDCVerdict, mode: str) -> None:
    """Act on a verdict: raise (``error``), warn (``warn``) or nothing (``off``)."""
    if mode not in HDC_MODES:
        raise ConfigError(
            f"unknown model.backbone.hdc_check {mode!r}; valid: {', '.join(HDC_MODES)}"
        )
    if verdict.valid or mode == "off":
        return
    text = f"{verdict.message} (model.backbone.hdc_check={mode})"
    if mode == "error":
        raise HDCError(text)
    warnings.warn(text, UserWarning, stacklevel=3)
