"""The errors a user can act on. The CLI prints each as one line ("Error: <what to fix>"), without a
traceback (``PRIVINF_DEBUG=1`` shows it), and exits with the error's ``exit_code``:

- :class:`UsageError` (exit 2): the input is wrong: a bad option value, an unknown card or model, a
  missing or malformed file, a layer range the model does not have. Raised before any model loads.
- :class:`RuntimeFault` (exit 1): the input was fine but the run failed: a peer died, a party process
  failed, a fixed-point value wrapped around the ring.

Messages name the option (or the file and field), the value, and what is allowed.
"""


class PrivinfError(Exception):
    """A problem with the user's input or environment, with a message that says what to fix."""

    exit_code = 1


class UsageError(PrivinfError, ValueError):
    """Bad input: an option value, card, model, file or layer range (CLI exit code 2)."""

    exit_code = 2


class RuntimeFault(PrivinfError, RuntimeError):
    """A run that failed on valid input: a peer died, a party crashed (CLI exit code 1)."""

    exit_code = 1


class LayerRangeError(UsageError, IndexError):
    """A decoder layer index the model does not have (or an empty/reversed layer range)."""
