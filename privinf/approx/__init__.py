"""Approximation primitives in pure torch: piecewise polynomials, fixed point, sparsity, fake-quant."""

from privinf.approx.fixed_point import FixedPointWrapError, fixed_point, wrapped
from privinf.approx.ops import CalibrationError, CardOps, activation_fn
from privinf.approx.polynomial import piecewise, polyval, sign_approx
from privinf.approx.quant import fake_quant
from privinf.approx.sparsity import calibrate_threshold, sparsify

__all__ = [
    "CalibrationError", "CardOps", "FixedPointWrapError", "activation_fn", "calibrate_threshold",
    "fake_quant", "fixed_point", "piecewise", "polyval", "sign_approx", "sparsify", "wrapped",
]
