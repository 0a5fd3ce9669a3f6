"""Protocol and model cards: TOML files validated into frozen dataclasses.

A *protocol card* (``protocols/<name>.toml``) names one approximation technique: how each
non-linearity is approximated, at what precision, on which backends, with its citation and the
paper's reference figures. A *model card* (``models/<name>.toml``) names a model: where its
weights come from, its architecture, its sensitive layers and the paper's MVA values.

Every validation failure raises :class:`CardError` naming the file, the field and what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privinf.emulator.hookpoints import ARCHITECTURES as HOOK_TABLE
from privinf.emulator.hookpoints import SITES
from privinf.errors import UsageError
from privinf.tomlreader import CardError, TomlReader, read_toml

# --------------------------------------------------------------------------------------------
# where cards live

_REPO_ROOT = Path(__file__).resolve().parent.parent


def data_dir(kind: str) -> Path:
    """Folder of shipped cards, ``kind`` in {"protocols", "models"}.

    Works from a source checkout (top-level ``protocols/``) and from a wheel, where the folders
    are force-included as ``privinf/_data/<kind>``.
    """
    for candidate in (Path(__file__).resolve().parent / "_data" / kind, _REPO_ROOT / kind):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"privinf data folder {kind!r} not found (broken install?)")


class UnsupportedCard(UsageError):
    """A backend cannot run this card (e.g. an FHE-only polynomial on MPC); each engine's
    ``check_card`` (:mod:`privinf.mpc.check`, :mod:`privinf.fhe.check`) says why."""


# --------------------------------------------------------------------------------------------
# protocol cards

ACTIVATIONS = ("gelu", "silu")
ACT_METHODS = ("exact", "piecewise", "fixed-point-tanh", "crypten-native")
RSQRT_METHODS = ("exact", "newton", "newton-normalized")
SITE_METHODS = ("none", "sparsify", "fake-quant")
QUANT_SCHEMES = ("symmetric", "asymmetric")
BACKENDS = ("plaintext", "crypten", "tenseal")
KINDS = ("exact", "mpc", "fhe", "sparsity", "quantization")
COMPARISONS = ("exact", "sign-polynomial")


@dataclass(frozen=True)
class Segment:
    """One piece of a piecewise polynomial on ``[lo, hi)``.

    Value = sum_k coeffs[k] * x**k + sum_k abs_coeffs[k] * |x|**k (ascending powers).
    ``abs_coeffs`` expresses BOLT's even-in-|x| form without expanding it.
    """

    lo: float
    hi: float
    coeffs: tuple[float, ...] = ()
    abs_coeffs: tuple[float, ...] = ()

    @property
    def degree(self) -> int:
        return max(len(self.coeffs), len(self.abs_coeffs)) - 1


@dataclass(frozen=True)
class SignPolynomial:
    """Composite odd polynomials approximating sign(x) on [-1, 1] (NEXUS / Lee et al.).

    The interval test sign(x - t) is computed as g^(g_times) then f^(f_times) applied to
    (x - t) / input_bound, each polynomial given by ascending coefficients.
    """

    f: tuple[float, ...]
    g: tuple[float, ...]
    f_times: int
    g_times: int
    input_bound: float


@dataclass(frozen=True)
class ActivationSpec:
    """How one non-linearity (gelu or silu) is evaluated under a card."""

    method: str
    segments: tuple[Segment, ...] = ()
    comparison: str = "exact"
    sign: SignPolynomial | None = None
    fraction_bits: int | None = None  # fixed-point-tanh: precision of every intermediate
    derived_by: str = "published"  # "published" or "privinf" (fitted here)
    max_abs_error: float | None = None  # recorded max |approx - exact| over the domain
    domain: tuple[float, float] = (-8.0, 8.0)
    note: str = ""

    @property
    def breakpoints(self) -> tuple[float, ...]:
        return tuple(s.lo for s in self.segments[1:])

    @property
    def degree(self) -> int:
        return max((s.degree for s in self.segments), default=1)


@dataclass(frozen=True)
class RsqrtSpec:
    """The RMSNorm inverse square root."""

    method: str = "exact"
    iterations: int = 3
    initial: str = "crypten"  # initial guess y0 = 2.2 * exp(-(x/2 + 0.2)) + 0.2 - x/1024


@dataclass(frozen=True)
class SoftmaxSpec:
    """The attention softmax (whole-model runs): exp of t = x - max <= 0, reciprocal of the sum.

    The default is CrypTen's own exp, for cards that name none (``source`` says).
    """

    exp: str = "limit"  # (1 + t / 2**n) ** (2**n) by n squarings
    exp_iterations: int = 8  # n (CrypTen's functions.exp_iterations)
    reciprocal: str = "newton"  # range reduction to [1, 2), linear guess, Newton (privinf.mpc.softmax)
    reciprocal_iterations: int = 3
    source: str = "CrypTen's own (the card names no softmax)"


@dataclass(frozen=True)
class SiteSpec:
    """A transform at one site (before W_up or before W_down): TEAL sparsity or fake-quant."""

    method: str = "none"
    sparsity: float | None = None
    bits: int | None = None
    scheme: str | None = None


@dataclass(frozen=True)
class Reference:
    """The paper's figures for this technique (Llama-3.1-8B-Instruct), for side-by-side reports."""

    table1_speedup: float | None = None
    table1_baseline: str | None = None
    error_up_std: float | None = None  # Gaussian std of the error before W_up
    error_down_b: float | None = None  # Laplace scale of the error before W_down
    clip_up: float | None = None  # TEAL: |x| threshold before W_up
    clip_down: float | None = None
    ppl: float | None = None
    asr: float | None = None  # percent
    source: str = "arXiv 2502.00840, Tables 1-2"


@dataclass(frozen=True)
class ProtocolCard:
    name: str
    title: str
    kind: str
    backends: tuple[str, ...]
    citation: str
    description: str
    activations: dict[str, ActivationSpec]
    rsqrt: RsqrtSpec
    sites: dict[str, SiteSpec]
    fraction_bits: int | None  # fixed-point precision (MPC); None = floating point
    ring_bits: int | None
    ckks_scale_bits: int | None
    reference: Reference
    path: str = ""
    softmax: SoftmaxSpec = SoftmaxSpec()

    def activation(self, name: str) -> ActivationSpec:
        """The spec for ``name`` (gelu/silu); ``exact`` if the card leaves it alone."""
        return self.activations.get(name, ActivationSpec(method="exact"))

    def runs_on(self, backend: str) -> bool:
        return backend in self.backends


def _segments(r: TomlReader) -> tuple[Segment, ...]:
    raw = r.get("segments", list)
    segs = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise r.fail(f"segments[{i}]", "must be a table with lo, hi, coeffs")
        s = TomlReader(r.path, item, f"{r.prefix}segments[{i}].")
        s.check_unknown({"lo", "hi", "coeffs", "abs_coeffs"})
        seg = Segment(s.get("lo", float), s.get("hi", float), s.floats("coeffs", ()), s.floats("abs_coeffs", ()))
        if not seg.lo < seg.hi:
            raise s.fail("hi", f"must be greater than lo ({seg.lo} >= {seg.hi})")
        segs.append(seg)
    if not segs:
        raise r.fail("segments", "must list at least one segment")
    if segs[0].lo != -math.inf or segs[-1].hi != math.inf:
        raise r.fail("segments", "must cover the real line: first lo = -inf, last hi = inf")
    for i, (a, b) in enumerate(zip(segs, segs[1:])):
        if a.hi != b.lo:
            raise r.fail(f"segments[{i + 1}].lo", f"must equal the previous segment's hi ({a.hi}), got {b.lo}")
    return tuple(segs)


def _activation(r: TomlReader) -> ActivationSpec:
    r.check_unknown({"method", "segments", "comparison", "sign", "fraction_bits", "derived_by",
                     "max_abs_error", "domain", "note"})
    method = r.get("method", str, choices=ACT_METHODS)
    segments = _segments(r) if method == "piecewise" else ()
    comparison = r.get("comparison", str, "exact", choices=COMPARISONS)
    sign = None
    if comparison == "sign-polynomial":
        s = r.sub("sign")
        s.check_unknown({"f", "g", "f_times", "g_times", "input_bound"})
        sign = SignPolynomial(s.floats("f"), s.floats("g"), s.get("f_times", int),
                              s.get("g_times", int), s.get("input_bound", float))
    fraction_bits = r.get("fraction_bits", int, None)
    if method == "fixed-point-tanh" and fraction_bits is None:
        raise r.fail("fraction_bits", "is required for method 'fixed-point-tanh'")
    domain = r.floats("domain", (-8.0, 8.0))
    if len(domain) != 2 or domain[0] >= domain[1]:
        raise r.fail("domain", f"must be [lo, hi] with lo < hi, got {list(domain)}")
    return ActivationSpec(
        method=method, segments=segments, comparison=comparison, sign=sign,
        fraction_bits=fraction_bits,
        derived_by=r.get("derived_by", str, "published", choices=("published", "privinf")),
        max_abs_error=r.get("max_abs_error", float, None), domain=(domain[0], domain[1]),
        note=r.get("note", str, ""),
    )


def _site(r: TomlReader) -> SiteSpec:
    r.check_unknown({"method", "sparsity", "bits", "scheme"})
    method = r.get("method", str, "none", choices=SITE_METHODS)
    spec = SiteSpec(method=method, sparsity=r.get("sparsity", float, None),
                    bits=r.get("bits", int, None), scheme=r.get("scheme", str, None, choices=QUANT_SCHEMES))
    if method == "sparsify" and not (spec.sparsity is not None and 0.0 <= spec.sparsity < 1.0):
        raise r.fail("sparsity", f"must be a fraction in [0, 1) for method 'sparsify', got {spec.sparsity!r}")
    if method == "fake-quant":
        if spec.bits is None or not 2 <= spec.bits <= 16:
            raise r.fail("bits", f"must be an integer in [2, 16] for method 'fake-quant', got {spec.bits!r}")
        if spec.scheme is None:
            raise r.fail("scheme", f"is required for method 'fake-quant'; allowed: {', '.join(QUANT_SCHEMES)}")
    return spec


def load_protocol_card(path: str | Path) -> ProtocolCard:
    """Load and validate one protocol card file."""
    path = Path(path)
    r = TomlReader(path, read_toml(path))
    r.check_unknown({"name", "title", "kind", "backends", "citation", "description", "activations",
                     "rsqrt", "sites", "precision", "reference", "softmax"})
    name = r.get("name", str)
    if name != path.stem:
        raise r.fail("name", f"is {name!r} but the file is {path.name}; they must match")
    backends = r.get("backends", list)
    for b in backends:
        if b not in BACKENDS:
            raise r.fail("backends", f"names {b!r}; allowed: {', '.join(BACKENDS)}")
    acts_r = r.sub("activations")
    acts_r.check_unknown(set(ACTIVATIONS))
    activations = {a: _activation(acts_r.sub(a)) for a in ACTIVATIONS if a in acts_r.table}
    rs = r.sub("rsqrt")
    rs.check_unknown({"method", "iterations", "initial"})
    rsqrt = RsqrtSpec(rs.get("method", str, "exact", choices=RSQRT_METHODS),
                      rs.get("iterations", int, 3), rs.get("initial", str, "crypten", choices=("crypten",)))
    sm = r.sub("softmax")
    sm.check_unknown(set(SoftmaxSpec.__dataclass_fields__))
    softmax = SoftmaxSpec(sm.get("exp", str, "limit", choices=("limit",)), sm.get("exp_iterations", int, 8),
                          sm.get("reciprocal", str, "newton", choices=("newton",)),
                          sm.get("reciprocal_iterations", int, 3), sm.get("source", str, SoftmaxSpec.source))
    if not 1 <= softmax.exp_iterations <= 16:
        raise sm.fail("exp_iterations", f"must be in 1..16, got {softmax.exp_iterations}")
    sites_r = r.sub("sites")
    sites_r.check_unknown(set(SITES))
    sites = {s: _site(sites_r.sub(s)) for s in SITES}
    pr = r.sub("precision")
    pr.check_unknown({"fraction_bits", "ring_bits", "ckks_scale_bits"})
    fraction_bits, ring_bits = pr.get("fraction_bits", int, None), pr.get("ring_bits", int, None)
    if ring_bits is not None and (fraction_bits is None or not fraction_bits < ring_bits <= 64):
        raise pr.fail("ring_bits", f"must satisfy fraction_bits < ring_bits <= 64, got {ring_bits}")
    ref = r.sub("reference")
    ref.check_unknown(set(Reference.__dataclass_fields__))
    reference = Reference(**{k: ref.get(k, str if k in ("table1_baseline", "source") else float,
                                        Reference.__dataclass_fields__[k].default)
                             for k in ref.table})
    return ProtocolCard(
        name=name, title=r.get("title", str), kind=r.get("kind", str, choices=KINDS),
        backends=tuple(backends), citation=r.get("citation", str), description=r.get("description", str, ""),
        activations=activations, rsqrt=rsqrt, sites=sites, fraction_bits=fraction_bits, ring_bits=ring_bits,
        ckks_scale_bits=pr.get("ckks_scale_bits", int, None), reference=reference, path=str(path), softmax=softmax,
    )


# --------------------------------------------------------------------------------------------
# model cards

ARCHITECTURES = tuple(HOOK_TABLE)  # a model card may name any architecture the emulator can hook
DEFAULT_MODEL = "smollm2-135m-instruct"  # the model card every command uses unless told otherwise
SOURCES = ("package-gguf", "huggingface")


@dataclass(frozen=True)
class ModelCard:
    name: str
    title: str
    hf_id: str
    architecture: str
    activation: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    sensitive_layers: tuple[int, ...]
    source: str
    package: str | None = None
    package_path: str | None = None
    mva_up_std: float | None = None  # paper Table 3, Gaussian std before W_up
    mva_down_b: float | None = None  # paper Table 3, Laplace scale before W_down
    aligned: bool = True
    note: str = ""
    path: str = ""


def load_model_card(path: str | Path) -> ModelCard:
    """Load and validate one model card file."""
    path = Path(path)
    r = TomlReader(path, read_toml(path))
    r.check_unknown(set(ModelCard.__dataclass_fields__) - {"path"})
    name = r.get("name", str)
    if name != path.stem:
        raise r.fail("name", f"is {name!r} but the file is {path.name}; they must match")
    source = r.get("source", str, choices=SOURCES)
    layers = r.get("sensitive_layers", list)
    num_layers = r.get("num_layers", int)
    if not all(isinstance(i, int) and 0 <= i < num_layers for i in layers):
        raise r.fail("sensitive_layers", f"must be layer indices in [0, {num_layers}), got {layers!r}")
    card = ModelCard(
        name=name, title=r.get("title", str), hf_id=r.get("hf_id", str),
        architecture=r.get("architecture", str, choices=ARCHITECTURES),
        activation=r.get("activation", str, choices=ACTIVATIONS),
        hidden_size=r.get("hidden_size", int), intermediate_size=r.get("intermediate_size", int),
        num_layers=num_layers, sensitive_layers=tuple(layers), source=source,
        package=r.get("package", str, None), package_path=r.get("package_path", str, None),
        mva_up_std=r.get("mva_up_std", float, None), mva_down_b=r.get("mva_down_b", float, None),
        aligned=r.get("aligned", bool, True), note=r.get("note", str, ""), path=str(path),
    )
    if source == "package-gguf" and not (card.package and card.package_path):
        raise r.fail("package", "and package_path are required when source = 'package-gguf'")
    return card


# --------------------------------------------------------------------------------------------
# registries


def _names(kind: str) -> list[str]:
    return sorted(p.stem for p in data_dir(kind).glob("*.toml"))


def protocol_names() -> list[str]:
    return _names("protocols")


def model_names() -> list[str]:
    return _names("models")


def _resolve(kind: str, name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        return p
    path = data_dir(kind) / f"{name_or_path}.toml"
    if not path.exists():
        known = ", ".join(_names(kind))
        raise CardError(path, "<name>", f"no {kind[:-1]} card named {str(name_or_path)!r}; known: {known}")
    return path


def protocol_card(name_or_path: str | Path) -> ProtocolCard:
    """A shipped protocol card by name (``bolt``) or any card file by path."""
    return load_protocol_card(_resolve("protocols", name_or_path))


def model_card(name_or_path: str | Path) -> ModelCard:
    """A shipped model card by name (``smollm2-135m-instruct``) or any card file by path."""
    return load_model_card(_resolve("models", name_or_path))


def all_protocol_cards() -> list[ProtocolCard]:
    return [protocol_card(n) for n in protocol_names()]


def all_model_cards() -> list[ModelCard]:
    return [model_card(n) for n in model_names()]
