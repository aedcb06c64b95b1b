"""Which N:M hardware patterns can run a layer pruned to another pattern (``admits``) and the
fallback a fixed-pattern design uses (``fallback_pattern``), against brute force."""
from __future__ import annotations

import itertools
import math

import pytest

from sim.config import ConfigError
from sim.config.nm_schedule import DENSE, admits, fallback_pattern, parse_pattern

SMALL = ["1:2", "1:3", "2:3", "1:4", "2:4", "3:4", "2:6", "1:8", "2:8", "4:8", "dense"]


def _brute_admits(hw: str, mask: str) -> bool:
    """Enumerate every mask-valid kept set over one lcm period; each must be hw-valid."""
    h, q = parse_pattern(hw), parse_pattern(mask)
    if h.dense:
        return True
    if q.dense:
        return False
    period = math.lcm(h.m, q.m)
    blocks = [range(s, s + q.m) for s in range(0, period, q.m)]
    # worst case: each mask block keeps exactly N (keeping fewer never hurts)
    for choice in itertools.product(*(itertools.combinations(b, q.n) for b in blocks)):
        kept = [p for c in choice for p in c]
        for s in range(0, period, h.m):
            if sum(s <= p < s + h.m for p in kept) > h.n:
                return False
    return True


@pytest.mark.parametrize("hw", SMALL)
@pytest.mark.parametrize("mask", SMALL)
def test_admits_equals_brute_force(hw, mask):
    assert admits(parse_pattern(hw), parse_pattern(mask)) == _brute_admits(hw, mask)


def test_fallback_rules_on_a_fixed_2of4_design():
    sup = ["2:4", "dense"]
    # sparser layers FLOW chose run at 2:4 when their masks fit it; otherwise dense
    assert str(fallback_pattern("2:8", sup)) == "2:4"
    assert str(fallback_pattern("1:4", sup)) == "2:4"
    assert fallback_pattern("4:8", sup) == DENSE          # 4 kept may share one half
    assert str(fallback_pattern("4:8", sup, "density")) == "2:4"   # re-pruned iso-sparsity
    assert fallback_pattern("dense", sup) == DENSE
    # every fallback admits the request (mask rule) and is never sparser (both rules)
    for req in SMALL:
        for rule in ("mask", "density"):
            got = fallback_pattern(req, ["1:4", "2:4", "dense"], rule)
            assert got.density >= parse_pattern(req).density - 1e-12
            if rule == "mask":
                assert admits(got, parse_pattern(req))


def test_unknown_fallback_rule_is_a_config_error():
    with pytest.raises(ConfigError, match="mask, density"):
        fallback_pattern("2:4", ["2:4"], "nearest")
