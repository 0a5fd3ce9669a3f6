"""CKKS machinery on TenSEAL, the sibling of :mod:`privinf.mpc`: the card check (``check``), the
parameters chosen from a card's depth (``params``), the packed circuit (``circuit``), the client and
server of one MLP block (``protocol``) and the bytes between them (``wire``).

Nothing here is imported by ``import privinf``; the TenSEAL backend and the demo load it.
"""
