"""Reference arithmetic coder in pure Python (readable, not fast).

Classic integer arithmetic coding with a 32-bit state and "pending"
(underflow / E3) bits.

State: ``low`` and ``high`` (inclusive) are 32-bit integers, initially
``0`` and ``2**32 - 1``.  To code a symbol whose cumulative frequency range is
``[cum_low, cum_high)`` out of ``total``::

    range = high - low + 1
    high  = low + range * cum_high // total - 1
    low   = low + range * cum_low  // total

followed by renormalisation, repeated while possible:

* E1/E2 -- the top bits of ``low`` and ``high`` agree: that bit is final.
  Output it, then any pending bits (each the inverse of that bit), and shift
  both values left by one (``high`` shifts in a 1, ``low`` a 0).
* E3 -- ``low = 01...`` and ``high = 10...`` (the interval straddles the
  middle and is at most half wide): the next output bit is not known yet, but
  whatever it is the bit after it will be its inverse.  Count a pending bit
  and map ``x -> 2 * (x - 2**30)`` (removes the second-highest bit).

After renormalisation ``low < 2**31 <= high`` and the interval is wider than a
quarter of the state space, so ``range >= 2**30 + 2``.  Hence every symbol with
frequency >= 1 keeps a non-empty interval as long as ``total <= 2**30 + 2``;
larger totals are rejected.

``finish`` outputs a single 1 bit plus the pending bits (inverted, i.e. 0s):
the code point ``0.1000...`` (followed by implicit zeros) lies in
``[low, high]``.  The stream is padded with 0 bits to a whole byte; bits are
packed MSB-first.

The decoder keeps a 32-bit window ``code`` of the stream (bits past the end
read as 0), computes ``value = ((code - low + 1) * total - 1) // range``,
which is the unique cumulative count such that the symbol's sub-interval
contains ``code``, finds that symbol by bisection on the cumulative table and
then performs exactly the encoder's state update, shifting new bits into
``code`` whenever the encoder shifted out a bit.

Truncation check: the decoder consumes 32 bits plus one bit per shift, the
encoder writes one bit per shift plus at least one final bit, so a valid
stream is never read more than 31 bits past its end.  Reading further raises
``ValueError``.  (Shorter truncations cannot always be detected.)

API (shared with ``fast_coder``)::

    data = encode(symbols, freqs)          # symbols (N,), freqs (N, L)
    dec = Decoder(data)
    part1 = dec.decode(freqs[:k])          # streaming, batch by batch
    part2 = dec.decode(freqs[k:])

Frequency tables may have any row total in ``[1, 2**30 + 2]`` (each row its
own total) and entries >= 0; the coded symbol must have frequency >= 1.
"""

from bisect import bisect_right

import numpy as np

from .freqs import check_stream

STATE_BITS = 32
FULL = (1 << STATE_BITS) - 1  # 0xFFFFFFFF, also the initial ``high``
HALF = 1 << (STATE_BITS - 1)
QUARTER = 1 << (STATE_BITS - 2)
THREE_QUARTERS = HALF + QUARTER
MAX_TOTAL = QUARTER + 2  # smallest possible range after renormalisation


def _prepare_tables(freqs):
    """Validate a (n, L) frequency batch and return (cumulative (n, L+1) as
    nested Python lists, totals as a list, L)."""
    f = np.asarray(freqs)
    if f.ndim != 2:
        raise ValueError(f"freqs must have shape (n, L), got {f.shape}")
    if f.shape[0] and not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"freqs must be an integer array, got dtype {f.dtype}")
    f = f.astype(np.int64)
    L = f.shape[1]
    if f.shape[0] == 0:
        return [], [], L
    if L < 1:
        raise ValueError("alphabet size L must be >= 1")
    if np.any(f < 0):
        raise ValueError("frequencies must be non-negative")
    cum = np.zeros((f.shape[0], L + 1), dtype=np.int64)
    np.cumsum(f, axis=1, out=cum[:, 1:])
    totals = cum[:, -1]
    if np.any(totals < 1):
        raise ValueError("every frequency row needs a positive total")
    if np.any(totals > MAX_TOTAL):
        raise ValueError(f"frequency total {int(totals.max())} exceeds the maximum {MAX_TOTAL} = 2**30 + 2")
    return cum.tolist(), totals.tolist(), L


def encode(symbols, freqs):
    """Encode ``symbols`` (N,) with per-symbol frequency rows ``freqs`` (N, L).

    Returns the compressed bytes.
    """
    sym, f = check_stream(symbols, freqs)
    cum, totals, L = _prepare_tables(f)
    if sym.size and np.any(np.take_along_axis(f.astype(np.int64), sym[:, None], 1) < 1):
        raise ValueError("a symbol to encode has frequency 0")

    out = _BitWriter()
    low, high, pending = 0, FULL, 0
    for s, c, total in zip(sym.tolist(), cum, totals):
        rng = high - low + 1
        high = low + rng * c[s + 1] // total - 1
        low = low + rng * c[s] // total
        while True:
            if high < HALF or low >= HALF:
                # E1 (both top bits 0) / E2 (both 1): emit the settled bit
                # followed by the pending bits, which are its inverse.
                out.put(1 if low >= HALF else 0, pending)
                pending = 0
                low = (low << 1) & FULL
                high = ((high << 1) & FULL) | 1
            elif low >= QUARTER and high < THREE_QUARTERS:
                # E3: low = 01..., high = 10...; defer the bit.
                pending += 1
                low = (low - QUARTER) << 1
                high = ((high - QUARTER) << 1) | 1
            else:
                break

    # finish: a 1 bit, then the pending bits inverted (0s), then zero padding.
    out.put(1, pending)
    return out.getvalue()


class _BitWriter:
    """Bits, most significant first, into bytes."""

    def __init__(self):
        self._out = bytearray()
        self._acc = 0  # bits collected for the current output byte
        self._n = 0  # number of bits in ``_acc``

    def put(self, bit, repeat_inverted=0):
        """Appends ``bit``, then ``repeat_inverted`` copies of its inverse."""
        for b in [bit] + [bit ^ 1] * repeat_inverted:
            self._acc = (self._acc << 1) | b
            self._n += 1
            if self._n == 8:
                self._out.append(self._acc)
                self._acc = self._n = 0

    def getvalue(self):
        """The bytes written, the last one padded with zero bits."""
        return bytes(self._out) + (bytes([self._acc << (8 - self._n)]) if self._n else b'')


class Decoder:
    """Streaming decoder: call ``decode(freqs_batch)`` repeatedly, in order."""

    def __init__(self, data):
        data = bytes(data)
        self._bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8)).tolist()
        self._nbits = len(self._bits)
        # A valid stream is never read more than 31 bits past its end.
        self._max_pos = self._nbits + STATE_BITS - 1
        self._low = 0
        self._high = FULL
        code = 0
        for i in range(STATE_BITS):
            code = (code << 1) | (self._bits[i] if i < self._nbits else 0)
        self._code = code
        self._pos = STATE_BITS

    def decode(self, freqs):
        """Decode ``len(freqs)`` symbols with the (n, L) frequency batch."""
        f = np.asarray(freqs)
        if f.ndim != 2:
            raise ValueError(f"freqs must have shape (n, L), got {f.shape}")
        n = f.shape[0]
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        cum, totals, L = _prepare_tables(f)

        bits, nbits = self._bits, self._nbits
        low, high, code, pos = self._low, self._high, self._code, self._pos
        result = [0] * n
        for i in range(n):
            c = cum[i]
            total = totals[i]
            rng = high - low + 1
            value = ((code - low + 1) * total - 1) // rng
            s = bisect_right(c, value) - 1
            if s >= L:  # impossible for low <= code <= high; keep it safe
                s = L - 1
            result[i] = s
            high = low + rng * c[s + 1] // total - 1
            low = low + rng * c[s] // total
            while True:
                if high < HALF or low >= HALF:
                    low = (low << 1) & FULL
                    high = ((high << 1) & FULL) | 1
                    code = ((code << 1) & FULL) | (bits[pos] if pos < nbits else 0)
                    pos += 1
                elif low >= QUARTER and high < THREE_QUARTERS:
                    low = (low - QUARTER) << 1
                    high = ((high - QUARTER) << 1) | 1
                    code = ((code - QUARTER) << 1) | (bits[pos] if pos < nbits else 0)
                    pos += 1
                else:
                    break
        self._low, self._high, self._code, self._pos = low, high, code, pos
        if pos > self._max_pos:
            raise ValueError("corrupt or truncated bitstream: decoder read past the end of the data")
        return np.array(result, dtype=np.int64)
