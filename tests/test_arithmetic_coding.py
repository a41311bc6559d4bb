"""Tests for arithmetic_coding: frequency tables and both coders."""

import math
import time

import numpy as np
import pytest

from arithmetic_coding import (
    PRECISION_BITS,
    freqs_from_int_logits,
    freqs_from_probs,
    get_coder,
    validate_freqs,
)
from arithmetic_coding import freqs as freqs_mod
from arithmetic_coding import python_coder

TOTAL = 1 << PRECISION_BITS
CODERS = ["python", "fast"]


# ----------------------------------------------------------------- helpers


def random_probs(rng, n, L, kind):
    if kind == "dirichlet":
        return rng.dirichlet(np.full(L, rng.uniform(0.1, 2.0)), size=n)
    if kind == "skewed":  # one prob ~1, others tiny
        p = rng.uniform(1e-9, 1e-6, size=(n, L))
        p[np.arange(n), rng.integers(0, L, size=n)] = 1.0
        return p
    if kind == "uniform":
        return np.full((n, L), 1.0 / L)
    raise AssertionError(kind)


def sample_symbols(rng, freqs):
    cum = np.cumsum(freqs, axis=1)
    u = rng.integers(0, TOTAL, size=freqs.shape[0])
    return (u[:, None] >= cum).sum(axis=1)


def random_case(rng):
    L = int(rng.integers(2, 11))
    n = int(rng.choice([0, 1, 2, 3, int(rng.integers(4, 60)), int(rng.integers(60, 1500))]))
    kind = rng.choice(["dirichlet", "skewed", "uniform"])
    f = freqs_from_probs(random_probs(rng, n, L, kind))
    mode = rng.choice(["sample", "adversarial", "uniform_symbols"])
    if mode == "sample":
        s = sample_symbols(rng, f)
    elif mode == "adversarial":  # the least likely symbol every time
        s = np.argmin(f, axis=1) if n else np.zeros(0, dtype=np.int64)
    else:
        s = rng.integers(0, L, size=n)
    return s.astype(np.int64), f


def random_splits(rng, n):
    k = int(rng.integers(0, 6))
    cuts = np.sort(rng.integers(0, n + 1, size=k))
    return [0, *cuts.tolist(), n]


def decode_in_batches(coder, data, freqs, bounds):
    dec = coder.Decoder(data)
    parts = [dec.decode(freqs[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def ideal_bytes(symbols, freqs):
    p = freqs[np.arange(len(symbols)), symbols] / TOTAL
    return -np.log2(p).sum() / 8


# ------------------------------------------------------------ freq tables


def test_exp_table():
    t = freqs_mod.EXP_TABLE
    assert t[0] == 1 << freqs_mod.EXP_TABLE_BITS
    assert np.all(np.diff(t) <= 0)
    assert t[-1] == 0
    for i in [1, 100, 256, 1000, 3000]:
        assert t[i] == round(2**30 * math.exp(-i / 256))
    # Platform independence: equal to a high-precision computation.
    from decimal import Decimal, localcontext

    with localcontext() as ctx:
        ctx.prec = 50
        exact = [
            int((Decimal(2**30) * (Decimal(-i) / 256).exp()).to_integral_value(rounding="ROUND_HALF_EVEN"))
            for i in range(len(t))
        ]
    assert t.tolist() == exact


def test_freqs_from_probs_properties():
    rng = np.random.default_rng(0)
    for L in [1, 2, 6, 10, 300]:
        for kind in ["dirichlet", "skewed", "uniform"]:
            p = random_probs(rng, 200, L, kind)
            f = freqs_from_probs(p)
            assert f.dtype == np.int64 and f.shape == p.shape
            validate_freqs(f)
            q = p / p.sum(1, keepdims=True)
            m = q > 0.01
            assert np.all(np.abs(f[m] / TOTAL / q[m] - 1) < 0.01)
    # batch vs row-by-row identical; zeros allowed
    p = rng.dirichlet(np.ones(6), size=50)
    p[:, 0] = 0
    f = freqs_from_probs(p)
    assert np.array_equal(f, np.stack([freqs_from_probs(r) for r in p]))
    assert np.all(f[:, 0] == 1)
    # higher-rank input
    assert freqs_from_probs(p.reshape(5, 10, 6)).shape == (5, 10, 6)
    with pytest.raises(ValueError):
        freqs_from_probs(np.array([[0.5, -0.1, 0.6]]))
    with pytest.raises(ValueError):
        freqs_from_probs(np.array([[0.0, 0.0]]))
    with pytest.raises(ValueError):
        freqs_from_probs(np.array([[np.nan, 1.0]]))


@pytest.mark.parametrize("frac_bits", [0, 3, 8, 12, 16, 24])
def test_freqs_from_int_logits(frac_bits):
    rng = np.random.default_rng(frac_bits)
    L = 6
    x = rng.normal(0, 4, size=(3000, L))
    x[:100] *= 20  # very peaked rows
    x[100:200] = 0  # flat rows
    logits = np.round(x * 2**frac_bits).astype(np.int64)
    f = freqs_from_int_logits(logits, frac_bits)
    assert f.dtype == np.int64 and f.shape == logits.shape
    validate_freqs(f)
    assert np.all(f >= 1) and np.all(f.sum(1) == TOTAL)
    # close to the float softmax
    v = logits / 2.0**frac_bits
    sm = np.exp(v - v.max(1, keepdims=True))
    sm /= sm.sum(1, keepdims=True)
    m = sm > 0.01
    assert np.all(np.abs(f[m] / TOTAL / sm[m] - 1) < 0.01)
    # monotone: higher logit -> frequency at least as high; equal logits ->
    # frequencies within one count
    higher = logits[:, :, None] > logits[:, None, :]
    equal = logits[:, :, None] == logits[:, None, :]
    fdiff = f[:, :, None] - f[:, None, :]
    assert np.all(fdiff[higher] >= 0)
    assert np.all(np.abs(fdiff[equal]) <= 1)
    # batch vs row-by-row vs reshaped vs shifted logits: identical
    rows = np.stack([freqs_from_int_logits(r, frac_bits) for r in logits[:300]])
    assert np.array_equal(rows, f[:300])
    assert np.array_equal(freqs_from_int_logits(logits.reshape(30, 100, L), frac_bits).reshape(-1, L), f)
    shift = rng.integers(-(2**20), 2**20, size=(logits.shape[0], 1))
    assert np.array_equal(freqs_from_int_logits(logits + shift, frac_bits), f)


def test_freqs_from_int_logits_edge_cases():
    f = freqs_from_int_logits(np.array([[0, 0, 0]]), 8)
    validate_freqs(f)
    assert f.max() - f.min() <= 1
    f = freqs_from_int_logits(np.array([[10**15, 0, -(10**15)]]), 8)
    assert f.tolist() == [[TOTAL - 2, 1, 1]]
    assert freqs_from_int_logits(np.array([[5]]), 4).tolist() == [[TOTAL]]
    assert freqs_from_int_logits(np.zeros((0, 6), dtype=np.int64), 8).shape == (0, 6)
    with pytest.raises(ValueError):
        freqs_from_int_logits(np.array([[0.5, 1.0]]), 8)
    with pytest.raises(ValueError):
        freqs_from_int_logits(np.array([[0, 1]]), -1)


def test_validate_freqs():
    validate_freqs(np.array([[TOTAL - 1, 1]]))
    validate_freqs(np.zeros((0, 4), dtype=np.int64))
    with pytest.raises(ValueError):
        validate_freqs(np.array([[TOTAL, 0]]))
    with pytest.raises(ValueError):
        validate_freqs(np.array([[TOTAL - 2, 1]]))
    with pytest.raises(ValueError):
        validate_freqs(np.array([[TOTAL - 1.0, 1.0]]))


# ------------------------------------------------------------------ coders


def test_get_coder():
    from arithmetic_coding import fast_coder

    assert get_coder("fast") is fast_coder
    assert get_coder("python") is python_coder
    with pytest.raises(ValueError, match="fast"):
        get_coder("nope")


@pytest.mark.parametrize("name", CODERS)
def test_round_trip_random(name):
    coder = get_coder(name)
    rng = np.random.default_rng(123)
    for _ in range(400):
        s, f = random_case(rng)
        data = coder.encode(s, f)
        assert isinstance(data, bytes)
        out = decode_in_batches(coder, data, f, random_splits(rng, len(s)))
        assert out.dtype.kind == "i"
        np.testing.assert_array_equal(out, s)


@pytest.mark.parametrize("name", CODERS)
def test_round_trip_empty_and_single(name):
    coder = get_coder(name)
    for L in [2, 6]:
        f0 = np.zeros((0, L), dtype=np.int64)
        data = coder.encode(np.zeros(0, dtype=np.int64), f0)
        dec = coder.Decoder(data)
        assert dec.decode(f0).shape == (0,)
        f = freqs_from_probs(np.full((1, L), 1.0 / L))
        for sym in range(L):
            data = coder.encode(np.array([sym]), f)
            dec = coder.Decoder(data)
            assert dec.decode(f0).shape == (0,)
            assert dec.decode(f).tolist() == [sym]


@pytest.mark.parametrize("name", CODERS)
def test_round_trip_long_adversarial(name):
    """Least likely symbol every time under very skewed tables (16 bits each)."""
    coder = get_coder(name)
    rng = np.random.default_rng(7)
    n, L = 20000, 6
    f = freqs_from_probs(random_probs(rng, n, L, "skewed"))
    s = np.argmin(f, axis=1)
    data = coder.encode(s, f)
    assert len(data) <= 1.01 * ideal_bytes(s, f) + 16
    out = decode_in_batches(coder, data, f, [0, 1, 5000, 5001, 12345, n])
    np.testing.assert_array_equal(out, s)


@pytest.mark.parametrize("name", CODERS)
def test_size_near_ideal(name):
    coder = get_coder(name)
    rng = np.random.default_rng(11)
    n, L = 100000, 6
    f = freqs_from_probs(random_probs(rng, n, L, "dirichlet"))
    s = sample_symbols(rng, f)
    ideal = ideal_bytes(s, f)
    data = coder.encode(s, f)
    assert len(data) <= 1.01 * ideal + 16, (len(data), ideal)
    bounds = list(range(0, n, 570)) + [n]
    np.testing.assert_array_equal(decode_in_batches(coder, data, f, bounds), s)


@pytest.mark.parametrize("name", CODERS)
def test_encode_rejects_bad_input(name):
    coder = get_coder(name)
    f = freqs_from_probs(np.full((3, 4), 0.25))
    with pytest.raises(ValueError):
        coder.encode(np.array([0, 1, 4]), f)  # symbol out of range
    with pytest.raises(ValueError):
        coder.encode(np.array([0, 1]), f)  # length mismatch
    with pytest.raises(ValueError):
        coder.encode(np.array([0, 1, -1]), f)


def test_python_coder_totals():
    rng = np.random.default_rng(5)
    # Arbitrary totals up to the maximum 2**30 + 2 round-trip.
    for total in [1, 2, 3, 1000, 2**20 + 7, 2**30 + 2]:
        n, L = 300, 5
        w = rng.dirichlet(np.ones(L), size=n)
        f = np.floor(w * total).astype(np.int64)
        f[:, 0] += total - f.sum(1)
        s = np.array([rng.choice(np.flatnonzero(r)) for r in f])
        data = python_coder.encode(s, f)
        np.testing.assert_array_equal(python_coder.Decoder(data).decode(f), s)
    too_big = np.array([[2**29 + 2, 2**29 + 1]])
    assert too_big.sum() == 2**30 + 3
    with pytest.raises(ValueError):
        python_coder.encode(np.array([0]), too_big)
    with pytest.raises(ValueError):
        python_coder.Decoder(b"\x00" * 8).decode(too_big)
    with pytest.raises(ValueError):  # zero-frequency symbol
        python_coder.encode(np.array([1]), np.array([[5, 0, 3]]))


def test_python_coder_zero_frequency_entries_decode():
    f = np.array([[0, 3, 0, 5, 0]] * 50)
    s = np.array([1, 3] * 25)
    data = python_coder.encode(s, f)
    np.testing.assert_array_equal(python_coder.Decoder(data).decode(f), s)


@pytest.mark.parametrize("name", CODERS)
def test_truncated_data_no_hang(name):
    coder = get_coder(name)
    rng = np.random.default_rng(3)
    n, L = 5000, 6
    f = freqs_from_probs(random_probs(rng, n, L, "uniform"))
    s = rng.integers(0, L, size=n)
    data = coder.encode(s, f)
    t0 = time.time()
    for cut in [0, 4, len(data) // 2 // 4 * 4, len(data) - 64]:
        with pytest.raises(ValueError, match="corrupt or truncated"):
            decode_in_batches(coder, data[:cut], f, [0, 1000, 3000, n])
    assert time.time() - t0 < 10


def test_fast_coder_odd_length():
    coder = get_coder("fast")
    f = freqs_from_probs(np.full((100, 6), 1.0 / 6))
    data = coder.encode(np.arange(100) % 6, f)
    assert len(data) % 4 == 0
    for bad in [data[:-1], data + b"\x00", b"\x01\x02\x03"]:
        with pytest.raises(ValueError, match="multiple of 4"):
            coder.Decoder(bad)


def test_fast_coder_rejects_improper_tables():
    coder = get_coder("fast")
    with pytest.raises(ValueError):
        coder.encode(np.array([0]), np.array([[TOTAL - 1, 2]]))
    with pytest.raises(ValueError):
        coder.encode(np.array([0]), np.array([[TOTAL, 0]]))
    dec = coder.Decoder(b"")
    with pytest.raises(ValueError):
        dec.decode(np.array([[TOTAL - 1, 2]]))


def test_fast_coder_garbage_never_hangs():
    """Random bytes decode to something or raise ValueError -- quickly."""
    coder = get_coder("fast")
    rng = np.random.default_rng(9)
    f = freqs_from_probs(random_probs(rng, 2000, 6, "dirichlet"))
    for _ in range(20):
        data = rng.integers(0, 256, size=4 * int(rng.integers(0, 40)), dtype=np.uint8).tobytes()
        try:
            out = decode_in_batches(coder, data, f, [0, 700, 2000])
            assert out.shape == (2000,) and out.min() >= 0 and out.max() < 6
        except ValueError:
            pass


# ------------------------------------------- tables pinned, fast path exact


def _digest(a):
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(a, "<i8").tobytes()).hexdigest()[:16]


def _tie_heavy_logits(rng, n, L, frac_bits):
    x = np.round(rng.normal(0, 3, (n, L)) * 2**frac_bits).astype(np.int64)
    step = 1 << max(frac_bits - 2, 0)
    x[: n // 10] = x[: n // 10] // step * step  # equal logits and equal quantised weights
    x[n // 10 : n // 5] = 0  # flat rows
    x[n // 5 : n // 4, : L // 2] = x[n // 5 : n // 4, L - L // 2 :]  # duplicated columns
    x[n // 4 : n // 3, 0] += 1 << (frac_bits + 6)  # one dominant symbol: the others' weights are 0
    return x


def test_freqs_from_int_logits_pinned():
    """Exact tables of the implementation before the packed-key fast path (lexsort of the remainders):
    any change would change every bitstream."""
    rng = np.random.default_rng(2024)
    x = np.round(rng.normal(0, 3, (5000, 6)) * 2**14).astype(np.int64)
    x[:500] = x[:500] // 4096 * 4096  # many ties
    x[500:600] = 0
    x[600:700, :3] = x[600:700, 3:]
    assert _digest(freqs_from_int_logits(x, 14)) == "7eabcaf273749481"
    assert _digest(freqs_from_int_logits(x, 9)) == "5e69d7f0ce04c7d3"


@pytest.mark.parametrize("L", [1, 2, 3, 6, 7])
@pytest.mark.parametrize("frac_bits", [0, 5, 8, 14, 22])
def test_fast_path_equals_general_normalisation(L, frac_bits):
    """The packed sort key (L <= 7, frac_bits <= 22) gives the tables of the general largest-remainder
    rule, also with many ties, flat rows (the largest key, L * 2**30), and weights that round to 0."""
    rng = np.random.default_rng(100 * L + frac_bits)
    x = _tie_heavy_logits(rng, 3000, L, frac_bits)
    assert L <= freqs_mod._FAST_MAX_L and frac_bits <= freqs_mod._FAST_MAX_FRAC_BITS
    d = x.max(axis=-1, keepdims=True) - x
    expected = freqs_mod._normalize_int_weights(freqs_mod._quantized_weights(d, frac_bits), tiebreak=d)
    np.testing.assert_array_equal(freqs_from_int_logits(x, frac_bits), expected)
    # also through the public entry with other leading shapes
    np.testing.assert_array_equal(freqs_from_int_logits(x.reshape(30, 100, L), frac_bits).reshape(-1, L), expected)
