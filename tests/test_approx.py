"""Each published approximation against its coefficients at chosen points, and its max error."""
import math

import pytest
import torch
import torch.nn.functional as F

from privinf.approx import (CardOps, FixedPointWrapError, calibrate_threshold, fake_quant, fixed_point,
                            piecewise, sign_approx, sparsify, wrapped)
from privinf.approx.fit import max_error
from privinf.approx.functions import crypten_silu, fixed_point_tanh_gelu, newton_rsqrt, normalized_rsqrt
from privinf.approx.polynomial import evaluate
from privinf.cards import protocol_card

D = torch.float64


def act(card, name, xs):
    return evaluate(torch.tensor(xs, dtype=D), protocol_card(card).activation(name))


def test_puma_gelu_coefficients_at_points():
    y = act("puma", "gelu", [-5.0, -2.0, 0.0, 1.0, 4.0])
    c1 = -0.5054031199708174 - 0.42226581151983866 * -2 - 0.11807612951181953 * 4 - 0.011034134030615728 * -8
    c2 = 0.008526321541038084 + 0.5 + 0.3603292692789629 - 0.037688200365904236 + 0.0018067462606141187
    assert y.tolist() == pytest.approx([0.0, c1, 0.008526321541038084, c2, 4.0], abs=1e-12)


def test_bumblebee_uses_puma_coefficients_with_its_breakpoints():
    # -4.5 lies in BumbleBee's cubic piece (from -5) but PUMA's zero tail (below -4)
    assert act("puma", "gelu", [-4.5]).item() == 0.0
    x = -4.5
    cubic = -0.5054031199708174 - 0.42226581151983866 * x - 0.11807612951181953 * x**2 - 0.011034134030615728 * x**3
    assert act("bumblebee", "gelu", [x]).item() == pytest.approx(cubic, abs=1e-12)


def test_puma_silu_coefficients_at_points():
    y = act("puma", "silu", [-9.0, -6.0, 2.0, 5.0])
    c1 = -0.3067541139982155 - 0.0819767021525476 * -6 - 0.0055465625580307 * 36
    c2 = 0.0085064025895951 + 1.0 + 0.2281430841728270 * 4 - 0.011113046708173 * 16 + 0.0002743776353465 * 64
    assert y.tolist() == pytest.approx([0.0, c1, c2, 5.0], abs=1e-12)


def test_bolt_gelu_abs_form_at_points():
    x = -1.5
    a = abs(x)
    ref = 0.5 * x + 0.020848611754127593 * a**4 - 0.18352506127082727 * a**3 + 0.5410550166368381 * a**2 \
        - 0.03798164612714154 * a + 0.001620808531841547
    assert act("bolt", "gelu", [x, -3.0, 3.0]).tolist() == pytest.approx([ref, 0.0, 3.0], abs=1e-12)


def test_nexus_gelu_polynomial_at_point():
    c = [2.25775755e-04, 0.5, 3.96880960e-01, 0, -6.37042698e-02, 0, 8.38841647e-03, 0, -7.17830961e-04, 0,
         3.49617829e-05, 0, -7.26059653e-07]
    x = 1.25
    ref = sum(ci * x**i for i, ci in enumerate(c))
    spec = protocol_card("nexus").activation("gelu")
    assert piecewise(torch.tensor([x], dtype=D), spec.segments).item() == pytest.approx(ref, abs=1e-12)
    # with sign-polynomial interval tests, far from the breakpoints the value is unchanged
    assert evaluate(torch.tensor([x], dtype=D), spec).item() == pytest.approx(ref, abs=1e-6)


@pytest.mark.parametrize("card, name, bound", [
    ("puma", "gelu", 0.021), ("bumblebee", "gelu", 0.034), ("bolt", "gelu", 0.0095), ("nexus", "gelu", 0.001),
    ("puma", "silu", 0.073), ("bolt", "silu", 0.025), ("bumblebee", "silu", 0.067), ("nexus", "silu", 0.011),
])
def test_max_error_against_exact_matches_card(card, name, bound):
    spec = protocol_card(card).activation(name)
    err = max_error(spec.segments, F.gelu if name == "gelu" else F.silu)
    print(f"{card} {name}: max |approx - exact| on [-12, 12] = {err:.4g}")
    assert err <= bound
    assert err == pytest.approx(spec.max_abs_error, rel=1e-3)


def test_sign_polynomial_separates_far_from_zero():
    spec = protocol_card("nexus").activation("gelu").sign
    x = torch.tensor([-8.0, -1.0, 1.0, 8.0], dtype=D)
    y = sign_approx(x, spec)
    assert torch.allclose(y, torch.sign(x), atol=1e-3)
    assert abs(sign_approx(torch.tensor([0.0], dtype=D), spec).item()) < 1e-12


def test_fixed_point_rounding_and_wrap():
    x = torch.tensor([0.1, -0.3, 1.0 / 3.0], dtype=D)
    y = fixed_point(x, 12)
    assert ((y - x).abs() <= 2.0**-13).all() and torch.equal(torch.round(y * 4096), y * 4096)
    big = torch.tensor([2.0**23, 5.0], dtype=D)  # ring 2^37, 12 fraction bits: |x| < 2^24 fits
    assert not wrapped(big, 12, 37).any()
    over = torch.tensor([2.0**24 + 1, 5.0], dtype=D)
    assert wrapped(over, 12, 37).tolist() == [True, False]
    with pytest.raises(FixedPointWrapError, match="1 of 2 values exceed"):
        fixed_point(over, 12, 37)
    assert fixed_point(over, 12, 37, on_wrap="wrap")[0].item() < 0  # two's complement wrap-around
    assert fixed_point(over, 12, 37, on_wrap="clip")[0].item() == pytest.approx(2.0**24, rel=1e-9)


def test_teal_threshold_zeroes_the_requested_fraction():
    torch.manual_seed(0)
    x = torch.randn(200, 64)
    for p in (0.1, 0.25, 0.5, 0.9):
        t = calibrate_threshold(x, p)
        frac = (sparsify(x, t) == 0).float().mean().item()
        assert frac == pytest.approx(p, abs=0.01)
    assert calibrate_threshold(x, 0.0) == 0.0


@pytest.mark.parametrize("scheme", ["symmetric", "asymmetric"])
def test_fake_quant_levels_and_error(scheme):
    torch.manual_seed(0)
    x = torch.randn(8, 100)
    for bits in (4, 8):
        y = fake_quant(x, bits, scheme)
        for row_x, row_y in zip(x, y):
            levels = torch.unique(row_y).numel()
            assert levels <= 2**bits
            step = (row_x.abs().max() / (2 ** (bits - 1) - 1) if scheme == "symmetric"
                    else (row_x.max() - row_x.min()) / (2**bits - 1))
            assert (row_y - row_x).abs().max() <= step / 2 + 1e-6
    assert (fake_quant(x, 8, scheme) - x).abs().mean() < (fake_quant(x, 4, scheme) - x).abs().mean()


def test_iron_fixed_point_gelu_error_is_fixed_point_sized():
    x = torch.linspace(-6, 6, 10001, dtype=D)
    err = (fixed_point_tanh_gelu(x, 12) - F.gelu(x)).abs().max().item()
    assert 1e-5 < err < 2e-3  # tanh form vs erf (~1e-3) plus 2^-12 rounding


def test_crypten_native_silu_and_rsqrt():
    x = torch.linspace(-10, 10, 2001, dtype=D)
    assert (crypten_silu(x) - F.silu(x)).abs().max() < 5e-3
    ms = torch.tensor([0.014, 1.0, 12.0, 1056.0, 1.3e5], dtype=D)
    rel = ((normalized_rsqrt(ms) - ms.rsqrt()) / ms.rsqrt()).abs()
    assert rel.max() < 2e-3
    plain = ((newton_rsqrt(ms[:1]) - ms[:1].rsqrt()) / ms[:1].rsqrt()).abs()
    assert plain.item() > 0.1  # CrypTen's un-normalised inv_sqrt is far off below its domain


def test_card_ops_requires_calibration_for_teal(tiny_block):
    from privinf.approx.ops import CalibrationError
    ops = CardOps(protocol_card("teal-50"), "silu")
    assert ops.needs_calibration() == ["up", "down"]
    with pytest.raises(CalibrationError, match="calibrate"):
        tiny_block(torch.randn(4, 32), ops)
