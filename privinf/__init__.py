"""privinf: private-inference simulation for the safety of approximated LLMs."""

__version__ = "0.1.0"
