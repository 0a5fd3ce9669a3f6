"""Two-party MPC machinery on CrypTen: import shim, activation primitives, one party's protocol.

Nothing here is imported by ``import privinf``; the CrypTen backend and the ``party`` command load it.
"""
