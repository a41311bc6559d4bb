"""Fast entropy coder (the default) on top of ``constriction``'s range coder.

Same API as ``python_coder``::

    data = encode(symbols, freqs)          # symbols (N,), freqs (N, L)
    dec = Decoder(data)
    part = dec.decode(freqs_batch)         # streaming, batch by batch

but the frequency tables must be proper tables in the sense of
``freqs.validate_freqs``: entries >= 1, rows summing to exactly
``2**PRECISION_BITS``.

Each batch is handed to constriction in one vectorised call:
``constriction.stream.queue.RangeEncoder/RangeDecoder`` with the model family
``constriction.stream.model.Categorical(perfect=False)`` and the float64
probability matrix ``freqs / 2**PRECISION_BITS`` (exactly representable, so
encoder and decoder see bit-identical parameters; constriction's own
quantisation to its fixed-point precision is deterministic).

Output format: the compressed ``uint32`` words as little-endian bytes, so a
stream's length is always a multiple of 4 (otherwise ``Decoder`` raises
``ValueError``).

Truncation / corruption: a range decoder pads missing data with zeros and
never hangs, but it also cannot tell in general that data is missing.  As a
cheap sound check the decoder tracks the information content
``-sum log2(p)`` of the symbols decoded so far.  A valid stream holds at
least that many bits minus the 64-bit coder state (the state shrinks by the
probability of every symbol and is refilled 32 bits per emitted word), so if
the information content exceeds ``1.01 * (32 * words + 64) + 64`` bits the
data cannot be a valid stream for these tables and ``ValueError`` is raised
(the 1 % and 64 bits of slack absorb constriction's slightly different
internal quantisation of the probabilities).  Exceptions raised by
constriction itself are also turned into ``ValueError``.  Mild truncation can
go unnoticed (it yields wrong symbols), as with any arithmetic code without an
explicit checksum.
"""

import numpy as np
import constriction

from .freqs import PRECISION_BITS, check_stream, validate_freqs

_SCALE = float(1 << PRECISION_BITS)
_MODEL_FAMILY = constriction.stream.model.Categorical(perfect=False)


def _probabilities(freqs):
    f = np.asarray(freqs)
    if f.ndim != 2:
        raise ValueError(f"freqs must have shape (n, L), got {f.shape}")
    validate_freqs(f)
    return np.ascontiguousarray(f, dtype=np.float64) / _SCALE


def encode(symbols, freqs):
    """Encode ``symbols`` (N,) with frequency rows ``freqs`` (N, L) -> bytes."""
    sym, f = check_stream(symbols, freqs)
    if sym.size == 0:
        return b""
    probs = _probabilities(f)
    encoder = constriction.stream.queue.RangeEncoder()
    encoder.encode(np.ascontiguousarray(sym, dtype=np.int32), _MODEL_FAMILY, probs)
    words = np.asarray(encoder.get_compressed(), dtype=np.uint32)
    return words.astype("<u4").tobytes()


class Decoder:
    """Streaming decoder: call ``decode(freqs_batch)`` repeatedly, in order."""

    def __init__(self, data):
        data = bytes(data)
        if len(data) % 4 != 0:
            raise ValueError(
                f"corrupt or truncated bitstream: length {len(data)} bytes is not a multiple of 4 "
                "(the fast coder stores whole 32-bit words)"
            )
        words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
        self._num_words = words.size
        self._max_info_bits = 1.01 * (32.0 * self._num_words + 64.0) + 64.0
        self._info_bits = 0.0
        self._decoder = constriction.stream.queue.RangeDecoder(words)

    def decode(self, freqs):
        """Decode ``len(freqs)`` symbols with the (n, L) frequency batch."""
        probs = _probabilities(freqs)
        n = probs.shape[0]
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        try:
            out = self._decoder.decode(_MODEL_FAMILY, probs)
        except Exception as exc:  # constriction raises various error types
            raise ValueError(f"corrupt or truncated bitstream ({type(exc).__name__}: {exc})") from exc
        sym = np.asarray(out, dtype=np.int64)
        if sym.shape != (n,) or (n and (sym.min() < 0 or sym.max() >= probs.shape[1])):
            raise ValueError("corrupt or truncated bitstream: decoder returned invalid symbols")
        p = probs[np.arange(n), sym]
        self._info_bits += float(-np.log2(p).sum())
        if self._info_bits > self._max_info_bits:
            raise ValueError(
                "corrupt or truncated bitstream: decoded information content "
                f"({self._info_bits:.0f} bits) exceeds what {self._num_words} words can hold"
            )
        return sym
