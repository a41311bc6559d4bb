"""Entropy coding of a symbol volume with the fixed-point context model.

The encoder evaluates the context model at all positions in one pass and codes the symbols in wave
order (fixed_point_pc.wave_order); the decoder rebuilds the same tables wave by wave. Frequency tables
come from the integer logits through arithmetic_coding.freqs_from_int_logits on both sides, so they are
bit-identical.
"""
import functools

import numpy as np
from threadpoolctl import threadpool_limits

import arithmetic_coding
import fixed_point_kernel


def _single_threaded_blas(load_kernel=False):
    """The context model's products are small: BLAS threads cost more than they bring (measured in
    bench/codec_speed.py), and block-parallel coding uses processes instead. load_kernel (the decoder): the
    compiled kernel calls scipy's BLAS, so it is loaded first: threadpool_limits only limits the libraries
    loaded by then."""
    def decorator(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if load_kernel:
                fixed_point_kernel.load()
            with threadpool_limits(limits=1, user_api='blas'):
                return fn(*args, **kwargs)
        return wrapper
    return decorator


def _tables(model):
    """f(int64 logits (n, L)) -> frequency tables: arithmetic_coding.freqs_from_int_logits, or the same tables
    from the compiled kernel where it is built (one call instead of ~25 numpy calls per wave)."""
    kernel = fixed_point_kernel.load()
    if kernel is not None and kernel.makes_tables_for(model.L, model.frac_bits):
        return lambda logits: kernel.freqs(logits, model.frac_bits)
    return lambda logits: arithmetic_coding.freqs_from_int_logits(logits, model.frac_bits)


@_single_threaded_blas()
def encode_symbols(symbols, model, coder='fast'):
    """:param symbols: int (C, h, w). :param model: FixedPointContextModel. :return: bytes"""
    logits, ordered = model.logits_in_wave_order(np.asarray(symbols))
    return arithmetic_coding.get_coder(coder).encode(ordered, _tables(model)(logits))


@_single_threaded_blas(load_kernel=True)
def decode_symbols(data, shape, model, coder='fast'):
    """Inverse of encode_symbols. :return: int64 (C, h, w). Raises ValueError on corrupt data."""
    decoder = arithmetic_coding.get_coder(coder).Decoder(data)
    tables = _tables(model)

    def decode_wave(logits):
        return decoder.decode(tables(logits))

    symbols = model.decode_waves(tuple(shape), decode_wave)
    if symbols.size and (symbols.min() < 0 or symbols.max() >= model.L):
        raise ValueError('corrupt bitstream: decoded symbols out of range')
    return symbols


def ideal_bits(symbols, model):
    """-sum log2 p of the symbols under the fixed-point model's tables (what a perfect coder would write)."""
    logits, ordered = model.logits_in_wave_order(np.asarray(symbols))
    freqs = arithmetic_coding.freqs_from_int_logits(logits, model.frac_bits)
    p = freqs[np.arange(len(ordered)), ordered] / float(arithmetic_coding.freqs.TOTAL)
    return float(-np.log2(p).sum())


# Block-parallel coding ------------------------------------------------------------------------------

_LENGTH_BYTES = 4


def tile_slices(h, w, blocks):
    """Row-major list of (row slice, col slice) of a rows x cols grid of near-equal tiles."""
    rows, cols = blocks
    if rows > h or cols > w:
        raise ValueError('{}x{} blocks do not fit a {}x{} symbol volume'.format(rows, cols, h, w))
    ys = np.linspace(0, h, rows + 1).round().astype(int)
    xs = np.linspace(0, w, cols + 1).round().astype(int)
    return [(slice(ys[i], ys[i + 1]), slice(xs[j], xs[j + 1])) for i in range(rows) for j in range(cols)]


def _encode_job(args):
    return encode_symbols(*args)


def _decode_job(args):
    return decode_symbols(*args)


def _map(fn, jobs):
    """Runs jobs in parallel processes when there is more than one (fork: the model is inherited)."""
    if len(jobs) == 1:
        return [fn(jobs[0])]
    import multiprocessing
    import os
    with multiprocessing.get_context('fork').Pool(min(len(jobs), os.cpu_count() or 1)) as pool:
        return pool.map(fn, jobs)


def encode_blocks(symbols, model, coder='fast', blocks=(1, 1)):
    """Codes each tile of a rows x cols grid independently (its own border padding, so tiles cost a
    little more than one volume). 1x1 is encode_symbols. Payload: tile lengths (u32 each, only when
    there are several tiles), then the tiles' streams."""
    if tuple(blocks) == (1, 1):
        return encode_symbols(symbols, model, coder)
    tiles = tile_slices(symbols.shape[1], symbols.shape[2], blocks)
    streams = _map(_encode_job, [(symbols[:, ys, xs], model, coder) for ys, xs in tiles])
    lengths = b''.join(len(s).to_bytes(_LENGTH_BYTES, 'little') for s in streams)
    return lengths + b''.join(streams)


def decode_blocks(payload, shape, model, coder='fast', blocks=(1, 1)):
    """Inverse of encode_blocks. Raises ValueError on malformed payloads."""
    if tuple(blocks) == (1, 1):
        return decode_symbols(payload, shape, model, coder)
    C, h, w = shape
    tiles = tile_slices(h, w, blocks)
    n = len(tiles)
    if len(payload) < n * _LENGTH_BYTES:
        raise ValueError('payload too short for {} tiles'.format(n))
    lengths = [int.from_bytes(payload[i * _LENGTH_BYTES:(i + 1) * _LENGTH_BYTES], 'little') for i in range(n)]
    if sum(lengths) != len(payload) - n * _LENGTH_BYTES:
        raise ValueError('tile lengths do not add up to the payload size')
    starts = np.cumsum([n * _LENGTH_BYTES] + lengths)
    jobs = [(payload[starts[i]:starts[i + 1]], (C, ys.stop - ys.start, xs.stop - xs.start), model, coder)
            for i, (ys, xs) in enumerate(tiles)]
    out = np.zeros(shape, np.int64)
    for (ys, xs), tile in zip(tiles, _map(_decode_job, jobs)):
        out[:, ys, xs] = tile
    return out
