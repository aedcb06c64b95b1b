"""Functional models of number formats (layer 3: pure numpy, no timing).

* :mod:`sim.numerics.mx` — MicroScopiQ: MX-INT inliers, k-sigma outlier detection, MX-FP
  outliers split into Upper/Lower halves stored in pruned slots, permutation lists, EBW.
"""
from .mx import (
    MICRO_EXP_MODES,
    SUPPORTED_BB,
    MXStats,
    MXWeights,
    ebw_formula,
    join_mantissa,
    merged_outlier_product,
    model_ebw,
    outlier_value,
    perm_bits_for,
    quantize,
    split_mantissa,
)

__all__ = [
    "MICRO_EXP_MODES",
    "SUPPORTED_BB",
    "MXStats",
    "MXWeights",
    "ebw_formula",
    "join_mantissa",
    "merged_outlier_product",
    "model_ebw",
    "outlier_value",
    "perm_bits_for",
    "quantize",
    "split_mantissa",
]
