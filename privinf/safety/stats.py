"""Confidence intervals and paired comparisons (numpy + scipy only).

- rates (ASR, degenerate rate, over-refusal): Wilson score interval, 95%;
- perplexity: percentile bootstrap over the non-overlapping windows;
- two configurations on the same prompts: flips each way, McNemar's exact test (a two-sided
  binomial test on the discordant pairs, ``scipy.stats.binomtest``) and a paired percentile
  bootstrap interval of the difference in rates.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Rate:
    """``k`` of ``n`` with a 95% Wilson interval; ``value``/``lo``/``hi`` are fractions."""

    k: int
    n: int
    value: float
    lo: float
    hi: float

    def pct(self) -> str:
        if self.n == 0:
            return "-"
        return f"{100 * self.value:.1f} [{100 * self.lo:.1f}, {100 * self.hi:.1f}]"

    def to_dict(self) -> dict:
        return asdict(self)


def wilson(k: int, n: int, z: float = Z95) -> Rate:
    """Wilson score interval for ``k`` successes in ``n`` trials."""
    if n == 0:
        return Rate(0, 0, float("nan"), float("nan"), float("nan"))
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return Rate(int(k), int(n), p, min(p, max(0.0, mid - half)), max(p, min(1.0, mid + half)))


def rate(flags: Sequence[bool]) -> Rate:
    return wilson(int(sum(bool(f) for f in flags)), len(flags))


def bootstrap_ci(values: Sequence[float], stat=np.mean, n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat`` over ``values`` (resampled with replacement)."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        x = float(stat(v)) if len(v) else float("nan")
        return x, x
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(v), size=(n_boot, len(v)))
    boots = np.array([stat(v[i]) for i in idx])
    a = (1 - level) / 2
    return float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a))


@dataclass(frozen=True)
class Perplexity:
    """exp(mean NLL) over ``tokens`` tokens in ``windows`` equal windows, with a bootstrap 95% CI."""

    value: float
    lo: float
    hi: float
    windows: int
    tokens: int

    def fmt(self) -> str:
        return f"{self.value:.2f} [{self.lo:.2f}, {self.hi:.2f}]"

    def to_dict(self) -> dict:
        return asdict(self)


def perplexity_from_windows(window_nll: Sequence[float], tokens_per_window: int, seed: int = 0) -> Perplexity:
    """Perplexity from the mean NLL of each equal-length window; the CI resamples windows."""
    w = np.asarray(window_nll, dtype=float)
    lo, hi = bootstrap_ci(w, np.mean, seed=seed)
    return Perplexity(float(np.exp(w.mean())), float(np.exp(lo)), float(np.exp(hi)), len(w),
                      len(w) * tokens_per_window)


@dataclass(frozen=True)
class Paired:
    """A vs B on the same prompts: B - A in rate, flips each way, McNemar exact p, bootstrap CI."""

    n: int
    rate_a: float
    rate_b: float
    to_success: int  # prompts where A failed and B succeeded (e.g. refused -> answered)
    to_failure: int  # prompts where A succeeded and B failed (answered -> refused)
    diff: float
    diff_lo: float
    diff_hi: float
    p_mcnemar: float

    def fmt(self) -> str:
        return (f"{100 * self.diff:+.1f} pts [{100 * self.diff_lo:+.1f}, {100 * self.diff_hi:+.1f}], "
                f"flips +{self.to_success}/-{self.to_failure}, McNemar p={self.p_mcnemar:.3g}")

    def to_dict(self) -> dict:
        return asdict(self)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for discordant counts ``b`` and ``c``."""
    if b + c == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(min(b, c), b + c, 0.5, alternative="two-sided").pvalue)


def paired(a: Sequence[bool], b: Sequence[bool], n_boot: int = 2000, seed: int = 0) -> Paired:
    """Paired comparison of two outcome vectors over the same prompts (same order)."""
    a_ = np.asarray(a, dtype=bool)
    b_ = np.asarray(b, dtype=bool)
    if a_.shape != b_.shape:
        raise ValueError(f"paired comparison needs the same prompts: {a_.size} vs {b_.size} outcomes")
    n = a_.size
    up, down = int((~a_ & b_).sum()), int((a_ & ~b_).sum())
    d = b_.astype(float) - a_.astype(float)
    lo, hi = bootstrap_ci(d, np.mean, n_boot=n_boot, seed=seed)
    return Paired(n, float(a_.mean()) if n else float("nan"), float(b_.mean()) if n else float("nan"),
                  up, down, float(d.mean()) if n else float("nan"), lo, hi, mcnemar_exact(up, down))


def spread(values: Sequence[float]) -> dict:
    """Mean, sample standard deviation, min and max over seeds."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    if not len(v):
        return {"mean": float("nan"), "sd": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "n": int(len(v))}
