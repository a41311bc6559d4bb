"""Integer frequency tables for the entropy coders.

Every coder in this package consumes *frequency tables*: int64 arrays of shape
``(..., L)`` whose entries are all ``>= 1`` and whose rows sum to exactly
``2**PRECISION_BITS``.  The probability the coder assigns to symbol ``s`` is
``freqs[..., s] / 2**PRECISION_BITS``.

Why integers, and why bit-exactness matters
-------------------------------------------
Arithmetic decoding only works if the decoder uses *exactly* the same table as
the encoder for every symbol; a single off-by-one count desynchronises the rest
of the stream.  The context model computes its logits in fixed point (integer
arithmetic, see ``freqs_from_int_logits``), and this module turns those logits
into tables using integer operations only:

1. ``d = max(logits) - logits`` per row (int64, >= 0, fixed point with
   ``frac_bits`` fractional bits).
2. ``d`` is quantised to a 1/256 grid by an integer shift with
   round-half-up: ``d8 = ((d >> (s - 1)) + 1) >> 1`` with ``s = frac_bits - 8``
   (a plain left shift if ``frac_bits < 8``).  ``d8`` is then clamped to
   ``EXP_TABLE_SIZE - 1``, beyond which ``exp(-d8/256) * 2**EXP_TABLE_BITS``
   rounds to 0 anyway.
3. ``w = EXP_TABLE[d8]`` with ``EXP_TABLE[i] = round(2**EXP_TABLE_BITS *
   exp(-i / 256))``.  The table is built once at import time with Python's
   ``math.exp`` (correctly rounded to double on every platform we care about;
   the subsequent rounding to an integer of at most 31 bits leaves a huge
   margin: no entry lies closer than 1.4e-4 to a rounding boundary, while one
   double ulp at 2**30 is 2.4e-7; the tests compare it against a 50-digit
   ``decimal`` computation), so it is identical for encoder and decoder.  ``EXP_TABLE[0] =
   2**30`` is the weight of the most likely symbol.
4. The integer weights are normalised with ``_normalize_int_weights``:
   ``f = 1 + floor(w * (T - L) / sum(w))`` with ``T = 2**PRECISION_BITS``
   (every entry gets a floor of 1, the remaining ``T - L`` counts are shared in
   proportion to the weights).  The rounding remainder ``r = T - sum(f)`` (in
   ``[0, L)``) is distributed by the largest-remainder rule: the ``r`` entries
   with the largest ``w * (T - L) mod sum(w)`` get one extra count each, ties
   broken by the unquantised ``d`` (smaller first), then by lower index
   (stable sorts).  This keeps the table monotone in the logits (a larger
   logit never gets fewer counts) and each entry within one count of its
   proportional share of the quantised weights.  For L <= 7 and
   ``frac_bits <= 22`` (the context model's case) the same entries are found
   with one packed int64 sort key per entry, symbols along the first axis
   (``_freqs_by_symbol``, which proves the equality; the tests compare both).

All of this is elementwise / per-row integer arithmetic on int64 (products stay
below ``2**30 * 2**16 = 2**46``), so the result for a row depends only on that
row's logits: it is bit-identical whether rows are processed one at a time or
in any batch, on any machine.

Accuracy: quantising ``d`` to 1/256 changes a probability ratio by at most a
factor ``exp(1/512)`` (~0.2 %); the ``+1`` floor and integer flooring add at
most ``~1 / (p * 2**16)`` relative error, i.e. < 1 % for ``p >= ~0.002``.

``freqs_from_probs`` does the same for float probabilities: it converts each
row to integer weights ``round(p / sum(p) * 2**30)`` (with the row sum
accumulated column by column, so the result is also independent of batching)
and then uses the same integer normalisation (ties in the remainder
distribution are broken by the float probabilities; all float operations are
elementwise, hence deterministic for a given input row).
"""

import math

import numpy as np

PRECISION_BITS = 16
TOTAL = 1 << PRECISION_BITS

# Integer exp table: EXP_TABLE[i] = round(2**EXP_TABLE_BITS * exp(-i / 256)).
EXP_TABLE_BITS = 30
EXP_GRID_BITS = 8  # d is quantised to multiples of 2**-EXP_GRID_BITS = 1/256
# exp(-x) * 2**30 < 0.5 for x > 30*ln(2) + ln(2) ~= 21.5, so 24 * 256 entries
# cover everything that does not round to zero.
EXP_TABLE_SIZE = 24 << EXP_GRID_BITS


def _build_exp_table():
    scale = float(1 << EXP_TABLE_BITS)
    grid = float(1 << EXP_GRID_BITS)
    vals = [int(round(scale * math.exp(-i / grid))) for i in range(EXP_TABLE_SIZE)]
    return np.array(vals, dtype=np.int64)


EXP_TABLE = _build_exp_table()
EXP_TABLE.setflags(write=False)

# Weights fed to the normaliser are at most this large (keeps int64 products
# w * (TOTAL - L) far from overflow).
_WEIGHT_BITS = 30


def _normalize_int_weights(w, tiebreak=None):
    """Map non-negative int64 weights (..., L) to a frequency table.

    ``tiebreak`` (optional, same shape): among entries with equal fractional
    remainder, smaller ``tiebreak`` values get the extra counts first (then
    lower index).  Used to keep tables monotone in the unquantised input.

    Rows must have at least one positive weight and each weight must be
    <= 2**_WEIGHT_BITS.  Returns int64 (..., L), entries >= 1, rows summing to
    exactly ``TOTAL``.  Pure integer arithmetic, row-local.
    """
    w = np.asarray(w, dtype=np.int64)
    L = w.shape[-1]
    if L < 1 or L > TOTAL:
        raise ValueError(f"alphabet size must be in [1, {TOTAL}], got {L}")
    s = w.sum(axis=-1)  # exact in int64 (L * 2**30 fits), so the order of the additions does not matter
    if np.any(s <= 0):
        raise ValueError("every row needs at least one positive weight")
    budget = TOTAL - L
    q, frac = np.divmod(w * budget, s[..., None])
    rem = budget - q.sum(axis=-1)  # in [0, L): exact integer sum
    # Largest-remainder rounding: the ``rem`` entries with the largest
    # fractional parts get one extra count (ties: smaller ``tiebreak``, then
    # lower index; both sorts are stable, hence deterministic).
    if tiebreak is None:
        order = np.argsort(-frac, axis=-1, kind="stable")
    else:
        order = np.lexsort((tiebreak, -frac), axis=-1)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(L), order.shape), axis=-1)
    return 1 + q + (rank < rem[..., None])


# The fast path of freqs_from_int_logits packs (s - frac, d, index) into one int64 sort key: s - frac
# < 2**33 needs L <= 7 (s <= L * 2**30), d < 2**27 where it matters needs frac_bits <= 22
# (_freqs_by_symbol).
_FAST_MAX_L = 7
_FAST_MAX_FRAC_BITS = 22
_KEY_D_BITS = 27
_KEY_INDEX_BITS = 3


def freqs_from_int_logits(logits, frac_bits):
    """Frequency table ~ softmax(logits / 2**frac_bits), integer-only.

    Args:
      logits: integer array (..., L); fixed-point value ``logits / 2**frac_bits``.
      frac_bits: number of fractional bits, 0 <= frac_bits <= 62.

    Returns:
      int64 array (..., L): entries >= 1, rows summing to 2**PRECISION_BITS.
      Monotone in the logits within a row, bit-identical regardless of batching.
      The quantisation of ``max - logit`` to the 1/256 grid rounds half up.
    """
    logits = np.asarray(logits)
    if not np.issubdtype(logits.dtype, np.integer):
        raise ValueError(f"logits must be an integer array, got dtype {logits.dtype}")
    frac_bits = int(frac_bits)
    if not 0 <= frac_bits <= 62:
        raise ValueError(f"frac_bits must be in [0, 62], got {frac_bits}")
    if logits.ndim < 1 or logits.shape[-1] < 1:
        raise ValueError(f"logits must have shape (..., L) with L >= 1, got {logits.shape}")
    logits = logits.astype(np.int64)
    if logits.size == 0:
        return np.zeros(logits.shape, dtype=np.int64)
    L = logits.shape[-1]
    if L <= _FAST_MAX_L and frac_bits <= _FAST_MAX_FRAC_BITS:
        # Symbols along the first axis: a reduction over a row of L <= 7 entries is then a handful of
        # elementwise operations on long vectors instead of a short inner loop per row.
        by_symbol = np.ascontiguousarray(logits.reshape(-1, L).T)
        return np.ascontiguousarray(_freqs_by_symbol(by_symbol, frac_bits).T).reshape(logits.shape)
    mx = logits.max(axis=-1, keepdims=True)
    _check_logit_range(mx, logits)
    d = mx - logits  # >= 0
    # Tie-break by the unquantised d so that a larger logit never gets fewer
    # counts than a smaller one that quantised to the same grid point.
    return _normalize_int_weights(_quantized_weights(d, frac_bits), tiebreak=d)


def _check_logit_range(mx, logits):
    # With |logits| < 2**61 the difference max - logit cannot overflow int64.
    if mx.max() >= (1 << 61) or logits.min() <= -(1 << 61):
        raise ValueError("|logits| must be < 2**61")


def _quantized_weights(d, frac_bits):
    """EXP_TABLE weights of d = max - logit >= 0, quantised to the 1/256 grid with round half up."""
    max_idx = EXP_TABLE_SIZE - 1
    shift = frac_bits - EXP_GRID_BITS
    if shift > 0:
        # Round half up without overflow: ((d >> (shift-1)) + 1) >> 1.
        d8 = ((d >> (shift - 1)) + 1) >> 1
    elif shift == 0:
        d8 = d
    else:
        # Clamp before the left shift so it cannot overflow.
        d8 = np.minimum(d, max_idx) << (-shift)
    d8 = np.minimum(d8, max_idx)
    return EXP_TABLE[d8]


def _freqs_by_symbol(lt, frac_bits):
    """freqs_from_int_logits for logits (L, n) with L <= _FAST_MAX_L and frac_bits <= _FAST_MAX_FRAC_BITS,
    returning (L, n): the same integers as _normalize_int_weights(w, tiebreak=d), computed with one packed
    int64 key per entry instead of a lexsort.

    Why the result is identical: the largest-remainder order is by -frac, then d, then index, and the key
    ((s - frac) << 27 | min(d, 2**27 - 1)) << 3 | index (< 2**63: s - frac <= s <= 7 * 2**30 < 2**33)
    sorts the same way except among entries whose d is clamped. An entry with w > 0 has d8 <
    EXP_TABLE_SIZE <= 2**13, so d < 2**(13 + max(frac_bits - 8, 0)) <= 2**27 and is not clamped; an entry
    with w = 0 has frac = 0 and never gets an extra count: if rem >= 1, sum(frac) = rem * s with every
    frac < s, so at least rem + 1 entries have frac > 0 and all of them sort first. Keys are unique (the
    index), so the entries with an extra count are exactly those below the rem-th smallest key.
    """
    L = lt.shape[0]
    mx = lt.max(axis=0)
    _check_logit_range(mx, lt)
    d = mx - lt
    w = _quantized_weights(d, frac_bits)
    s = w.sum(axis=0)  # exact in int64, so the order of the additions does not matter
    if np.any(s <= 0):
        raise ValueError("every row needs at least one positive weight")
    budget = TOTAL - L
    q, frac = np.divmod(w * budget, s)
    rem = budget - q.sum(axis=0)  # in [0, L)
    key = ((s - frac) << _KEY_D_BITS) | np.minimum(d, (1 << _KEY_D_BITS) - 1)
    key <<= _KEY_INDEX_BITS
    key |= np.arange(L)[:, None]
    kth = np.take_along_axis(np.sort(key, axis=0), rem[None], axis=0)
    return 1 + q + (key < kth)


def freqs_from_probs(probs):
    """Frequency table from float probabilities (..., L).

    Entries must be finite and >= 0 with a positive row sum (rows need not sum
    to exactly 1).  Each row is converted to integer weights
    ``round(p / sum(p) * 2**30)`` (row sum accumulated column by column, so
    independent of batching) and then normalised like
    ``freqs_from_int_logits``: entries >= 1, rows summing to 2**PRECISION_BITS.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim < 1 or p.shape[-1] < 1:
        raise ValueError(f"probs must have shape (..., L) with L >= 1, got {p.shape}")
    if p.size == 0:
        return np.zeros(p.shape, dtype=np.int64)
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError("probabilities must be finite and non-negative")
    s = np.zeros(p.shape[:-1], dtype=np.float64)
    for j in range(p.shape[-1]):
        s = s + p[..., j]
    if np.any(s <= 0):
        raise ValueError("every row of probabilities needs a positive sum")
    q = np.minimum(p / s[..., None], 1.0)
    w = np.floor(q * float(1 << _WEIGHT_BITS) + 0.5).astype(np.int64)
    # A row whose mass is spread so thinly that every weight rounds to 0 is
    # impossible for L <= 2**16 (max weight >= 2**30 / L), but be safe:
    w[np.all(w == 0, axis=-1)] = 1
    return _normalize_int_weights(w, tiebreak=-q)


def validate_freqs(freqs, precision_bits=PRECISION_BITS):
    """Raise ValueError unless ``freqs`` is an integer (..., L) table with all
    entries >= 1 and every row summing to exactly ``2**precision_bits``."""
    f = np.asarray(freqs)
    if not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"freqs must be an integer array, got dtype {f.dtype}")
    if f.ndim < 1 or f.shape[-1] < 1:
        raise ValueError(f"freqs must have shape (..., L) with L >= 1, got {f.shape}")
    if f.size == 0:
        return
    f = f.astype(np.int64, copy=False)
    if f.min() < 1:
        raise ValueError("freqs: every entry must be >= 1")
    # a product with ones sums a row of a few entries faster than a reduction along the last axis
    sums = f.reshape(-1, f.shape[-1]) @ np.ones(f.shape[-1], dtype=np.int64)
    if np.any(sums != (1 << precision_bits)):
        bad = sums[sums != (1 << precision_bits)].ravel()[0]
        raise ValueError(f"freqs: every row must sum to 2**{precision_bits} = {1 << precision_bits}, found {bad}")


def check_stream(symbols, freqs):
    """Checks the arguments of a coder's encode(): symbols (N,) integers in [0, L), freqs (N, L).

    :return: (symbols as int64, freqs as an array)
    """
    sym = np.asarray(symbols)
    if sym.ndim != 1:
        raise ValueError(f"symbols must have shape (N,), got {sym.shape}")
    f = np.asarray(freqs)
    if f.ndim != 2 or f.shape[0] != sym.shape[0]:
        raise ValueError(f"freqs must have shape (N, L) = ({sym.shape[0]}, L), got {f.shape}")
    if sym.size and not np.issubdtype(sym.dtype, np.integer):
        raise ValueError(f"symbols must be integers, got dtype {sym.dtype}")
    sym = sym.astype(np.int64)
    if sym.size and (sym.min() < 0 or sym.max() >= f.shape[1]):
        raise ValueError(f"symbols must be in [0, {f.shape[1]})")
    return sym, f
