"""The plaintext emulator: a protocol card, a measured error profile or explicit noise applied to
any Hugging Face causal LM at full scale, through forward hooks (see :func:`emulate`)."""

from privinf.emulator.core import MODES, EmulatorHandle, emulate
from privinf.emulator.hookpoints import SITES, HookpointError, resolve
from privinf.emulator.measure import calibrate_card, capture_sites, measure_site_std

__all__ = ["MODES", "SITES", "EmulatorHandle", "HookpointError", "calibrate_card", "capture_sites",
           "emulate", "measure_site_std", "resolve"]
