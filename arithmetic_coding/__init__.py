"""Entropy coding of symbol volumes with per-symbol frequency tables.

Two interchangeable coders with the same API::

    coder = get_coder('fast')        # or 'python'
    data = coder.encode(symbols, freqs)          # symbols (N,), freqs (N, L)
    dec = coder.Decoder(data)
    syms = dec.decode(freqs_batch)               # streaming, in order

* ``'fast'`` (default): constriction's range coder, vectorised per batch.
* ``'python'``: readable reference arithmetic coder in pure Python.

The two produce different bitstreams (they are not interchangeable on the same
data).  Frequency tables come from ``freqs_from_int_logits`` (integer-only,
bit-exact) or ``freqs_from_probs``; see ``arithmetic_coding.freqs``.
"""

from .freqs import (
    PRECISION_BITS,
    freqs_from_int_logits,
    freqs_from_probs,
    validate_freqs,
)

CODERS = ("fast", "python")
DEFAULT_CODER = "fast"


def get_coder(name=DEFAULT_CODER):
    """Return the coder module for ``name`` ('fast' or 'python')."""
    if name == "fast":
        from . import fast_coder

        return fast_coder
    if name == "python":
        from . import python_coder

        return python_coder
    raise ValueError(f"unknown coder {name!r}; choices: {', '.join(CODERS)}")


__all__ = [
    "CODERS",
    "DEFAULT_CODER",
    "PRECISION_BITS",
    "freqs_from_int_logits",
    "freqs_from_probs",
    "get_coder",
    "validate_freqs",
]
