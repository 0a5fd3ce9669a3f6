"""The emulator: hookpoints of every architecture, exact-card equivalence, noise, cards in exact mode."""

import dataclasses
import math

import pytest
import torch

from conftest import assert_close
from privinf.emulator import HookpointError, calibrate_card, capture_sites, emulate, measure_site_std

ARCHS = ["llama", "mistral", "mixtral", "qwen2", "phi3", "gemma", "gemma2", "gpt2"]


def _model(arch):
    from privinf.models import tiny_model
    m = tiny_model(arch, seed=0)
    if arch == "mixtral":  # grouped_mm rejects the odd test width 37; eager runs the same hooks
        m.set_experts_implementation("eager")
    return m


def _ids(seed=0, shape=(2, 11)):
    return torch.randint(3, 99, shape, generator=torch.Generator().manual_seed(seed))


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("arch", ARCHS)
def test_hooks_resolve_fire_and_leave(arch):
    model, ids = _model(arch), _ids()
    before = _hook_count(model)
    with torch.no_grad():
        ref = model(ids).logits
        with emulate(model, "gaussian", scale=0.05, seed=1) as h:
            assert _hook_count(model) == before + 2 * model.config.num_hidden_layers
            noisy = model(ids).logits
    assert _hook_count(model) == before
    layers = model.config.num_hidden_layers
    assert set(h.calls_by_site) == {(l, s) for l in range(layers) for s in ("up", "down")}
    if arch == "mixtral":  # the down site fires once per routed expert
        assert all(h.calls_by_site[(l, "down")] >= 1 for l in range(layers))
    else:
        assert h.calls == 2 * layers
    assert not torch.equal(ref, noisy)


@pytest.mark.parametrize("arch", ARCHS)
def test_exact_card_is_bit_for_bit(arch):
    model, ids = _model(arch), _ids()
    with torch.no_grad():
        ref = model(ids).logits
        with emulate(model, "exact", card="exact") as h:
            got = model(ids).logits
    assert h.calls > 0
    assert torch.equal(ref, got)


@pytest.mark.parametrize("arch", ARCHS)
def test_approximate_card_changes_logits_a_little(arch):
    model, ids = _model(arch), _ids()
    card = "puma" if arch in ("llama", "mistral", "mixtral", "qwen2", "phi3") else "bolt"
    with torch.no_grad():
        ref = model(ids).logits
        with emulate(model, "exact", card=card):
            got = model(ids).logits
    err = float((got - ref).abs().max())
    assert 0 < err < 0.1 * float(ref.abs().max())


def test_hooks_removed_on_error(tiny_llama):
    before = _hook_count(tiny_llama)
    with pytest.raises(RuntimeError, match="boom"):
        with emulate(tiny_llama, "laplace", scale=0.1):
            raise RuntimeError("boom")
    assert _hook_count(tiny_llama) == before


def test_unresolved_module_name_raises(tiny_llama, monkeypatch):
    from privinf.emulator import hookpoints
    bad = dataclasses.replace(hookpoints.ARCHITECTURES["llama"], down="mlp.no_such_proj")
    monkeypatch.setitem(hookpoints.ARCHITECTURES, "llama", bad)
    before = _hook_count(tiny_llama)
    with pytest.raises(HookpointError, match="no_such_proj"):
        with emulate(tiny_llama, "gaussian", scale=0.1):
            pass
    assert _hook_count(tiny_llama) == before


def test_bad_arguments_raise(tiny_llama):
    with pytest.raises(ValueError, match="mode"):
        with emulate(tiny_llama, "uniform", scale=0.1):
            pass
    with pytest.raises(ValueError, match="scale"):
        with emulate(tiny_llama, "gaussian"):
            pass
    with pytest.raises(IndexError, match="out of range"):
        with emulate(tiny_llama, "gaussian", scale=0.1, layers=[5]):
            pass
    with pytest.raises(ValueError, match="card"):
        with emulate(tiny_llama, "exact"):
            pass


def test_noise_is_seeded(tiny_llama):
    ids = _ids()

    def run(seed):
        with torch.no_grad(), emulate(tiny_llama, "gaussian", scale=0.1, seed=seed, layers=[0]):
            return tiny_llama(ids).logits

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


@pytest.mark.parametrize("mode,stat", [("gaussian", "std"), ("laplace", "mean_abs")])
def test_noise_has_the_requested_scale(tiny_llama, mode, stat):
    ids = _ids(shape=(4, 64))
    clean = capture_sites(tiny_llama, ids, layers=[1])
    with emulate(tiny_llama, mode, scale={"up": 0.05, "down": 0.02}, layers=[1]) as h:
        noisy = capture_sites(tiny_llama, ids, layers=[1])  # registered after: sees the noisy values
    assert h.noise == {(1, "up"): (mode, 0.05), (1, "down"): (mode, 0.02)}
    for site, want in (("up", 0.05), ("down", 0.02)):
        e = noisy[(1, site)] - clean[(1, site)]
        got = float(e.std() if stat == "std" else e.abs().mean())
        assert abs(got / want - 1) < 0.08, (site, got, want)


def test_only_chosen_sites_and_layers(tiny_llama):
    ids = _ids()
    clean = capture_sites(tiny_llama, ids)
    with emulate(tiny_llama, "gaussian", scale=0.1, layers=[1], sites=("down",)) as h:
        noisy = capture_sites(tiny_llama, ids)
    assert set(h.calls_by_site) == {(1, "down")}
    for key in [(0, "up"), (0, "down"), (1, "up")]:
        assert torch.equal(clean[key], noisy[key]), key
    assert not torch.equal(clean[(1, "down")], noisy[(1, "down")])


def test_relative_scales(tiny_llama):
    batch = {"input_ids": _ids(), "attention_mask": torch.ones(2, 11, dtype=torch.long)}
    batch["attention_mask"][1, 7:] = 0  # padding is skipped
    std = measure_site_std(tiny_llama, batch)
    assert set(std) == {(l, s) for l in (0, 1) for s in ("up", "down")}
    valid = capture_sites(tiny_llama, batch)
    assert valid[(0, "up")].shape[0] == 11 + 7
    assert std[(0, "up")] == pytest.approx(float(valid[(0, "up")].std()), rel=1e-4)
    with emulate(tiny_llama, "gaussian", scale=0.5, relative_to=std) as h:
        pass
    assert h.noise[(1, "down")] == ("gaussian", pytest.approx(0.5 * std[(1, "down")]))


@pytest.mark.parametrize("card", ["bolt", "puma", "iron", "nexus", "bumblebee", "crypten",
                                  "smoothquant-a4", "omniquant-a8", "teal-50"])
def test_exact_mode_reproduces_the_plaintext_block(tiny_llama, card):
    """At one layer on the same input, the hooked model computes what CardOps computes on the block."""
    from privinf.approx.ops import CardOps
    from privinf.blocks import MLPBlock
    from privinf.cards import protocol_card
    from privinf.emulator.measure import capture_block_inputs

    ids, layer = _ids(shape=(1, 40)), 1
    cal = calibrate_card(tiny_llama, card, ids, layers=[layer])
    x = capture_block_inputs(tiny_llama, [ids], [layer])[layer]
    block = MLPBlock.from_model(tiny_llama, layer)
    ops = CardOps(protocol_card(card), block.activation)
    ops.thresholds.update({s: t for (_, s), t in cal.items()})
    with torch.no_grad():
        want = block(x, ops)
    with emulate(tiny_llama, "exact", card=card, layers=[layer], calibration=cal):
        got = capture_sites(tiny_llama, ids, layers=[layer])
    step = 2.0 ** -(protocol_card(card).fraction_bits or 30)
    for site in ("up", "down"):
        diff = (got[(layer, site)] - getattr(want, site)).abs()
        assert float(diff.mean()) < 1e-5 + step / 10, (site, float(diff.mean()))
        assert_close(got[(layer, site)], getattr(want, site), atol=1e-4 + 2 * step, what=site)


def test_sparsity_card_needs_calibration(tiny_llama):
    from privinf.approx.ops import CalibrationError
    with pytest.raises(CalibrationError, match="calibrate_card"):
        with emulate(tiny_llama, "exact", card="teal-25"):
            pass
    cal = calibrate_card(tiny_llama, "teal-25", _ids(), layers=[0])
    assert set(cal) == {(0, "up"), (0, "down")}
    got = {}
    with emulate(tiny_llama, "exact", card="teal-25", layers=[0], calibration=cal):
        got = capture_sites(tiny_llama, _ids(), layers=[0])
    assert 0.2 < float((got[(0, "down")] == 0).float().mean()) < 0.3


def test_bfloat16_model_keeps_dtype():
    model = _model("llama").to(torch.bfloat16)
    ids = _ids()
    for kwargs in (dict(mode="gaussian", scale=0.05), dict(mode="exact", card="bolt")):
        with torch.no_grad(), emulate(model, **kwargs) as h:
            out = model(ids).logits
        assert out.dtype == torch.bfloat16 and torch.isfinite(out).all() and h.calls == 4


def test_generate_with_emulator(tiny_llama):
    ids = _ids(shape=(1, 5))
    with emulate(tiny_llama, "laplace", scale=0.01, layers=[0]) as h:
        out = tiny_llama.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 9) and h.calls == 2 * 4


@pytest.mark.parametrize("card", ["bolt", "crypten", "iron"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fast_fixed_point_equals_cardops(card, dtype):
    from privinf.approx.ops import CardOps
    from privinf.cards import protocol_card
    from privinf.emulator.core import fast_fixed_point

    ops = CardOps(protocol_card(card), "silu")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, generator=g) * torch.logspace(-6, 9, 4000)
    x = torch.cat([x, torch.tensor([0.5, -0.5, 1.5, 2.0 ** -13, -(2.0 ** -13), 3 * 2.0 ** -17])]).to(dtype)
    assert torch.equal(fast_fixed_point(ops)(x), ops.fp(x))


def test_device_map_auto_model(tmp_path):
    """A model loaded with device_map="auto" (accelerate hooks on its modules) emulates the same."""
    from transformers import AutoModelForCausalLM

    plain = _model("llama")
    plain.save_pretrained(tmp_path)
    mapped = AutoModelForCausalLM.from_pretrained(str(tmp_path), device_map="auto").eval()
    ids = _ids()
    with torch.no_grad():
        for kwargs in (dict(mode="exact", card="bolt"), dict(mode="gaussian", scale=0.05, seed=2)):
            with emulate(plain, **kwargs):
                want = plain(ids).logits
            with emulate(mapped, **kwargs) as h:
                got = mapped(ids.to(mapped.get_input_embeddings().weight.device)).logits
            assert h.calls == 4
            assert_close(got.cpu(), want, atol=1e-5, what=str(kwargs))


def _same_bits(got, want) -> bool:
    """Equal bit for bit, except that NaNs only need to sit in the same places (payloads vary)."""
    got = torch.as_tensor(got, dtype=torch.float32).reshape(-1)
    want = want.reshape(-1)
    nan = want.isnan()
    return torch.equal(got.isnan(), nan) and torch.equal(got[~nan].view(torch.int32), want[~nan].view(torch.int32))


def _extremes() -> torch.Tensor:
    """Zeros of both signs, infinities, NaN, float32's largest and smallest, every shipped breakpoint
    and powers of 4, each with its two float32 neighbours."""
    pts = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan"), 3.4e38, -3.4e38, 1e36, -1e36,
                        1e20, -1e20, 1e-45, -1e-45, 1e-30, 2.7, -2.7, 5.4, -5.4, 3.0, 6.0, -1.95, -1.97, -3.94,
                        -4.0, 4.0, -5.0, -8.0, -10.0, 0.25, 1.0, 16.0, 4.0 ** -8, 4.0 ** 11])
    return torch.cat([pts, torch.nextafter(pts, torch.tensor(float("inf"))),
                      torch.nextafter(pts, torch.tensor(float("-inf")))])


MPC_CARDS = ["bolt", "iron", "bumblebee", "puma", "crypten"]


@pytest.mark.parametrize("card", MPC_CARDS + ["nexus-core", "exact"])
@pytest.mark.parametrize("act", ["silu", "gelu"])
def test_fast_ops_equal_cardops_bit_for_bit(card, act):
    """The exact mode's fast evaluators (privinf/emulator/fast.py) give CardOps's float32 values."""
    from privinf.approx.ops import CardOps
    from privinf.cards import protocol_card
    from privinf.emulator.fast import FastOps

    ops = CardOps(protocol_card(card), act)
    fast = FastOps(ops)
    if card in MPC_CARDS:  # the fast forms are in use, not the CardOps fallbacks
        assert fast.act != ops.act and fast.rsqrt != ops.rsqrt
    g = torch.Generator().manual_seed(1)
    n = 6000
    x = torch.randn(n, generator=g) * torch.logspace(-4, 3, n)[torch.randperm(n, generator=g)]
    x = torch.cat([x, _extremes()])
    assert _same_bits(fast.act(x), ops.act(x))
    small = x[x.abs() < 30][:3000]  # some fast forms hand far-out inputs to CardOps: check them on their own
    assert _same_bits(fast.act(small), ops.act(small))
    strided = small.view(3, -1)[:, 1:]
    assert _same_bits(fast.act(strided), ops.act(strided))
    with torch.no_grad():  # the torch form (other devices, or tensors that need grad)
        assert _same_bits(fast.act(x.clone().requires_grad_()), ops.act(x))
    assert _same_bits(fast.act(x.view(3, -1)[:, 1:]), ops.act(x.view(3, -1)[:, 1:]))  # strided
    assert _same_bits(fast.fp(x * 1e3), ops.fp(x * 1e3))
    # rsqrt: one value (the decode step, NumPy scalars), a few, and enough for torch's vector loop
    edges = torch.tensor([4.0 ** j * (1 + d) for j in range(-9, 12)  # the range reduction's edges
                          for d in (2 ** -15, -2 ** -15, 2 ** -16, -2 ** -16, 2 ** -20, -2 ** -20)])
    ms = torch.cat([torch.logspace(-12, 12, 300), 4 * torch.rand(100, generator=g), edges, _extremes(), -x[:20]])
    for v in ms:
        one = v.view(1, 1, 1)
        assert _same_bits(fast.rsqrt(one), ops.rsqrt(one)), float(v)
    for shape in [(1, 7, 1), (2, 40, 1), (ms.numel(),)]:
        k = math.prod(shape)
        for start in range(0, ms.numel() - k + 1, max(k, 13)):
            chunk = ms[start:start + k].reshape(shape)
            assert _same_bits(fast.rsqrt(chunk), ops.rsqrt(chunk)), (shape, start)


@pytest.mark.parametrize("card", MPC_CARDS)
def test_fast_exact_mode_equals_cardops_mode(tiny_llama, card, monkeypatch):
    """End to end: generation under the fast hooks gives the logits of hooks calling CardOps."""
    from privinf.emulator import core

    class Reference:  # FastOps's interface, CardOps's functions
        def __init__(self, ops):
            self.ops, self.card, self.site = ops, ops.card, ops.site
            self.fp, self.act, self.rsqrt = ops.fp, ops.act, ops.rsqrt

        def norm(self, view, x):
            return self.fp(view.norm(self.fp(x), self))

    def run():
        with torch.no_grad(), emulate(tiny_llama, "exact", card=card):
            out = tiny_llama.generate(_ids(shape=(1, 6)), max_new_tokens=3, do_sample=False, pad_token_id=0,
                                      output_logits=True, return_dict_in_generate=True)
        return torch.stack(out.logits)

    fast = run()
    monkeypatch.setattr(core, "FastOps", Reference)
    assert torch.equal(fast, run())


@pytest.mark.parametrize("card", MPC_CARDS)
@pytest.mark.parametrize("kind,bias", [("rms", False), ("layer", True)])
def test_fast_norm_equals_block_norm(card, kind, bias):
    """The up site's norm on NumPy equals fp(MLPBlock.norm(fp(x))) under CardOps, bit for bit."""
    from privinf.approx.ops import CardOps
    from privinf.cards import protocol_card
    from privinf.emulator.core import _NormView
    from privinf.emulator.fast import FastOps

    ops = CardOps(protocol_card(card), "silu")
    g = torch.Generator().manual_seed(2)
    c = 37
    view = _NormView(torch.randn(c, generator=g) + 1, torch.randn(c, generator=g) if bias else None, kind, 1e-5)
    for shape, scale in [((1, 1, c), 1.0), ((1, 1, c), 300.0), ((1, 1, c), 1e-3), ((2, 9, c), 5.0)]:
        x = torch.randn(shape, generator=g) * scale
        want = ops.fp(view.norm(ops.fp(x), ops))
        assert _same_bits(FastOps(ops).norm(view, x), want), (shape, scale)


@pytest.mark.parametrize("card", ["nexus", "bolt", "smoothquant-a8"])
def test_straight_through_exact_mode_has_the_cards_values_and_the_clean_gradient(tiny_llama, card):
    """For training under a card: forward values are exact mode's; backward treats the card's error
    as a constant, so the gradient is the clean model's evaluated at the card's activations."""
    ids = _ids(shape=(2, 16))
    with torch.no_grad():
        clean = tiny_llama(ids).logits
        with emulate(tiny_llama, "exact", card=card, layers=[0, 1]):
            want = tiny_llama(ids).logits
    tiny_llama.zero_grad()
    with emulate(tiny_llama, "exact", card=card, layers=[0, 1], straight_through=True) as h:
        got = tiny_llama(ids).logits
        got.float().pow(2).mean().backward()
    assert set(h.calls_by_site) == {(l, s) for l in (0, 1) for s in ("up", "down")}
    assert (want - clean).abs().max() > 1e-4  # the card changes the model
    torch.testing.assert_close(got.detach(), want, rtol=1e-5, atol=1e-5)  # old + (new - old) rounds once
    grads = [p.grad for p in tiny_llama.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # the first layer's W_up sees gradient through the card's hooks (they do not cut the graph)
    assert tiny_llama.model.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0
    tiny_llama.zero_grad()
    with pytest.raises(ValueError, match="straight_through"):
        with emulate(tiny_llama, "gaussian", scale=0.1, straight_through=True):
            pass
