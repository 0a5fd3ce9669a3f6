"""The base of every error a user can act on. The CLI prints these as one clean line (no traceback)."""


class PrivinfError(Exception):
    """A problem with the user's input or environment, with a message that says what to fix."""
