"""The Backend interface and the CostReport every backend returns.

A backend executes one :class:`~privinf.blocks.MLPBlock` on real hidden states under a
cryptographic framework (or in plaintext) with a protocol card's approximations, and reports
the outputs at both error sites plus what it cost.
"""

from __future__ import annotations

import abc
import importlib
from dataclasses import asdict, dataclass, field

import torch

from privinf.approx.ops import CardOps
from privinf.blocks import BlockOutput, MLPBlock
from privinf.cards import ProtocolCard, UnsupportedCard
from privinf.errors import UsageError


@dataclass(frozen=True)
class CostReport:
    """What one block evaluation cost. Counters a backend does not have stay None."""

    backend: str
    wall_s: float
    bytes_sent: int | None = None  # total over all parties / both directions
    rounds: int | None = None  # communication rounds (MPC)
    depth: int | None = None  # multiplicative depth (FHE)
    ring_dim: int | None = None  # CKKS poly_modulus_degree
    parties: int = 1
    per_party: tuple[dict, ...] = ()  # per-party {wall_s, bytes_sent, rounds, ...}
    extra: dict = field(default_factory=dict)  # backend-specific detail (e.g. rsqrt cost)

    @property
    def mb_sent(self) -> float | None:
        return None if self.bytes_sent is None else self.bytes_sent / 1e6

    def to_dict(self) -> dict:
        d = asdict(self)
        d["per_party"] = list(self.per_party)
        return d


@dataclass
class BlockResult:
    output: BlockOutput
    cost: CostReport


class Backend(abc.ABC):
    """Runs an MLP block under a card. Subclasses set ``name`` and ``trust`` (their security model)."""

    name: str = ""
    trust: str = ""  # one sentence: who must be trusted for what

    @abc.abstractmethod
    def check(self, card: ProtocolCard) -> None:
        """Raise :class:`UnsupportedCard` with a reason if this backend cannot run ``card``."""

    @abc.abstractmethod
    def run(self, block: MLPBlock, x: torch.Tensor, card: ProtocolCard, *, ops: CardOps | None = None,
            **options) -> BlockResult:
        """Evaluate ``block`` on hidden states ``x`` (T, C) under ``card``. ``ops`` carries plaintext
        calibration (TEAL thresholds); backends whose cards need none accept and ignore it."""

    def supports(self, card: ProtocolCard) -> bool:
        try:
            self.check(card)
        except UnsupportedCard:
            return False
        return True


# name -> "module:Class"; imported on first use so `import privinf` stays light.
_REGISTRY = {
    "plaintext": "privinf.backends.plaintext:PlaintextBackend",
    "crypten": "privinf.backends.crypten_mpc:CrypTenBackend",
    "tenseal": "privinf.backends.tenseal_ckks:TenSEALBackend",
}


def backend_names() -> list[str]:
    return list(_REGISTRY)


def get_backend(name: str, **kwargs) -> Backend:
    if name not in _REGISTRY:
        raise UsageError(f"unknown backend {name!r}; available: {', '.join(_REGISTRY)}")
    module, cls = _REGISTRY[name].split(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            raise UsageError(f"backend {name!r} is not implemented in this version of privinf") from None
        raise
    return getattr(mod, cls)(**kwargs)
