"""Functional models of number formats (layer 3: pure numpy, no timing).

* :mod:`sim.numerics.mx` — MicroScopiQ: MX-INT inliers, k-sigma outlier detection, MX-FP
  outliers split into Upper/Lower halves stored in pruned slots, permutation lists, EBW.
* :mod:`sim.numerics.outlier_stats` — outlier statistics of weight matrices and the seeded
  synthetic generator of outlier profiles (reading checkpoints and writing profile files is
  :mod:`sim.io`'s business).
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
